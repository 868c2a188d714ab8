//! [`VectorIndex`]: nearest neighbours of a query vector under a tenant and
//! thread filter.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use memlayer_domain::{Embedding, MessageId, Reach, ResourceId, TenantId, ThreadId};
use serde::{Deserialize, Serialize};

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

/// Which threads of a tenant a search covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadSelection {
    /// Every thread of the tenant.
    All,
    /// Only these threads; none at all when the list is empty (a resource
    /// without threads).
    These(Vec<ThreadId>),
}

impl ThreadSelection {
    /// The listed threads; `None` for all of them.
    #[must_use]
    pub fn listed(&self) -> Option<&[ThreadId]> {
        match self {
            Self::All => None,
            Self::These(ts) => Some(ts),
        }
    }
}

/// What a search, vector or lexical, may return: one tenant's messages,
/// of all its threads or of some. The resolved form of a request's
/// [`memlayer_domain::SearchScope`]. It is also who searches (a
/// [`Reach`]): with `resource` set, a backend that enforces resources
/// (Postgres) binds the search to it as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFilter {
    /// Only this tenant's messages.
    pub tenant: TenantId,
    /// Of these threads.
    pub threads: ThreadSelection,
    /// The resource the searching caller is bound to, if any (its threads
    /// are the only ones `threads` may name).
    pub resource: Option<ResourceId>,
}

impl Reach for SearchFilter {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn resource(&self) -> Option<&ResourceId> {
        self.resource.as_ref()
    }
}

impl SearchFilter {
    /// Every thread of `tenant`.
    #[must_use]
    pub fn all_threads(tenant: TenantId) -> Self {
        Self { tenant, threads: ThreadSelection::All, resource: None }
    }

    /// Only `threads` of `tenant` (none when empty).
    #[must_use]
    pub fn these_threads(tenant: TenantId, threads: Vec<ThreadId>) -> Self {
        Self { tenant, threads: ThreadSelection::These(threads), resource: None }
    }

    /// The same filter, searched by a caller bound to `resource` (`None`:
    /// the whole tenant).
    #[must_use]
    pub fn within(mut self, resource: Option<ResourceId>) -> Self {
        self.resource = resource;
        self
    }

    /// Whether an entry of `tenant` and `thread` passes.
    #[must_use]
    pub fn admits(&self, tenant: &TenantId, thread: ThreadId) -> bool {
        &self.tenant == tenant
            && match &self.threads {
                ThreadSelection::All => true,
                ThreadSelection::These(ts) => ts.contains(&thread),
            }
    }

    /// Whether no message can pass (an empty thread list).
    #[must_use]
    pub fn admits_nothing(&self) -> bool {
        matches!(&self.threads, ThreadSelection::These(ts) if ts.is_empty())
    }
}

/// A message found by a search, before it is read: its id, its thread and
/// its score under the ranking that found it (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredHit {
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
    pub matches: Vec<ScoredHit>,
    /// [`IndexKind::Exact`] when every candidate was compared, else the
    /// index used.
    pub strategy: IndexKind,
}

/// A kind of vector index: what `search.index` names, what
/// [`VectorIndex::kind`] says, and how a search was answered
/// ([`VectorSearch::strategy`]: `Exact` when every candidate was compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Every candidate compared (an in-process scan, or SQL without an index).
    Exact,
    /// The in-process HNSW graph (libSQL only).
    Hnsw,
    /// libSQL's native DiskANN index.
    Libsql,
    /// pgvector's HNSW index in Postgres.
    Pgvector,
}

impl IndexKind {
    /// Lowercase name, as configured and reported.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Hnsw => "hnsw",
            Self::Libsql => "libsql",
            Self::Pgvector => "pgvector",
        }
    }
}

impl fmt::Display for IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A nearest-neighbour index over message vectors.
#[allow(clippy::len_without_is_empty, reason = "an async, fallible len; `len().await? == 0` reads fine")]
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// Which index this is.
    fn kind(&self) -> IndexKind;

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
    async fn search(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError>;

    /// [`search`](Self::search) as if the `exclude`d entries were absent:
    /// up to `k` entries admitted by `filter` and not in `exclude`, best
    /// first, with the same scores and order `search` gives them. An
    /// excluded entry MUST NOT be returned and MUST NOT take the place of
    /// another: when at least `k` admitted entries are not excluded, `k` are
    /// returned, however many excluded ones rank above them. (Context
    /// recall leaves out the messages already among the recent ones this
    /// way, rather than over-fetching and dropping them.)
    ///
    /// The default asks [`search`](Self::search) for `k + exclude.len()`
    /// and drops the excluded; an index that can skip entries while it
    /// searches overrides it.
    async fn search_excluding(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
        exclude: &HashSet<MessageId>,
    ) -> Result<VectorSearch, StoreError> {
        if exclude.is_empty() {
            return self.search(filter, query, k).await;
        }
        let mut found = self.search(filter, query, k.saturating_add(exclude.len())).await?;
        found.matches.retain(|m| !exclude.contains(&m.id));
        found.matches.truncate(k);
        Ok(found)
    }

    /// Waits until background work that slows searches down (a graph
    /// build) has finished; returns at once when none runs. Searches never
    /// need it: it is for benchmarks that measure the steady state. The
    /// default returns at once (an index without background work).
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }

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
