//! Summary benchmarks (library level, no HTTP), on the embedded libSQL file,
//! with the local extractive summariser and the provisioned model.
//!
//! ```text
//! cargo run --release -p memlayer-app --example bench_summary            # full run
//! cargo run --release -p memlayer-app --example bench_summary -- --quick # smoke run (1k and 10k)
//! ```
//!
//! 0. What the append path gains: `SummaryTrigger::note`, the one call an
//!    append makes for automatic summaries (memory only), per call over
//!    1,000,000 calls on 1,000 threads.
//! 1. The incremental step on threads of 1,000, 10,000 and 100,000
//!    messages: each thread carries a summary covering all but its last
//!    100 messages (made by the summariser from the 200 before them); a
//!    step folds those 100 in. Five steps per size, 100 new messages
//!    appended (untimed) before each; the median, fastest and slowest. Also
//!    the current summary with its coverage (`SummaryService::current`, what
//!    `GET …/summary` does), median of 200; and the step's storage work
//!    alone (a summariser that returns the previous text), median of 20.
//! 2. Appending 5,000 single messages (one per call) across 10 threads,
//!    with the background summary worker running and automatic summaries on
//!    (`summary.threshold_tokens` 2,000) or off (0), alternated, 3 rounds
//!    each: what automatic summaries cost appends, the background steps'
//!    CPU included.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use memlayer_adapters_embed::{ExtractiveConfig, ExtractiveSummarizer, OnnxConfig, OnnxEmbedder, default_cache_dir};
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{AppendOptions, Config, Step, SummaryConfig, SummaryService, build};
use memlayer_domain::{Message, NewMessage, NewSummary, NewThread, PageSize, Role, TenantId, ThreadId};
use memlayer_ports::{Embedder, MessageStore, Summarizer, SummaryStore, ThreadStore};

const SUBJECTS: &[&str] = &[
    "the kettle",
    "order A-17",
    "the invoice",
    "my refund",
    "the delivery",
    "the warranty",
    "the new laptop",
    "the meeting on Friday",
    "the hotel booking",
    "the train ticket",
    "the password reset",
    "the shipping address",
    "the discount code",
    "the project deadline",
    "the quarterly report",
];
const VERBS: &[&str] = &[
    "arrived late",
    "was charged twice",
    "needs a replacement",
    "is still missing",
    "was cancelled",
    "has a cracked lid",
    "was moved to Monday",
    "cannot be found",
    "was sent yesterday",
    "costs more than expected",
    "works again",
    "must be approved by finance",
];
const ASKS: &[&str] = &[
    "Can you check it again?",
    "What should I do now?",
    "Please keep me posted.",
    "Is there anything else you need?",
    "Thanks for the quick answer.",
    "I will wait for your email.",
    "Could you send the tracking number?",
    "The weather is lovely today.",
];

/// A deterministic conversational message: one to three sentences.
fn text(i: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut s = format!("{} {}.", SUBJECTS[next(SUBJECTS.len())], VERBS[next(VERBS.len())]);
    s = format!("{}{}", s[..1].to_uppercase(), &s[1..]);
    for _ in 0..next(3) {
        s.push(' ');
        s.push_str(ASKS[next(ASKS.len())]);
    }
    s
}

fn message(i: usize) -> NewMessage {
    let role = if i.is_multiple_of(2) { Role::User } else { Role::Assistant };
    NewMessage::text(role, text(i)).unwrap()
}

/// A summariser with no work of its own: the step's storage cost alone.
#[derive(Debug)]
struct Echo;

#[async_trait::async_trait]
impl Summarizer for Echo {
    fn name(&self) -> String {
        "bench:echo".into()
    }

    async fn summarize(
        &self,
        previous: Option<String>,
        _: Vec<Message>,
        _: u32,
    ) -> Result<String, memlayer_ports::StoreError> {
        Ok(previous.unwrap_or_default())
    }
}

