//! Benchmark of libSQL's native vector index (DiskANN) behind
//! [`LibsqlVectorIndex`]: insert rate, disk size, query latency and
//! recall@10 against exact brute force over the same vectors.
//!
//! ```text
//! cargo run --release -p memlayer-adapters-libsql --example bench_native_index -- \
//!     [--vectors target/bench-data/vectors101k.f32] [--dim 384] [--rows 20000] \
//!     [--queries 1000] [--batch 100] [--budget-secs 300] [--max-neighbors 32] \
//!     [--compress float8|none] [--threads 100] [--delete-every 10]
//! ```
//!
//! "native" rows force the index path (`exact_below = 0`; thin filters then
//! fall back to exact), "exact SQL" rows force `vector_distance_cos` over
//! every admitted row. The vector file is raw little-endian f32, `dim` per row; its last
//! `--queries` rows are the queries, the rows before them the data, of which
//! the first `--rows` are inserted (fewer when `--budget-secs` runs out).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a benchmark binary")]
#![allow(clippy::cast_precision_loss, reason = "reporting figures")]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, LibsqlVectorIndex, NativeIndexConfig};
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{SearchFilter, VectorEntry, VectorIndex};

struct Args {
    vectors: PathBuf,
    dim: usize,
    rows: usize,
    queries: usize,
    batch: usize,
    budget: Duration,
    max_neighbors: usize,
    compress: Option<String>,
    threads: usize,
    delete_every: usize,
}

