//! Foundation benchmarks (library level, no HTTP), on the embedded libSQL file.
//!
//! ```text
//! cargo run --release -p memlayer-app --example bench_foundation            # full run
//! cargo run --release -p memlayer-app --example bench_foundation -- --quick # smoke run
//! ```
//!
//! 1. Appending 10,000 messages one call (one transaction) per message versus
//!    in batches of 1,000.
//! 2. On a thread of 1,000,000 messages: fetching page 1 and page 10,000 (100
//!    messages a page) by keyset cursor, beside the same pages by OFFSET.
//! 3. Loading the last 10 messages of that thread.
//!
//! Between 1 and 2: single appends from 1, 8 and 32 concurrent callers.
//!
//! `MEMLAYER_BENCH_BARE=1` uses an in-memory database without embeddings:
//! the store's own work, without fsync or the embedding worker.
//!
//! `MEMLAYER_BENCH_QUOTA=N` sets storage quotas of N threads, N messages and
//! 1000·N bytes (far above what the run stores), so every write also checks
//! the quota; without it quotas are unlimited (the default).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::time::{Duration, Instant};

use memlayer_app::{AppendOptions, Config, MemoryService, build};
use memlayer_domain::{Cursor, Direction, NewMessage, NewThread, PageSize, Role, TenantId, ThreadId};

const WORDS: &[&str] = &[
    "the",
    "agent",
    "remembers",
    "what",
    "user",
    "said",
    "about",
    "their",
    "order",
    "refund",
    "shipping",
    "address",
    "weather",
    "tomorrow",
    "meeting",
    "notes",
    "summary",
    "project",
    "deadline",
    "invoice",
    "please",
    "thanks",
    "could",
    "you",
    "check",
    "again",
    "because",
    "yesterday",
    "answer",
    "was",
    "wrong",
    "memory",
    "context",
];

fn text(i: usize) -> String {
    let n = 12 + i % 40;
    let mut s = String::with_capacity(n * 8);
    let mut x = i.wrapping_mul(2_654_435_761) | 1;
    for k in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if k > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[x % WORDS.len()]);
    }
    s
}

