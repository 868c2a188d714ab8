//! ExactIndex vs HnswIndex on real-text embeddings.
//!
//! Input: raw little-endian f32 vectors, row-major (`scripts/bench_vectors`
//! makes 101,000 all-MiniLM-L6-v2 embeddings of `scripts/corpus.py`'s
//! corpus). The first `--data` rows are indexed (one tenant, spread over
//! `--threads` threads), the next `--queries` rows are the queries.
//!
//! Measures: exact QPS (tenant scope, k=10), one HNSW graph build (and its
//! snapshot), then for each `--ef` value the index reopened from that
//! snapshot with that `ef_search` (a load, not a rebuild): load time, QPS,
//! recall@10 against exact. Also thread-scoped queries (the exact path) and
//! memory. Queries run one at a time through the `VectorIndex` port, as the
//! application calls it.
//!
//! ```text
//! cargo run --release -p memlayer-adapters-embed --example bench_index -- \
//!     --vectors target/bench-data/vectors101k.f32 [--dim 384] [--data 100000] [--queries 1000] \
//!     [--threads 1000] [--k 10] [--ef 16,32,48,64,100] [--ef-construction 100] \
//!     [--exact-below 20000] [--snapshot target/bench-data/hnsw100k.idx] [--reuse-snapshot]
//! ```
#![allow(clippy::unwrap_used, reason = "benchmark binary")]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use memlayer_adapters_embed::{ExactIndex, HnswConfig, HnswIndex};
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{ScoredHit, SearchFilter, VectorEntry, VectorIndex};

const MODEL: &str = "all-MiniLM-L6-v2";