fn note_cost() {
    let config = SummaryConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Handle::current();
    let store = tokio::task::block_in_place(|| {
        rt.block_on(LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("m.db"))))
    })
    .unwrap();
    let store = Arc::new(store);
    let service = SummaryService::new(store.clone(), store.clone(), store.clone(), store, Arc::new(Echo), config);
    let trigger = service.trigger().unwrap();
    let tenant = TenantId::default_tenant();
    let threads: Vec<ThreadId> = (0..1_000).map(|_| ThreadId::new()).collect();
    let one = vec![Message {
        id: memlayer_domain::MessageId::new(),
        thread_id: threads[0],
        seq: 1,
        role: Role::User,
        content: text(1),
        tool_call_id: None,
        tool_name: None,
        tool_calls: Vec::new(),
        metadata: memlayer_domain::Metadata::default(),
        token_count: None,
        created_at: memlayer_domain::now(),
    }];
    let t = Instant::now();
    for i in 0..1_000_000 {
        trigger.note(&tenant, threads[i % threads.len()], &one);
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / 1e6;
    println!(
        "0. the append path's added work, SummaryTrigger::note: {ns:.0} ns a call (1,000,000 calls, 1,000 threads)"
    );
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

async fn fill(store: &LibsqlBackend, tenant: &TenantId, thread: ThreadId, from: usize, to: usize) {
    let all: Vec<usize> = (from..to).collect();
    for chunk in all.chunks(1_000) {
        store.append(tenant, thread, chunk.iter().map(|&i| message(i)).collect()).await.unwrap();
    }
}

async fn step_cost(n: usize, embedder: Arc<dyn Embedder>) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap());
    let tenant = TenantId::default_tenant();
    let thread = ThreadStore::create(store.as_ref(), &tenant, NewThread::default()).await.unwrap().id;
    fill(&store, &tenant, thread, 0, n).await;
    let summarizer = Arc::new(ExtractiveSummarizer::new(embedder, ExtractiveConfig::default()));
    let config = SummaryConfig { threshold_tokens: 0, step_messages: 100, ..SummaryConfig::default() };
    // The previous summary: the summariser's own, of the 200 messages before
    // the last 100, covering everything up to them.
    let window = store
        .page(
            &tenant,
            thread,
            Some(memlayer_domain::Cursor::messages(thread, memlayer_domain::Direction::Forward, (n - 300) as i64)),
            None,
            PageSize::new(200).unwrap(),
        )
        .await
        .unwrap()
        .items;
    let previous = summarizer.summarize(None, window, config.target_tokens).await.unwrap();
    let covered = (n - 100) as i64;
    let seed = NewSummary {
        text: previous,
        covers_through: covered,
        newly_covered: covered as u64,
        summarizer: summarizer.name(),
    };
    store.save_summary(&tenant, thread, seed, 0).await.unwrap();
    let service = SummaryService::new(store.clone(), store.clone(), store.clone(), store.clone(), summarizer, config);
    let mut steps = Vec::new();
    let mut next = n;
    for rep in 0..5 {
        if rep > 0 {
            fill(&store, &tenant, thread, next, next + 100).await;
            next += 100;
        }
        let t = Instant::now();
        let step = service.step(&tenant, thread).await.unwrap();
        steps.push(t.elapsed());
        assert!(matches!(step, Step::Advanced { read: 100, more: false, .. }), "{step:?}");
    }
    let mut views = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        service.current(&tenant, thread).await.unwrap();
        views.push(t.elapsed());
    }
    let current = service.current(&tenant, thread).await.unwrap().summary.unwrap();
    let echo = SummaryService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(Echo),
        SummaryConfig { threshold_tokens: 0, step_messages: 100, ..SummaryConfig::default() },
    );
    let mut storage = Vec::new();
    for _ in 0..20 {
        fill(&store, &tenant, thread, next, next + 100).await;
        next += 100;
        let t = Instant::now();
        echo.step(&tenant, thread).await.unwrap();
        storage.push(t.elapsed());
    }
    let (med, lo, hi) = stats(steps);
    let (vmed, _, _) = stats(views);
    let (smed, slo, shi) = stats(storage);
    println!(
        "thread of {n:>7} messages: step folding 100 new messages: median {med:.1} ms (fastest {lo:.1}, slowest {hi:.1}); \
         summary {} lines, {} bytes; current summary with coverage: {:.3} ms; \
         the step's storage alone: median {smed:.2} ms ({slo:.2}–{shi:.2})",
        current.text.lines().count(),
        current.text.len(),
        vmed
    );
}

async fn appends(threshold: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        summary: SummaryConfig { threshold_tokens: threshold, ..SummaryConfig::default() },
        ..Config::default()
    };
    let services = build(config).await.unwrap();
    let background = services.start_background();
    let tenant = TenantId::default_tenant();
    let mut threads = Vec::new();
    for _ in 0..10 {
        threads.push(services.memory.create_thread(&tenant, NewThread::default()).await.unwrap().id);
    }
    let t = Instant::now();
    for i in 0..5_000 {
        services.memory.append_message(&tenant, threads[i % 10], message(i), AppendOptions::default()).await.unwrap();
    }
    let rate = 5_000.0 / t.elapsed().as_secs_f64();
    let mut versions = 0;
    for th in &threads {
        versions += services.summaries.versions(&tenant, *th, 1000).await.unwrap().len();
    }
    println!("  threshold {threshold:>4}: {rate:>6.0} msg/s; summary versions stored meanwhile: {versions}");
    background.stop().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let embedder = OnnxEmbedder::new(OnnxConfig::from_cache_dir(&default_cache_dir()));
    if let Err(problem) = embedder.status() {
        eprintln!("the local summariser needs the embedding model: {problem}");
        std::process::exit(2);
    }
    let embedder: Arc<dyn Embedder> = Arc::new(embedder);
    println!("memlayer summary benchmark ({})", if quick { "quick" } else { "full" });
    note_cost();
    println!("1. the incremental step (local extractive summariser, summary.step_messages 100, target 400 tokens)");
    let sizes: &[usize] = if quick { &[1_000, 10_000] } else { &[1_000, 10_000, 100_000] };
    for &n in sizes {
        step_cost(n, embedder.clone()).await;
    }
    println!("2. 5,000 single appends over 10 threads, summary worker running");
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..(if quick { 1 } else { 3 }) {
        off.push(appends(0).await);
        on.push(appends(2_000).await);
    }
    on.sort_by(f64::total_cmp);
    off.sort_by(f64::total_cmp);
    println!("  median: automatic summaries off {:.0} msg/s, on {:.0} msg/s", off[off.len() / 2], on[on.len() / 2]);
}