fn args() -> Args {
    let mut a = Args {
        vectors: PathBuf::from("target/bench-data/vectors101k.f32"),
        dim: 384,
        rows: 20_000,
        queries: 1_000,
        batch: 100,
        budget: Duration::from_secs(300),
        max_neighbors: 32,
        compress: Some("float8".into()),
        threads: 100,
        delete_every: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--vectors" => a.vectors = value.into(),
            "--dim" => a.dim = value.parse().unwrap(),
            "--rows" => a.rows = value.parse().unwrap(),
            "--queries" => a.queries = value.parse().unwrap(),
            "--batch" => a.batch = value.parse().unwrap(),
            "--budget-secs" => a.budget = Duration::from_secs(value.parse().unwrap()),
            "--max-neighbors" => a.max_neighbors = value.parse().unwrap(),
            "--compress" => a.compress = (value != "none").then_some(value),
            "--threads" => a.threads = value.parse().unwrap(),
            "--delete-every" => a.delete_every = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 8 accumulators: vectorises.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Exact top-k ids by cosine (vectors are unit length) among live rows.
fn exact_top(data: &[Vec<f32>], live: &[bool], q: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> =
        data.iter().enumerate().filter(|(i, _)| live[*i]).map(|(i, v)| (dot(v, q), i)).collect();
    let k = k.min(scored.len());
    scored.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|x| x.1).collect()
}

struct QueryRun {
    latencies: Vec<Duration>,
    recall: f64,
    strategies: Vec<&'static str>,
}

impl QueryRun {
    fn pct(&self, p: f64) -> f64 {
        let mut l: Vec<f64> = self.latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        l.sort_by(f64::total_cmp);
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
    fn mean(&self) -> f64 {
        self.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / self.latencies.len() as f64
    }
    fn qps(&self) -> f64 {
        self.latencies.len() as f64 / self.latencies.iter().map(Duration::as_secs_f64).sum::<f64>()
    }
}

async fn run_queries(
    index: &LibsqlVectorIndex,
    filter: &SearchFilter,
    ids: &[MessageId],
    truth: &[Vec<usize>],
    queries: &[Vec<f32>],
    dim: usize,
) -> QueryRun {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut strategies = Vec::new();
    let mut found = 0usize;
    let mut wanted = 0usize;
    for (q, t) in queries.iter().zip(truth) {
        let e = Embedding::new("bench", q.clone(), dim).unwrap();
        let start = Instant::now();
        let got = index.search(filter, &e, 10).await.unwrap();
        latencies.push(start.elapsed());
        if !strategies.contains(&got.strategy.as_str()) {
            strategies.push(got.strategy.as_str());
        }
        let truth_ids: HashSet<MessageId> = t.iter().map(|&i| ids[i]).collect();
        found += got.matches.iter().filter(|m| truth_ids.contains(&m.id)).count();
        wanted += truth_ids.len();
    }
    QueryRun { latencies, recall: found as f64 / wanted as f64, strategies }
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let bytes = std::fs::read(&a.vectors).unwrap_or_else(|e| panic!("{}: {e}", a.vectors.display()));
    let row_bytes = a.dim * 4;
    assert_eq!(bytes.len() % row_bytes, 0, "file is not a whole number of {}-dim rows", a.dim);
    let total = bytes.len() / row_bytes;
    assert!(total > a.queries, "{total} rows, {} queries", a.queries);
    let mut all: Vec<Vec<f32>> = bytes
        .chunks_exact(row_bytes)
        .map(|r| r.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        .collect();
    all.iter_mut().for_each(|v| normalise(v));
    let queries: Vec<Vec<f32>> = all.split_off(total - a.queries);
    let mut data = all;
    data.truncate(a.rows);
    println!(
        "vectors: {} ({} rows x {} dims); inserting up to {} rows, {} queries",
        a.vectors.display(),
        total,
        a.dim,
        data.len(),
        queries.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::file(&path)).await.unwrap();
    let config =
        NativeIndexConfig { max_neighbors: a.max_neighbors, compress_neighbors: a.compress.clone(), exact_below: 0 };
    let native = LibsqlVectorIndex::open(backend.clone(), a.dim, config.clone()).await.unwrap();
    let exact =
        LibsqlVectorIndex::open(backend.clone(), a.dim, NativeIndexConfig { exact_below: usize::MAX, ..config })
            .await
            .unwrap();

    let tenant = TenantId::parse("bench").unwrap();
    let threads: Vec<ThreadId> = (0..a.threads.max(1)).map(|_| ThreadId::new()).collect();
    let ids: Vec<MessageId> = (0..data.len()).map(|_| MessageId::new()).collect();

    // Inserts: one write transaction per batch, until done or out of budget.
    let start = Instant::now();
    let mut inserted = 0;
    let mut last_report = Instant::now();
    while inserted < data.len() && start.elapsed() < a.budget {
        let end = (inserted + a.batch).min(data.len());
        let batch = (inserted..end)
            .map(|i| VectorEntry {
                id: ids[i],
                tenant: tenant.clone(),
                thread: threads[i % threads.len()],
                embedding: Embedding::new("bench", data[i].clone(), a.dim).unwrap(),
            })
            .collect();
        native.upsert(batch).await.unwrap();
        inserted = end;
        if last_report.elapsed() > Duration::from_secs(30) {
            println!("  {inserted} rows, {:.0}/s", inserted as f64 / start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    let insert_time = start.elapsed();
    data.truncate(inserted);
    let ids = &ids[..inserted];
    let insert_rate = inserted as f64 / insert_time.as_secs_f64();

    // Disk: checkpoint the WAL into the file first.
    let raw = libsql::Builder::new_local(&path).build().await.unwrap().connect().unwrap();
    raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").await.unwrap();
    let db_bytes = file_size(&path);
    let wal_bytes = file_size(&dir.path().join("bench.db-wal"));

    let whole = SearchFilter::all_threads(tenant.clone());
    let mut live = vec![true; inserted];
    let truth: Vec<Vec<usize>> = queries.iter().map(|q| exact_top(&data, &live, q, 10)).collect();
    let t0 = Instant::now();
    for q in &queries {
        std::hint::black_box(exact_top(&data, &live, q, 10));
    }
    let brute_ms = t0.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;

    let native_run = run_queries(&native, &whole, ids, &truth, &queries, a.dim).await;
    let exact_run = run_queries(&exact, &whole, ids, &truth, &queries, a.dim).await;
    // Narrower filters: a tenth of the threads, and one thread.
    let scoped = |n: usize| {
        let filter = SearchFilter::these_threads(tenant.clone(), threads[..n].to_vec());
        let admitted: Vec<bool> = (0..inserted).map(|i| i % threads.len() < n).collect();
        let truth: Vec<Vec<usize>> = queries.iter().map(|q| exact_top(&data, &admitted, q, 10)).collect();
        (filter, truth, admitted.iter().filter(|x| **x).count())
    };
    let (tenth, tenth_truth, tenth_rows) = scoped((threads.len() / 10).max(1));
    let tenth_native = run_queries(&native, &tenth, ids, &tenth_truth, &queries, a.dim).await;
    let tenth_exact = run_queries(&exact, &tenth, ids, &tenth_truth, &queries, a.dim).await;
    let (one, one_truth, one_rows) = scoped(1);
    let one_native = run_queries(&native, &one, ids, &one_truth, &queries, a.dim).await;
    let one_exact = run_queries(&exact, &one, ids, &one_truth, &queries, a.dim).await;

    // Deletions: DiskANN can leave nodes unreachable; recall over the rest.
    let doomed: Vec<MessageId> = (0..inserted).filter(|i| i % a.delete_every.max(1) == 0).map(|i| ids[i]).collect();
    let t0 = Instant::now();
    for chunk in doomed.chunks(a.batch) {
        native.remove(chunk.to_vec()).await.unwrap();
    }
    let delete_rate = doomed.len() as f64 / t0.elapsed().as_secs_f64();
    for i in (0..inserted).step_by(a.delete_every.max(1)) {
        live[i] = false;
    }
    let truth_after: Vec<Vec<usize>> = queries.iter().map(|q| exact_top(&data, &live, q, 10)).collect();
    let after_run = run_queries(&native, &whole, ids, &truth_after, &queries, a.dim).await;

    println!();
    println!(
        "libSQL native index: {} dims, max_neighbors={}, compress_neighbors={}, {} threads in one tenant",
        a.dim,
        a.max_neighbors,
        a.compress.as_deref().unwrap_or("none"),
        threads.len()
    );
    println!(
        "inserted {inserted} rows in {:.1} s ({insert_rate:.0} vectors/s, batches of {} per transaction){}",
        insert_time.as_secs_f64(),
        a.batch,
        if inserted < a.rows { " — stopped by the time budget" } else { "" }
    );
    println!(
        "disk after checkpoint: {:.1} MB ({:.0} bytes/vector; raw f32 is {} bytes), WAL {} bytes",
        db_bytes as f64 / 1e6,
        db_bytes as f64 / inserted as f64,
        a.dim * 4,
        wal_bytes
    );
    println!("deleted {} rows at {delete_rate:.0}/s", doomed.len());
    println!();
    println!(
        "| {:<46} | {:<12} | mean ms | p50 ms | p95 ms |   QPS | recall@10 |",
        format!("search, k=10, {} queries", queries.len()),
        "strategy"
    );
    println!("|{}|{}|---------|--------|--------|-------|-----------|", "-".repeat(48), "-".repeat(14));
    let tenth_name = format!("{tenth_rows} rows (1/10 threads), native");
    let tenth_exact_name = format!("{tenth_rows} rows (1/10 threads), exact SQL");
    let one_name = format!("{one_rows} rows (1 thread), native");
    let one_exact_name = format!("{one_rows} rows (1 thread), exact SQL");
    for (name, r) in [
        ("tenant scope, native index", &native_run),
        ("tenant scope, exact SQL (vector_distance_cos)", &exact_run),
        (tenth_name.as_str(), &tenth_native),
        (tenth_exact_name.as_str(), &tenth_exact),
        (one_name.as_str(), &one_native),
        (one_exact_name.as_str(), &one_exact),
        ("tenant scope after deleting 1/10, native", &after_run),
    ] {
        println!(
            "| {name:<46} | {:<12} | {:>7.2} | {:>6.2} | {:>6.2} | {:>5.0} | {:>9.3} |",
            r.strategies.join("+"),
            r.mean(),
            r.pct(0.5),
            r.pct(0.95),
            r.qps(),
            r.recall
        );
    }
    println!(
        "| {:<46} | {:<12} | {brute_ms:>7.2} |        |        | {:>5.0} |     1.000 |",
        "tenant scope, brute force in Rust (RAM)",
        "exact",
        1e3 / brute_ms
    );
}
