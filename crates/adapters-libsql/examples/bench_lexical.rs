//! Cost of the full-text layout: how fast the catch-up indexes appended
//! messages, how long a tenant's lexical search takes, and how long opening
//! the database takes, for one tenant and for many tenants sharing the file.
//!
//! ```text
//! cargo run --release -p memlayer-adapters-libsql --example bench_lexical -- \
//!     [--messages 100000] [--tenants 1,100,1000] [--queries 200]
//! ```
//!
//! Messages are synthetic sentences over a 5,000-word vocabulary with a
//! Zipf-like skew, spread evenly over the tenants (one thread each), appended
//! in batches of 1,000; the catch-up then indexes them all (timed), and again
//! after a fifth more per tenant, into tables that exist (timed). Queries
//! are two or three words drawn the same way, searched in one tenant's whole
//! scope with `k` = 10 (p50 and p99 reported). Opening is
//! `LibsqlBackend::open` on the existing file plus one query.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a benchmark binary")]
#![allow(clippy::cast_precision_loss, reason = "reporting figures")]

use std::time::{Duration, Instant};

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::{NewMessage, NewThread, Role, TenantId, ThreadId};
use memlayer_ports::{EmbeddingStore, MessageStore, SearchFilter, ThreadStore};

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A word index skewed towards small numbers (roughly Zipf).
    fn word(&mut self) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        (5_000f64.powf(u) as usize).saturating_sub(1)
    }
}

fn word(i: usize) -> String {
    let mut w = String::from("w");
    let mut n = i;
    loop {
        w.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return w;
        }
    }
}

fn sentence(rng: &mut Rng) -> String {
    let len = 5 + (rng.next() % 30) as usize;
    (0..len).map(|_| word(rng.word())).collect::<Vec<_>>().join(" ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Appends `each` messages to every tenant's thread, in batches of 1,000.
async fn fill(db: &LibsqlBackend, ids: &[TenantId], threads: &[ThreadId], each: usize, rng: &mut Rng) {
    for (t, thread) in ids.iter().zip(threads) {
        let mut left = each;
        while left > 0 {
            let n = left.min(1_000);
            let batch = (0..n).map(|_| NewMessage::text(Role::User, sentence(rng)).unwrap()).collect();
            db.append(t, *thread, batch).await.unwrap();
            left -= n;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut messages = 100_000usize;
    let mut tenant_counts = vec![1usize, 100, 1_000];
    let mut queries = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => messages = value.parse().unwrap(),
            "--tenants" => tenant_counts = value.split(',').map(|s| s.parse().unwrap()).collect(),
            "--queries" => queries = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    println!(
        "| tenants | messages | catch-up, first (messages/s) | catch-up, tables exist (messages/s) | search p50 | search p99 | open + first query |"
    );
    println!("|---|---|---|---|---|---|---|");
    for tenants in tenant_counts {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.db");
        let db = LibsqlBackend::open_migrated(LibsqlConfig::file(&path)).await.unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let ids: Vec<TenantId> = (0..tenants).map(|i| TenantId::parse(format!("t{i}")).unwrap()).collect();
        let mut threads = Vec::with_capacity(tenants);
        for t in &ids {
            threads.push(db.create(t, NewThread::default()).await.unwrap().id);
        }
        let per_tenant = messages / tenants;
        fill(&db, &ids, &threads, per_tenant, &mut rng).await;
        let start = Instant::now();
        db.catch_up().await.unwrap();
        let caught_up = start.elapsed();
        // A second round into tables that exist: a fifth more per tenant.
        let more = (per_tenant / 5).max(1);
        fill(&db, &ids, &threads, more, &mut rng).await;
        let start = Instant::now();
        db.catch_up().await.unwrap();
        let steady = start.elapsed();
        let scope = SearchFilter::all_threads(ids[0].clone());
        let mut times = Vec::with_capacity(queries);
        for _ in 0..queries {
            let q = (0..2 + rng.next() % 2).map(|_| word(rng.word())).collect::<Vec<_>>().join(" ");
            let start = Instant::now();
            db.lexical_search(&scope, q, 10).await.unwrap();
            times.push(start.elapsed());
        }
        times.sort_unstable();
        drop(db);
        let start = Instant::now();
        let reopened = LibsqlBackend::open(LibsqlConfig::file(&path)).await.unwrap();
        reopened.lexical_search(&scope, "wa wb".into(), 10).await.unwrap();
        let open = start.elapsed();
        println!(
            "| {tenants} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms |",
            per_tenant * tenants,
            (per_tenant * tenants) as f64 / caught_up.as_secs_f64(),
            (more * tenants) as f64 / steady.as_secs_f64(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            open.as_secs_f64() * 1e3,
        );
    }
}
