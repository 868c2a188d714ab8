//! What a deleted thread's queued embedding jobs cost the queue until they
//! are swept: `due_jobs` skips them one by one (they are the oldest jobs of
//! their tenant, so at the head of its queue).
//!
//! ```sh
//! cargo run --release -p memlayer-adapters-libsql --example bench_sweep_queue
//! ```
//!
//! One tenant: a thread of 100,000 messages (none embedded, so 100,000
//! jobs) and a live thread of one; `due_jobs(64)` timed before the delete,
//! after the mark, and after half the thread is swept (chunks of 1,000,
//! with the full-text catch-up of the swept messages' stale entries timed
//! apart).
#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a panic")]

use std::time::Instant;

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::{NewMessage, NewThread, Role, TenantId};
use memlayer_ports::{EmbeddingStore, MessageStore, ThreadStore};

async fn due(db: &LibsqlBackend, label: &str) {
    for _ in 0..2 {
        let started = Instant::now();
        let n = db.due_jobs(memlayer_domain::now(), 64).await.unwrap().len();
        println!("{label}: due_jobs(64) returned {n} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("bench.db"))).await.unwrap();
    let t = TenantId::parse("acme").unwrap();
    let big = db.create(&t, NewThread::default()).await.unwrap().id;
    for _ in 0..100 {
        let batch = (0..1000).map(|i| NewMessage::text(Role::User, format!("message {i}")).unwrap()).collect();
        db.append(&t, big, batch).await.unwrap();
    }
    let live = db.create(&t, NewThread::default()).await.unwrap().id;
    db.append(&t, live, vec![NewMessage::text(Role::User, "live").unwrap()]).await.unwrap();
    db.catch_up().await.unwrap();
    due(&db, "before the delete").await;
    ThreadStore::delete(&db, &t, big).await.unwrap();
    due(&db, "after the mark").await;
    for _ in 0..50 {
        db.sweep_deleted(1000).await.unwrap();
    }
    let started = Instant::now();
    db.catch_up().await.unwrap();
    println!("catch-up of 50,000 stale full-text entries: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    due(&db, "half swept").await;
    while db.sweep_deleted(1000).await.unwrap().more {}
    db.catch_up().await.unwrap();
    due(&db, "swept").await;
}
