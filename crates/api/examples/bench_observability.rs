//! Observability's two goals (issue 17): OTLP ingest throughput in
//! batches, and the trace listing's latency over a million spans.
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_observability
//! ```
//!
//! The in-process router (`memlayer_api::server::app`, every middleware)
//! over a libSQL file in a temp directory (or the Postgres database of
//! `MEMLAYER_BENCH_DATABASE_URL`), embeddings and background tasks off,
//! `auth.mode = none` (no rate limit). What a request costs the server is
//! measured; the client's work (building and encoding the batches, gzip) is
//! done before the clock starts.
//!
//! 1. Ingest: `MEMLAYER_BENCH_SPANS` (default 1,000,000) spans of one tenant
//!    in `POST /v1/traces` requests of `MEMLAYER_BENCH_BATCH` (default 512,
//!    the OpenTelemetry SDKs' default export batch) protobuf spans, gzipped
//!    (`MEMLAYER_BENCH_GZIP=0` to send them plain), sent by
//!    `MEMLAYER_BENCH_CLIENTS` (default 4) concurrent clients. Each trace
//!    is 8 spans (an agent's run: the root with its agent, 3 model calls
//!    with a model, tokens and time to first token, 2 tool calls, 2 internal
//!    spans, about 10 attributes each and an event on every model call), 1
//!    trace in 10 failing, their starts spread over the last 7 days. Prints
//!    spans per second per 10% of the load (does it hold as the tables
//!    grow?) and for the whole, with request latencies.
//! 2. Listing: `GET /api/observability/traces?limit=50` in several shapes
//!    (the first page, a page deep in by cursor, filtered by model, agent,
//!    status, service, minimum duration, sorted by duration, a time range, a
//!    text search), `MEMLAYER_BENCH_QUERIES` (default 200) times each, one at a
//!    time, each after a warm-up; p50, p95 and p99 per shape.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a failure is a panic")]

use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message as _;
use serde_json::Value;
use tower::ServiceExt as _;

const TENANT: &str = "bench";
const SPANS_PER_TRACE: u64 = 8;
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];
const AGENTS: [&str; 5] = ["support", "triage", "billing", "research", "planner"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

/// A deterministic pseudo-random number from `n` (splitmix64).
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 8 spans of trace number `t`, starting within the last 7 days of `now`.
fn trace(t: u64, now: u64) -> Vec<Span> {
    let r = mix(t);
    let trace_id: Vec<u8> = [mix(t ^ 0xa5a5).to_be_bytes(), (t + 1).to_be_bytes()].concat();
    let start = now - 7 * 86_400 * 1_000_000_000 + (r % (7 * 86_400 * 1_000_000)) * 1_000;
    let agent = AGENTS[(r % 5) as usize];
    let failed = r.is_multiple_of(10);
    let span_id = |k: u64| (t * SPANS_PER_TRACE + k + 1).to_be_bytes().to_vec();
    let mut spans = Vec::with_capacity(SPANS_PER_TRACE as usize);
    let total = 2_000_000_000 + (r >> 8) % 6_000_000_000;
    let root = span_id(0);
    let mk = |k: u64, name: String, offset: u64, len: u64, attributes: Vec<KeyValue>, kind: i32| Span {
        trace_id: trace_id.clone(),
        span_id: span_id(k),
        parent_span_id: if k == 0 { vec![] } else { root.clone() },
        name,
        kind,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + len,
        attributes,
        status: Some(Status { message: String::new(), code: 1 }),
        ..Span::default()
    };
    let mut first = mk(
        0,
        format!("invoke_agent {agent}"),
        0,
        total,
        vec![
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.agent.name", agent),
            s("gen_ai.conversation.id", &format!("conv-{}", r % 100_000)),
            s("user.id", &format!("user-{}", r % 10_000)),
            s("session.id", &format!("session-{}", t)),
            i("memlayer.thread.messages", (r % 200) as i64),
            s("deployment.environment", "production"),
            s("http.route", "/agent/run"),
        ],
        2,
    );
    if failed {
        first.status = Some(Status { message: "tool failed".into(), code: 2 });
    }
    spans.push(first);
    for k in 1..=3 {
        let model = MODELS[((r >> (k * 4)) % 4) as usize];
        let len = total / 5;
        let mut call = mk(
            k,
            format!("chat {model}"),
            k * total / 5,
            len,
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.system", "openai"),
                s("gen_ai.request.model", model),
                s("gen_ai.response.model", model),
                i("gen_ai.usage.input_tokens", 200 + ((r >> k) % 3_000) as i64),
                i("gen_ai.usage.output_tokens", 20 + ((r >> (k + 7)) % 500) as i64),
                kv("gen_ai.request.temperature", any_value::Value::DoubleValue(0.2)),
                kv("gen_ai.response.time_to_first_chunk", any_value::Value::DoubleValue(0.15 + (k as f64) / 20.0)),
                s("gen_ai.response.finish_reasons", "stop"),
                s("gen_ai.response.id", &format!("chatcmpl-{t}-{k}")),
            ],
            3,
        );
        call.events.push(span::Event {
            time_unix_nano: start + k * total / 5 + len / 3,
            name: "gen_ai.choice".into(),
            attributes: vec![s("finish_reason", "stop"), i("index", 0)],
            dropped_attributes_count: 0,
        });
        spans.push(call);
    }
    for k in 4..=5 {
        spans.push(mk(
            k,
            "execute_tool lookup_order".into(),
            k * total / 8,
            total / 20,
            vec![
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "lookup_order"),
                s("gen_ai.tool.call.id", &format!("call_{t}_{k}")),
                s("order.id", &format!("A-{}", r % 99_999)),
            ],
            1,
        ));
    }
    for k in 6..=7 {
        spans.push(mk(
            k,
            if k == 6 { "memory.recall".into() } else { "memory.append".into() },
            total - total / 10,
            total / 50,
            vec![
                s("db.system", "libsql"),
                i("db.rows", (r % 50) as i64),
                s("thread.id", &format!("t-{}", r % 100_000)),
            ],
            1,
        ));
    }
    spans
}

