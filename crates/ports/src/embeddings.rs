//! [`EmbeddingStore`]: durable vectors, the embedding job queue (fair,
//! leased) and BM25 lexical search.

use async_trait::async_trait;
use memlayer_domain::{Coverage, Embedding, EmbeddingCounts, MessageId, TenantId, ThreadId, Timestamp};

use crate::{ScoredHit, SearchFilter, StoreError, VectorEntry};

/// A message waiting for its embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEmbedding {
    /// The message.
    pub id: MessageId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its thread.
    pub thread: ThreadId,
    /// The text to embed (content plus tool-call names and arguments).
    pub text: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Durable embeddings, the embedding job queue and lexical search: the
/// database side of semantic memory.
///
/// A message can never be stored without either a vector or a pending job:
/// the job is durable from the append's own transaction (an adapter may
/// record it there explicitly, or implicitly, e.g. as "every message after
/// position N", and materialise it later), and every method here that reads
/// jobs, counts progress or searches text sees every stored message.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait EmbeddingStore: Send + Sync + std::fmt::Debug {
    /// Up to `limit` jobs due at `now` (their next attempt is at or before
    /// `now` and no lease on them runs past `now`), without leasing them:
    /// what [`claim_jobs`](Self::claim_jobs) would hand out.
    ///
    /// Fair across tenants: the batch is filled round-robin, every tenant
    /// with a due job getting its first job in before any tenant gets its
    /// second, and so on (tenants in the same round in the order their jobs
    /// fell due), so one tenant's bulk import of thousands of messages never
    /// starves another tenant's new ones. Within a tenant, earliest due
    /// first: a new job is due from its message's creation, so a tenant's
    /// fresh jobs come oldest message first, and a retried one at its retry
    /// time. MUST stay cheap with a queue of 100,000 jobs (the worker polls
    /// it every batch).
    async fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<PendingEmbedding>, StoreError>;

    /// [`due_jobs`](Self::due_jobs), and leases the jobs returned until
    /// `lease_until`, atomically: until then no other `claim_jobs` call, of
    /// this process or of another one on the same database, hands them out
    /// again, nor does `due_jobs`. Two concurrent calls MUST never return the
    /// same job. [`complete_jobs`](Self::complete_jobs) and
    /// [`fail_jobs`](Self::fail_jobs) end the lease; a job whose worker died
    /// is handed out again once `lease_until` has passed.
    async fn claim_jobs(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<PendingEmbedding>, StoreError>;

    /// Stores each embedding and deletes its job, atomically. MUST skip
    /// messages deleted meanwhile and return the entries actually stored.
    async fn complete_jobs(&self, done: Vec<(MessageId, Embedding)>) -> Result<Vec<VectorEntry>, StoreError>;

    /// Records a failed attempt for each job: attempts + 1, the error, and
    /// the next attempt at `retry_at`; ends any lease on them.
    async fn fail_jobs(&self, ids: Vec<MessageId>, error: String, retry_at: Timestamp) -> Result<(), StoreError>;

    /// Schedules every message lacking a vector of `model` (re-embedding a
    /// store for a new model); returns how many jobs were added. MUST be
    /// idempotent, and MUST make every queued job due at once (an explicit
    /// re-embed does not wait out the backoff of earlier failures).
    async fn enqueue_missing(&self, model: String) -> Result<u64, StoreError>;

    /// Vectors of `model` in storage order, after position `after`, up to
    /// `limit`, and the position to continue from (`None` at the end).
    async fn scan_vectors(
        &self,
        model: String,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<VectorEntry>, Option<i64>), StoreError>;

    /// Embedding progress of the messages a filter admits.
    async fn embedding_counts(&self, filter: &SearchFilter, model: String) -> Result<EmbeddingCounts, StoreError>;

    /// What every vector search reports: `pending` and `other_model` of
    /// [`embedding_counts`](Self::embedding_counts), which they MUST equal.
    /// Adapters override it with something cheaper than the full counts,
    /// since it runs on every search.
    async fn coverage(&self, filter: &SearchFilter, model: String) -> Result<Coverage, StoreError> {
        self.embedding_counts(filter, model).await.map(Coverage::from)
    }

    /// Removes vectors of every model but `keep`; returns how many.
    async fn prune_vectors(&self, keep: String) -> Result<u64, StoreError>;

    /// Messages matching `query` by BM25 over their text, best first, with
    /// scores where higher is better. The query is plain words: operators and
    /// punctuation of the underlying engine never reach it unescaped.
    async fn lexical_search(
        &self,
        filter: &SearchFilter,
        query: String,
        k: usize,
    ) -> Result<Vec<ScoredHit>, StoreError>;
}
