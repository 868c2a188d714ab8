//! Postgres adapter benchmarks, on a fresh database of the test server
//! (`MEMLAYER_TEST_DATABASE_URL`, or the one `scripts/postgres start` runs;
//! dropped at the end).
//!
//! 1. Bulk append: `--messages` real-text messages through
//!    `MessageStore::append` in batches of `--batch` (one transaction and one
//!    binary COPY per batch), against `--singles` messages appended one call
//!    per message, each into a thread of its own kind.
//! 2. Concurrent appends (`--part concurrent`): `--concurrent` single
//!    messages from 1, 8 and 32 callers at once, each into a thread of its
//!    own of one tenant, then batches of 100 from 8 callers, on a pool of 8
//!    connections (the server's default `database.pool_size`); each run has
//!    a tenant of its own. With `--quota N`, every create and append checks
//!    a quota of N messages (and N threads, 1000·N bytes): far above what a
//!    run stores (`--quota 1000000000000`), the check runs beside the
//!    tenant's other appends; with N at most 1,500 (`--concurrent 1400
//!    --quota 1400`), every append is within the Postgres margin of the
//!    limit and takes the tenant's quota lock alone.
//! 3. Resource isolation (`--part rls`): what migration 12's row-level
//!    security costs reads. One tenant of 200 threads over 10 resources,
//!    100 messages each (20,000, every one with a 64-dimension vector);
//!    median latency (`--rounds` calls each) of a thread listing, a page of
//!    100 messages, the last 10, a tenant-wide lexical search, vector search
//!    (pgvector HNSW) and embedding counts, for the whole tenant and for a
//!    caller bound to one resource; with the policies, then without them
//!    (migration 12 reverted), alternately, `--repeat` times.
//! 4. pgvector HNSW on real-text embeddings (`scripts/bench_vectors`'s
//!    `vectors101k.f32`, as `bench_index` reads them): the first `--data`
//!    rows are loaded through `VectorIndex::upsert` (one tenant over
//!    `--threads` threads) with the HNSW index dropped, then the index is
//!    built once; the next `--queries` rows are the queries, tenant scope,
//!    k = `--k`. Exact search (index scans disabled, `search_exact`) gives the
//!    truth and the baseline QPS; each `--ef` value is one pass of every
//!    query through `VectorIndex::search`, one at a time, as the application
//!    calls it.
//!
//! ```text
//! cargo run --release -p memlayer-adapters-postgres --example bench_pg -- \
//!     [--part append,concurrent,vector] [--messages 100000] [--batch 1000] [--singles 100000] \
//!     [--concurrent 20000] [--quota N] [--rounds 300] [--repeat 2] \
//!     [--corpus target/bench-data/corpus101k.jsonl] \
//!     [--vectors target/bench-data/vectors101k.f32] [--dim 384] [--data 100000] [--queries 1000] \
//!     [--threads 1000] [--k 10] [--m 16] [--ef-construction 64] [--ef 40,64,100]
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr, reason = "benchmark binary")]
#![allow(clippy::cast_precision_loss, reason = "rates and ratios of counts")]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memlayer_adapters_postgres::{HnswConfig, Metric, PgVectorIndex, testing};
use memlayer_domain::{Embedding, MessageId, NewMessage, NewThread, Role, TenantId, ThreadId};
use memlayer_ports::{MessageStore, ScoredHit, SearchFilter, ThreadStore, VectorEntry, VectorIndex};

const MODEL: &str = "all-MiniLM-L6-v2";

