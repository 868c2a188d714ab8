//! [`ThreadStore`]: threads of a tenant, created, patched, deleted with
//! their messages and state, and listed newest first.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{
    Cursor, ForkThread, NewThread, Page, PageSize, Quota, Reach, ResourceId, Thread, ThreadFilter, ThreadId,
    ThreadPatch,
};

use crate::{StoreError, VectorEntry};

/// Conversation threads.
///
/// Every method but the sweep acts for `who`: a tenant ([`memlayer_domain::TenantId`]
/// is a [`Reach`] of its whole tenant) or a caller bound to one resource.
/// The memory services check a bound caller's resource on every backend;
/// a backend MAY also enforce it (Postgres does, by row-level security),
/// and MUST scope everything by `who.tenant()`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ThreadStore: Send + Sync + std::fmt::Debug {
    /// Creates a thread with a new time-ordered id, `last_seq` 0 and
    /// `created_at == updated_at`.
    ///
    /// MUST return the stored thread whole. [`ThreadStore::create_within`]
    /// without a quota.
    async fn create(&self, who: &(dyn Reach + 'static), new: NewThread) -> Result<Thread, StoreError> {
        self.create_within(who, new, &Quota::UNLIMITED).await
    }

    /// [`ThreadStore::create`] within the tenant's storage quota: the new
    /// thread counts against `quota.threads` (see [`crate::UsageStore`]).
    ///
    /// MUST, in the transaction that stores the thread, count it and return
    /// `QuotaExceeded` (storing nothing) when the tenant's live threads
    /// would pass `quota.threads`; concurrent creates MUST NOT together pass
    /// it (the last free slot is taken exactly once).
    async fn create_within(
        &self,
        who: &(dyn Reach + 'static),
        new: NewThread,
        quota: &Quota,
    ) -> Result<Thread, StoreError>;

    /// MUST return `NotFound` when the thread does not exist or belongs to
    /// another tenant.
    async fn get(&self, who: &(dyn Reach + 'static), id: ThreadId) -> Result<Thread, StoreError>;

    /// The ids of the tenant's threads of `resource`, in id order (what a
    /// search scoped to a resource covers); empty when it has none.
    async fn resource_threads(
        &self,
        who: &(dyn Reach + 'static),
        resource: &ResourceId,
    ) -> Result<Vec<ThreadId>, StoreError>;

    /// Lists the tenant's threads matching `filter`, newest first (by id).
    ///
    /// MUST return at most `limit` threads after the cursor's last thread and
    /// a `next_cursor` exactly when more match; MUST never skip or repeat a
    /// thread across pages; MUST return `Invalid` for a cursor issued for
    /// another tenant or filter, and for more metadata filters than
    /// [`ThreadFilter::check`] accepts.
    async fn list(
        &self,
        who: &(dyn Reach + 'static),
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError>;

    /// Applies `patch` and bumps `updated_at`; an empty patch changes nothing.
    ///
    /// MUST return `NotFound` as [`ThreadStore::get`]; MUST return the updated thread.
    async fn update(&self, who: &(dyn Reach + 'static), id: ThreadId, patch: ThreadPatch)
    -> Result<Thread, StoreError>;

    /// Deletes the thread: marks it deleted in one short transaction whatever
    /// its size; [`ThreadStore::sweep_deleted`] removes what it held later.
    /// The thread, its messages and their bytes stop counting against the
    /// tenant's quota in the same transaction.
    ///
    /// MUST return `NotFound` as [`ThreadStore::get`] (a thread already
    /// deleted included). From its success on, every method of every port
    /// MUST answer for the thread exactly as for one that never existed:
    /// `NotFound` from thread, message and state reads and writes (append,
    /// page, last, range, get, state load and save, update, a second
    /// delete), its messages absent from `get_many`, `read_windows`,
    /// lexical search, embedding counts and coverage, due and claimed
    /// embedding jobs, `scan_vectors`, `resource_threads` and thread
    /// listings, and `complete_jobs` storing nothing for them. Its id MUST
    /// stay taken until the sweep has removed it.
    async fn delete(&self, who: &(dyn Reach + 'static), id: ThreadId) -> Result<(), StoreError>;

    /// Forks `source`: ONE transaction that creates a new thread
    /// ([`ForkThread::forked`]: a new id, the source's resource, agent and
    /// model, metadata naming the source, `last_seq` the resolved `at_seq`)
    /// and copies into it every live message of the source with a sequence
    /// number up to `at_seq`, each with a new time-ordered id (in sequence
    /// order) and the same sequence number (gaps left by deleted messages
    /// stay gaps), role, content, tool calls, metadata, token count and
    /// creation time; every stored vector of those messages (copied, never
    /// recomputed), a pending embedding (job) for each copied message
    /// without a vector; each agent's state as of `at_seq` (version 1): the
    /// one saved last while the source's last seq was at most `at_seq`, none
    /// when there was none or the store no longer keeps one that old (a
    /// store keeps a bounded history); the newest summary whose
    /// `covers_through` is at most `at_seq` (version 1, its text, coverage
    /// and summariser kept), none when there is none; and the thread's
    /// working-memory document as of `at_seq`, the same way (version 1, the
    /// only version kept). Forking the whole thread (`at_seq` the source's
    /// `last_seq`) copies the current states and document.
    ///
    /// MUST return `NotFound` as [`ThreadStore::get`] for the source; MUST
    /// return `Invalid` naming `at_seq` when it lies beyond the source's
    /// `last_seq`; MUST leave the source untouched; MUST be atomic (on any
    /// error nothing of the fork exists); MUST return the new thread and the
    /// copied vectors (for the in-process vector index). Copied messages
    /// MUST be found by lexical search like appended ones.
    /// [`ThreadStore::fork_within`] without a quota.
    async fn fork(&self, who: &(dyn Reach + 'static), source: ThreadId, fork: ForkThread) -> Result<Fork, StoreError> {
        self.fork_within(who, source, fork, &Quota::UNLIMITED).await
    }

    /// [`ThreadStore::fork`] within the tenant's storage quota: the new
    /// thread, its messages and their bytes count against `quota` like a
    /// create and an append (see [`ThreadStore::create_within`]).
    ///
    /// MUST, in the fork's transaction, count them and return
    /// `QuotaExceeded` storing nothing when they would pass a limit.
    async fn fork_within(
        &self,
        who: &(dyn Reach + 'static),
        source: ThreadId,
        fork: ForkThread,
        quota: &Quota,
    ) -> Result<Fork, StoreError>;

    /// Physically removes threads [`ThreadStore::delete`] marked, of every
    /// tenant, oldest mark first: ONE transaction that deletes at most
    /// `max_messages` messages of one marked thread (with their vectors,
    /// embedding jobs and full-text entries) and, when that leaves the thread
    /// no message, its agent states and row too. Callers loop while
    /// [`Sweep::more`], each call releasing the database between chunks, so
    /// other writers never wait for a whole thread.
    ///
    /// MUST be atomic per call (a crash between calls leaves a marked thread
    /// with fewer messages, which the next call continues); MUST return
    /// `Invalid` for `max_messages` 0; MUST report what it removed. The
    /// marks are durable: a sweep cut short resumes after a restart.
    async fn sweep_deleted(&self, max_messages: u32) -> Result<Sweep, StoreError>;
}

/// What one [`ThreadStore::sweep_deleted`] call removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Messages removed.
    pub messages: u64,
    /// Threads removed whole (their row and agent states; 0 or 1).
    pub threads: u64,
    /// Whether marked threads remain after this call (including one another
    /// sweeper, e.g. of another server on the same database, is removing
    /// right now: then a call may remove nothing and still say `more`).
    pub more: bool,
}

/// What [`ThreadStore::fork`] made.
#[derive(Debug, Clone, PartialEq)]
pub struct Fork {
    /// The new thread.
    pub thread: Thread,
    /// Messages copied.
    pub messages: u64,
    /// The copied vectors, for the vector index to learn (as
    /// `EmbeddingStore::complete_jobs` returns them).
    pub vectors: Vec<VectorEntry>,
}
