//! The memlayer side of `scripts/bench_peers` (the race against Mastra's
//! memory): memlayer used as an embedded library, in process, as Mastra's
//! `Memory` is used from Node, on the same work as `scripts/peers/mastra.mjs`.
//! Prints one JSON object (fields in `scripts/bench_peers.py`).
//!
//! ```text
//! cargo run --release -p memlayer-app --example bench_peers -- \
//!     --dir DIR --texts FILE --vectors FILE [--synchronous full|normal|deferred] [--key value ...]
//! ```
//!
//! The message lines go through `MemoryService` (every check an append
//! makes: quota, rate limits, the thread's reach, token counting off as
//! Mastra's has none) on the embedded libSQL file with embeddings off:
//! Mastra's `Memory` without a vector store embeds nothing either. The
//! vector lines use the ports the embedding worker uses, with the
//! precomputed vectors in place of the model: `EmbeddingStore::complete_jobs`
//! (the vectors stored durably, in the database) and `VectorIndex::upsert`
//! (the in-process index), then `VectorIndex::search` scoped to one thread.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss, reason = "benchmark binary")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memlayer_app::{AppendOptions, Config, Services, Synchronous, build};
use memlayer_domain::{Direction, Embedding, MessageId, NewMessage, NewThread, PageSize, Role, TenantId, ThreadId};
use memlayer_ports::SearchFilter;
use serde_json::{Value, json};

/// The parameters both sides take (`scripts/peers/mastra.mjs`), with the same defaults.
struct Params {
    dir: PathBuf,
    texts: PathBuf,
    vectors: PathBuf,
    synchronous: String,
    numbers: Vec<(&'static str, usize)>,
}

impl Params {
    fn parse() -> Self {
        let mut p = Self {
            dir: PathBuf::new(),
            texts: PathBuf::new(),
            vectors: PathBuf::new(),
            synchronous: "full".to_owned(),
            numbers: vec![
                ("dim", 384),
                ("vector-data", 5882),
                ("vector-queries", 100),
                ("vector-threads", 10),
                ("batch-total", 10_000),
                ("batch", 1_000),
                ("single", 1_000),
                ("clients", 8),
                ("long", 100_000),
                ("last-iters", 1_000),
                ("page-iters", 200),
                ("warmup", 100),
            ],
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let [key, value] = pair else { panic!("argument {} has no value", pair[0]) };
            let key = key.trim_start_matches("--");
            match key {
                "dir" => p.dir = value.into(),
                "texts" => p.texts = value.into(),
                "vectors" => p.vectors = value.into(),
                "synchronous" => p.synchronous = value.clone(),
                _ => {
                    let slot = p.numbers.iter_mut().find(|(k, _)| *k == key);
                    slot.unwrap_or_else(|| panic!("unknown argument --{key}")).1 = value.parse().unwrap();
                }
            }
        }
        assert!(
            !p.dir.as_os_str().is_empty() && p.texts.is_file() && p.vectors.is_file(),
            "--dir, --texts and --vectors"
        );
        p
    }

    fn get(&self, key: &str) -> usize {
        self.numbers.iter().find(|(k, _)| *k == key).unwrap().1
    }

    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.numbers {
            m.insert((*k).to_owned(), json!(v));
        }
        m.insert("synchronous".into(), json!(self.synchronous));
        Value::Object(m)
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2].as_secs_f64() * 1e6
}

/// `database.commit_delay_ms` of `--synchronous deferred`.
const DEFERRED_COMMIT_DELAY_MS: u64 = 10;

