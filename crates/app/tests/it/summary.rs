//! The summary service over a real libSQL store: incremental steps that read
//! only the messages after the summary's coverage, messages left as they
//! were, versions kept, the threshold trigger through the durable job queue,
//! a caller's reach, and the path where the summariser is unreachable (the
//! job kept, retried, and done once the fake chat server recovers).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use memlayer_adapters_embed::{ChatConfig, ChatSummarizer};
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{AppendOptions, MemoryService, Step, SummaryConfig, SummaryError, SummaryService};
use memlayer_domain::{
    Credential, Cursor, Direction, Message, MessageId, NewMessage, NewThread, Page, PageSize, Principal, Quota, Reach,
    ResourceId, Role, Scopes, TenantId, ThreadId,
};
use memlayer_ports::{MessageStore, SeqRange, StoreError, Summarizer, ThreadStore, Windows};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// The libSQL store, recording how messages are read: every page's start
/// and size, and any other read (which a summary step must not make).
#[derive(Debug)]
struct Recording {
    inner: Arc<LibsqlBackend>,
    pages: Mutex<Vec<(Option<i64>, u32)>>,
    other_reads: AtomicUsize,
}

#[async_trait]
impl MessageStore for Recording {
    async fn append_within(
        &self,
        t: &(dyn Reach + 'static),
        th: ThreadId,
        b: Vec<NewMessage>,
        quota: &Quota,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.append_within(t, th, b, quota).await
    }

    async fn token_counts(
        &self,
        t: &(dyn Reach + 'static),
        encoding: &str,
        ids: Vec<MessageId>,
    ) -> Result<Vec<(MessageId, u32)>, StoreError> {
        self.inner.token_counts(t, encoding, ids).await
    }

    async fn save_token_counts(
        &self,
        t: &(dyn Reach + 'static),
        encoding: &str,
        counts: Vec<(MessageId, u32)>,
    ) -> Result<(), StoreError> {
        self.inner.save_token_counts(t, encoding, counts).await
    }

    async fn page_within(
        &self,
        t: &(dyn Reach + 'static),
        th: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
        max_bytes: usize,
    ) -> Result<Page<Message>, StoreError> {
        let after = cursor.as_ref().map(|c| c.for_messages(th).unwrap().1);
        self.pages.lock().unwrap().push((after, limit.get()));
        self.inner.page_within(t, th, cursor, direction, limit, max_bytes).await
    }

    async fn read_windows(
        &self,
        t: &(dyn Reach + 'static),
        w: Vec<SeqRange>,
        max: usize,
    ) -> Result<Windows, StoreError> {
        self.other_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_windows(t, w, max).await
    }

    async fn last(&self, t: &(dyn Reach + 'static), th: ThreadId, n: PageSize) -> Result<Vec<Message>, StoreError> {
        self.other_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.last(t, th, n).await
    }

    async fn get(&self, t: &(dyn Reach + 'static), id: MessageId) -> Result<Message, StoreError> {
        self.other_reads.fetch_add(1, Ordering::SeqCst);
        MessageStore::get(self.inner.as_ref(), t, id).await
    }

    async fn get_many(&self, t: &(dyn Reach + 'static), ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError> {
        self.other_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_many(t, ids).await
    }

    async fn delete(&self, t: &(dyn Reach + 'static), id: MessageId) -> Result<(), StoreError> {
        MessageStore::delete(self.inner.as_ref(), t, id).await
    }
}

/// A summariser that records what it was given and answers with the seqs
/// it folded; it fails while `down` is set.
#[derive(Debug, Default)]
struct Scripted {
    calls: Mutex<Vec<(Option<String>, Vec<i64>)>>,
    down: AtomicBool,
}

#[async_trait]
impl Summarizer for Scripted {
    fn name(&self) -> String {
        "test:scripted".into()
    }

    async fn summarize(&self, previous: Option<String>, messages: Vec<Message>, _: u32) -> Result<String, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("summariser test:scripted: answered HTTP 500 (1 attempt)".into()));
        }
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        self.calls.lock().unwrap().push((previous.clone(), seqs.clone()));
        Ok(format!("{}[{}..{}]", previous.unwrap_or_default(), seqs[0], seqs[seqs.len() - 1]))
    }
}

struct Fixture {
    backend: Arc<LibsqlBackend>,
    messages: Arc<Recording>,
    summarizer: Arc<Scripted>,
    service: SummaryService,
    memory: MemoryService,
}

async fn fixture(config: SummaryConfig) -> Fixture {
    let backend = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    fixture_with(backend, config, None).await
}

async fn fixture_with(
    backend: Arc<LibsqlBackend>,
    config: SummaryConfig,
    summarizer: Option<Arc<dyn Summarizer>>,
) -> Fixture {
    let messages =
        Arc::new(Recording { inner: backend.clone(), pages: Mutex::default(), other_reads: AtomicUsize::new(0) });
    let scripted = Arc::new(Scripted::default());
    let service = SummaryService::new(
        backend.clone(),
        backend.clone(),
        messages.clone(),
        backend.clone(),
        summarizer.unwrap_or_else(|| scripted.clone()),
        config,
    );
    let mut memory = MemoryService::new(
        backend.clone(),
        messages.clone(),
        backend.clone(),
        Arc::new(memlayer_adapters_embed::TiktokenCounter::new()),
        tenant(),
        false,
    );
    if let Some(trigger) = service.trigger() {
        memory = memory.with_summary_trigger(trigger);
    }
    Fixture { backend, messages, summarizer: scripted, service, memory }
}

impl Fixture {
    async fn thread(&self, resource: Option<&str>) -> ThreadId {
        let new = NewThread { resource_id: resource.map(|r| ResourceId::parse(r).unwrap()), ..Default::default() };
        self.memory.create_thread(&tenant(), new).await.unwrap().id
    }

    async fn append(&self, thread: ThreadId, range: std::ops::Range<usize>) {
        let batch = range.map(|i| NewMessage::text(Role::User, format!("message number {i} here")).unwrap()).collect();
        self.memory.append_messages(&tenant(), thread, batch, AppendOptions::default()).await.unwrap();
    }

    async fn all_messages(&self, thread: ThreadId) -> Vec<Message> {
        self.backend.page(&tenant(), thread, None, None, PageSize::new(1000).unwrap()).await.unwrap().items
    }
}

fn step_of(n: u32) -> SummaryConfig {
    SummaryConfig { step_messages: n, threshold_tokens: 0, ..SummaryConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_reads_only_the_messages_after_the_coverage() {
    let f = fixture(step_of(10)).await;
    let id = f.thread(None).await;
    f.append(id, 0..25).await;
    let mut covered = Vec::new();
    loop {
        match f.service.step(&tenant(), id).await.unwrap() {
            Step::UpToDate => break,
            Step::Advanced { summary, read, more } => covered.push((summary.covers_through, read, more)),
        }
    }
    assert_eq!(covered, vec![(10, 10, true), (20, 10, true), (25, 5, false)]);
    f.append(id, 25..28).await;
    let Step::Advanced { summary, read: 3, more: false } = f.service.step(&tenant(), id).await.unwrap() else {
        panic!("one more step of the 3 new messages")
    };
    assert_eq!((summary.version, summary.covers_through, summary.covered_messages), (4, 28, 28));
    let calls = f.summarizer.calls.lock().unwrap().clone();
    let seqs: Vec<Vec<i64>> = calls.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(seqs, vec![(1..=10).collect::<Vec<_>>(), (11..=20).collect(), (21..=25).collect(), (26..=28).collect()]);
    assert_eq!(calls[3].0.as_deref(), Some("[1..10][11..20][21..25]"), "folded into the previous text");
    // Every read started after the coverage of the summary it extended, in
    // one page, and nothing else of the thread was read.
    let pages = f.messages.pages.lock().unwrap().clone();
    assert_eq!(pages, vec![(Some(0), 10), (Some(10), 10), (Some(20), 10), (Some(25), 10), (Some(25), 10)]);
    assert_eq!(f.messages.other_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarising_leaves_every_message_as_it_was_and_keeps_every_version() {
    let f = fixture(step_of(4)).await;
    let id = f.thread(None).await;
    f.append(id, 0..10).await;
    let before = f.all_messages(id).await;
    let who = tenant();
    let run = f.service.summarize_now(&who, id).await.unwrap();
    assert!(run.advanced);
    assert_eq!((run.view.backlog.covers_through, run.view.backlog.messages), (4, 6));
    assert!(run.view.job.is_some(), "the rest is left to the worker");
    f.service.drain().await.unwrap();
    let after = f.all_messages(id).await;
    assert_eq!(after, before, "no message changed, added or removed");
    let versions = f.service.versions(&who, id, 10).await.unwrap();
    let covers: Vec<i64> = versions.iter().map(|s| s.covers_through).collect();
    assert_eq!(covers, vec![10, 8, 4], "every version kept, newest first");
    let view = f.service.current(&who, id).await.unwrap();
    assert_eq!(view.summary.as_ref(), versions.first());
    assert_eq!((view.backlog.messages, view.job), (0, None), "caught up, the job done");
    let again = f.service.summarize_now(&who, id).await.unwrap();
    assert!(!again.advanced, "nothing new: no version");
    assert_eq!(f.service.versions(&who, id, 10).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_the_threshold_queues_a_durable_job_that_the_worker_runs() {
    // "message number N here" is 21–22 bytes: 6 tokens each.
    let f = fixture(SummaryConfig { threshold_tokens: 70, step_messages: 100, ..SummaryConfig::default() }).await;
    let id = f.thread(None).await;
    f.append(id, 0..5).await; // 30 tokens
    let round = f.service.run_once().await.unwrap();
    assert_eq!((round.checked, round.queued, round.advanced), (1, 0, 0), "below: checked once, nothing queued");
    f.append(id, 5..10).await; // 60: the estimate stays below, no store read
    assert_eq!(f.service.run_once().await.unwrap().checked, 0);
    f.summarizer.down.store(true, Ordering::SeqCst);
    f.append(id, 10..13).await; // 78: past the threshold
    let round = f.service.run_once().await.unwrap();
    assert_eq!((round.checked, round.queued, round.failed), (1, 1, 1), "{round:?}");
    let job = f.backend.summary_job_of(id).await;
    assert_eq!(job.attempts, 1, "the failure is on the durable job");
    assert!(job.last_error.unwrap().contains("HTTP 500"));
    f.summarizer.down.store(false, Ordering::SeqCst);
    let later = memlayer_domain::now() + Duration::from_secs(3600);
    let round = f.service.run_once_at(later).await.unwrap();
    assert_eq!((round.advanced, round.completed), (1, 1), "{round:?}");
    let view = f.service.current(&tenant(), id).await.unwrap();
    assert_eq!((view.summary.unwrap().covers_through, view.job), (13, None));
    // Appends while nothing is over the threshold queue nothing more.
    f.append(id, 13..15).await;
    let round = f.service.drain().await.unwrap();
    assert_eq!((round.queued, round.advanced), (0, 0), "{round:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_of_zero_turns_automatic_summaries_off() {
    let f = fixture(step_of(100)).await;
    assert!(f.service.trigger().is_none());
    let id = f.thread(None).await;
    f.append(id, 0..500).await;
    let round = f.service.drain().await.unwrap();
    assert_eq!((round.checked, round.queued, round.advanced), (0, 0, 0));
    assert!(f.service.current(&tenant(), id).await.unwrap().summary.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_bound_to_a_resource_reaches_only_its_threads() {
    let f = fixture(step_of(100)).await;
    let (mine, theirs) = (f.thread(Some("r1")).await, f.thread(Some("r2")).await);
    f.append(theirs, 0..3).await;
    let bound = Principal {
        tenant: tenant(),
        scopes: Scopes::ALL,
        resource: Some(ResourceId::parse("r1").unwrap()),
        credential: Credential::Anonymous,
    };
    assert!(f.service.current(&bound, mine).await.is_ok());
    let not_found = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    not_found(f.service.current(&bound, theirs).await.map(drop));
    not_found(f.service.versions(&bound, theirs, 5).await.map(drop));
    match f.service.summarize_now(&bound, theirs).await {
        Err(SummaryError::Store(StoreError::NotFound { .. })) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(f.service.current(&tenant(), theirs).await.unwrap().job.is_none(), "nothing queued for it");
    let other = TenantId::parse("other").unwrap();
    not_found(f.service.current(&other, mine).await.map(drop));
}

/// A fake chat-completions server that answers 500 until `healthy` is set.
async fn chat_server(healthy: Arc<AtomicBool>) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let healthy = healthy.clone();
            async move {
                if healthy.load(Ordering::SeqCst) {
                    axum::Json(serde_json::json!({"choices": [{"message": {"content": "The user asked twice."}}]}))
                        .into_response()
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_summariser_keeps_the_job_which_succeeds_once_it_recovers() {
    let healthy = Arc::new(AtomicBool::new(false));
    let chat = ChatConfig {
        max_retries: 1,
        backoff: Duration::from_millis(5),
        ..ChatConfig::new(chat_server(healthy.clone()).await, "gpt-test")
    };
    let backend = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let summarizer: Arc<dyn Summarizer> = Arc::new(ChatSummarizer::new(chat).unwrap());
    let f = fixture_with(backend, step_of(100), Some(summarizer)).await;
    let id = f.thread(None).await;
    f.append(id, 0..2).await;
    let before = f.all_messages(id).await;
    let who = tenant();
    let Err(SummaryError::Summarizer { error, retry_in }) = f.service.summarize_now(&who, id).await else {
        panic!("the summariser is down")
    };
    assert!(matches!(&error, StoreError::Unavailable(r) if r.contains("HTTP 500") && r.contains("openai:gpt-test")));
    assert_eq!(retry_in, Duration::from_secs(1), "the first backoff");
    let view = f.service.current(&who, id).await.unwrap();
    let job = view.job.expect("the job is kept");
    assert_eq!(job.attempts, 1);
    assert!(job.last_error.unwrap().contains("HTTP 500 (2 attempts)"));
    assert!(view.summary.is_none());
    assert_eq!(f.all_messages(id).await, before, "nothing lost");
    assert_eq!(f.service.run_once().await.unwrap().advanced, 0, "not retried before its backoff");
    healthy.store(true, Ordering::SeqCst);
    let round = f.service.run_once_at(memlayer_domain::now() + Duration::from_secs(5)).await.unwrap();
    assert_eq!((round.advanced, round.completed, round.failed), (1, 1, 0), "{round:?}");
    let view = f.service.current(&who, id).await.unwrap();
    let summary = view.summary.unwrap();
    assert_eq!(
        (summary.text.as_str(), summary.covers_through, summary.summarizer.as_str()),
        ("The user asked twice.", 2, "openai:gpt-test")
    );
    assert_eq!(view.job, None, "done and removed");
}

/// Reads a thread's job straight from the store.
trait JobOf {
    async fn summary_job_of(&self, thread: ThreadId) -> memlayer_ports::SummaryJob;
}

impl JobOf for LibsqlBackend {
    async fn summary_job_of(&self, thread: ThreadId) -> memlayer_ports::SummaryJob {
        memlayer_ports::SummaryQueue::summary_job(self, &tenant(), thread).await.unwrap().expect("a queued job")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_thread_stops_its_job_quietly() {
    let f = fixture(step_of(100)).await;
    let id = f.thread(None).await;
    f.append(id, 0..3).await;
    memlayer_ports::SummaryQueue::enqueue_summary(f.backend.as_ref(), &tenant(), id, memlayer_domain::now())
        .await
        .unwrap();
    ThreadStore::delete(f.backend.as_ref(), &tenant(), id).await.unwrap();
    let round = f.service.drain().await.unwrap();
    assert_eq!((round.advanced, round.failed), (0, 0), "{round:?}");
    assert!(f.summarizer.calls.lock().unwrap().is_empty());
}

/// A summariser answering with NUL, which neither backend stores whole.
#[derive(Debug)]
struct Nul;

#[async_trait]
impl Summarizer for Nul {
    fn name(&self) -> String {
        "test:nul".into()
    }

    async fn summarize(&self, _: Option<String>, _: Vec<Message>, _: u32) -> Result<String, StoreError> {
        Ok("before\0after".into())
    }
}

/// Its NUL is kept as U+FFFD: stored and read back whole (libSQL's reads
/// would stop at a NUL; Postgres would refuse the text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarisers_nul_is_stored_as_a_replacement_character() {
    let backend = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let f = fixture_with(backend, step_of(100), Some(Arc::new(Nul))).await;
    let id = f.thread(None).await;
    f.append(id, 0..2).await;
    let who = tenant();
    f.service.summarize_now(&who, id).await.unwrap();
    let summary = f.service.current(&who, id).await.unwrap().summary.unwrap();
    assert_eq!(summary.text, "before\u{fffd}after");
}
