//! Thread summaries: [`SummaryService`] (the current summary with its
//! coverage, its versions, a summary on demand, the incremental step and the
//! background worker), [`SummaryTrigger`] (which notices, off the append
//! path, when a thread's unsummarised part passes `summary.threshold_tokens`)
//! and [`SummaryConfig`] (`summary.*`).
//!
//! The step is incremental: it reads the newest summary, then only the
//! messages after its `covers_through` (one keyset page of at most
//! `summary.step_messages`), folds them into the previous text with the
//! [`Summarizer`] and saves the next version advancing from the one it read
//! (`Conflict` if another summariser got there first). Its cost depends on
//! the previous summary and the new messages, not on the thread's length.
//! Summarising never writes a message.
//!
//! Work is durable: an automatic summary is a job in the store's summary
//! queue (one per thread), claimed under a lease by the worker and retried
//! with exponential backoff while the summariser fails; a summary on demand
//! queues its job first, runs the step at once and, when the summariser
//! fails, records the failure on the job (which the worker retries) and
//! reports it ([`SummaryError::Summarizer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memlayer_domain::{
    Cursor, Direction, Message, NewSummary, PageSize, Reach, Summary, TenantId, ThreadId, Timestamp, now,
};
use memlayer_ports::{
    MessageStore, StoreError, Summarizer, SummaryBacklog, SummaryJob, SummaryQueue, SummaryStore, ThreadStore,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::Secret;

/// Which summariser writes summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummarizerKind {
    /// The local extractive summariser (needs the embedding model, no network).
    #[default]
    Local,
    /// An OpenAI-compatible chat-completions endpoint (`summary.openai.*`).
    Openai,
}

/// The chat-completions endpoint of `summary.summarizer = "openai"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSummaryConfig {
    /// Base URL up to the API version (`https://api.openai.com/v1`, or a
    /// local server's); `/chat/completions` is appended.
    pub base_url: String,
    /// Bearer key; never logged or shown.
    pub api_key: Option<Secret>,
    /// The model asked.
    pub model: String,
    /// Longest one attempt may take, in milliseconds.
    pub timeout_ms: u64,
    /// Retries after a timeout, a connection failure, a 429 or a 5xx.
    pub max_retries: u32,
    /// Wait before the first retry, in milliseconds; doubled per retry.
    pub retry_backoff_ms: u64,
    /// Most characters of previous summary and messages sent per request.
    pub max_input_chars: usize,
}

impl Default for OpenAiSummaryConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            model: "gpt-4o-mini".into(),
            timeout_ms: 30_000,
            max_retries: 2,
            retry_backoff_ms: 500,
            max_input_chars: 48_000,
        }
    }
}

/// `summary.*`: thread summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummaryConfig {
    /// `local` (default) or `openai`.
    pub summarizer: SummarizerKind,
    /// A thread is summarised in the background once the tokens of its
    /// messages after its summary's coverage reach this; 0 turns automatic
    /// summaries off (on demand still works).
    pub threshold_tokens: u64,
    /// About how long a summary is, in tokens.
    pub target_tokens: u32,
    /// Most messages one step folds in (a longer backlog takes several
    /// steps, each a version).
    pub step_messages: u32,
    /// First retry delay of a failed summary job, in milliseconds (doubles
    /// per attempt).
    pub base_backoff_ms: u64,
    /// Longest retry delay, in seconds.
    pub max_backoff_secs: u64,
    /// How long a claimed job is leased to its worker, in seconds.
    pub lease_secs: u64,
    /// The chat-completions endpoint, for `summarizer = "openai"`.
    pub openai: OpenAiSummaryConfig,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            summarizer: SummarizerKind::Local,
            threshold_tokens: 2_000,
            target_tokens: 400,
            step_messages: 200,
            base_backoff_ms: 1_000,
            max_backoff_secs: 300,
            lease_secs: 300,
            openai: OpenAiSummaryConfig::default(),
        }
    }
}

