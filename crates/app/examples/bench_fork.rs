//! Forking a thread of 10,000 messages with a vector each (issue 14).
//!
//! ```sh
//! cargo run --release -p memlayer-app --example bench_fork
//! # Postgres too: MEMLAYER_BENCH_DATABASE_URL=postgres://… (a database memlayer may migrate)
//! # another vector index: MEMLAYER_BENCH_INDEX=exact (hnsw, libsql, pgvector)
//! ```
//!
//! Library level (`MemoryService::fork_thread`, what the HTTP route and the
//! CLI call) over a libSQL file in a temp directory (default index: HNSW in
//! process) or, with `MEMLAYER_BENCH_DATABASE_URL`, Postgres (pgvector's
//! index). The source thread holds `MEMLAYER_BENCH_MESSAGES` (10,000)
//! messages of about 150 bytes with a token count each, a 384-dimensional
//! vector stored for every one of them (synthetic unit vectors under the
//! embedder's model name: a fork copies bytes, their values do not matter)
//! and an agent state; it is fully indexed before the forks. Printed: each
//! of `MEMLAYER_BENCH_RUNS` (5) whole-thread forks (one transaction copying
//! the messages, their vectors and the state, then the vector index learning
//! the copies), their median, a fork at half the thread, and how long the
//! first lexical search of a fresh fork then takes (on libSQL it waits for
//! the full-text catch-up of the new rows).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::time::{Duration, Instant};

use memlayer_app::{AppendOptions, Config, build};
use memlayer_domain::{AgentName, Embedding, ForkThread, NewMessage, NewThread, Role, TenantId, TokenCount};
use memlayer_ports::SearchFilter;
use serde_json::json;

const DIM: usize = 384;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn unit(seed: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|i| (((i + 1) * (seed % 9973 + 3)) % 31) as f32 - 15.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / n).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("MEMLAYER_BENCH_MESSAGES", 10_000);
    let runs = env_usize("MEMLAYER_BENCH_RUNS", 5);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    if let Ok(url) = std::env::var("MEMLAYER_BENCH_DATABASE_URL") {
        config.database.url = Some(url.as_str().into());
    }
    if let Ok(index) = std::env::var("MEMLAYER_BENCH_INDEX") {
        config.search.index = Some(serde_json::from_value(json!(index)).unwrap());
    }
    config.embedding.enabled = true;
    let services = build(config).await.unwrap();
    assert!(services.embedder_problem.is_none(), "model not provisioned: run scripts/provision");
    let model = services.search.embedder_info().model;
    println!("backend: {}", services.database.describe());
    let tenant = TenantId::parse(format!("bench-{}", std::process::id())).unwrap();
    let new = NewThread { title: Some(memlayer_domain::Title::parse("Bench").unwrap()), ..NewThread::default() };
    let source = services.memory.create_thread(&tenant, new).await.unwrap().id;
    let count = TokenCount { count: 30, model: "gpt-4o".into(), encoding: "o200k_base".into(), exact: true };
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(1_000) {
        let batch = (start..(start + 1_000).min(n))
            .map(|i| {
                let text = format!(
                    "message {i}: the customer asked about order {} and the refund policy for damaged kettles; \
                     the agent checked the warehouse log",
                    i * 7919 % 100_003
                );
                NewMessage::text(if i % 2 == 0 { Role::User } else { Role::Assistant }, text)
                    .unwrap()
                    .with_token_count(count.clone())
            })
            .collect();
        let stored = services.memory.append_messages(&tenant, source, batch, AppendOptions::default()).await.unwrap();
        ids.extend(stored.into_iter().map(|m| m.id));
    }
    for (c, chunk) in ids.chunks(1_000).enumerate() {
        let done = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, Embedding::new(model.clone(), unit(c * 1_000 + i), DIM).unwrap()))
            .collect();
        let entries = services.embeddings.complete_jobs(done).await.unwrap();
        services.index.upsert(entries).await.unwrap();
    }
    let agent = AgentName::parse("bench").unwrap();
    services.memory.save_state(&tenant, source, &agent, json!({"step": 1}), 0).await.unwrap();
    let whole_tenant = SearchFilter::all_threads(tenant.clone());
    services.embeddings.lexical_search(&whole_tenant, "kettles".into(), 1).await.unwrap();
    println!("source: {n} messages, {n} vectors of {DIM} dimensions ({model})");

    let mut times = Vec::new();
    for run in 1..=runs {
        let started = Instant::now();
        let fork = services.memory.fork_thread(&tenant, source, ForkThread::default()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(fork.last_seq, i64::try_from(n).unwrap());
        println!("fork {run}: {:.1} ms", ms(took));
        times.push(took);
        let started = Instant::now();
        let only = SearchFilter::these_threads(tenant.clone(), vec![fork.id]);
        let hits = services.embeddings.lexical_search(&only, "kettles".into(), 5).await.unwrap();
        assert_eq!(hits.len(), 5, "the fork is searchable");
        println!("  first lexical search of the fork: {:.1} ms", ms(started.elapsed()));
    }
    times.sort_unstable();
    println!("whole-thread fork, median of {runs}: {:.1} ms", ms(times[times.len() / 2]));
    let started = Instant::now();
    let half = i64::try_from(n / 2).unwrap();
    services.memory.fork_thread(&tenant, source, ForkThread::new(Some(half), None).unwrap()).await.unwrap();
    println!("fork at seq {half}: {:.1} ms", ms(started.elapsed()));
}
