//! Deleting a huge thread while other tenants append: how long the delete
//! request takes, and what it does to the other tenants' append latency.
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_delete
//! ```
//!
//! The in-process router (`memlayer_api::server::app`, every middleware) over
//! a libSQL file in a temp directory, with the background tasks running and
//! embeddings switched off (jobs are still queued and full-text entries still
//! made: the delete removes both). One tenant gets a thread of
//! `MEMLAYER_BENCH_MESSAGES` (default 100,000) messages in batches of 1,000,
//! indexed before the delete; `MEMLAYER_BENCH_APPENDERS` (default 2) clients
//! of other tenants append single messages in a closed loop, first for 3 s
//! before the delete (idle figures), then during the delete. The delete lasts
//! from the moment the DELETE is sent until nothing of the thread is left in
//! the file (polled every 20 ms on a connection of its own; with a
//! synchronous delete that is when the request returns); the appends that
//! overlap that window are its figures. Printed: the delete request's latency, when the
//! thread was physically gone, and the appends' p50/p99/max in both windows.
//! `MEMLAYER_BENCH_CHUNK` sets `memory.sweep_chunk` (messages per sweep
//! transaction, where deletes are swept in the background).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a failure is a panic")]

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

#[path = "common/appenders.rs"]
mod appenders;
use appenders::{call, collect, env_usize, run_appenders, summary, text};

/// Messages of the thread still in the file, read on a connection of its own.
async fn remaining(conn: &libsql::Connection, id: &uuid::Uuid) -> i64 {
    let mut rows = conn
        .query(
            "SELECT (SELECT count(*) FROM messages WHERE thread_id = ?1) + (SELECT count(*) FROM threads WHERE id = ?1)",
            [libsql::Value::Blob(id.as_bytes().to_vec())],
        )
        .await
        .unwrap();
    rows.next().await.unwrap().unwrap().get::<i64>(0).unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let messages = env_usize("MEMLAYER_BENCH_MESSAGES", 100_000);
    let appenders = env_usize("MEMLAYER_BENCH_APPENDERS", 2);
    let dir = tempfile::tempdir().unwrap();
    let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
    config.embedding.enabled = false;
    // Messages per sweep transaction (the default: `memory.sweep_chunk`).
    if let Some(chunk) = std::env::var("MEMLAYER_BENCH_CHUNK").ok().and_then(|v| v.parse().ok()) {
        config.memory.sweep_chunk = chunk;
    }
    let services = memlayer_app::build(config).await.unwrap();
    let background = services.start_background();
    let app = memlayer_api::server::app(&services);

    let owner = "bench-owner";
    let (_, t) = call(&app, owner, "POST", "/api/threads", Some(json!({}))).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/threads/{id}/messages");
    let loading = Instant::now();
    for start in (0..messages).step_by(1_000) {
        let batch: Vec<Value> =
            (start..messages.min(start + 1_000)).map(|i| json!({"role": "user", "content": text(i)})).collect();
        let (status, v) = call(&app, owner, "POST", &uri, Some(json!({"messages": batch}))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    // Wait until the full-text catch-up has indexed the whole thread, so
    // the delete pays for removing the entries too.
    let last = format!("message {}:", messages - 1);
    loop {
        let q = json!({"query": last, "mode": "lexical", "scope": {"thread_id": id}, "top_k": 1});
        let (status, v) = call(&app, owner, "POST", "/api/search", Some(q)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (_, counts) = call(&app, owner, "GET", &format!("/api/threads/{id}/embeddings"), None).await;
        if counts["pending"].as_u64() == Some(messages as u64) && v["hits"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("loaded {messages} messages in {:.1} s", loading.elapsed().as_secs_f64());

    let idle = run_appenders(&app, appenders, "idle");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = collect(idle).await.into_iter().map(|(_, d)| d).collect();
    println!("idle ({appenders} appenders, 3 s): {}", summary(idle));

    let db = libsql::Builder::new_local(dir.path().join("memlayer.db")).build().await.unwrap();
    let probe = db.connect().unwrap();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let busy = run_appenders(&app, appenders, "busy");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, v) = call(&app, owner, "DELETE", &format!("/api/threads/{id}"), None).await;
    let answered = started.elapsed();
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, _) = call(&app, owner, "GET", &format!("/api/threads/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the thread is gone at once");
    while remaining(&probe, &uuid).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = started.elapsed();
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Appends that overlapped the delete: started before the thread was
    // gone and ended after the DELETE was sent.
    let during =
        collect(busy).await.into_iter().filter(|(at, d)| *at < ended && *at + *d > started).map(|(_, d)| d).collect();
    println!("delete request answered in {:.1} ms", answered.as_secs_f64() * 1e3);
    println!("thread physically gone after {:.1} ms", gone.as_secs_f64() * 1e3);
    println!("during the delete ({appenders} appenders): {}", summary(during));
    background.stop().await;
}
