//! Crash safety of the real `memlayer` binary: `kill -9` while 8 clients
//! append concurrently, then a restart on the same data, on libSQL (also
//! with deferred commits, whose acknowledged appends the restart applies
//! again from the append journal) and on Postgres.
//!
//! Each client records what the server acknowledged (2xx: message ids and
//! sequence numbers) and every message it sent, each with a unique word.
//! After every kill the store must hold every acknowledged message exactly
//! once under its acknowledged sequence number, sequences `1..=n` without gap
//! in every thread, nothing that was never sent, batches whole or not at
//! all, pass `PRAGMA integrity_check` (libSQL), restart cleanly, and hold
//! every message searchable or pending: `embedded + pending` equals the
//! thread's message count, and a lexical search for each message's unique
//! word finds it. Requests cut off by the kill may or may not be stored; the
//! checks hold for any kill moment, so the moment may vary freely.
//!
//! The kill points are counts of acknowledged appends in a round (`1` kills
//! while the restarted server's embedding worker catches up). The short form
//! runs in CI (three rounds per backend); the long form is
//! `MEMLAYER_CRASH_ROUNDS=40 cargo test -p memlayer-api --test it crash::long -- --ignored --nocapture`
//! and prints its figures (docs/BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

const CLIENTS: usize = 8;
const THREADS: usize = 4;

/// Where the data live and how the binary reaches them.
struct Store {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The libSQL file, for the integrity check.
    file: Option<PathBuf>,
    _pg: Option<memlayer_adapters_postgres::testing::TestDatabase>,
}

impl Store {
    fn libsql() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = Some(dir.path().join("memlayer.db"));
        Self { dir, env: Vec::new(), file, _pg: None }
    }

    /// libSQL with deferred commits (`database.commit_delay_ms`, with
    /// `synchronous = "normal"`, which it needs): acknowledged appends wait
    /// uncommitted in the append journal, so a kill finds some there.
    fn libsql_deferred() -> Self {
        let env = [("MEMLAYER_DATABASE__SYNCHRONOUS", "normal"), ("MEMLAYER_DATABASE__COMMIT_DELAY_MS", "50")];
        Self { env: env.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec(), ..Self::libsql() }
    }

    async fn postgres() -> Option<Self> {
        let db = memlayer_adapters_postgres::testing::fresh_database().await?;
        let env = vec![("DATABASE_URL".to_owned(), db.url.clone())];
        Some(Self { dir: tempfile::tempdir().unwrap(), env, file: None, _pg: Some(db) })
    }

    /// Starts the binary; `embedding` runs the embedding worker.
    fn start(&self, embedding: bool) -> Server {
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("MEMLAYER_EMBEDDING__ENABLED", if embedding { "true" } else { "false" }));
        env.push(("RUST_LOG", "error"));
        // MEMLAYER_CRASH_ROUNDS is the test's, not a configuration key.
        let (child, base) =
            crate::support::spawn_server(self.dir.path(), &env, &["MEMLAYER_CRASH_ROUNDS"], Duration::from_secs(120));
        Server { child, base }
    }
}

/// What the clients sent and what the server acknowledged, over all rounds.
#[derive(Default)]
struct Ledger {
    /// Every word ever sent, with the index of its thread.
    sent: HashMap<String, usize>,
    /// Words of each batch.
    batches: HashMap<u64, Vec<String>>,
    /// Acknowledged: word → (message id, seq).
    acked: HashMap<String, (String, u64)>,
    next_batch: u64,
    next_word: u64,
}

/// A word no stemmer or tokenizer changes: `zx` and eight consonants
/// encoding `n` (no vowels, no `s`/`d`/`g`/`y` suffixes to strip).
fn word(n: u64) -> String {
    const LETTERS: &[u8; 10] = b"bcfhjkmpqt";
    let mut w = String::from("zx");
    let mut rest = n;
    let mut digits = Vec::new();
    for _ in 0..8 {
        digits.push(LETTERS[(rest % 10) as usize] as char);
        rest /= 10;
    }
    w.extend(digits.iter().rev());
    w
}