#[derive(Debug)]
struct Args {
    parts: Vec<String>,
    messages: usize,
    batch: usize,
    singles: usize,
    concurrent: usize,
    quota: Option<u64>,
    rounds: usize,
    repeat: usize,
    corpus: PathBuf,
    vectors: PathBuf,
    dim: usize,
    data: usize,
    queries: usize,
    threads: usize,
    k: usize,
    m: u32,
    ef_construction: u32,
    ef: Vec<u32>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn parse_args() -> Res<Args> {
    let mut a = Args {
        parts: vec!["append".into(), "vector".into()],
        messages: 100_000,
        batch: 1_000,
        singles: 100_000,
        concurrent: 20_000,
        quota: None,
        rounds: 300,
        repeat: 2,
        corpus: PathBuf::from("target/bench-data/corpus101k.jsonl"),
        vectors: PathBuf::from("target/bench-data/vectors101k.f32"),
        dim: 384,
        data: 100_000,
        queries: 1_000,
        threads: 1_000,
        k: 10,
        m: 16,
        ef_construction: 64,
        ef: vec![40, 64, 100],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("see the doc comment of crates/adapters-postgres/examples/bench_pg.rs");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|_| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--part" => a.parts = value.split(',').map(str::to_owned).collect(),
            "--messages" => a.messages = num()?,
            "--batch" => a.batch = num()?,
            "--singles" => a.singles = num()?,
            "--concurrent" => a.concurrent = num()?,
            "--quota" => a.quota = Some(u64::try_from(num()?)?),
            "--rounds" => a.rounds = num()?,
            "--repeat" => a.repeat = num()?,
            "--corpus" => a.corpus = PathBuf::from(&value),
            "--vectors" => a.vectors = PathBuf::from(&value),
            "--dim" => a.dim = num()?,
            "--data" => a.data = num()?,
            "--queries" => a.queries = num()?,
            "--threads" => a.threads = num()?,
            "--k" => a.k = num()?,
            "--m" => a.m = u32::try_from(num()?)?,
            "--ef-construction" => a.ef_construction = u32::try_from(num()?)?,
            "--ef" => a.ef = value.split(',').map(|s| s.trim().parse::<u32>()).collect::<Result<_, _>>()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.batch == 0 || a.batch > memlayer_domain::MAX_BATCH || a.threads == 0 || a.k == 0 || a.ef.is_empty() {
        return Err("--batch (1..=1000), --threads, --k and --ef must be positive".into());
    }
    Ok(a)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

/// Message texts from the corpus (one JSON string per line), cycled, NUL
/// characters replaced by spaces.
fn texts(a: &Args, n: usize) -> Res<Vec<String>> {
    let raw = std::fs::read_to_string(&a.corpus).map_err(|e| format!("reading {}: {e}", a.corpus.display()))?;
    let lines: Vec<String> = raw.lines().map(serde_json::from_str::<String>).collect::<Result<_, _>>()?;
    if lines.is_empty() {
        return Err("empty corpus".into());
    }
    // Postgres text cannot hold NUL (the adapter answers `Invalid`); a few
    // docstrings quote one.
    Ok((0..n).map(|i| lines[i % lines.len()].replace('\0', " ")).collect())
}

async fn bench_append(a: &Args) -> Res<()> {
    let db = testing::fresh_database().await.ok_or("no Postgres server")?;
    let backend = db.backend().await;
    let tenant = TenantId::parse("bench")?;
    let corpus = texts(a, a.messages.max(a.singles))?;
    let message =
        |i: usize| NewMessage::text(if i.is_multiple_of(2) { Role::User } else { Role::Assistant }, &corpus[i]);

    let thread = backend.create(&tenant, NewThread::default()).await?.id;
    let batches: Vec<Vec<NewMessage>> = (0..a.messages)
        .collect::<Vec<_>>()
        .chunks(a.batch)
        .map(|c| c.iter().map(|&i| message(i)).collect::<Result<_, _>>())
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for batch in batches {
        backend.append(&tenant, thread, batch).await?;
    }
    let copy = started.elapsed();
    println!(
        "append, batches of {} (COPY): {} messages in {:.2?} = {:.0} messages/s",
        a.batch,
        a.messages,
        copy,
        per_sec(a.messages, copy)
    );

    let single = backend.create(&tenant, NewThread::default()).await?.id;
    let ones: Vec<NewMessage> = (0..a.singles).map(message).collect::<Result<_, _>>()?;
    let started = Instant::now();
    for (i, m) in ones.into_iter().enumerate() {
        backend.append(&tenant, single, vec![m]).await?;
        if (i + 1).is_multiple_of(10_000) {
            eprintln!("  singles: {} in {:.1?}", i + 1, started.elapsed());
        }
    }
    let singles = started.elapsed();
    println!(
        "append, one call per message: {} messages in {:.2?} = {:.0} messages/s",
        a.singles,
        singles,
        per_sec(a.singles, singles)
    );
    println!(
        "ratio (per-message rate, COPY / single): {:.1}×",
        per_sec(a.messages, copy) / per_sec(a.singles, singles)
    );
    Ok(())
}

/// `--part concurrent`: appends from several callers at once, each into a
/// thread of its own of one tenant (what serialises them is the store, not
/// the thread row).
async fn bench_concurrent(a: &Args) -> Res<()> {
    let db = testing::fresh_database().await.ok_or("no Postgres server")?;
    let backend = std::sync::Arc::new(
        memlayer_adapters_postgres::PgBackend::open(memlayer_adapters_postgres::PgConfig {
            pool_size: 8,
            ..memlayer_adapters_postgres::PgConfig::new(db.url.clone())
        })
        .await?,
    );
    let corpus = std::sync::Arc::new(texts(a, a.concurrent)?);
    let quota = a.quota.map_or(memlayer_domain::Quota::UNLIMITED, |n| memlayer_domain::Quota {
        threads: Some(n),
        messages: Some(n),
        bytes: Some(n.saturating_mul(1_000)),
    });
    let run = |clients: usize, batch: usize| {
        let tenant = TenantId::parse(format!("bench-{clients}-{batch}")).unwrap();
        let (backend, corpus) = (backend.clone(), corpus.clone());
        let per_client = corpus.len() / clients;
        async move {
            let started = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let (backend, tenant, corpus) = (backend.clone(), tenant.clone(), corpus.clone());
                    tokio::spawn(async move {
                        let thread = backend.create_within(&tenant, NewThread::default(), &quota).await.unwrap().id;
                        let mine: Vec<usize> = (c * per_client..(c + 1) * per_client).collect();
                        for chunk in mine.chunks(batch) {
                            let messages = chunk
                                .iter()
                                .map(|&i| NewMessage::text(Role::User, &corpus[i]).unwrap())
                                .collect::<Vec<_>>();
                            backend.append_within(&tenant, thread, messages, &quota).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (per_client * clients, started.elapsed())
        }
    };
    println!("quota: {quota:?}");
    for clients in [1, 8, 32] {
        let (n, took) = run(clients, 1).await;
        println!(
            "concurrent singles, {clients} callers: {n} messages in {took:.2?} = {:.0} messages/s",
            per_sec(n, took)
        );
    }
    let (n, took) = run(8, 100).await;
    println!("concurrent batches of 100, 8 callers: {n} messages in {took:.2?} = {:.0} messages/s", per_sec(n, took));
    Ok(())
}

/// The median time of `rounds` calls of `f`.
async fn median_of<F, Fut>(rounds: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    times[times.len() / 2]
}

/// `--part rls`: see the module's doc.
async fn bench_rls(a: &Args) -> Res<()> {
    use memlayer_domain::{Credential, PageSize, Principal, ResourceId, Scopes, ThreadFilter};
    use memlayer_ports::{Database, EmbeddingStore};

    let db = testing::fresh_database().await.ok_or("no Postgres server")?;
    let backend = db.backend().await;
    let tenant = TenantId::parse("bench")?;
    let corpus = texts(a, 20_000)?;
    let dim = 64;
    let index =
        PgVectorIndex::open(backend.clone(), dim, HnswConfig { exact_below: 0, ..HnswConfig::default() }).await?;
    let mut threads = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for t in 0..200 {
        let resource = ResourceId::parse(format!("user-{}", t % 10))?;
        let new = NewThread { resource_id: Some(resource), ..NewThread::default() };
        let thread = backend.create(&tenant, new).await?.id;
        let batch = (0..100)
            .map(|i| NewMessage::text(Role::User, &corpus[(t * 100 + i) % corpus.len()]))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = backend.append(&tenant, thread, batch).await?;
        let done = stored
            .iter()
            .map(|m| {
                let v: Vec<f32> = (0..dim)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % 1000) as f32 / 1000.0 - 0.5
                    })
                    .collect();
                Ok((m.id, Embedding::new(MODEL, v, dim)?))
            })
            .collect::<Result<Vec<_>, memlayer_domain::DomainError>>()?;
        let entries = backend.complete_jobs(done).await?;
        index.upsert(entries).await?;
        threads.push(thread);
    }
    index.build_hnsw().await?;
    let bound = Principal {
        tenant: tenant.clone(),
        scopes: Scopes::ALL,
        resource: Some(ResourceId::parse("user-0")?),
        credential: Credential::Anonymous,
    };
    let whole = SearchFilter::all_threads(tenant.clone());
    let resource_threads = backend.resource_threads(&tenant, &ResourceId::parse("user-0")?).await?;
    let within = SearchFilter::these_threads(tenant.clone(), resource_threads).within(bound.resource.clone());
    let query = Embedding::new(MODEL, (0..dim).map(|i| (i as f32 / dim as f32) - 0.5).collect(), dim)?;
    let word = corpus[0].split_whitespace().find(|w| w.len() > 4).unwrap_or("the").to_owned();
    let (thread, page, ten) = (threads[0], PageSize::new(100)?, PageSize::new(10)?);
    println!(
        "rls: 200 threads, 20000 messages and vectors (dim {dim}); lexical query {word:?}; {} calls each",
        a.rounds
    );
    let n = a.rounds;
    for repeat in 0..a.repeat {
        for policies in ["on", "off"] {
            if policies == "off" {
                let reverted = backend.migrate_down(1).await?;
                assert_eq!(reverted.first().map(|m| m.version), Some(12), "the newest migration is 12");
            } else if repeat > 0 {
                backend.migrate_up().await?;
                // `open` adds the vector table's policy (run it again as a server start would).
                PgVectorIndex::open(backend.clone(), dim, HnswConfig { exact_below: 0, ..HnswConfig::default() })
                    .await?;
            }
            for (who, label) in [(&tenant as &(dyn memlayer_domain::Reach + 'static), "tenant"), (&bound, "bound")] {
                let filter = if label == "tenant" { &whole } else { &within };
                let list = median_of(n, || async {
                    backend.list(who, &ThreadFilter::default(), None, PageSize::new(50).unwrap()).await.unwrap();
                })
                .await;
                let paged = median_of(n, || async {
                    backend.page(who, thread, None, None, page).await.unwrap();
                })
                .await;
                let last = median_of(n, || async {
                    backend.last(who, thread, ten).await.unwrap();
                })
                .await;
                let lexical = median_of(n, || async {
                    backend.lexical_search(filter, word.clone(), 10).await.unwrap();
                })
                .await;
                let vector = median_of(n, || async {
                    index.search(filter, &query, 10).await.unwrap();
                })
                .await;
                let counts = median_of(n, || async {
                    backend.embedding_counts(filter, MODEL.to_owned()).await.unwrap();
                })
                .await;
                println!(
                    "rls policies {policies} (pass {}), {label}: list 50 {:.0} µs, page 100 {:.0} µs, last 10 {:.0} µs, \
                     lexical {:.0} µs, vector {:.0} µs, counts {:.0} µs",
                    repeat + 1,
                    list.as_secs_f64() * 1e6,
                    paged.as_secs_f64() * 1e6,
                    last.as_secs_f64() * 1e6,
                    lexical.as_secs_f64() * 1e6,
                    vector.as_secs_f64() * 1e6,
                    counts.as_secs_f64() * 1e6,
                );
            }
        }
    }
    Ok(())
}

fn load_vectors(a: &Args) -> Res<Vec<Vec<f32>>> {
    let bytes = std::fs::read(&a.vectors).map_err(|e| format!("reading {}: {e}", a.vectors.display()))?;
    let rows = a.data + a.queries;
    if bytes.len() < rows * a.dim * 4 {
        return Err(format!("{} holds {} rows, need {rows}", a.vectors.display(), bytes.len() / (a.dim * 4)).into());
    }
    Ok(bytes[..rows * a.dim * 4]
        .chunks_exact(a.dim * 4)
        .map(|row| row.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        .collect())
}

fn recall(truth: &[Vec<ScoredHit>], got: &[Vec<ScoredHit>], k: usize) -> f64 {
    let (mut found, mut total) = (0usize, 0usize);
    for (t, g) in truth.iter().zip(got) {
        let want: HashSet<MessageId> = t.iter().take(k).map(|m| m.id).collect();
        found += g.iter().take(k).filter(|m| want.contains(&m.id)).count();
        total += want.len();
    }
    found as f64 / total as f64
}

async fn bench_vector(a: &Args) -> Res<()> {
    let db = testing::fresh_database().await.ok_or("no Postgres server")?;
    let backend = db.backend().await;
    let rows = load_vectors(a)?;
    let (data, query_rows) = rows.split_at(a.data);
    let tenant = TenantId::parse("bench")?;
    let threads: Vec<ThreadId> = (0..a.threads).map(|_| ThreadId::new()).collect();
    let entries: Vec<VectorEntry> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Ok(VectorEntry {
                id: MessageId::new(),
                tenant: tenant.clone(),
                thread: threads[i % a.threads],
                embedding: Embedding::new(MODEL, v.clone(), a.dim)?,
            })
        })
        .collect::<Result<_, memlayer_domain::DomainError>>()?;
    let queries: Vec<Embedding> =
        query_rows.iter().map(|v| Embedding::new(MODEL, v.clone(), a.dim)).collect::<Result<_, _>>()?;
    let filter = SearchFilter::all_threads(tenant.clone());
    let config = |ef_search: u32| HnswConfig {
        metric: Metric::Cosine,
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search,
        // Tenant scope holds every vector: never the small-scope exact path.
        exact_below: 0,
    };

    let index = PgVectorIndex::open(backend.clone(), a.dim, config(a.ef[0])).await?;
    index.drop_hnsw().await?;
    let started = Instant::now();
    for chunk in entries.chunks(1_000) {
        index.upsert(chunk.to_vec()).await?;
    }
    let load = started.elapsed();
    println!(
        "load {} vectors (upsert, 1,000 per call, no HNSW index): {load:.2?} = {:.0}/s",
        a.data,
        per_sec(a.data, load)
    );
    let started = Instant::now();
    index.build_hnsw().await?;
    let build = started.elapsed();
    println!("HNSW build (m {}, ef_construction {}): {build:.2?}", a.m, a.ef_construction);
    // Fresh statistics, as autovacuum would gather after a bulk load.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute(&format!("ANALYZE pgvector_index_{}", a.dim)).await?;
    let size: i64 = client
        .query_one("SELECT pg_relation_size(to_regclass($1))", &[&format!("pgvector_index_{}_hnsw_cosine", a.dim)])
        .await?
        .get(0);
    println!("HNSW index size: {:.0} MiB", size as f64 / (1024.0 * 1024.0));

    // Exact: the truth and the baseline.
    index.search_exact(&filter, &queries[0], a.k).await?;
    let started = Instant::now();
    let mut truth = Vec::with_capacity(queries.len());
    for q in &queries {
        truth.push(index.search_exact(&filter, q, a.k).await?.matches);
    }
    let exact = started.elapsed();
    let exact_qps = per_sec(queries.len(), exact);
    println!(
        "exact (index scans off): {} queries in {exact:.2?} = {exact_qps:.1} QPS, {:.1} ms mean",
        queries.len(),
        exact.as_secs_f64() * 1e3 / queries.len() as f64
    );

    println!();
    println!("| ef_search | QPS | mean latency | vs exact | recall@{} | strategy |", a.k);
    println!("|---|---|---|---|---|---|");
    println!(
        "| exact | {exact_qps:.1} | {:.1} ms | 1× | 1 | exact |",
        exact.as_secs_f64() * 1e3 / queries.len() as f64
    );
    for &ef in &a.ef {
        let index = PgVectorIndex::open(backend.clone(), a.dim, config(ef)).await?;
        index.search(&filter, &queries[0], a.k).await?;
        let mut got = Vec::with_capacity(queries.len());
        let mut strategies = HashSet::new();
        let started = Instant::now();
        for q in &queries {
            let r = index.search(&filter, q, a.k).await?;
            strategies.insert(r.strategy.as_str());
            got.push(r.matches);
        }
        let took = started.elapsed();
        let qps = per_sec(queries.len(), took);
        println!(
            "| {ef} | {qps:.0} | {:.2} ms | {:.1}× | {:.4} | {} |",
            took.as_secs_f64() * 1e3 / queries.len() as f64,
            qps / exact_qps,
            recall(&truth, &got, a.k),
            strategies.into_iter().collect::<Vec<_>>().join("+")
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let a = parse_args()?;
    println!("load average before: {}", uptime());
    if a.parts.iter().any(|p| p == "append") {
        bench_append(&a).await?;
        println!("load average: {}", uptime());
    }
    if a.parts.iter().any(|p| p == "concurrent") {
        bench_concurrent(&a).await?;
        println!("load average: {}", uptime());
    }
    if a.parts.iter().any(|p| p == "rls") {
        bench_rls(&a).await?;
        println!("load average: {}", uptime());
    }
    if a.parts.iter().any(|p| p == "vector") {
        bench_vector(&a).await?;
    }
    println!("load average after: {}", uptime());
    Ok(())
}
