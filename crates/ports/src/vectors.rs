//! [`VectorIndex`]: nearest neighbours of a query vector under a tenant and
//! thread filter.

use async_trait::async_trait;
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};

use crate::StoreError;

/// One message's vector, with what a filter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorEntry {
    /// The message.
    pub id: MessageId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its thread.
    pub thread: ThreadId,
    /// The vector and the model that made it.
    pub embedding: Embedding,
}

/// Which entries a search may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorFilter {
    /// Only this tenant's entries.
    pub tenant: TenantId,
    /// Only these threads' entries; `None` for the whole tenant.
    pub threads: Option<Vec<ThreadId>>,
}

impl VectorFilter {
    /// Whether an entry of `tenant` and `thread` passes.
    #[must_use]
    pub fn admits(&self, tenant: &TenantId, thread: ThreadId) -> bool {
        &self.tenant == tenant && self.threads.as_ref().is_none_or(|ts| ts.contains(&thread))
    }
}

/// A search result: the message and its similarity (higher is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorMatch {
    /// The message.
    pub id: MessageId,
    /// Its thread.
    pub thread: ThreadId,
    /// Cosine similarity to the query for vector search; the ranking's own
    /// score otherwise.
    pub score: f32,
}

/// Matches and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSearch {
    /// Best first.
    pub matches: Vec<VectorMatch>,
    /// `exact` when every candidate was compared, else the index used
    /// (`hnsw`, `libsql`…).
    pub strategy: &'static str,
}

/// A nearest-neighbour index over message vectors.
#[allow(clippy::len_without_is_empty, reason = "an async, fallible len; `len().await? == 0` reads fine")]
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// Short name of the adapter (`exact`, `hnsw`, `libsql`).
    fn kind(&self) -> &'static str;

    /// Adds entries; an entry with an id already present (for the same model)
    /// replaces it. MUST make them searchable before returning.
    async fn upsert(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError>;

    /// MUST make these messages' entries unsearchable before returning;
    /// unknown ids are ignored.
    async fn remove(&self, ids: Vec<MessageId>) -> Result<(), StoreError>;

    /// MUST make every entry of the thread unsearchable before returning.
    async fn remove_thread(&self, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError>;

    /// Up to `k` entries of the query's model admitted by `filter`, best
    /// first by cosine similarity.
    ///
    /// MUST NOT return an entry of another tenant, of a thread outside the
    /// filter, of another model, or one removed; MUST return scores equal to
    /// the cosine similarity of the stored vector and the query, sorted
    /// descending; MUST return `Invalid` when the query's dimension differs
    /// from the stored vectors' of that model.
    async fn search(&self, filter: &VectorFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError>;

    /// Number of searchable entries.
    async fn len(&self) -> Result<usize, StoreError>;

    /// Ids of every searchable entry (to reconcile the index with the durable
    /// store at start-up).
    async fn ids(&self) -> Result<Vec<MessageId>, StoreError>;

    /// The process is shutting down: stop background work (abandoning, not
    /// finishing, a long one such as a graph build) and persist what the
    /// adapter keeps only in memory, promptly (seconds, not minutes). The
    /// index MUST still answer every other method afterwards, with nothing
    /// lost. The default does nothing (an index whose entries are durable
    /// already).
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
