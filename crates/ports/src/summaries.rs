//! [`SummaryStore`] (versioned thread summaries), [`Summarizer`] (what
//! writes them: a local extractive one, or a chat-completions model) and
//! [`SummaryQueue`] (the durable summary jobs and the backlog that triggers
//! them).
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{DomainError, Message, NewSummary, Reach, Summary, TenantId, ThreadId, Timestamp};

use crate::StoreError;

/// Versioned summaries of threads.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SummaryStore: Send + Sync + std::fmt::Debug {
    /// The newest summary of the thread, or `None`.
    ///
    /// MUST return `NotFound` when the thread does not exist for this tenant.
    async fn current_summary(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
    ) -> Result<Option<Summary>, StoreError>;

    /// Stores `next` as version `expected + 1` (`expected` 0 when there is
    /// none yet).
    ///
    /// MUST return `Conflict` when the newest version differs from
    /// `expected` (two summarisers never both advance from one version),
    /// `Invalid` when `next.covers_through` is below the previous version's
    /// or above the thread's last seq, or fails [`check_new_summary`] (the
    /// text is over [`Summary::MAX_BYTES`]…), and `NotFound` for a missing
    /// thread. Never touches a message. The stored version's
    /// `covered_messages` is the previous one's plus `next.newly_covered`.
    async fn save_summary(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        next: NewSummary,
        expected: u64,
    ) -> Result<Summary, StoreError>;

    /// Kept versions, newest first, at most `limit`.
    ///
    /// MUST return `NotFound` for a missing thread.
    async fn summary_versions(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<Summary>, StoreError>;

    /// Kept versions older than `before` (every kept one when `None`),
    /// newest first, at most `limit`: one keyset page.
    ///
    /// MUST return `NotFound` for a missing thread. The default filters
    /// [`summary_versions`](Self::summary_versions); stores override it
    /// with a keyset read.
    async fn summary_versions_before(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Summary>, StoreError> {
        let all = self.summary_versions(who, thread, u32::MAX).await?;
        let older = all.into_iter().filter(|s| before.is_none_or(|b| s.version < b));
        Ok(older.take(usize::try_from(limit).unwrap_or(usize::MAX)).collect())
    }
}

/// Writes summaries.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Summarizer: Send + Sync + std::fmt::Debug {
    /// Its name as recorded in [`Summary::summarizer`].
    fn name(&self) -> String;

    /// Folds `messages` (in seq order, all newer than what `previous`
    /// covers) into `previous`, in about `target_tokens` tokens.
    ///
    /// MUST be deterministic for a local summariser, and MUST return
    /// `Unavailable` (retryable, with the reason) when a remote model cannot
    /// be reached or answers badly; the key is never part of any error. An
    /// `Unavailable` reason is shown to API callers, so it names no key, URL
    /// or server path.
    async fn summarize(
        &self,
        previous: Option<String>,
        messages: Vec<Message>,
        target_tokens: u32,
    ) -> Result<String, StoreError>;
}

/// A thread's pending summary job (durable, leased, retried with backoff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryJob {
    /// Its tenant.
    pub tenant: TenantId,
    /// The thread to summarise.
    pub thread: ThreadId,
    /// When it may next run.
    pub due_at: Timestamp,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Until when a worker holds it, if one does.
    pub leased_until: Option<Timestamp>,
    /// How many times it was asked for (1 when queued, +1 for each
    /// [`SummaryQueue::enqueue_summary`] while it was queued):
    /// [`SummaryQueue::complete_summary_job`] removes it only if no request
    /// came after the worker read it.
    pub requests: u64,
}

/// What a thread holds beyond its newest summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SummaryBacklog {
    /// The newest summary's version (0: none yet).
    pub version: u64,
    /// The last seq it covers (0: none yet).
    pub covers_through: i64,
    /// Messages with a seq above `covers_through`.
    pub messages: u64,
    /// Their tokens: each message's stored token count, else its content's
    /// bytes / 4 rounded up (an estimate).
    pub tokens: u64,
}

/// The durable queue of summary jobs (one per thread at most) and the
/// backlog that decides when a thread needs one.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SummaryQueue: Send + Sync + std::fmt::Debug {
    /// The thread's unsummarised messages ([`SummaryBacklog`]); reads only
    /// the messages after the newest summary's `covers_through`.
    ///
    /// MUST return `NotFound` when the thread does not exist for this tenant.
    async fn summary_backlog(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
    ) -> Result<SummaryBacklog, StoreError>;

    /// Queues a summary of the thread due at `due`; when one is queued
    /// already, counts one more request and leaves its due time, attempts
    /// and lease alone. Returns the job as stored.
    ///
    /// MUST return `NotFound` for a missing thread, and never queue two jobs
    /// for one thread.
    async fn enqueue_summary(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        due: Timestamp,
    ) -> Result<SummaryJob, StoreError>;

    /// Up to `limit` jobs of any tenant due at `now` and not leased past
    /// `now`, fair across tenants (each tenant's earliest due first, then
    /// every tenant's second, and so on, so one tenant's backlog never holds
    /// back another's jobs), leased until `lease_until` atomically: two
    /// concurrent calls MUST never return the same job, and a job whose
    /// worker died is handed out again once its lease has passed. MUST leave
    /// out jobs of threads marked deleted.
    async fn claim_summary_jobs(
        &self,
        now: Timestamp,
        limit: u32,
        lease_until: Timestamp,
    ) -> Result<Vec<SummaryJob>, StoreError>;

    /// The work of a job read with `requests` is done: MUST remove the job
    /// if its `requests` is still that (returns `true`), else end its lease
    /// and make it due at `now` with no attempts (returns `false`), so a
    /// request that came meanwhile is not lost. No job: `false`.
    async fn complete_summary_job(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        requests: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt: attempts + 1, the error (cut to 1,000
    /// bytes), due again at `retry_at`, lease ended. No job: nothing.
    async fn fail_summary_job(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        error: String,
        retry_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// The thread's job, if one is queued; `None` for a thread of another
    /// tenant.
    async fn summary_job(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
    ) -> Result<Option<SummaryJob>, StoreError>;
}

/// Longest summarizer name [`check_new_summary`] accepts, in bytes.
pub const MAX_SUMMARIZER_NAME_BYTES: usize = 128;

/// Longest job error a [`SummaryQueue`] keeps, in bytes.
pub const MAX_SUMMARY_ERROR_BYTES: usize = 1_000;

/// What every [`SummaryStore::save_summary`] checks before it reads: the
/// text within [`Summary::MAX_BYTES`], a `covers_through` of at least 0, a
/// summarizer name of 1 to [`MAX_SUMMARIZER_NAME_BYTES`] bytes.
///
/// # Errors
/// `Invalid` naming the field.
pub fn check_new_summary(next: &NewSummary) -> Result<(), StoreError> {
    if next.text.len() > Summary::MAX_BYTES {
        return Err(DomainError::new(
            "text",
            format!("is {} bytes, at most {} are accepted", next.text.len(), Summary::MAX_BYTES),
        )
        .into());
    }
    if next.covers_through < 0 {
        return Err(
            DomainError::new("covers_through", format!("is {}, must be at least 0", next.covers_through)).into()
        );
    }
    if next.summarizer.is_empty() || next.summarizer.len() > MAX_SUMMARIZER_NAME_BYTES {
        return Err(DomainError::new(
            "summarizer",
            format!("must be 1 to {MAX_SUMMARIZER_NAME_BYTES} bytes, got {}", next.summarizer.len()),
        )
        .into());
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary.
#[must_use]
pub fn cut_to_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