/// Totals for the report.
#[derive(Debug, Default)]
struct Figures {
    rounds: usize,
    acknowledged: usize,
    stored: usize,
    /// Stored though never acknowledged (the kill cut the answer off).
    unacknowledged_stored: usize,
    lost: usize,
    duplicates: usize,
    gaps: usize,
    kill_points: Vec<usize>,
}

/// One round: start, append from 8 clients until `kill_after` appends of this
/// round are acknowledged, `kill -9`, then check the store.
async fn round(
    store: &Store,
    threads: &[String],
    ledger: &Arc<Mutex<Ledger>>,
    kill_after: usize,
    figures: &mut Figures,
) {
    let embedding = crate::support::model_ready("crash round (embedding worker)");
    let mut server = store.start(embedding);
    let acks = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (http, base, ledger, acks, dead) =
            (http.clone(), server.base.clone(), Arc::clone(ledger), Arc::clone(&acks), Arc::clone(&dead));
        let threads = threads.to_vec();
        clients.spawn(async move {
            let mut i = 0usize;
            while !dead.load(Ordering::Acquire) {
                i += 1;
                let thread = (c + i) % THREADS;
                let size = 1 + (c + i) % 3; // 1 is sent as one message, 2–3 as a batch
                let (batch, words) = {
                    let mut l = ledger.lock().unwrap();
                    let batch = l.next_batch;
                    l.next_batch += 1;
                    let words: Vec<String> = (0..size)
                        .map(|_| {
                            l.next_word += 1;
                            word(l.next_word)
                        })
                        .collect();
                    for w in &words {
                        l.sent.insert(w.clone(), thread);
                    }
                    l.batches.insert(batch, words.clone());
                    (batch, words)
                };
                let content = |w: &String| format!("client {c} note {w} about the crash test");
                let body = if size == 1 {
                    json!({"role": "user", "content": content(&words[0])})
                } else {
                    json!({"messages": words.iter().map(|w| json!({"role": "user", "content": content(w)})).collect::<Vec<_>>()})
                };
                let url = format!("{base}/api/threads/{}/messages", threads[thread]);
                let Ok(response) = http.post(url).json(&body).send().await else { break };
                let status = response.status().as_u16();
                let Ok(answer) = response.json::<Value>().await else { break };
                if status != 201 {
                    // Not acknowledged: allowed (the store may be busy), but say so.
                    eprintln!("crash: batch {batch} answered {status}: {answer}");
                    continue;
                }
                let items = if size == 1 { vec![answer] } else { answer["items"].as_array().unwrap().clone() };
                assert_eq!(items.len(), words.len(), "the answer lists every message of batch {batch}");
                let mut l = ledger.lock().unwrap();
                for (w, item) in words.iter().zip(&items) {
                    assert!(item["content"].as_str().unwrap().contains(w.as_str()), "answers in order: {item}");
                    let id = item["id"].as_str().unwrap().to_owned();
                    l.acked.insert(w.clone(), (id, item["seq"].as_u64().unwrap()));
                }
                drop(l);
                acks.fetch_add(1, Ordering::AcqRel);
            }
        });
    }
    // The kill point: after `kill_after` acknowledged appends of this round.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.load(Ordering::Acquire) < kill_after {
        assert!(Instant::now() < deadline, "no {kill_after} appends acknowledged within 120 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    dead.store(true, Ordering::Release);
    while let Some(joined) = clients.join_next().await {
        joined.unwrap();
    }
    drop(server);
    figures.rounds += 1;
    figures.kill_points.push(kill_after);

    if let Some(file) = &store.file {
        integrity_check(file).await;
    }
    let server = store.start(false);
    let ready = http.get(format!("{}/ready", server.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "ready after the restart");
    verify(&http, &server.base, threads, ledger, figures).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    drop(server);
}

/// `PRAGMA integrity_check` on the file as the kill left it (opening it
/// recovers the WAL, as the next server would).
async fn integrity_check(file: &Path) {
    let db = libsql::Builder::new_local(file).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn.query("PRAGMA integrity_check", ()).await.unwrap();
    let mut found = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        found.push(row.get::<String>(0).unwrap());
    }
    assert_eq!(found, vec!["ok".to_owned()], "integrity_check after kill -9");
}

