//! The load harness: the real `memlayer` binary under mixed concurrent load
//! on one hot thread, while background work runs (a vector graph build over
//! every stored vector, started at boot, and an embedding backlog), at and
//! past saturation.
//!
//! Each scenario: start the server on a seeded data directory with its
//! vector snapshot removed (so the index rebuilds its whole graph at boot),
//! append a backlog for the embedding worker, then `clients` closed-loop
//! clients for `seconds`: 50% reads of the last 20 messages, 30% single
//! appends, 20% hybrid searches in the thread. It reports throughput and
//! p50/p99 per operation, 503s, the server's peak RSS and how long it took to
//! stop after SIGTERM; then restarts and checks that every acknowledged
//! append is stored exactly once.
//!
//! Checked in every form (never timings): every answer is a 2xx or a 503
//! carrying `Retry-After` and a JSON error; nothing acknowledged is lost; the
//! server stops after SIGTERM. The short form runs in CI; the long form
//! (docs/BENCHMARKS.md, "Under load") is
//!
//! ```sh
//! MEMLAYER_LOAD_MESSAGES=20000 MEMLAYER_LOAD_CLIENTS=16,64 MEMLAYER_LOAD_SECONDS=30 \
//!   cargo test --release -p memlayer-api --test it load::long -- --ignored --nocapture
//! ```
//!
//! with `MEMLAYER_LOAD_BINARY=path/to/memlayer` to measure another build, and
//! `MEMLAYER_LOAD_DATA=dir` to seed once into `dir` and start later runs
//! from a copy of it (an older build seeds, so both open the same data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

/// The harness's own knobs: not configuration keys, so unset for the server.
const KNOBS: [&str; 8] = [
    "MEMLAYER_LOAD_MESSAGES",
    "MEMLAYER_LOAD_CLIENTS",
    "MEMLAYER_LOAD_SECONDS",
    "MEMLAYER_LOAD_BINARY",
    "MEMLAYER_LOAD_BACKLOG",
    "MEMLAYER_LOAD_DATA",
    "MEMLAYER_LOAD_REBUILD",
    "MEMLAYER_LOAD_MODE",
];

/// How big a run is.
#[derive(Debug, Clone)]
struct Settings {
    binary: PathBuf,
    /// Messages in the hot thread before the load (all embedded first).
    messages: usize,
    /// Messages appended just before the load, for the embedding worker.
    backlog: usize,
    clients: Vec<usize>,
    seconds: u64,
    /// A seeded data directory to start from (seeded first if empty).
    data: Option<PathBuf>,
    /// Remove the vector snapshot before each scenario, so the index
    /// rebuilds its graph during the load (`MEMLAYER_LOAD_REBUILD=0`: keep it).
    rebuild: bool,
    /// Search mode of the searches (`MEMLAYER_LOAD_MODE`, default hybrid).
    mode: String,
    /// Server logs at info for the vector index (graph builds).
    verbose: bool,
}

impl Settings {
    fn short() -> Self {
        Self {
            binary: PathBuf::from(crate::support::BIN),
            messages: 400,
            backlog: 200,
            clients: vec![4, 32],
            seconds: 3,
            data: None,
            rebuild: true,
            mode: "hybrid".to_owned(),
            verbose: false,
        }
    }

    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, default: usize| var(name).map_or(default, |v| v.parse().expect(name));
        Self {
            binary: var("MEMLAYER_LOAD_BINARY").map_or_else(|| PathBuf::from(crate::support::BIN), PathBuf::from),
            messages: number("MEMLAYER_LOAD_MESSAGES", 20_000),
            backlog: number("MEMLAYER_LOAD_BACKLOG", 3_000),
            clients: var("MEMLAYER_LOAD_CLIENTS").map_or_else(
                || vec![16, 64],
                // `0` alone: seed `MEMLAYER_LOAD_DATA` and stop.
                |v| v.split(',').map(|c| c.trim().parse().expect("MEMLAYER_LOAD_CLIENTS")).filter(|&c| c > 0).collect(),
            ),
            seconds: number("MEMLAYER_LOAD_SECONDS", 30) as u64,
            data: var("MEMLAYER_LOAD_DATA").map(PathBuf::from),
            rebuild: var("MEMLAYER_LOAD_REBUILD").is_none_or(|v| v != "0"),
            mode: var("MEMLAYER_LOAD_MODE").unwrap_or_else(|| "hybrid".to_owned()),
            verbose: true,
        }
    }
}

