//! [`TransferStore`]: what an export reads and an import writes, keeping
//! ids: a tenant's threads in id order, a thread's messages and vectors by
//! sequence number, everything else a thread holds, resource working
//! memory, the catalog; and a whole thread written in one transaction.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{
    AgentConfig, AgentState, Message, MessageId, ModelConfig, Quota, Reach, ResourceId, Setting, Summary, TenantId,
    Thread, ThreadId, ToolConfig, WorkingMemory,
};

use crate::{StoreError, VectorEntry};

/// A thread with everything it holds, as an import writes it: what
/// [`TransferStore::import_thread`] stores in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecords {
    /// The thread, its id, times and `last_seq` kept.
    pub thread: Thread,
    /// Its messages in sequence order, ids, seqs and times kept.
    pub messages: Vec<Message>,
    /// Its agents' states.
    pub states: Vec<AgentState>,
    /// Its summaries, oldest version first.
    pub summaries: Vec<Summary>,
    /// Its working memory's kept versions, oldest first (the newest is the
    /// current document).
    pub working: Vec<WorkingMemory>,
}

/// Everything a thread holds but its messages and vectors, as an export
/// reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThreadExtras {
    /// Its agents' states, by agent name.
    pub states: Vec<AgentState>,
    /// Its summaries, oldest version first.
    pub summaries: Vec<Summary>,
    /// Its working memory's kept versions, oldest first.
    pub working: Vec<WorkingMemory>,
}

/// The catalog of a tenant, whole.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    /// Models, in id order.
    pub models: Vec<ModelConfig>,
    /// Tools, in id order.
    pub tools: Vec<ToolConfig>,
    /// Agents (with their tools), in id order.
    pub agents: Vec<AgentConfig>,
    /// Settings, by category and key.
    pub settings: Vec<Setting>,
}

/// Which stored record an import found different from the one it brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Differs {
    /// The thread row (`field` names the first differing field).
    Thread {
        /// The field.
        field: &'static str,
    },
    /// A message of the thread.
    Message {
        /// The message.
        id: MessageId,
        /// The first differing field (`missing` when the store lacks it).
        field: &'static str,
    },
    /// A catalog record or a resource's working memory.
    Record {
        /// The first differing field.
        field: &'static str,
    },
}

/// What an import did with one record (a thread with its contents, a
/// catalog record, a resource's working memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// It was not stored: now it is, with its ids.
    Created,
    /// The same record was stored already: nothing changed.
    Unchanged,
    /// A record with its id (or, for settings, its key; for a resource's
    /// working memory, its version) is stored with other content: nothing
    /// changed.
    Differs(Differs),
}