/// Every check of the module doc, against a freshly restarted server.
async fn verify(http: &reqwest::Client, base: &str, threads: &[String], ledger: &Arc<Mutex<Ledger>>, f: &mut Figures) {
    let ledger = ledger.lock().unwrap().clone_view();
    let mut stored: HashMap<String, (usize, String, u64)> = HashMap::new(); // word → (thread, id, seq)
    let mut lost = Vec::new();
    let mut duplicates = Vec::new();
    let mut gaps = Vec::new();
    for (t, id) in threads.iter().enumerate() {
        let mut seqs = Vec::new();
        for m in &crate::support::all_messages(http, base, id).await {
            let content = m["content"].as_str().unwrap();
            let w = content.split(' ').find(|p| p.starts_with("zx")).unwrap().to_owned();
            let seq = m["seq"].as_u64().unwrap();
            seqs.push(seq);
            assert_eq!(ledger.sent.get(&w), Some(&t), "{w} was sent, and to this thread");
            if stored.insert(w.clone(), (t, m["id"].as_str().unwrap().to_owned(), seq)).is_some() {
                duplicates.push(w);
            }
        }
        let n = seqs.len() as u64;
        if seqs != (1..=n).collect::<Vec<_>>() {
            gaps.push(format!("thread {t}: {} seqs, not 1..={n}", seqs.len()));
        }
        let thread: Value = http.get(format!("{base}/api/threads/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(thread["message_count"].as_u64(), Some(n), "message_count of thread {t}");
        let e: Value =
            http.get(format!("{base}/api/threads/{id}/embeddings")).send().await.unwrap().json().await.unwrap();
        let (embedded, pending) = (e["embedded"].as_u64().unwrap(), e["pending"].as_u64().unwrap());
        assert_eq!(embedded + pending, n, "every message of thread {t} is embedded or pending: {e}");
        assert_eq!(e["other_model"].as_u64(), Some(0), "{e}");
    }
    for (w, (id, seq)) in &ledger.acked {
        match stored.get(w) {
            Some((_, sid, sseq)) => assert_eq!((sid, sseq), (id, seq), "{w} stored as acknowledged"),
            None => lost.push(w.clone()),
        }
    }
    for (batch, words) in &ledger.batches {
        let n = words.iter().filter(|w| stored.contains_key(*w)).count();
        assert!(n == 0 || n == words.len(), "batch {batch} stored in part: {n} of {}", words.len());
    }
    f.acknowledged = ledger.acked.len();
    f.stored = stored.len();
    f.unacknowledged_stored = stored.keys().filter(|w| !ledger.acked.contains_key(*w)).count();
    f.lost += lost.len();
    f.duplicates += duplicates.len();
    f.gaps += gaps.len();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(duplicates.is_empty(), "stored twice: {duplicates:?}");
    assert!(gaps.is_empty(), "sequence gaps: {gaps:?}");

    // Lexical search finds every stored message by its unique word (8 at a time).
    let stored: Vec<(String, String, String)> =
        stored.into_iter().map(|(w, (t, id, _))| (w, threads[t].clone(), id)).collect();
    let mut searches = tokio::task::JoinSet::new();
    for part in stored.chunks(stored.len().div_ceil(CLIENTS).max(1)) {
        let (http, base, part) = (http.clone(), base.to_owned(), part.to_vec());
        searches.spawn(async move {
            let mut missed = Vec::new();
            for (w, thread, id) in part {
                let body = json!({"query": w, "mode": "lexical", "scope": {"thread_id": thread}, "top_k": 5});
                let r = http.post(format!("{base}/api/search")).json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let hits: Value = r.json().await.unwrap();
                let ids: Vec<&str> =
                    hits["hits"].as_array().unwrap().iter().filter_map(|h| h["message"]["id"].as_str()).collect();
                if ids != [id.as_str()] {
                    missed.push(format!("{w} (message {id}) found as {ids:?}"));
                }
            }
            missed
        });
    }
    let mut missed = Vec::new();
    while let Some(part) = searches.join_next().await {
        missed.extend(part.unwrap());
    }
    assert!(missed.is_empty(), "{} of the stored messages not found by their word: {missed:?}", missed.len());
}

impl Ledger {
    /// A copy of what verification reads (the clients are stopped).
    fn clone_view(&self) -> LedgerView {
        LedgerView { sent: self.sent.clone(), batches: self.batches.clone(), acked: self.acked.clone() }
    }
}

struct LedgerView {
    sent: HashMap<String, usize>,
    batches: HashMap<u64, Vec<String>>,
    acked: HashMap<String, (String, u64)>,
}

/// Creates the threads, then runs one round per kill point on the same data.
async fn run(store: &Store, kill_points: &[usize]) -> Figures {
    let server = store.start(false);
    let http = reqwest::Client::new();
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let r = http.post(format!("{}/api/threads", server.base)).json(&json!({"title": format!("crash {t}")})).send();
        let thread: Value = r.await.unwrap().json().await.unwrap();
        threads.push(thread["id"].as_str().unwrap().to_owned());
    }
    drop(server);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut figures = Figures::default();
    for &k in kill_points {
        round(store, &threads, &ledger, k, &mut figures).await;
    }
    figures
}

/// The CI form's kill points: while the restarted worker catches up, after a
/// few dozen appends, and after a few hundred.
const SHORT: [usize; 3] = [1, 40, 250];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_appends_loses_nothing_on_libsql() {
    let store = Store::libsql();
    let figures = run(&store, &SHORT).await;
    eprintln!("crash libsql: {figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_appends_loses_nothing_on_libsql_with_deferred_commits() {
    let store = Store::libsql_deferred();
    let figures = run(&store, &SHORT).await;
    eprintln!("crash libsql, deferred commits: {figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_appends_loses_nothing_on_postgres() {
    let Some(store) = Store::postgres().await else { return };
    let figures = run(&store, &SHORT).await;
    eprintln!("crash postgres: {figures:?}");
}

/// The long form: `MEMLAYER_CRASH_ROUNDS` rounds (default 20) per backend,
/// kill points cycling through 1 to 800 acknowledged appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long crash run (minutes): run by hand, figures in docs/BENCHMARKS.md"]
async fn long() {
    let rounds: usize = std::env::var("MEMLAYER_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let cycle = [1usize, 5, 25, 100, 300, 800, 10, 50, 200, 500];
    let points: Vec<usize> = (0..rounds).map(|i| cycle[i % cycle.len()]).collect();
    let mut report = BTreeMap::new();
    let started = Instant::now();
    report.insert("libsql", run(&Store::libsql(), &points).await);
    report.insert("libsql, deferred commits", run(&Store::libsql_deferred(), &points).await);
    if let Some(store) = Store::postgres().await {
        report.insert("postgres", run(&store, &points).await);
    }
    for (backend, f) in &report {
        println!(
            "{backend}: rounds {}, acknowledged {}, stored {}, stored without acknowledgement {}, lost {}, duplicates {}, gaps {}, kill points {:?}",
            f.rounds, f.acknowledged, f.stored, f.unacknowledged_stored, f.lost, f.duplicates, f.gaps, f.kill_points
        );
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}