fn message(i: usize) -> NewMessage {
    let role = if i.is_multiple_of(2) { Role::User } else { Role::Assistant };
    NewMessage::text(role, text(i)).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn append_bench(memory: &MemoryService, tenant: &TenantId, total: usize) -> (Duration, Duration) {
    let one_thread = memory.create_thread(tenant, NewThread::default()).await.unwrap().id;
    let t = Instant::now();
    for i in 0..total {
        memory.append_message(tenant, one_thread, message(i), AppendOptions::default()).await.unwrap();
    }
    let single = t.elapsed();
    let batch_thread = memory.create_thread(tenant, NewThread::default()).await.unwrap().id;
    let t = Instant::now();
    for chunk in (0..total).collect::<Vec<_>>().chunks(1_000) {
        let batch = chunk.iter().map(|&i| message(i)).collect();
        memory.append_messages(tenant, batch_thread, batch, AppendOptions::default()).await.unwrap();
    }
    (single, t.elapsed())
}

async fn page_at(memory: &MemoryService, tenant: &TenantId, thread: ThreadId, cursor: Option<Cursor>) -> usize {
    let size = PageSize::new(100).unwrap();
    memory.page_messages(tenant, thread, cursor, Some(Direction::Forward), size).await.unwrap().items.len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (append_n, thread_n) = if quick { (2_000, 50_000) } else { (10_000, 1_000_000) };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    // A storage quota far above what the run stores, so every append and
    // create also reads the tenant's usage (the check's whole cost).
    if let Ok(n) = std::env::var("MEMLAYER_BENCH_QUOTA") {
        let n = n.parse().unwrap();
        config.limits.quota = memlayer_domain::Quota { threads: Some(n), messages: Some(n), bytes: Some(n * 1_000) };
    }
    // MEMLAYER_BENCH_BARE=1: an in-memory database and no embedding worker,
    // so the figures are the store's own work (no fsync, no ONNX run beside
    // the appends): what a change to the write path costs, on a loaded
    // machine too.
    if std::env::var_os("MEMLAYER_BENCH_BARE").is_some() {
        config.database.url = Some(":memory:".into());
        config.embedding.enabled = false;
    }
    let services = build(config).await.unwrap();
    let memory = services.memory.clone();
    let tenant = TenantId::default_tenant();
    println!("memlayer foundation benchmark ({})", if quick { "quick" } else { "full" });
    println!("database: {}", services.database.describe());

    // 1. Single appends versus batches.
    let mut ratios = Vec::new();
    for round in 1..=3 {
        let (single, batched) = append_bench(&memory, &tenant, append_n).await;
        let ratio = single.as_secs_f64() / batched.as_secs_f64();
        ratios.push(ratio);
        println!(
            "append round {round}: {append_n} one per call {:.2} s ({:.0} msg/s); in batches of 1000 {:.3} s ({:.0} msg/s); ratio {ratio:.1}x",
            single.as_secs_f64(),
            append_n as f64 / single.as_secs_f64(),
            batched.as_secs_f64(),
            append_n as f64 / batched.as_secs_f64(),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("append ratio (median of 3): {:.1}x", ratios[1]);

    // 1b. Single appends from concurrent callers (group commit shares one
    // commit among the appends that queue behind the writer).
    for clients in [1, 8, 32] {
        let per_client = append_n / clients;
        let t = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (memory, tenant) = (memory.clone(), tenant.clone());
                tokio::spawn(async move {
                    let thread = memory.create_thread(&tenant, NewThread::default()).await.unwrap().id;
                    for i in 0..per_client {
                        let m = message(c * per_client + i);
                        memory.append_message(&tenant, thread, m, AppendOptions::default()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = t.elapsed();
        println!(
            "single appends from {clients} concurrent callers: {} in {:.2} s ({:.0} msg/s)",
            per_client * clients,
            elapsed.as_secs_f64(),
            (per_client * clients) as f64 / elapsed.as_secs_f64()
        );
    }

    if std::env::var_os("MEMLAYER_BENCH_BARE").is_some() {
        // Appends only: the paging part compares against OFFSET on the file.
        return;
    }

    // 2. A long thread.
    let thread = memory.create_thread(&tenant, NewThread::default()).await.unwrap().id;
    let t = Instant::now();
    for start in (0..thread_n).step_by(1_000) {
        let batch = (start..start + 1_000).map(message).collect();
        memory.append_messages(&tenant, thread, batch, AppendOptions::default()).await.unwrap();
    }
    let fill = t.elapsed();
    println!(
        "filled a thread of {thread_n} messages in {:.1} s ({:.0} msg/s in batches of 1000)",
        fill.as_secs_f64(),
        thread_n as f64 / fill.as_secs_f64()
    );

    let pages = thread_n / 100;
    let t = Instant::now();
    let mut cursor = None;
    for _ in 1..pages {
        let page = memory
            .page_messages(&tenant, thread, cursor, Some(Direction::Forward), PageSize::new(100).unwrap())
            .await
            .unwrap();
        cursor = page.next_cursor;
    }
    let walk = t.elapsed();
    let last_cursor = cursor.unwrap();
    println!(
        "walked {} pages by cursor in {:.2} s ({:.0} µs a page)",
        pages - 1,
        walk.as_secs_f64(),
        us(walk) / (pages - 1) as f64
    );

    let iters = 300;
    let mut first = Vec::new();
    let mut deep = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        assert_eq!(page_at(&memory, &tenant, thread, None).await, 100);
        first.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(page_at(&memory, &tenant, thread, Some(last_cursor)).await, 100);
        deep.push(t.elapsed());
    }
    let (first, deep) = (median(first), median(deep));
    println!(
        "keyset: page 1 {:.0} µs, page {pages} {:.0} µs (median of {iters}); ratio {:.2}",
        us(first),
        us(deep),
        deep.as_secs_f64() / first.as_secs_f64()
    );

    // The same two pages by OFFSET, on a raw connection to the same file.
    let db = libsql::Builder::new_local(dir.path().join("memlayer.db")).build().await.unwrap();
    let conn = db.connect().unwrap();
    let sql = "SELECT id, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, metadata, \
               token_count, token_model, token_encoding, token_exact, created_at \
               FROM messages WHERE thread_id = ?1 ORDER BY seq LIMIT 100 OFFSET ?2";
    let offset_time = |offset: i64, n: usize| {
        let conn = conn.clone();
        let thread = libsql::Value::Blob(thread.as_uuid().as_bytes().to_vec());
        async move {
            let mut times = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let mut rows = conn.query(sql, libsql::params![thread.clone(), offset]).await.unwrap();
                let mut count = 0;
                while rows.next().await.unwrap().is_some() {
                    count += 1;
                }
                assert_eq!(count, 100);
                times.push(t.elapsed());
            }
            median(times)
        }
    };
    let o_first = offset_time(0, iters).await;
    let o_deep = offset_time(((pages - 1) * 100) as i64, 20).await;
    println!(
        "offset: page 1 {:.0} µs, page {pages} {:.0} µs (median); ratio {:.1}",
        us(o_first),
        us(o_deep),
        o_deep.as_secs_f64() / o_first.as_secs_f64()
    );

    // 3. The last 10 messages of the long thread.
    let mut last = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        let got = memory.last_messages(&tenant, thread, PageSize::new(10).unwrap()).await.unwrap();
        last.push(t.elapsed());
        assert_eq!(got.len(), 10);
    }
    println!("last 10 of {thread_n}: {:.0} µs (median of 1000)", us(median(last)));
}
