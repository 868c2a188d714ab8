//! Semantic search over one thread of 10,000 real-text messages, against its
//! parts: embedding the query alone, and an exact scan of the thread's
//! vectors alone; then the same queries in lexical and hybrid mode (the
//! default: both legs and their fusion), each timed whole, query embedding
//! included.
//!
//! ```text
//! bash scripts/bench_vectors          # once: corpus + reference vectors under target/bench-data
//! cargo run --release -p memlayer-app --example bench_search
//! ```
//!
//! The thread's messages are the first 10,000 texts of the benchmark corpus;
//! their vectors are the reference vectors of `scripts/bench_vectors` (the
//! same ONNX model, cosine ≥ 0.9999 to the Rust embedder's), stored through
//! the embedding store exactly as the worker would. Queries are 200 held-out
//! corpus texts, embedded by the Rust embedder at query time.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memlayer_app::{AppendOptions, Config, build};
use memlayer_domain::{
    Embedding, NewMessage, NewThread, Role, SearchMode, SearchQuery, SearchScope, TenantId, TopK, Window,
};
use memlayer_ports::{SearchFilter, VectorEntry, VectorIndex as _};

const DIM: usize = 384;
const N: usize = 10_000;
const QUERIES: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    let texts: Vec<String> = std::io::BufReader::new(std::fs::File::open(data.join("corpus101k.jsonl")).unwrap())
        .lines()
        // Two corpus texts quote a NUL character, which no message may hold.
        .map(|l| serde_json::from_str::<String>(&l.unwrap()).unwrap().replace('\0', " "))
        .collect();
    let raw = std::fs::read(data.join("vectors101k.f32")).unwrap();
    let vectors: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(vectors.len(), texts.len() * DIM, "vectors match the corpus");

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.embedding.enabled = true;
    let services = build(config).await.unwrap();
    assert!(services.embedder_problem.is_none(), "model not provisioned: run scripts/provision");
    let model = services.search.embedder_info().model;
    let tenant = TenantId::default_tenant();
    let thread = services.memory.create_thread(&tenant, NewThread::default()).await.unwrap().id;
    for start in (0..N).step_by(1_000) {
        let batch =
            texts[start..start + 1_000].iter().map(|t| NewMessage::text(Role::User, t.clone()).unwrap()).collect();
        services.memory.append_messages(&tenant, thread, batch, AppendOptions::default()).await.unwrap();
    }
    // Store the reference vectors as the worker would, then index them.
    // The catch-up queues the jobs in rounds of 5,000 in the background:
    // wait until all are there.
    let mut jobs = Vec::new();
    for _ in 0..600 {
        jobs = services.embeddings.due_jobs(memlayer_domain::now(), N).await.unwrap();
        if jobs.len() == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(jobs.len(), N);
    let mut done = Vec::with_capacity(N);
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job.text, texts[i], "jobs come oldest first");
        let v = vectors[i * DIM..(i + 1) * DIM].to_vec();
        done.push((job.id, Embedding::new(model.clone(), v, DIM).unwrap()));
    }
    let mut entries: Vec<VectorEntry> = Vec::new();
    for chunk in done.chunks(1_000) {
        entries.extend(services.embeddings.complete_jobs(chunk.to_vec()).await.unwrap());
    }
    // The same vectors in a bare exact index: the "exact scan" baseline.
    let exact = Arc::new(memlayer_adapters_embed::ExactIndex::new());
    exact.upsert(entries.clone()).await.unwrap();
    drop(services);
    // Reopen: the server's own index is loaded from the stored vectors.
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.embedding.enabled = true;
    let services = build(config).await.unwrap();
    let model = services.search.embedder_info().model;

    let queries: Vec<String> = texts[texts.len() - QUERIES..].to_vec();
    let filter = SearchFilter::these_threads(tenant.clone(), vec![thread]);
    // Warm up.
    for q in queries.iter().take(10) {
        services.search.embed(&tenant, vec![q.clone()]).await.unwrap();
    }
    let (mut embed_t, mut scan_t, mut search_t, mut count_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut strategy = String::new();
    for q in &queries {
        let t = Instant::now();
        let e = services.search.embed(&tenant, vec![q.clone()]).await.unwrap().pop().unwrap();
        embed_t.push(t.elapsed());
        let t = Instant::now();
        let found = exact.search(&filter, &e, 10).await.unwrap();
        scan_t.push(t.elapsed());
        assert_eq!(found.matches.len(), 10);
        let query = SearchQuery::new(
            q.clone(),
            SearchScope::Thread(thread),
            SearchMode::Vector,
            TopK::new(10).unwrap(),
            Window::default(),
            None,
        )
        .unwrap();
        let t = Instant::now();
        services.embeddings.coverage(&filter, model.clone()).await.unwrap();
        count_t.push(t.elapsed());
        let t = Instant::now();
        let results = services.search.search(&tenant, &query).await.unwrap();
        search_t.push(t.elapsed());
        assert_eq!(results.hits.len(), 10);
        let same = results.hits.iter().zip(&found.matches).filter(|(h, m)| h.message.id == m.id).count();
        assert!(same >= 9, "the search finds the exact neighbours");
        strategy = results.plan.vector_index;
    }
    let mut by_mode = Vec::new();
    for mode in [SearchMode::Lexical, SearchMode::Hybrid] {
        let mut times = Vec::with_capacity(queries.len());
        let mut stages = String::new();
        for q in &queries {
            let query = SearchQuery::new(
                q.clone(),
                SearchScope::Thread(thread),
                mode,
                TopK::new(10).unwrap(),
                Window::default(),
                None,
            )
            .unwrap();
            let t = Instant::now();
            let results = services.search.search(&tenant, &query).await.unwrap();
            times.push(t.elapsed());
            assert!(!results.hits.is_empty());
            stages = results.plan.stages.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>().join(" + ");
        }
        times.sort_unstable();
        by_mode.push((mode, stages, median(times.clone()), times[times.len() * 95 / 100]));
    }
    let (e, s, f) = (median(embed_t), median(scan_t), median(search_t));
    println!("semantic search over one thread of {N} messages, {QUERIES} queries, medians:");
    println!("  embed query alone        {:>8.3} ms", ms(e));
    println!("  exact scan alone         {:>8.3} ms", ms(s));
    println!("  embed + scan             {:>8.3} ms", ms(e + s));
    println!("  coverage counts alone    {:>8.3} ms", ms(median(count_t)));
    println!("  full search (strategy {strategy}) {:>8.3} ms", ms(f));
    println!("  ratio full / (embed + scan): {:.3} (target < 1.3)", f.as_secs_f64() / (e + s).as_secs_f64());
    for (mode, stages, p50, p95) in by_mode {
        println!("  {mode} search ({stages}): p50 {:>8.3} ms, p95 {:>8.3} ms", ms(p50), ms(p95));
    }
}