fn request_body(spans: Vec<Span>, gzip: bool) -> Vec<u8> {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "agent-runtime"),
                    s("service.version", "2.3.1"),
                    s("telemetry.sdk.language", "python"),
                    s("host.name", "worker-7"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.openai".into(),
                    version: "0.50b0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let bytes = req.encode_to_vec();
    if !gzip {
        return bytes;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    gz.finish().unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, axum::body::Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total_spans = env_usize("MEMLAYER_BENCH_SPANS", 1_000_000) as u64;
    let batch = env_usize("MEMLAYER_BENCH_BATCH", 512) as u64;
    let batch = batch.div_ceil(SPANS_PER_TRACE) * SPANS_PER_TRACE;
    let clients = env_usize("MEMLAYER_BENCH_CLIENTS", 4).max(1);
    let gzip = std::env::var("MEMLAYER_BENCH_GZIP").map_or(true, |v| v != "0");
    let queries = env_usize("MEMLAYER_BENCH_QUERIES", 200);
    let dir = tempfile::tempdir().unwrap();
    let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
    config.embedding.enabled = false;
    config.server.request_timeout_secs = 300;
    config.server.max_concurrent_requests = Some(64);
    if let Ok(url) = std::env::var("MEMLAYER_BENCH_DATABASE_URL") {
        config.database.url = Some(url.as_str().into());
    }
    let services = memlayer_app::build(config).await.unwrap();
    println!("database: {}", services.database.describe());
    let app = memlayer_api::server::app(&services);
    let now = u64::try_from(memlayer_domain::observability::time_to_ns(memlayer_domain::now())).unwrap();

    // The batches, built and encoded before the clock starts.
    let traces = total_spans / SPANS_PER_TRACE;
    let per_batch = batch / SPANS_PER_TRACE;
    let building = Instant::now();
    let bodies: Vec<Vec<u8>> = (0..traces.div_ceil(per_batch))
        .map(|b| {
            let spans = (b * per_batch..((b + 1) * per_batch).min(traces)).flat_map(|t| trace(t, now)).collect();
            request_body(spans, gzip)
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "built {} requests of {batch} spans ({} spans, {:.1} MB {}) in {:.1} s",
        bodies.len(),
        traces * SPANS_PER_TRACE,
        bytes as f64 / 1e6,
        if gzip { "gzipped" } else { "plain" },
        building.elapsed().as_secs_f64()
    );

    // 1. Ingest: clients take the next request in order.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = std::sync::Arc::new(bodies);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (app, next, bodies) = (app.clone(), next.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(n) else { break };
                let mut req = Request::builder()
                    .method("POST")
                    .uri("/v1/traces")
                    .header("x-tenant-id", TENANT)
                    .header("content-type", "application/x-protobuf");
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
                let t0 = Instant::now();
                let (status, answer) = send(&app, req.body(Body::from(body.clone())).unwrap()).await;
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
                done.push((n, t0.elapsed(), t0.duration_since(started) + t0.elapsed()));
            }
            done
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spans = (traces * SPANS_PER_TRACE) as f64;
    done.sort_by_key(|d| d.2);
    let mut latencies: Vec<Duration> = done.iter().map(|d| d.1).collect();
    println!(
        "ingest: {spans} spans in {elapsed:.1} s = {:.0} spans/s ({clients} clients, batches of {batch}); \
         request p50 {:.1} ms, p99 {:.1} ms",
        spans / elapsed,
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.99)
    );
    let tenth = done.len().div_ceil(10).max(1);
    let mut line = String::from("ingest per tenth of the load (spans/s):");
    let mut from = Duration::ZERO;
    for chunk in done.chunks(tenth) {
        let until = chunk.last().unwrap().2;
        let n = chunk.len() as f64 * batch as f64;
        line.push_str(&format!(" {:.0}", n / (until - from).as_secs_f64()));
        from = until;
    }
    println!("{line}");

    // 2. Listing.
    let get = |uri: String| {
        let app = app.clone();
        async move {
            let req = Request::builder().uri(uri).header("x-tenant-id", TENANT).body(Body::empty()).unwrap();
            let t0 = Instant::now();
            let (status, body) = send(&app, req).await;
            let took = t0.elapsed();
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            (took, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (_, first) = get("/api/observability/traces?limit=50".into()).await;
    // The cursor of page 101 (or of the last page, for a small load).
    let mut cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    let mut depth = 2;
    while depth < 101 {
        let (_, page) = get(format!("/api/observability/traces?limit=50&cursor={cursor}")).await;
        let Some(next) = page["next_cursor"].as_str() else { break };
        cursor = next.to_owned();
        depth += 1;
    }
    let day_ago = memlayer_domain::now() - time::Duration::days(1);
    let from = day_ago.format(&time::format_description::well_known::Rfc3339).unwrap();
    let deep = format!("page {depth} by cursor");
    let shapes: Vec<(&str, String)> = vec![
        ("first page, newest first", "/api/observability/traces?limit=50".into()),
        (deep.as_str(), format!("/api/observability/traces?limit=50&cursor={cursor}")),
        ("model = gpt-4o", "/api/observability/traces?limit=50&model=gpt-4o".into()),
        ("agent = billing", "/api/observability/traces?limit=50&agent=billing".into()),
        ("status = error", "/api/observability/traces?limit=50&status=error".into()),
        // Not indexed (each page looks into at most 1,000 traces): a common
        // value, and one no trace has (the whole window, no match).
        ("status = ok", "/api/observability/traces?limit=50&status=ok".into()),
        ("service = agent-runtime", "/api/observability/traces?limit=50&service=agent-runtime".into()),
        ("service = none-such", "/api/observability/traces?limit=50&service=none-such".into()),
        ("min_duration_ms = 7000", "/api/observability/traces?limit=50&min_duration_ms=7000".into()),
        ("longest first", "/api/observability/traces?limit=50&sort=-duration".into()),
        ("the last day", format!("/api/observability/traces?limit=50&from={from}")),
        ("text `A-4242`", "/api/observability/traces?limit=50&q=A-4242".into()),
    ];
    println!("listing over {spans} spans ({traces} traces), limit 50:");
    for (name, uri) in shapes {
        // The text search is not indexed (it looks into each trace's spans
        // until the page is full): fewer rounds.
        let rounds = if uri.contains("&q=") { (queries / 20).max(5) } else { queries };
        let mut times = Vec::with_capacity(rounds);
        let (_, warm) = get(uri.clone()).await;
        let items = warm["items"].as_array().unwrap().len();
        for _ in 0..rounds {
            times.push(get(uri.clone()).await.0);
        }
        println!(
            "  {name:<28} {items:>3} items, {rounds} queries: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            quantile(&mut times, 0.5),
            quantile(&mut times, 0.95),
            quantile(&mut times, 0.99)
        );
    }
    let db = dir.path().join("memlayer.db");
    if let Ok(m) = std::fs::metadata(&db) {
        println!("database file: {:.0} MB ({:.0} bytes per span)", m.len() as f64 / 1e6, m.len() as f64 / spans);
    }
}
