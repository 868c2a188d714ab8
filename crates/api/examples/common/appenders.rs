//! What the delete and prune benchmarks share: closed-loop single appends
//! of other tenants through the in-process router, and their latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub async fn call(
    app: &axum::Router,
    tenant: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri).header("x-tenant-id", tenant);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub fn text(i: usize) -> String {
    format!(
        "message {i}: the customer asked about order {} and the refund policy for damaged kettles; \
         the agent checked the warehouse log and promised a reply within two days",
        i * 7919 % 100_003
    )
}

/// p50, p99 and max in milliseconds.
pub fn summary(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no appends".into();
    }
    v.sort();
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e3
    };
    format!("{} appends, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", v.len(), at(0.50), at(0.99), at(1.0))
}

/// When an append started, and how long it took.
pub type Sample = (Instant, Duration);

/// Closed-loop single appends as `tenant` until `stop`; each sample.
pub async fn appender(app: axum::Router, tenant: String, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let (status, t) = call(&app, &tenant, "POST", "/api/threads", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let uri = format!("/api/threads/{}/messages", t["id"].as_str().unwrap());
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"messages": [{"role": "user", "content": text(i)}]});
        let started = Instant::now();
        let (status, v) = call(&app, &tenant, "POST", &uri, Some(body)).await;
        out.push((started, started.elapsed()));
        assert_eq!(status, StatusCode::CREATED, "{v}");
        i += 1;
    }
    out
}

pub type Appenders = (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Vec<Sample>>>);

pub fn run_appenders(app: &axum::Router, n: usize, round: &str) -> Appenders {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks =
        (0..n).map(|c| tokio::spawn(appender(app.clone(), format!("other-{round}-{c}"), stop.clone()))).collect();
    (stop, tasks)
}

pub async fn collect((stop, tasks): Appenders) -> Vec<Sample> {
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}
