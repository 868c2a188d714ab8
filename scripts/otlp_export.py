#!/usr/bin/env python3
"""Export spans to memlayer with the official OpenTelemetry Python SDK and its
OTLP/HTTP (protobuf) exporter, as an instrumented agent would.

Run by tests/it/otlp_python.rs with the pinned venv scripts/provision installs
($MEMLAYER_CACHE_DIR/otel):

    otel/bin/python scripts/otlp_export.py --endpoint http://127.0.0.1:8080/v1/traces \
        --header "authorization=Bearer ml_..." [--gzip]

It makes one trace (an agent's run: a model call with GenAI attributes and an
event, a failing tool call, an attribute longer than memlayer's limit) through
a BatchSpanProcessor, flushes, and prints one JSON line: the trace id, the span
ids by name, and each export's result. It exits 1 if any export failed.
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """The OTLP exporter, remembering each export's result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []
        self.spans = {}

    def export(self, spans):
        for s in spans:
            self.spans[s.name] = format(s.context.span_id, "016x")
        result = self.inner.export(spans)
        self.results.append(result.name)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--header", action="append", default=[], help="name=value")
    p.add_argument("--gzip", action="store_true")
    args = p.parse_args()
    headers = dict(h.split("=", 1) for h in args.header)
    exporter = Recording(
        OTLPSpanExporter(
            endpoint=args.endpoint,
            headers=headers,
            timeout=30,
            compression=Compression.Gzip if args.gzip else Compression.NoCompression,
        )
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "python-agent"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("memlayer.test", "1.0.0")

    with tracer.start_as_current_span(
        "invoke_agent support",
        kind=SpanKind.SERVER,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
    ) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 45,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.stop_sequences": ["\n\n", "END"],
                "prompt.large": "x" * 10000,
            },
        ) as chat:
            chat.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop"})
        with tracer.start_as_current_span("execute_tool lookup_order") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_status(Status(StatusCode.ERROR, "order not found"))
            tool.record_exception(ValueError("order A-17 not found"))

    flushed = provider.force_flush(30_000)
    provider.shutdown()
    print(json.dumps({"trace_id": trace_id, "spans": exporter.spans, "results": exporter.results,
                      "flushed": flushed}))
    ok = flushed and exporter.results and all(r == SpanExportResult.SUCCESS.name for r in exporter.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