#[derive(Debug)]
struct Args {
    vectors: PathBuf,
    dim: usize,
    data: usize,
    queries: usize,
    threads: usize,
    k: usize,
    ef: Vec<usize>,
    ef_construction: usize,
    exact_below: usize,
    snapshot: PathBuf,
    reuse_snapshot: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        vectors: PathBuf::from("target/bench-data/vectors101k.f32"),
        dim: 384,
        data: 100_000,
        queries: 1000,
        threads: 1000,
        k: 10,
        ef: vec![16, 32, 48, 64, 100],
        ef_construction: 100,
        exact_below: 20_000,
        snapshot: PathBuf::from("target/bench-data/hnsw100k.idx"),
        reuse_snapshot: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--reuse-snapshot" {
            a.reuse_snapshot = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("see the doc comment of crates/adapters-embed/examples/bench_index.rs");
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().with_context(|| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--vectors" => a.vectors = PathBuf::from(&value),
            "--dim" => a.dim = num()?,
            "--data" => a.data = num()?,
            "--queries" => a.queries = num()?,
            "--threads" => a.threads = num()?,
            "--k" => a.k = num()?,
            "--ef-construction" => a.ef_construction = num()?,
            "--exact-below" => a.exact_below = num()?,
            "--snapshot" => a.snapshot = PathBuf::from(&value),
            "--ef" => {
                a.ef = value.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>().context("--ef")?;
            }
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(a.threads > 0 && a.k > 0 && !a.ef.is_empty(), "--threads, --k and --ef must be positive");
    Ok(a)
}

fn load_vectors(a: &Args) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(&a.vectors).with_context(|| format!("reading {}", a.vectors.display()))?;
    let rows = a.data + a.queries;
    ensure!(
        bytes.len() >= rows * a.dim * 4,
        "{} holds {} rows of {}, need {rows}",
        a.vectors.display(),
        bytes.len() / (a.dim * 4),
        a.dim
    );
    Ok(bytes[..rows * a.dim * 4]
        .chunks_exact(a.dim * 4)
        .map(|row| row.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        .collect())
}

/// A UUID-shaped id, the same on every run.
fn fixed_id(kind: u32, i: usize) -> String {
    format!("00000000-0000-7000-8{kind:03x}-{i:012x}")
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Run {
    results: Vec<Vec<ScoredHit>>,
    elapsed: Duration,
    strategies: HashSet<&'static str>,
}

impl Run {
    fn qps(&self) -> f64 {
        self.results.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.results.len() as f64
    }
}

async fn run(index: &dyn VectorIndex, filters: &[SearchFilter], queries: &[Embedding], k: usize) -> Run {
    // One warm-up query (page faults, pools).
    index.search(&filters[0], &queries[0], k).await.unwrap();
    let mut results = Vec::with_capacity(queries.len());
    let mut strategies = HashSet::new();
    let started = Instant::now();
    for (i, q) in queries.iter().enumerate() {
        let got = index.search(&filters[i % filters.len()], q, k).await.unwrap();
        strategies.insert(got.strategy.as_str());
        results.push(got.matches);
    }
    Run { results, elapsed: started.elapsed(), strategies }
}

fn recall(truth: &[Vec<ScoredHit>], got: &[Vec<ScoredHit>], k: usize) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for (t, g) in truth.iter().zip(got) {
        let want: HashSet<MessageId> = t.iter().take(k).map(|m| m.id).collect();
        found += g.iter().take(k).filter(|m| want.contains(&m.id)).count();
        total += want.len();
    }
    found as f64 / total as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let t0 = Instant::now();
    let rows = load_vectors(&a)?;
    let (data, query_rows) = rows.split_at(a.data);
    eprintln!("loaded {} vectors of {} in {:.1?}", rows.len(), a.dim, t0.elapsed());

    let tenant = TenantId::parse("bench")?;
    // Fixed ids, so that --reuse-snapshot finds the same entries.
    let threads: Vec<ThreadId> = (0..a.threads).map(|i| fixed_id(1, i).parse().unwrap()).collect();
    let entries: Vec<VectorEntry> = data
        .iter()
        .enumerate()
        .map(|(i, v)| VectorEntry {
            id: fixed_id(2, i).parse().unwrap(),
            tenant: tenant.clone(),
            thread: threads[i % a.threads],
            embedding: Embedding::new(MODEL, v.clone(), a.dim).unwrap(),
        })
        .collect();
    let queries: Vec<Embedding> = query_rows.iter().map(|v| Embedding::new(MODEL, v.clone(), a.dim).unwrap()).collect();
    let whole_tenant = vec![SearchFilter::all_threads(tenant.clone())];
    let one_thread: Vec<SearchFilter> =
        threads.iter().map(|t| SearchFilter::these_threads(tenant.clone(), vec![*t])).collect();
    drop(rows);

    // Exact ------------------------------------------------------------------------------
    let rss0 = rss_mib();
    let exact = ExactIndex::new();
    let started = Instant::now();
    for batch in entries.chunks(1000) {
        exact.upsert(batch.to_vec()).await?;
    }
    let exact_insert = started.elapsed();
    let exact_rss = rss_mib() - rss0;
    let truth = run(&exact, &whole_tenant, &queries, a.k).await;
    let exact_thread = run(&exact, &one_thread, &queries, a.k).await;
    eprintln!("exact: {:.1} QPS tenant scope, {:.0} µs thread scope", truth.qps(), exact_thread.micros());

    // The blocking pool's round trip, against which inline scans are weighed.
    let started = Instant::now();
    for _ in 0..1000 {
        tokio::task::spawn_blocking(|| ()).await?;
    }
    let hop = started.elapsed() / 1000;

    // HNSW build -------------------------------------------------------------------------
    let max_ef = *a.ef.iter().max().unwrap();
    let config = |ef_search: usize| HnswConfig {
        snapshot_path: Some(a.snapshot.clone()),
        rebuild_threshold: usize::MAX,
        exact_below: a.exact_below,
        ef_construction: a.ef_construction,
        ef_search,
    };
    let mut build = None;
    if !(a.reuse_snapshot && a.snapshot.exists()) {
        let _ = std::fs::remove_file(&a.snapshot);
        let hnsw = HnswIndex::open(config(max_ef))?;
        let started = Instant::now();
        for batch in entries.chunks(1000) {
            hnsw.upsert(batch.to_vec()).await?;
        }
        let insert = started.elapsed();
        let started = Instant::now();
        hnsw.rebuild_now().await?;
        let rebuild = started.elapsed();
        let started = Instant::now();
        hnsw.flush().await?;
        let write = started.elapsed();
        let stats = hnsw.stats();
        ensure!(stats.models[0].graph == a.data, "graph holds {} points", stats.models[0].graph);
        build = Some((insert, rebuild.saturating_sub(write), write, stats.models[0].heap_bytes));
        drop(hnsw);
    }
    let snapshot_bytes = std::fs::metadata(&a.snapshot)?.len();

    // HNSW per ef_search -----------------------------------------------------------------
    struct EfRow {
        ef: usize,
        load: Duration,
        qps: f64,
        micros: f64,
        recall: f64,
        strategies: String,
        heap: usize,
        rss: Option<f64>,
    }
    let mut rows_out = Vec::new();
    let mut thread_hnsw = None;
    for &ef in &a.ef {
        let rss0 = rss_mib();
        let started = Instant::now();
        let hnsw = HnswIndex::open(config(ef))?;
        let load = started.elapsed();
        let stats = hnsw.stats();
        ensure!(stats.rebuilds == 0 && stats.models[0].graph == a.data, "snapshot did not load: {stats:?}");
        // Meaningful for the first load only: later ones reuse freed memory.
        let rss = rows_out.is_empty().then(|| rss_mib() - rss0);
        let got = run(&hnsw, &whole_tenant, &queries, a.k).await;
        let mut strategies: Vec<&str> = got.strategies.iter().copied().collect();
        strategies.sort_unstable();
        rows_out.push(EfRow {
            ef,
            load,
            qps: got.qps(),
            micros: got.micros(),
            recall: recall(&truth.results, &got.results, a.k),
            strategies: strategies.join("+"),
            heap: stats.models[0].heap_bytes,
            rss,
        });
        eprintln!("ef_search {ef}: {:.0} QPS, recall {:.4}", got.qps(), rows_out.last().unwrap().recall);
        if thread_hnsw.is_none() {
            thread_hnsw = Some(run(&hnsw, &one_thread, &queries, a.k).await);
        }
    }

    // Report ----------------------------------------------------------------------------
    println!();
    println!(
        "## Vector index benchmark: {} real-text embeddings ({MODEL}, dim {}), {} queries, k={}, one tenant over {} threads",
        a.data, a.dim, a.queries, a.k, a.threads
    );
    println!();
    println!(
        "| index | ef_search | load (snapshot) | QPS | mean latency | speed-up vs exact | recall@{} | strategy | heap (est.) | RSS delta |",
        a.k
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| exact | – | insert {:.2?} | {:.1} | {:.0} µs | 1.0× | 1.0000 | {} | {:.0} MiB | {:.0} MiB |",
        exact_insert,
        truth.qps(),
        truth.micros(),
        truth.strategies.iter().copied().collect::<Vec<_>>().join("+"),
        mib(exact.heap_bytes()),
        exact_rss
    );
    for r in &rows_out {
        println!(
            "| hnsw | {} | {:.2?} | {:.0} | {:.0} µs | {:.1}× | {:.4} | {} | {:.0} MiB | {} |",
            r.ef,
            r.load,
            r.qps,
            r.micros,
            r.qps / truth.qps(),
            r.recall,
            r.strategies,
            mib(r.heap),
            r.rss.map_or("–".to_owned(), |m| format!("{m:.0} MiB"))
        );
    }
    println!();
    match build {
        Some((insert, graph, write, heap)) => println!(
            "HNSW: upsert {} into the delta {insert:.2?}; graph build (ef_construction {}, M 32) {graph:.2?}; snapshot write {write:.2?}; heap ~{:.0} MiB",
            a.data,
            a.ef_construction,
            mib(heap)
        ),
        None => println!("HNSW: graph reused from {} (--reuse-snapshot)", a.snapshot.display()),
    }
    println!("Snapshot {}: {:.1} MiB", a.snapshot.display(), snapshot_bytes as f64 / (1024.0 * 1024.0));
    println!(
        "Exact index heap ~{:.0} MiB ({} × {} × 4 B of vectors = {:.0} MiB)",
        mib(exact.heap_bytes()),
        a.data,
        a.dim,
        mib(a.data * a.dim * 4)
    );
    let th = thread_hnsw.unwrap();
    println!(
        "Thread scope ({} entries per thread): exact index {:.1} µs/query ({}), hnsw index {:.1} µs/query ({})",
        a.data / a.threads,
        exact_thread.micros(),
        exact_thread.strategies.iter().copied().collect::<Vec<_>>().join("+"),
        th.micros(),
        th.strategies.iter().copied().collect::<Vec<_>>().join("+"),
    );
    println!("spawn_blocking round trip: {hop:.1?} (scans under 2^17 multiply-adds run inline)");
    ensure!(recall(&exact_thread.results, &th.results, a.k) == 1.0, "thread-scoped results differ");
    let best = rows_out.iter().filter(|r| r.recall >= 0.95).max_by(|x, y| x.qps.total_cmp(&y.qps));
    match best {
        Some(r) => println!(
            "Acceptance (recall@{} >= 0.95 at >= 10x exact QPS): best ef_search {} gives recall {:.4} at {:.1}x -> {}",
            a.k,
            r.ef,
            r.recall,
            r.qps / truth.qps(),
            if r.qps >= 10.0 * truth.qps() { "MET" } else { "NOT MET" }
        ),
        None => println!("Acceptance: no ef_search setting reached recall 0.95 -> NOT MET"),
    }
    Ok(())
}
