//! [`SummaryStore`] (versioned thread summaries) and [`Summarizer`] (what
//! writes them: a local extractive one, or a chat-completions model).

use async_trait::async_trait;
use memlayer_domain::{Message, NewSummary, Summary, TenantId, ThreadId};

use crate::StoreError;

/// Versioned summaries of threads.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SummaryStore: Send + Sync + std::fmt::Debug {
    /// The newest summary of the thread, or `None`.
    ///
    /// MUST return `NotFound` when the thread does not exist for this tenant.
    async fn current_summary(&self, tenant: &TenantId, thread: ThreadId) -> Result<Option<Summary>, StoreError>;

    /// Stores `next` as version `expected + 1` (`expected` 0 when there is
    /// none yet).
    ///
    /// MUST return `Conflict` when the newest version differs from
    /// `expected` (two summarisers never both advance from one version),
    /// `Invalid` when `next.covers_through` is below the previous version's
    /// or the text is over [`Summary::MAX_BYTES`], and `NotFound` for a
    /// missing thread. Never touches a message.
    async fn save_summary(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        next: NewSummary,
        expected: u64,
    ) -> Result<Summary, StoreError>;

    /// Kept versions, newest first, at most `limit`.
    ///
    /// MUST return `NotFound` for a missing thread.
    async fn summary_versions(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<Summary>, StoreError>;
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
    /// be reached or answers badly; the key is never part of any error.
    async fn summarize(
        &self,
        previous: Option<String>,
        messages: Vec<Message>,
        target_tokens: u32,
    ) -> Result<String, StoreError>;
}