impl SummaryConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// The key and what to set.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |key, reason: &str| Err((key, reason.to_owned()));
        if self.threshold_tokens > 100_000_000 {
            return bad("summary.threshold_tokens", "must be at most 100000000 (0 turns automatic summaries off)");
        }
        if !(16..=8_000).contains(&self.target_tokens) {
            return bad("summary.target_tokens", "must be between 16 and 8000");
        }
        if !(1..=memlayer_domain::MAX_PAGE_SIZE).contains(&self.step_messages) {
            return bad("summary.step_messages", "must be between 1 and 1000");
        }
        if self.base_backoff_ms == 0 || self.max_backoff_secs == 0 {
            return bad("summary.base_backoff_ms", "and summary.max_backoff_secs must be at least 1");
        }
        if !(10..=86_400).contains(&self.lease_secs) {
            return bad("summary.lease_secs", "must be between 10 and 86400 (a day)");
        }
        let o = &self.openai;
        if self.summarizer == SummarizerKind::Openai {
            if !(o.base_url.starts_with("http://") || o.base_url.starts_with("https://")) {
                return bad("summary.openai.base_url", "must start with http:// or https://");
            }
            if o.model.trim().is_empty() || o.model.len() > 128 {
                return bad("summary.openai.model", "must be 1 to 128 bytes");
            }
            if !(100..=600_000).contains(&o.timeout_ms) {
                return bad("summary.openai.timeout_ms", "must be between 100 and 600000");
            }
            if o.max_retries > 10 {
                return bad("summary.openai.max_retries", "must be at most 10");
            }
            if !(1_000..=1_000_000).contains(&o.max_input_chars) {
                return bad("summary.openai.max_input_chars", "must be between 1000 and 1000000");
            }
        }
        Ok(())
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.min(20));
        Duration::from_millis(self.base_backoff_ms)
            .saturating_mul(factor)
            .min(Duration::from_secs(self.max_backoff_secs))
    }
}

/// A thread's summary as a caller sees it: the newest version, what it
/// covers and what is left, and the pending job, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryView {
    /// The thread.
    pub thread_id: ThreadId,
    /// The newest version (`None` before the first summary).
    pub summary: Option<Summary>,
    /// Coverage and what follows it.
    pub backlog: SummaryBacklog,
    /// The queued job (with its failed attempts and last error), if any.
    pub job: Option<SummaryJob>,
}

/// What a summary on demand did.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRun {
    /// The summary after it.
    pub view: SummaryView,
    /// Whether it stored a new version.
    pub advanced: bool,
}

/// A summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The store failed (or the thread is missing: `NotFound`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The summariser failed; nothing was lost: the job is kept and the
    /// worker retries it after `retry_in`.
    #[error("{error}; the summary job is kept and retried in {retry_in:?}")]
    Summarizer {
        /// Why (`Unavailable` with the reason, `Unprovisioned` for a
        /// missing model).
        error: StoreError,
        /// When the worker tries again.
        retry_in: Duration,
    },
}

/// One incremental step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing after the newest summary's coverage.
    UpToDate,
    /// A new version, and whether more messages wait beyond it.
    Advanced {
        /// The version stored.
        summary: Summary,
        /// Messages it read.
        read: usize,
        /// More messages follow what it covers.
        more: bool,
    },
}

/// What one worker round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SummaryRound {
    /// Threads whose backlog was checked against the threshold.
    pub checked: usize,
    /// Jobs queued by those checks.
    pub queued: usize,
    /// Versions stored.
    pub advanced: usize,
    /// Jobs whose attempt failed (rescheduled with backoff).
    pub failed: usize,
    /// Jobs done and removed.
    pub completed: usize,
}

/// Bytes of messages one step reads at most (a page stops early past it).
const STEP_BYTES: usize = 4 * 1024 * 1024;
/// Jobs claimed per worker round.
const JOBS_PER_ROUND: u32 = 4;
/// Idle worker's poll (appends and on-demand summaries also wake it).
const POLL: Duration = Duration::from_secs(1);
/// Threads the trigger remembers; past it, those known to be below the
/// threshold are forgotten (and checked again at their next append).
const MAX_TRACKED: usize = 100_000;

/// What the trigger knows of a thread's unsummarised tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// To be checked in the store; `added` tokens appended since it was noted.
    Unchecked { added: u64 },
    /// Below the threshold by the last check plus what was appended since.
    Below { tokens: u64 },
    /// A job is queued (by this process).
    Queued,
}

#[derive(Debug, Default)]
struct TriggerState {
    /// By thread id alone (ids are unique across tenants, and a lookup then
    /// allocates nothing), with the tenant beside what is known.
    threads: HashMap<ThreadId, (TenantId, Known)>,
    /// Threads to check, oldest first, each once.
    dirty: Vec<(TenantId, ThreadId)>,
}