fn start(settings: &Settings, dir: &Path) -> Server {
    // Rebuild logs show when the graph build runs.
    let log = if settings.verbose { "warn,memlayer_adapters_embed::index=info" } else { "error" };
    let env = [("RUST_LOG", log)];
    let (child, base) = crate::support::spawn_binary(&settings.binary, dir, &env, &KNOBS, Duration::from_secs(300));
    Server { child, base }
}

/// SIGTERM, then the time until the process exited (`None`: still running
/// after 120 s, then killed).
fn stop(mut server: Server) -> Option<Duration> {
    let started = Instant::now();
    let pid = server.child.id().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success(), "SIGTERM sent to {pid}");
    while started.elapsed() < Duration::from_secs(120) {
        if server.child.try_wait().expect("wait on the server").is_some() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Peak resident memory of a process, in MiB (Linux; 0 elsewhere).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// xorshift64*: the same text on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "we",
    "you",
    "my",
    "our",
    "it",
    "is",
    "was",
    "will",
    "can",
    "should",
    "maybe",
    "today",
    "tomorrow",
    "yesterday",
    "meeting",
    "project",
    "deadline",
    "budget",
    "invoice",
    "refund",
    "order",
    "shipping",
    "delivery",
    "package",
    "address",
    "password",
    "account",
    "login",
    "error",
    "bug",
    "release",
    "deploy",
    "server",
    "database",
    "backup",
    "restore",
    "memory",
    "agent",
    "model",
    "prompt",
    "token",
    "search",
    "vector",
    "index",
    "thread",
    "message",
    "summary",
    "context",
    "travel",
    "flight",
    "hotel",
    "booking",
    "weekend",
    "dinner",
    "restaurant",
    "recipe",
    "coffee",
    "birthday",
    "gift",
    "party",
    "music",
    "concert",
    "movie",
    "book",
    "library",
    "school",
    "exam",
    "homework",
    "teacher",
    "doctor",
    "appointment",
    "medicine",
    "exercise",
    "running",
    "bike",
    "weather",
    "rain",
    "snow",
    "summer",
    "winter",
    "garden",
    "plants",
    "dog",
    "cat",
    "walk",
    "park",
    "city",
    "train",
    "bus",
    "ticket",
    "price",
    "discount",
    "store",
    "market",
    "phone",
    "laptop",
    "screen",
    "battery",
    "charger",
    "keys",
    "wallet",
    "bank",
    "transfer",
    "salary",
    "rent",
    "apartment",
    "kitchen",
    "cleaning",
    "laundry",
    "family",
    "friend",
    "sister",
    "brother",
    "mother",
    "father",
    "kids",
    "vacation",
    "beach",
    "mountain",
    "camping",
    "photo",
    "camera",
    "video",
    "game",
    "score",
    "team",
    "match",
    "practice",
    "plan",
    "idea",
    "question",
    "answer",
    "help",
    "please",
    "thanks",
    "sorry",
    "great",
    "late",
    "early",
    "quick",
    "slow",
    "new",
    "old",
    "big",
    "small",
    "again",
];

fn sentence(rng: &mut Rng, min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
}

/// Appends `n` messages in batches of 500; returns their ids.
async fn append_bulk(http: &reqwest::Client, base: &str, thread: &str, n: usize, rng: &mut Rng) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch: Vec<Value> = (0..(n - ids.len()).min(500))
            .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": sentence(rng, 8, 40)}))
            .collect();
        let resp = http
            .post(format!("{base}/api/threads/{thread}/messages"))
            .json(&json!({"messages": batch}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "bulk append: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        let items = body["items"].as_array().expect("appended messages");
        ids.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
    }
    ids
}

