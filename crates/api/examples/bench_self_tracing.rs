//! What memlayer tracing itself costs (issue 17: under 5% at the default
//! ratio), side by side with self-tracing off in the same process.
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_self_tracing
//! ```
//!
//! The HTTP-level equivalent of the foundation benchmark's single appends:
//! the in-process router (`memlayer_api::server::app`, every middleware and
//! the request span) over a libSQL file in a temp directory, embeddings
//! off, `auth.mode = none`. `MEMLAYER_BENCH_CLIENTS` (default 8) concurrent
//! callers each append one message per request
//! (`POST /api/threads/{id}/messages`, a thread per caller), and one
//! request in 10 is a lexical search of the caller's thread
//! (`POST /api/search`), for `MEMLAYER_BENCH_ROUNDS` (default 10) rounds of
//! `MEMLAYER_BENCH_REQUESTS` (default 4,000) requests. Rounds alternate:
//! self-tracing off, on (at `MEMLAYER_BENCH_RATIO`, default the configured
//! default), off, on, … so both sides see the same machine load and the
//! same growing tables. The layer is installed once, behind a switch its
//! filter reads: off, no span reaches it (the registry makes none, as with
//! no subscriber); on, it records the sampled traces and its writer task
//! writes them into the same database, as a server does.
//!
//! Prints each round's requests per second, then per side the median round
//! and the overhead (1 − on/off), and what the writer wrote and dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "a benchmark: a failure is a panic")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_app::self_tracing::{SelfTraceLayer, SpanExport, SpanWriter, StoreExport, span_queue};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

static ON: AtomicBool = AtomicBool::new(false);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = env_usize("MEMLAYER_BENCH_CLIENTS", 8).max(1);
    let rounds = env_usize("MEMLAYER_BENCH_ROUNDS", 10).max(2);
    let requests = env_usize("MEMLAYER_BENCH_REQUESTS", 4000).max(clients);
    let ratio: f64 = std::env::var("MEMLAYER_BENCH_RATIO")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(memlayer_app::self_tracing::DEFAULT_RATIO);

    let dir = tempfile::tempdir().unwrap();
    let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
    config.embedding.enabled = false;
    config.observability.metrics.enabled = false;
    let st = config.observability.self_tracing.clone();
    let services = memlayer_app::build(config).await.unwrap();
    println!("database: {}", services.database.describe());

    // The layer, behind the switch; its writer into the same store.
    let (sink, queue) = span_queue(st.queue);
    let layer = SelfTraceLayer::new(sink.clone(), ratio).with_filter(tracing_subscriber::filter::dynamic_filter_fn(
        |meta, _| ON.load(Ordering::Relaxed) && SelfTraceLayer::wants(meta),
    ));
    tracing_subscriber::registry().with(layer).init();
    let tenant = memlayer_domain::TenantId::parse(st.tenant.clone()).unwrap();
    let export: Arc<dyn SpanExport> = Arc::new(StoreExport::new(services.observability.store(), tenant.clone()));
    let writer =
        SpanWriter::new(queue, vec![export], st.batch, Duration::from_millis(st.linger_ms), serde_json::Map::new());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let writing = tokio::spawn(writer.run(stopping));

    let app = memlayer_api::server::app(&services);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (status, thread) = call(&app, "POST", "/api/threads", &json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{thread}");
        threads.push(thread["id"].as_str().unwrap().to_owned());
    }
    println!(
        "{clients} callers, {rounds} rounds of {requests} requests (1 in 10 a lexical search), ratio {ratio}, \
         alternating off/on"
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let tracing_on = round % 2 == 1;
        ON.store(tracing_on, Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
        let per_client = requests / clients;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (c, thread) in threads.iter().enumerate() {
            let app = app.clone();
            let thread = thread.clone();
            tasks.spawn(async move {
                for i in 0..per_client {
                    if i % 10 == 9 {
                        let body = json!({"query": "refund order", "mode": "lexical", "top_k": 5,
                                          "scope": {"thread_id": thread}});
                        let (status, body) = call(&app, "POST", "/api/search", &body).await;
                        assert_eq!(status, StatusCode::OK, "{body}");
                    } else {
                        let body = json!({"messages": [{"role": "user",
                            "content": format!("caller {c} round {round} message {i}: where is my refund order")}]});
                        let (status, body) =
                            call(&app, "POST", &format!("/api/threads/{thread}/messages"), &body).await;
                        assert_eq!(status, StatusCode::CREATED, "{body}");
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = (per_client * clients) as f64 / started.elapsed().as_secs_f64();
        println!("round {round:>2} self-tracing {:<3} {rate:>8.0} requests/s", if tracing_on { "on" } else { "off" });
        if tracing_on { on.push(rate) } else { off.push(rate) }
    }
    ON.store(false, Ordering::Relaxed);
    stop.send(true).unwrap();
    let stats = writing.await.unwrap();
    let (off_m, on_m) = (median(&mut off), median(&mut on));
    println!("median requests/s: off {off_m:.0}, on {on_m:.0}; overhead {:.2}%", (1.0 - on_m / off_m) * 100.0);
    let all = memlayer_domain::observability::TraceQuery { limit: 1, ..Default::default() };
    let listed = services.observability.list_traces(&tenant, &all).await.unwrap();
    println!(
        "writer: {} spans in {} batches, {} dropped, {} failed writes; a trace listed: {}",
        stats.spans,
        stats.batches,
        stats.dropped,
        stats.failures,
        listed.items.first().map_or("none", |t| t.name.as_str())
    );
}