/// Notices when a thread's unsummarised part passes the threshold, with no
/// store access on the append path: an append adds its estimated tokens to
/// what the last check found, in memory; only a thread never checked (since
/// this process started, or since its last summary) or one whose estimate
/// reaches the threshold is checked against the store, by the worker. A
/// check that finds the backlog at the threshold queues a durable job.
///
/// The memory is only a shortcut: the store's backlog decides. A process
/// that stops between an append and its check forgets it; the thread is
/// checked at its next append, and a queued job survives any restart.
#[derive(Debug, Clone)]
pub struct SummaryTrigger {
    threshold: u64,
    state: Arc<Mutex<TriggerState>>,
    wake: Arc<Notify>,
}

/// What a job records of a failure, shown to callers with the job: a
/// summariser's `Unavailable` reason (the port makes it safe to show);
/// anything else a fixed text, its detail logged.
fn reason(e: &SummaryError) -> String {
    match e {
        SummaryError::Summarizer { error: StoreError::Unavailable(m), .. } => m.clone(),
        SummaryError::Summarizer { error: StoreError::Unprovisioned(m), .. } => {
            tracing::warn!(problem = %m, "summariser: model not provisioned");
            "the summariser's model is not available (not provisioned, or disabled by embedding.enabled = false); \
             the server log says which"
                .to_owned()
        }
        other => {
            tracing::error!(error = %other, "summarising failed");
            "summarising failed inside the server; the server log says why".to_owned()
        }
    }
}

/// The tokens an appended message adds: its stored count, else its
/// content's bytes / 4 rounded up (the store's backlog estimate).
fn tokens_of(m: &Message) -> u64 {
    m.token_count.as_ref().map_or(m.content.len().div_ceil(4) as u64, |c| u64::from(c.count))
}