/// Seeds a data directory: one thread of `settings.messages` messages, all
/// embedded (and the index snapshot written). Returns the thread id.
async fn seed(settings: &Settings, dir: &Path, http: &reqwest::Client) -> String {
    let server = start(settings, dir);
    let base = server.base.clone();
    let created: Value = http
        .post(format!("{base}/api/threads"))
        .json(&json!({"resource_id": "load", "title": "hot thread"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let thread = created["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    append_bulk(http, &base, &thread, settings.messages, &mut Rng(7)).await;
    loop {
        let counts: Value =
            http.get(format!("{base}/api/threads/{thread}/embeddings")).send().await.unwrap().json().await.unwrap();
        if counts["pending"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "seeding never finished embedding: {counts}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("seeded {} messages, embedded, in {:.0?}", settings.messages, started.elapsed());
    assert!(stop(server).is_some(), "the seeding server stopped");
    thread
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    Read,
    Append,
    Search,
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Latency of each served request (2xx), per operation.
    latencies: HashMap<Op, Vec<Duration>>,
    /// Latency of each 503 (how quickly overload is answered).
    shed_latencies: Vec<Duration>,
    ok: HashMap<Op, usize>,
    shed: HashMap<Op, usize>,
    /// Answers that are neither 2xx nor a well-formed 503, described.
    wrong: Vec<String>,
    /// Ids of acknowledged appends.
    acked: Vec<String>,
}

/// One closed-loop client: the next request as soon as the last is answered.
struct Client {
    base: String,
    thread: String,
    mode: String,
    until: Instant,
    seed: u64,
}

async fn client(c: Client, tally: Arc<Mutex<Tally>>) {
    let Client { base, thread, mode, until, seed } = c;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut rng = Rng(seed);
    while Instant::now() < until {
        let roll = rng.below(10);
        let (op, request) = if roll < 5 {
            (Op::Read, http.get(format!("{base}/api/threads/{thread}/messages?direction=backward&limit=20")))
        } else if roll < 8 {
            let body = json!({"role": "user", "content": sentence(&mut rng, 8, 40)});
            (Op::Append, http.post(format!("{base}/api/threads/{thread}/messages")).json(&body))
        } else {
            let body = json!({"query": sentence(&mut rng, 3, 6), "mode": mode, "top_k": 10,
                              "scope": {"thread_id": thread}});
            (Op::Search, http.post(format!("{base}/api/search")).json(&body))
        };
        let sent = Instant::now();
        let answer = request.send().await;
        let elapsed = sent.elapsed();
        let (status, retry_after, body) = match answer {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp.headers().contains_key("retry-after");
                (status, retry_after, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => {
                tally.lock().unwrap().wrong.push(format!("{op:?}: no answer: {e}"));
                continue;
            }
        };
        let mut t = tally.lock().unwrap();
        if status.is_success() {
            t.latencies.entry(op).or_default().push(elapsed);
            *t.ok.entry(op).or_default() += 1;
            if op == Op::Append {
                t.acked.push(body["id"].as_str().expect("an appended message has an id").to_owned());
            }
        } else if status == 503 && retry_after && body["error"]["code"].is_string() {
            t.shed_latencies.push(elapsed);
            *t.shed.entry(op).or_default() += 1;
        } else {
            t.wrong.push(format!("{op:?}: {status} retry-after={retry_after} {body}"));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// One scenario's figures.
struct Report {
    clients: usize,
    seconds: f64,
    tally: Tally,
    peak_rss_mib: f64,
    stop: Option<Duration>,
    lost: usize,
    duplicated: usize,
}

impl Report {
    fn print(&self, binary: &Path) {
        println!("\n{} clients, {:.1} s, binary {}", self.clients, self.seconds, binary.display());
        println!("| operation | served/s | 503/s | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        for op in [Op::Read, Op::Append, Op::Search] {
            let mut l = self.tally.latencies.get(&op).cloned().unwrap_or_default();
            l.sort();
            let ok = *self.tally.ok.get(&op).unwrap_or(&0) as f64 / self.seconds;
            let shed = *self.tally.shed.get(&op).unwrap_or(&0) as f64 / self.seconds;
            println!(
                "| {op:?} | {ok:.1} | {shed:.1} | {:.1} | {:.1} | {:.1} |",
                percentile(&l, 50.0),
                percentile(&l, 99.0),
                percentile(&l, 100.0)
            );
        }
        let mut shed = self.tally.shed_latencies.clone();
        shed.sort();
        println!(
            "503 answers: {}, p50 {:.1} ms, p99 {:.1} ms (latencies above are of served requests only)",
            shed.len(),
            percentile(&shed, 50.0),
            percentile(&shed, 99.0)
        );
        println!(
            "peak RSS {:.0} MiB; stopped {} after SIGTERM; acknowledged appends {}, lost {}, duplicated {}; \
             wrong answers {}",
            self.peak_rss_mib,
            self.stop.map_or_else(|| "NOT within 120 s".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            self.tally.acked.len(),
            self.lost,
            self.duplicated,
            self.tally.wrong.len()
        );
        for w in self.tally.wrong.iter().take(5) {
            println!("  wrong: {w}");
        }
    }

    fn assert_sound(&self) {
        assert!(
            self.tally.wrong.is_empty(),
            "answers neither 2xx nor 503 with Retry-After: {:?}",
            &self.tally.wrong[..self.tally.wrong.len().min(5)]
        );
        assert_eq!((self.lost, self.duplicated), (0, 0), "acknowledged appends lost or duplicated");
        assert!(self.stop.is_some(), "the server did not stop after SIGTERM");
        assert!(self.tally.ok.values().sum::<usize>() > 0, "nothing was served");
    }
}

async fn scenario(settings: &Settings, dir: &Path, thread: &str, clients: usize, http: &reqwest::Client) -> Report {
    // Without a snapshot the index re-reads every vector and rebuilds its graph.
    if settings.rebuild {
        let _ = std::fs::remove_file(dir.join("index").join("hnsw.snapshot"));
    }
    let server = start(settings, dir);
    let base = server.base.clone();
    append_bulk(http, &base, thread, settings.backlog, &mut Rng(clients as u64 + 11)).await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(settings.seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let c = Client {
                base: base.clone(),
                thread: thread.to_owned(),
                mode: settings.mode.clone(),
                until,
                seed: 1000 + c as u64,
            };
            tokio::spawn(client(c, Arc::clone(&tally)))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_mib = peak_rss_mib(server.child.id());
    let stop = stop(server);
    let tally = Arc::into_inner(tally).unwrap().into_inner().unwrap();

    // Restart on the same data: every acknowledged append, exactly once.
    let server = start(settings, dir);
    let stored: Vec<String> = crate::support::all_messages(http, &server.base, thread)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    drop(server);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *count.entry(id.as_str()).or_default() += 1;
    }
    let lost = tally.acked.iter().filter(|id| !count.contains_key(id.as_str())).count();
    let duplicated = count.values().filter(|n| **n > 1).count();
    Report { clients, seconds, tally, peak_rss_mib, stop, lost, duplicated }
}

/// In a seeded data directory: the hot thread's id.
const THREAD_FILE: &str = "load-thread";

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from.join(".")).arg(to).status().expect("cp runs");
    assert!(status.success(), "copying {} to {}", from.display(), to.display());
}

async fn run(settings: Settings) -> Vec<Report> {
    assert!(settings.binary.is_file(), "no memlayer binary at {}", settings.binary.display());
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let thread = match &settings.data {
        Some(data) if data.join(THREAD_FILE).is_file() => {
            copy_dir(data, dir.path());
            std::fs::read_to_string(data.join(THREAD_FILE)).unwrap()
        }
        Some(data) => {
            let thread = seed(&settings, dir.path(), &http).await;
            std::fs::create_dir_all(data).unwrap();
            copy_dir(dir.path(), data);
            std::fs::write(data.join(THREAD_FILE), &thread).unwrap();
            thread
        }
        None => seed(&settings, dir.path(), &http).await,
    };
    let mut reports = Vec::new();
    for &clients in &settings.clients {
        let report = scenario(&settings, dir.path(), &thread, clients, &http).await;
        report.print(&settings.binary);
        reports.push(report);
    }
    reports
}

/// CI's short form: a few hundred messages, 4 and 32 clients for 3 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_is_served_or_shed_and_loses_nothing() {
    if !crate::support::model_ready("load::short") {
        return;
    }
    for report in run(Settings::short()).await {
        report.assert_sound();
    }
}

/// The long form (see the module docs); prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run by hand for docs/BENCHMARKS.md"]
async fn long() {
    let reports = run(Settings::from_env()).await;
    for report in &reports {
        report.assert_sound();
    }
}
