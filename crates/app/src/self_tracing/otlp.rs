//! Export of memlayer's own spans to an external OTLP/HTTP collector
//! (`observability.self_tracing.otlp_endpoint`), as protobuf, through the
//! OpenTelemetry SDK's own exporter (`opentelemetry-otlp`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use memlayer_domain::observability::{Attributes, NewSpan, SpanKind, StatusCode};
use opentelemetry::trace::{SpanContext, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde_json::Value;

use super::{SCOPE_NAME, SpanExport};

/// Sends spans to a collector's `/v1/traces`.
pub struct OtlpExport {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    endpoint: String,
}

impl std::fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExport").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl OtlpExport {
    /// An exporter posting protobuf to `endpoint` (the traces URL) with
    /// `headers`, each export bounded by `timeout`, as made by `resource`.
    ///
    /// # Errors
    /// When the exporter cannot be built (a bad URL or header).
    pub fn new(
        endpoint: &str,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
        resource: &Attributes,
    ) -> Result<Self, String> {
        let headers: HashMap<String, String> = headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| format!("observability.self_tracing.otlp_endpoint: {e}"))?;
        exporter.set_resource(&Resource::builder_empty().with_attributes(key_values(resource)).build());
        let scope = InstrumentationScope::builder(SCOPE_NAME).with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Self { exporter, scope, endpoint: endpoint.to_owned() })
    }

    fn span_data(&self, s: &NewSpan) -> SpanData {
        let trace_id = opentelemetry::TraceId::from_bytes(*s.trace_id.as_bytes());
        let context = |span: &[u8; 8]| {
            SpanContext::new(
                trace_id,
                opentelemetry::SpanId::from_bytes(*span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )
        };
        let time = |ns: i64| UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        let mut events = SpanEvents::default();
        events.events = s
            .events
            .iter()
            .map(|e| opentelemetry::trace::Event::new(e.name.clone(), time(e.time_ns), key_values(&e.attributes), 0))
            .collect();
        events.dropped_count = s.dropped_events_count;
        SpanData {
            span_context: context(s.span_id.as_bytes()),
            parent_span_id: s
                .parent_span_id
                .map_or(opentelemetry::SpanId::INVALID, |p| opentelemetry::SpanId::from_bytes(*p.as_bytes())),
            parent_span_is_remote: false,
            span_kind: match s.kind {
                SpanKind::Server => opentelemetry::trace::SpanKind::Server,
                SpanKind::Client => opentelemetry::trace::SpanKind::Client,
                SpanKind::Producer => opentelemetry::trace::SpanKind::Producer,
                SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
                SpanKind::Internal | SpanKind::Unspecified => opentelemetry::trace::SpanKind::Internal,
            },
            name: Cow::Owned(s.name.clone()),
            start_time: time(s.start_ns),
            end_time: time(s.end_ns),
            attributes: key_values(&s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
            events,
            links: SpanLinks::default(),
            status: match s.status.code {
                StatusCode::Error => Status::error(s.status.message.clone().unwrap_or_default()),
                StatusCode::Ok => Status::Ok,
                StatusCode::Unset => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

impl SpanExport for OtlpExport {
    fn export<'a>(&'a self, spans: &'a [NewSpan]) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        let batch: Vec<SpanData> = spans.iter().map(|s| self.span_data(s)).collect();
        Box::pin(async move { self.exporter.export(batch).await.map_err(|e| format!("{}: {e}", self.endpoint)) })
    }
}

/// JSON attribute values as OpenTelemetry's: scalars as themselves, arrays
/// of one scalar type as arrays, anything else as its JSON text.
fn key_values(attrs: &Attributes) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| KeyValue::new(k.clone(), otel_value(v))).collect()
}

fn otel_value(v: &Value) -> OtelValue {
    match v {
        Value::Bool(b) => OtelValue::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(|| OtelValue::F64(n.as_f64().unwrap_or(f64::NAN)), OtelValue::I64),
        Value::String(s) => OtelValue::String(s.clone().into()),
        Value::Null | Value::Array(_) | Value::Object(_) => OtelValue::String(v.to_string().into()),
    }
}