impl SummaryTrigger {
    fn new(threshold: u64, wake: Arc<Notify>) -> Self {
        Self { threshold, state: Arc::default(), wake }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TriggerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an append to `thread` (called by `MemoryService` after the
    /// messages are stored): memory only, no I/O.
    pub fn note(&self, tenant: &TenantId, thread: ThreadId, stored: &[Message]) {
        let added: u64 = stored.iter().map(tokens_of).sum();
        let mut state = self.lock();
        let wake = match state.threads.get_mut(&thread) {
            None => {
                if state.threads.len() >= MAX_TRACKED {
                    state.threads.retain(|_, (_, k)| !matches!(k, Known::Below { .. }));
                }
                state.threads.insert(thread, (tenant.clone(), Known::Unchecked { added }));
                true
            }
            Some((_, known)) => match known {
                Known::Unchecked { added: a } => {
                    *a += added;
                    false
                }
                Known::Below { tokens } => {
                    *tokens += added;
                    let over = *tokens >= self.threshold;
                    if over {
                        *known = Known::Unchecked { added: 0 };
                    }
                    over
                }
                Known::Queued => false,
            },
        };
        if wake {
            state.dirty.push((tenant.clone(), thread));
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Checks `thread` again at the next round (after its job is done: what
    /// was appended while it ran may pass the threshold already).
    fn recheck(&self, tenant: &TenantId, thread: ThreadId) {
        let mut state = self.lock();
        state.threads.insert(thread, (tenant.clone(), Known::Unchecked { added: 0 }));
        state.dirty.push((tenant.clone(), thread));
    }

    /// The threads to check; what is appended to them from now on is
    /// counted apart, for [`SummaryTrigger::settle`].
    fn take_dirty(&self) -> Vec<(TenantId, ThreadId)> {
        let mut state = self.lock();
        let dirty = std::mem::take(&mut state.dirty);
        for (_, thread) in &dirty {
            if let Some((_, Known::Unchecked { added })) = state.threads.get_mut(thread) {
                *added = 0;
            }
        }
        dirty
    }

    /// Records a check's result: queued, or below with the backlog plus
    /// what was appended during the check (an overcount only brings the next
    /// check forward).
    fn settle(&self, tenant: &TenantId, thread: ThreadId, outcome: Option<u64>) {
        let mut state = self.lock();
        let during = match state.threads.get(&thread) {
            Some((_, Known::Unchecked { added })) => *added,
            _ => 0,
        };
        let known = match outcome {
            Some(tokens) => Known::Below { tokens: tokens + during },
            None => Known::Queued,
        };
        state.threads.insert(thread, (tenant.clone(), known));
    }

    fn forget(&self, _tenant: &TenantId, thread: ThreadId) {
        self.lock().threads.remove(&thread);
    }
}

/// The summary use cases and the worker that runs summary jobs (see the
/// module doc).
#[derive(Debug, Clone)]
pub struct SummaryService {
    store: Arc<dyn SummaryStore>,
    queue: Arc<dyn SummaryQueue>,
    messages: Arc<dyn MessageStore>,
    threads: Arc<dyn ThreadStore>,
    summarizer: Arc<dyn Summarizer>,
    config: Arc<SummaryConfig>,
    trigger: Option<SummaryTrigger>,
    wake: Arc<Notify>,
    /// Serialises worker rounds within this process.
    round: Arc<tokio::sync::Mutex<()>>,
}

impl SummaryService {
    /// A service over these ports. With `config.threshold_tokens` above 0
    /// it has a [`SummaryTrigger`] for `MemoryService` to note appends with.
    #[must_use]
    pub fn new(
        store: Arc<dyn SummaryStore>,
        queue: Arc<dyn SummaryQueue>,
        messages: Arc<dyn MessageStore>,
        threads: Arc<dyn ThreadStore>,
        summarizer: Arc<dyn Summarizer>,
        config: SummaryConfig,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let trigger = (config.threshold_tokens > 0).then(|| SummaryTrigger::new(config.threshold_tokens, wake.clone()));
        Self {
            store,
            queue,
            messages,
            threads,
            summarizer,
            config: Arc::new(config),
            trigger,
            wake,
            round: Arc::default(),
        }
    }

    /// The trigger appends report to, when automatic summaries are on.
    #[must_use]
    pub fn trigger(&self) -> Option<SummaryTrigger> {
        self.trigger.clone()
    }

    /// The summariser's name (`local:extractive`, `openai:<model>`).
    #[must_use]
    pub fn summarizer_name(&self) -> String {
        self.summarizer.name()
    }

    /// For a caller bound to a resource, `NotFound` unless `thread` is one
    /// of its resource's (the stores' tenant scoping covers the rest).
    async fn check_reach(&self, who: &(impl Reach + 'static), thread: ThreadId) -> Result<(), StoreError> {
        if who.resource().is_some() {
            let t = self.threads.get(who, thread).await?;
            if !who.reaches(t.resource_id.as_ref()) {
                return Err(StoreError::not_found("thread", thread));
            }
        }
        Ok(())
    }

    async fn view(&self, who: &(dyn Reach + 'static), thread: ThreadId) -> Result<SummaryView, StoreError> {
        let backlog = self.queue.summary_backlog(who, thread).await?;
        let summary = self.store.current_summary(who, thread).await?;
        let job = self.queue.summary_job(who, thread).await?;
        Ok(SummaryView { thread_id: thread, summary, backlog, job })
    }

    /// The current summary with its coverage: the newest version, the
    /// messages after it (count and estimated tokens) and the pending job.
    ///
    /// # Errors
    /// `NotFound` when the thread does not exist for the caller.
    pub async fn current(&self, who: &(impl Reach + 'static), thread: ThreadId) -> Result<SummaryView, StoreError> {
        self.check_reach(who, thread).await?;
        self.view(who, thread).await
    }

    /// The kept versions, newest first, at most `limit`.
    ///
    /// # Errors
    /// `NotFound` when the thread does not exist for the caller.
    pub async fn versions(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<Summary>, StoreError> {
        self.check_reach(who, thread).await?;
        self.store.summary_versions(who, thread, limit).await
    }

    /// One page of the kept versions, newest first: at most `limit` after
    /// `cursor` (a previous page's `next_cursor`), and the cursor of the
    /// next page (`None` at the end).
    ///
    /// # Errors
    /// `NotFound` when the thread does not exist for the caller; `Invalid`
    /// on `cursor` for a cursor of another thread or listing.
    pub async fn versions_page(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        cursor: Option<memlayer_domain::Cursor>,
        limit: u32,
    ) -> Result<memlayer_domain::Page<Summary>, StoreError> {
        let before = cursor.map(|c| c.for_summary_versions(thread)).transpose()?;
        self.check_reach(who, thread).await?;
        let mut items = self.store.summary_versions_before(who, thread, before, limit.saturating_add(1)).await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = match items.last() {
            Some(last) if more => Some(memlayer_domain::Cursor::summary_versions(thread, last.version)),
            _ => None,
        };
        Ok(memlayer_domain::Page { items, next_cursor })
    }

    /// One incremental step: folds at most `summary.step_messages` messages
    /// after the newest summary's coverage into it and stores the next
    /// version. Reads the newest summary and one keyset page after its
    /// `covers_through`, nothing else of the thread.
    ///
    /// # Errors
    /// [`SummaryError::Summarizer`] (with `retry_in` zero: the caller
    /// decides) when the summariser fails; `Conflict` when another
    /// summariser stored a version meanwhile; `NotFound` for a missing
    /// thread.
    #[tracing::instrument(name = "summary.step", skip_all, fields(tenant = %tenant, thread = %thread))]
    pub async fn step(&self, tenant: &TenantId, thread: ThreadId) -> Result<Step, SummaryError> {
        let current = self.store.current_summary(tenant, thread).await?;
        let (after, version) = current.as_ref().map_or((0, 0), |s| (s.covers_through, s.version));
        let limit = PageSize::new(self.config.step_messages).map_err(StoreError::from)?;
        let page = self
            .messages
            .page_within(
                tenant,
                thread,
                Some(Cursor::messages(thread, Direction::Forward, after)),
                Some(Direction::Forward),
                limit,
                STEP_BYTES,
            )
            .await?;
        let Some(last) = page.items.last().map(|m| m.seq) else {
            return Ok(Step::UpToDate);
        };
        let read = page.items.len();
        let previous = current.map(|s| s.text);
        let text = self
            .summarizer
            .summarize(previous, page.items, self.config.target_tokens)
            .await
            .map_err(|error| SummaryError::Summarizer { error, retry_in: Duration::ZERO })?;
        let next = NewSummary {
            // A summariser's NUL is kept as U+FFFD: no backend stores NUL.
            text: memlayer_ports::cut_to_bytes(&memlayer_domain::replace_nul(text), Summary::MAX_BYTES).to_owned(),
            covers_through: last,
            newly_covered: read as u64,
            summarizer: self.summarizer.name(),
        };
        let summary = self.store.save_summary(tenant, thread, next, version).await?;
        Ok(Step::Advanced { summary, read, more: page.next_cursor.is_some() })
    }

    /// Summarises now: queues the thread's job first (so nothing is lost),
    /// runs one step and completes the job when nothing is left; when more
    /// is left, the worker continues in the background. When the summariser
    /// fails, the failure is recorded on the job, which the worker retries
    /// with backoff, and returned.
    ///
    /// # Errors
    /// [`SummaryError::Summarizer`] with the reason and when the job is
    /// retried; `NotFound` when the thread does not exist for the caller.
    pub async fn summarize_now(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
    ) -> Result<SummaryRun, SummaryError> {
        self.check_reach(who, thread).await?;
        let tenant = who.tenant();
        let job = self.queue.enqueue_summary(tenant, thread, now()).await?;
        let advanced = match self.step(tenant, thread).await {
            Ok(Step::UpToDate) => {
                self.queue.complete_summary_job(tenant, thread, job.requests, now()).await?;
                false
            }
            Ok(Step::Advanced { more: false, .. }) => {
                self.queue.complete_summary_job(tenant, thread, job.requests, now()).await?;
                true
            }
            Ok(Step::Advanced { more: true, .. }) => {
                self.wake.notify_one();
                true
            }
            Err(SummaryError::Store(StoreError::Conflict(_))) => {
                // Another summariser stored a version meanwhile; the job
                // stays due and the worker folds in whatever is left.
                self.wake.notify_one();
                false
            }
            Err(SummaryError::Summarizer { error, .. }) => {
                let retry_in = self.config.backoff(job.attempts);
                let failed = SummaryError::Summarizer { error, retry_in };
                self.queue.fail_summary_job(tenant, thread, reason(&failed), now() + retry_in).await?;
                return Err(failed);
            }
            Err(e @ SummaryError::Store(_)) => return Err(e),
        };
        Ok(SummaryRun { view: self.view(who, thread).await?, advanced })
    }

    /// Checks the threads the trigger noted against the threshold, queueing
    /// a job for each at or past it.
    async fn check_noted(&self, round: &mut SummaryRound) {
        let Some(trigger) = &self.trigger else { return };
        for (tenant, thread) in trigger.take_dirty() {
            round.checked += 1;
            let backlog = match self.queue.summary_backlog(&tenant, thread).await {
                Ok(b) => b,
                Err(e) => {
                    if !matches!(e, StoreError::NotFound { .. }) {
                        tracing::warn!(error = %e, %thread, "summary trigger: backlog unreadable; checked again at the next append");
                    }
                    trigger.forget(&tenant, thread);
                    continue;
                }
            };
            if backlog.tokens < trigger.threshold {
                trigger.settle(&tenant, thread, Some(backlog.tokens));
                continue;
            }
            match self.queue.enqueue_summary(&tenant, thread, now()).await {
                Ok(_) => {
                    round.queued += 1;
                    trigger.settle(&tenant, thread, None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %thread, "summary trigger: queueing failed; checked again at the next append");
                    trigger.forget(&tenant, thread);
                }
            }
        }
    }

    /// Runs one claimed job: steps until the thread is caught up or half
    /// the lease has passed, then completes, requeues or fails the job.
    async fn run_job(&self, job: SummaryJob, round: &mut SummaryRound) -> Result<(), StoreError> {
        let (tenant, thread) = (&job.tenant, job.thread);
        let started = Instant::now();
        let budget = Duration::from_secs(self.config.lease_secs) / 2;
        loop {
            match self.step(tenant, thread).await {
                Ok(Step::Advanced { more: true, .. }) if started.elapsed() < budget => round.advanced += 1,
                Ok(Step::Advanced { more: true, .. }) => {
                    // Out of time: ask again, so the completion below
                    // leaves the job due for the next round.
                    round.advanced += 1;
                    self.queue.enqueue_summary(tenant, thread, now()).await?;
                    self.queue.complete_summary_job(tenant, thread, job.requests, now()).await?;
                    return Ok(());
                }
                Ok(outcome) => {
                    if matches!(outcome, Step::Advanced { .. }) {
                        round.advanced += 1;
                    }
                    if self.queue.complete_summary_job(tenant, thread, job.requests, now()).await? {
                        round.completed += 1;
                    }
                    if let Some(t) = &self.trigger {
                        t.recheck(tenant, thread);
                    }
                    return Ok(());
                }
                Err(SummaryError::Store(StoreError::Conflict(_))) if started.elapsed() < budget => {}
                Err(SummaryError::Store(StoreError::NotFound { .. })) => {
                    // Deleted meanwhile: its job goes with it.
                    if let Some(t) = &self.trigger {
                        t.forget(tenant, thread);
                    }
                    return Ok(());
                }
                Err(e) => {
                    let retry_in = self.config.backoff(job.attempts);
                    let error = reason(&e);
                    tracing::warn!(%thread, attempts = job.attempts + 1, ?retry_in, %error, "summary job failed");
                    round.failed += 1;
                    return self.queue.fail_summary_job(tenant, thread, error, now() + retry_in).await;
                }
            }
        }
    }

    /// One worker round: checks the noted threads against the threshold,
    /// then runs the due jobs it claims (at most 4) under a lease.
    ///
    /// # Errors
    /// When the store fails; a summariser failure is recorded on its job
    /// and counted in [`SummaryRound::failed`] instead.
    pub async fn run_once(&self) -> Result<SummaryRound, StoreError> {
        self.run_once_at(now()).await
    }

    /// [`SummaryService::run_once`] with the claim made as of `at`, or now
    /// if later (tests and tools pass a later time to take jobs waiting out
    /// a backoff).
    ///
    /// # Errors
    /// As [`SummaryService::run_once`].
    pub async fn run_once_at(&self, at: Timestamp) -> Result<SummaryRound, StoreError> {
        let _guard = self.round.lock().await;
        let mut round = SummaryRound::default();
        self.check_noted(&mut round).await;
        // After the checks, so the jobs they queued are due.
        let at = at.max(now());
        let lease = at + Duration::from_secs(self.config.lease_secs);
        for job in self.queue.claim_summary_jobs(at, JOBS_PER_ROUND, lease).await? {
            self.run_job(job, &mut round).await?;
        }
        Ok(round)
    }

    /// Runs rounds until one does nothing; returns the totals.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn drain(&self) -> Result<SummaryRound, StoreError> {
        let mut total = SummaryRound::default();
        loop {
            let r = self.run_once().await?;
            total.checked += r.checked;
            total.queued += r.queued;
            total.advanced += r.advanced;
            total.failed += r.failed;
            total.completed += r.completed;
            if r.checked == 0 && r.advanced == 0 && r.completed == 0 && r.queued == 0 {
                return Ok(total);
            }
            if r.failed > 0 && r.advanced == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs the worker in the background until `shutdown` turns true.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let idle = match self.run_once().await {
                    Ok(r) => r.advanced == 0 && r.completed == 0 && r.queued == 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "summary worker: store error");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(content: &str) -> Message {
        Message {
            id: memlayer_domain::MessageId::new(),
            thread_id: ThreadId::new(),
            seq: 1,
            role: memlayer_domain::Role::User,
            content: content.into(),
            tool_call_id: None,
            tool_name: None,
            tool_calls: Vec::new(),
            metadata: memlayer_domain::Metadata::default(),
            token_count: None,
            created_at: now(),
        }
    }

    #[test]
    fn the_trigger_asks_the_store_only_when_it_must() {
        let trigger = SummaryTrigger::new(100, Arc::new(Notify::new()));
        let (t, a) = (TenantId::parse("acme").unwrap(), ThreadId::new());
        let hundred_bytes = msg(&"x".repeat(100)); // 25 tokens
        trigger.note(&t, a, std::slice::from_ref(&hundred_bytes));
        assert_eq!(trigger.take_dirty(), vec![(t.clone(), a)], "never checked: check it");
        trigger.note(&t, a, std::slice::from_ref(&hundred_bytes));
        assert!(trigger.take_dirty().is_empty(), "noted once until checked");
        trigger.settle(&t, a, Some(50)); // the store's backlog: 50, plus 25 appended during the check
        trigger.note(&t, a, std::slice::from_ref(&hundred_bytes)); // 100: at the threshold
        assert_eq!(trigger.take_dirty(), vec![(t.clone(), a)], "estimate reached the threshold");
        trigger.settle(&t, a, None);
        for _ in 0..10 {
            trigger.note(&t, a, std::slice::from_ref(&hundred_bytes));
        }
        assert!(trigger.take_dirty().is_empty(), "queued: nothing to check");
        trigger.recheck(&t, a);
        assert_eq!(trigger.take_dirty(), vec![(t.clone(), a)], "after its job");
        trigger.settle(&t, a, Some(0));
        trigger.note(&t, a, std::slice::from_ref(&hundred_bytes));
        assert!(trigger.take_dirty().is_empty(), "25 of 100");
    }

    #[test]
    fn stored_token_counts_are_used_when_present() {
        let mut m = msg(&"x".repeat(400));
        assert_eq!(tokens_of(&m), 100);
        m.token_count = Some(memlayer_domain::TokenCount {
            count: 7,
            model: "gpt-4o".into(),
            encoding: "o200k_base".into(),
            exact: true,
        });
        assert_eq!(tokens_of(&m), 7);
    }

    #[test]
    fn bounds_are_checked_and_backoff_doubles_to_its_cap() {
        assert!(SummaryConfig::default().validate().is_ok());
        for (c, key) in [
            (SummaryConfig { target_tokens: 8, ..SummaryConfig::default() }, "summary.target_tokens"),
            (SummaryConfig { step_messages: 0, ..SummaryConfig::default() }, "summary.step_messages"),
            (SummaryConfig { lease_secs: 1, ..SummaryConfig::default() }, "summary.lease_secs"),
            (
                SummaryConfig {
                    summarizer: SummarizerKind::Openai,
                    openai: OpenAiSummaryConfig { base_url: "ftp://x".into(), ..OpenAiSummaryConfig::default() },
                    ..SummaryConfig::default()
                },
                "summary.openai.base_url",
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().0, key);
        }
        let c = SummaryConfig { base_backoff_ms: 1_000, max_backoff_secs: 5, ..SummaryConfig::default() };
        let waits: Vec<u64> = (0..5).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }
}