async fn open(p: &Params, sub: &str) -> Services {
    let data_dir = p.dir.join(sub);
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = Config { data_dir, ..Config::default() };
    config.embedding.enabled = false;
    config.database.synchronous = match p.synchronous.as_str() {
        "full" => Synchronous::Full,
        "normal" => Synchronous::Normal,
        // NORMAL's promise with deferred commits (`database.commit_delay_ms`).
        "deferred" => {
            config.database.commit_delay_ms = DEFERRED_COMMIT_DELAY_MS;
            Synchronous::Normal
        }
        other => panic!("--synchronous {other}: full, normal or deferred"),
    };
    build(config).await.unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let p = Params::parse();
    let texts: Vec<String> = std::fs::read_to_string(&p.texts)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let message = |i: usize| {
        let role = if i.is_multiple_of(2) { Role::User } else { Role::Assistant };
        NewMessage::text(role, texts[i % texts.len()].clone()).unwrap()
    };
    let tenant = TenantId::default_tenant();
    let services = open(&p, "messages").await;
    let background = services.start_background();
    let memory = services.memory.clone();
    let no = AppendOptions::default;
    let new_thread = || async { memory.create_thread(&tenant, NewThread::default()).await.unwrap().id };
    let mut lines = serde_json::Map::new();
    let mut checks = Vec::new();

    // Warm-up (not measured): the same calls, on a thread of their own.
    {
        let t = new_thread().await;
        for i in 0..p.get("warmup") {
            memory.append_message(&tenant, t, message(i), no()).await.unwrap();
        }
        memory.last_messages(&tenant, t, PageSize::new(10).unwrap()).await.unwrap();
    }

    // 1. Saves in batches.
    let batched = |thread: ThreadId, total: usize| {
        let memory = memory.clone();
        let tenant = tenant.clone();
        let batch = p.get("batch");
        let message = &message;
        async move {
            let t0 = Instant::now();
            for start in (0..total).step_by(batch) {
                let msgs = (start..start + batch).map(message).collect();
                memory.append_messages(&tenant, thread, msgs, AppendOptions::default()).await.unwrap();
            }
            total as f64 / t0.elapsed().as_secs_f64()
        }
    };
    let t = new_thread().await;
    lines.insert("batched".into(), json!(batched(t, p.get("batch-total")).await));

    // 2. Single saves, one call at a time.
    {
        let t = new_thread().await;
        let t0 = Instant::now();
        for i in 0..p.get("single") {
            memory.append_message(&tenant, t, message(i), no()).await.unwrap();
        }
        lines.insert("single".into(), json!(p.get("single") as f64 / t0.elapsed().as_secs_f64()));
    }

    // 3. The same from concurrent clients, each on its own thread.
    {
        let (clients, per) = (p.get("clients"), p.get("single") / p.get("clients"));
        let mut threads = Vec::new();
        for _ in 0..clients {
            threads.push(new_thread().await);
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = threads
            .into_iter()
            .enumerate()
            .map(|(c, t)| {
                let (memory, tenant) = (memory.clone(), tenant.clone());
                let msgs: Vec<NewMessage> = (0..per).map(|i| message(c * per + i)).collect();
                tokio::spawn(async move {
                    for m in msgs {
                        memory.append_message(&tenant, t, m, AppendOptions::default()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        lines.insert("concurrent".into(), json!((per * clients) as f64 / t0.elapsed().as_secs_f64()));
    }

    // 4-6. A long thread: last 10, paging through all, pages of 100 at the start and the end.
    {
        let long = p.get("long");
        let t = new_thread().await;
        lines.insert("fill".into(), json!(batched(t, long).await));

        let ten = PageSize::new(10).unwrap();
        let mut times = Vec::new();
        for _ in 0..p.get("last-iters") {
            let t0 = Instant::now();
            let got = memory.last_messages(&tenant, t, ten).await.unwrap();
            times.push(t0.elapsed());
            assert_eq!(got.len(), 10);
        }
        lines.insert("last10_us".into(), json!(median(times)));
        let last = memory.last_messages(&tenant, t, ten).await.unwrap();
        checks
            .push(json!(["last 10 ends with the newest message", last[9].content == texts[(long - 1) % texts.len()]]));

        let hundred = PageSize::new(100).unwrap();
        let page = |cursor| memory.page_messages(&tenant, t, cursor, Some(Direction::Forward), hundred);
        // `end`: the cursor of the last page that held messages (the walk
        // may end on an empty page).
        let (mut seen, mut ordered, mut cursor, mut end) = (0, true, None, None);
        let t0 = Instant::now();
        loop {
            let got = page(cursor).await.unwrap();
            for m in &got.items {
                ordered &= m.content == texts[seen % texts.len()];
                seen += 1;
            }
            if !got.items.is_empty() {
                end = cursor;
            }
            let Some(next) = got.next_cursor else { break };
            cursor = Some(next);
        }
        lines.insert("walk_s".into(), json!(t0.elapsed().as_secs_f64()));
        checks.push(json!(["paging through everything sees every message in order", ordered && seen == long]));
        let mut times = Vec::new();
        for _ in 0..p.get("page-iters") {
            let t0 = Instant::now();
            assert_eq!(page(None).await.unwrap().items.len(), 100);
            times.push(t0.elapsed());
        }
        lines.insert("page_first_us".into(), json!(median(times)));
        let mut times = Vec::new();
        for _ in 0..p.get("page-iters") {
            let t0 = Instant::now();
            assert_eq!(page(end).await.unwrap().items.len(), 100);
            times.push(t0.elapsed());
        }
        lines.insert("page_last_us".into(), json!(median(times)));
        let end_page = page(end).await.unwrap();
        checks.push(json!([
            "the page at the end holds the last 100 messages",
            end_page.items.last().unwrap().content == texts[(long - 1) % texts.len()]
                && end_page.items[0].content == texts[(long - 100) % texts.len()]
        ]));
    }
    background.stop().await;
    let durability = services.database.durability().await.unwrap();
    drop(services);

    let vector = vectors(&p, &texts).await;
    let result = json!({
        "side": format!("memlayer-{}", p.synchronous),
        "label": if p.synchronous == "deferred" {
            format!("memlayer (embedded, synchronous=NORMAL, commit_delay_ms={DEFERRED_COMMIT_DELAY_MS})")
        } else {
            format!("memlayer (embedded, synchronous={})", p.synchronous.to_uppercase())
        },
        "versions": { "memlayer": env!("CARGO_PKG_VERSION") },
        "settings": durability.iter().map(|d| format!("{}={}", d.name, d.value)).collect::<Vec<_>>().join(", "),
        "params": p.json(),
        "lines": lines,
        "vector": vector,
        "checks": checks,
    });
    println!("{result}");
}

/// Stores and indexes the precomputed vectors of messages spread over
/// `vector-threads` threads, then runs one thread-scoped top-10 query per
/// query vector.
async fn vectors(p: &Params, texts: &[String]) -> Value {
    let (dim, n, queries, nthreads) =
        (p.get("dim"), p.get("vector-data"), p.get("vector-queries"), p.get("vector-threads"));
    let raw = std::fs::read(&p.vectors).unwrap();
    assert!(raw.len() >= (n + queries) * dim * 4, "the vectors file holds too few rows");
    let row = |i: usize| -> Vec<f32> {
        raw[i * dim * 4..(i + 1) * dim * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let services = open(p, "vectors").await;
    let model = services.embedder.info().model;
    let tenant = TenantId::default_tenant();
    let mut threads = Vec::new();
    for _ in 0..nthreads {
        threads.push(services.memory.create_thread(&tenant, NewThread::default()).await.unwrap().id);
    }
    // The messages the vectors belong to, row i in thread i·threads/n (not timed).
    let mut ids: Vec<MessageId> = Vec::with_capacity(n);
    let thread_of = |i: usize| i * nthreads / n;
    let mut start = 0;
    while start < n {
        let t = thread_of(start);
        let end = (start..n).find(|&i| thread_of(i) != t).unwrap_or(n).min(start + 1_000);
        let batch = (start..end).map(|i| NewMessage::text(Role::User, texts[i].clone()).unwrap()).collect();
        let stored =
            services.memory.append_messages(&tenant, threads[t], batch, AppendOptions::default()).await.unwrap();
        ids.extend(stored.iter().map(|m| m.id));
        start = end;
    }
    let row_of: HashMap<MessageId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    // The worker claims its jobs before embedding them (not timed: Mastra has no queue).
    let now = memlayer_domain::now();
    let claimed = services.embeddings.claim_jobs(now, n, now + Duration::from_secs(3_600)).await.unwrap();
    assert_eq!(claimed.len(), n, "every message's job is claimed");
    let done: Vec<(MessageId, Embedding)> =
        ids.iter().enumerate().map(|(i, id)| (*id, Embedding::new(model.clone(), row(i), dim).unwrap())).collect();

    let t0 = Instant::now();
    let entries = services.embeddings.complete_jobs(done).await.unwrap();
    assert_eq!(entries.len(), n);
    services.index.upsert(entries).await.unwrap();
    let upsert = t0.elapsed().as_secs_f64();

    let mut results = Vec::new();
    let mut times = Vec::new();
    let mut strategies = HashMap::new();
    for q in 0..queries {
        let query = Embedding::new(model.clone(), row(n + q), dim).unwrap();
        let filter = SearchFilter::these_threads(tenant.clone(), vec![threads[q % nthreads]]);
        let t0 = Instant::now();
        let found = services.index.search(&filter, &query, 10).await.unwrap();
        times.push(t0.elapsed());
        *strategies.entry(found.strategy.to_string()).or_insert(0) += 1;
        results.push(found.matches.iter().map(|h| row_of[&h.id]).collect::<Vec<_>>());
    }
    json!({
        "upsert_s": upsert,
        "query_us": median(times),
        "index": services.index.kind().to_string(),
        "strategies": strategies,
        "results": results,
    })
}
