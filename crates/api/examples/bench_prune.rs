//! A retention prune of many messages while other tenants append: how long
//! the prune takes, and what it does to the other tenants' append latency.
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_prune
//! ```
//!
//! The in-process router (`memlayer_api::server::app`, every middleware)
//! over a libSQL file in a temp directory (or the Postgres database of
//! `MEMLAYER_BENCH_DATABASE_URL`), background tasks running, embeddings
//! off (jobs and full-text entries are still made, and the prune removes
//! both). One tenant gets `MEMLAYER_BENCH_THREADS` (default 100) threads of
//! `MEMLAYER_BENCH_MESSAGES` / threads messages (default 100,000 in all)
//! plus one more message each, in batches of 1,000. Its policy is
//! `max_message_age_secs = 1` (`MEMLAYER_BENCH_RULE=age`, the default: the
//! prune starts over 3 s after loading, so every loaded message is old and
//! goes) or `max_messages_per_thread = 1` (`count`: all but the newest
//! message of each thread go, exactly `MEMLAYER_BENCH_MESSAGES`). `MEMLAYER_BENCH_APPENDERS` (default 2)
//! clients of other tenants append single messages in a closed loop, 3 s
//! before the prune (idle figures) and during it. The prune is the
//! library call `RetentionService::prune` (what `memlayer prune --apply`
//! and the scheduler run), in transactions of `retention.batch`
//! (`MEMLAYER_BENCH_BATCH`, default 500) with `retention.pause_ms`
//! (`MEMLAYER_BENCH_PAUSE_MS`, default 10) between them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a failure is a panic")]

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

#[path = "common/appenders.rs"]
mod appenders;
use appenders::{call, collect, env_usize, run_appenders, summary, text};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let messages = env_usize("MEMLAYER_BENCH_MESSAGES", 100_000);
    let threads = env_usize("MEMLAYER_BENCH_THREADS", 100).max(1);
    let appenders = env_usize("MEMLAYER_BENCH_APPENDERS", 2);
    let count_rule = std::env::var("MEMLAYER_BENCH_RULE").is_ok_and(|r| r == "count");
    let dir = tempfile::tempdir().unwrap();
    let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
    config.embedding.enabled = false;
    // The scheduler stays off: the benchmark runs the prune itself.
    config.retention.enabled = false;
    config.retention.batch = u32::try_from(env_usize("MEMLAYER_BENCH_BATCH", 500)).unwrap();
    config.retention.pause_ms = env_usize("MEMLAYER_BENCH_PAUSE_MS", 10) as u64;
    if let Ok(url) = std::env::var("MEMLAYER_BENCH_DATABASE_URL") {
        config.database.url = Some(url.as_str().into());
    }
    let services = memlayer_app::build(config).await.unwrap();
    let background = services.start_background();
    let app = memlayer_api::server::app(&services);

    let owner = format!("bench-owner-{}", std::process::id());
    let per_thread = messages / threads;
    let loading = Instant::now();
    for _ in 0..threads {
        let (_, t) = call(&app, &owner, "POST", "/api/threads", Some(json!({}))).await;
        let uri = format!("/api/threads/{}/messages", t["id"].as_str().unwrap());
        // One more than pruned, so each thread keeps its newest message.
        let total = per_thread + 1;
        for start in (0..total).step_by(1_000) {
            let batch: Vec<Value> =
                (start..total.min(start + 1_000)).map(|i| json!({"role": "user", "content": text(i)})).collect();
            let (status, v) = call(&app, &owner, "POST", &uri, Some(json!({"messages": batch}))).await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
        }
    }
    println!(
        "loaded {} messages in {threads} threads in {:.1} s",
        threads * (per_thread + 1),
        loading.elapsed().as_secs_f64()
    );
    let tenant = memlayer_domain::TenantId::parse(owner.clone()).unwrap();
    let rules = if count_rule {
        memlayer_domain::RetentionRules { max_messages_per_thread: Some(1), ..Default::default() }
    } else {
        memlayer_domain::RetentionRules { max_message_age_secs: Some(1), ..Default::default() }
    };
    let policy = memlayer_domain::NewRetentionPolicy { rules, ..Default::default() };
    services.retention.create_policy(&tenant, policy).await.unwrap();

    let idle = run_appenders(&app, appenders, "idle");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = collect(idle).await.into_iter().map(|(_, d)| d).collect();
    println!("idle ({appenders} appenders, 3 s): {}", summary(idle));

    let busy = run_appenders(&app, appenders, "busy");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let runs = services.retention.prune(Some(&tenant), false).await.unwrap();
    let took = started.elapsed();
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during =
        collect(busy).await.into_iter().filter(|(at, d)| *at < ended && *at + *d > started).map(|(_, d)| d).collect();
    let counts = runs[0].counts;
    println!(
        "prune ({}, batch {}, pause {} ms): {} messages deleted in {:.1} s ({:.0} messages/s)",
        if count_rule { "max_messages_per_thread" } else { "max_message_age_secs" },
        services.config.retention.batch,
        services.config.retention.pause_ms,
        counts.messages,
        took.as_secs_f64(),
        counts.messages as f64 / took.as_secs_f64()
    );
    println!("during the prune ({appenders} appenders): {}", summary(during));
    let usage = services.memory.usage(&tenant).await.unwrap();
    println!("left: {} messages", usage.usage.messages);
    background.stop().await;
}