/// Exports and imports of a tenant's memory, keeping ids.
///
/// Reads act for `who` like [`crate::ThreadStore`]'s: a bound caller's
/// backend MAY enforce its resource, and every method MUST scope by
/// `who.tenant()`. Deleted threads are never read.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TransferStore: Send + Sync + std::fmt::Debug {
    /// The tenant's live threads (of `resource` when given) with ids above
    /// `after`, in id order, at most `limit`.
    ///
    /// MUST never skip or repeat a thread across calls that pass the last
    /// id read as `after`, and leave out deleted threads and other tenants'.
    async fn export_threads(
        &self,
        who: &(dyn Reach + 'static),
        resource: Option<ResourceId>,
        after: Option<ThreadId>,
        limit: u32,
    ) -> Result<Vec<Thread>, StoreError>;

    /// The thread's messages with a seq above `after_seq`, in seq order, at
    /// most `limit`.
    ///
    /// MUST return `NotFound` for a missing, deleted or foreign thread.
    async fn export_messages(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// The stored vectors (of every model) of the thread's messages with a
    /// seq in `after_seq + 1 ..= after_seq + span`, in seq order, each with
    /// its message's seq (a range, not a count, so one message's vectors
    /// of several models never straddle two calls).
    ///
    /// MUST return `NotFound` as [`TransferStore::export_messages`].
    async fn export_vectors(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        after_seq: i64,
        span: u32,
    ) -> Result<Vec<(i64, VectorEntry)>, StoreError>;

    /// The thread's agent states, summaries and working-memory versions.
    ///
    /// MUST return `NotFound` as [`TransferStore::export_messages`].
    async fn export_thread_extras(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
    ) -> Result<ThreadExtras, StoreError>;

    /// The kept versions of the tenant's resource working-memory documents
    /// (of `resource` when given), by resource then version, at most
    /// `limit`, after `after` (a resource id and version).
    async fn export_resource_working(
        &self,
        who: &(dyn Reach + 'static),
        resource: Option<ResourceId>,
        after: Option<(ResourceId, u64)>,
        limit: u32,
    ) -> Result<Vec<WorkingMemory>, StoreError>;

    /// The tenant's whole catalog.
    async fn export_catalog(&self, tenant: &TenantId) -> Result<Catalog, StoreError>;

    /// Imports one thread with its messages, agent states, summaries and
    /// working memory in ONE transaction, keeping every id, seq, version and
    /// time as given.
    ///
    /// When no thread has its id, MUST store it all and answer `Created`,
    /// its messages then pending embedding like appended ones (and found by
    /// lexical search), counted against `quota` like a create and an append
    /// (`QuotaExceeded`, storing nothing, past a limit). When the tenant's
    /// live thread has its id, MUST store nothing and answer `Unchanged` if
    /// the thread's fields (but `last_seq` and `updated_at`, which later
    /// appends move) and every given message equal the stored ones, else
    /// `Differs` naming the first difference (states, summaries and working
    /// memory of an existing thread are left as stored). MUST return
    /// `Conflict` when the id, or a message's, is taken otherwise (a
    /// deleted thread, another thread, another tenant), and `Invalid` when
    /// the records do not hang together (another tenant's thread,
    /// a record of another thread, seqs not strictly increasing within
    /// `1..=last_seq`, versions not strictly increasing from 1 or above
    /// the thread's, a summary covering past `last_seq`). On any error
    /// nothing of the thread is stored.
    async fn import_thread(
        &self,
        who: &(dyn Reach + 'static),
        records: ThreadRecords,
        quota: &Quota,
    ) -> Result<Imported, StoreError>;

    /// Imports a resource's working-memory versions (oldest first, the last
    /// the current document) in one transaction.
    ///
    /// MUST answer `Created` storing them when the resource has no
    /// document, `Unchanged` when its current document has the same version
    /// and content as the last given, and `Differs` otherwise (storing
    /// nothing); `Invalid` for an empty list, a thread scope, or versions
    /// not strictly increasing.
    async fn import_resource_working(
        &self,
        who: &(dyn Reach + 'static),
        versions: Vec<WorkingMemory>,
    ) -> Result<Imported, StoreError>;

    /// Imports a model with its id: `Created`, `Unchanged` when stored with
    /// the same spec, `Differs` when stored with another. MUST return
    /// `Conflict` when another model has its name, and `Invalid` for a
    /// record of another tenant or one its validation refuses.
    async fn import_model(&self, tenant: &TenantId, model: ModelConfig) -> Result<Imported, StoreError>;

    /// As [`TransferStore::import_model`], for a tool.
    async fn import_tool(&self, tenant: &TenantId, tool: ToolConfig) -> Result<Imported, StoreError>;

    /// As [`TransferStore::import_model`], for an agent; MUST return
    /// `Invalid` when its model or a tool does not exist.
    async fn import_agent(&self, tenant: &TenantId, agent: AgentConfig) -> Result<Imported, StoreError>;

    /// As [`TransferStore::import_model`], for a setting, keyed by its
    /// category and key.
    async fn import_setting(&self, tenant: &TenantId, setting: Setting) -> Result<Imported, StoreError>;
}
