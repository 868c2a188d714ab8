//! [`DeletionLog`]: every deletion of a message or a thread, in the order
//! the store committed them, so that a process's in-process indexes (the
//! HNSW and exact vector indexes, the tantivy full-text index) forget what
//! another process deleted: a `memlayer prune` or `erase-resource` beside a
//! running server, or servers sharing one database.
//!
//! A reader keeps a [`DeletionCursor`] and asks for what was logged after
//! it. Entries stay until purged by age ([`DeletionLog::purge_deletions`]);
//! a reader whose cursor fell behind a purge is told so ([`Deletions::lost`])
//! and must reconcile its index with the store instead.

use async_trait::async_trait;
use memlayer_domain::{MessageId, TenantId, ThreadId, Timestamp};

use crate::StoreError;

/// One logged deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The tenant it happened in.
    pub tenant: TenantId,
    /// The thread deleted, or whose message was.
    pub thread: ThreadId,
    /// The message deleted; `None` when the thread was (marked) deleted,
    /// which takes every message of it.
    pub message: Option<MessageId>,
}

/// Where a reader of the log stands: every entry committed before the
/// cursor was taken has been read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionCursor {
    /// The newest sequence number read (entries are numbered as they are
    /// logged).
    pub seq: i64,
    /// Transactions still in progress when the cursor was taken: entries
    /// they commit later may be numbered at or below `seq`, and are read
    /// then (Postgres, where transactions commit in any order; always empty
    /// on libSQL, whose one writer commits in order).
    pub pending: Vec<i64>,
}

/// A page of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletions {
    /// The entries, in the order of their sequence numbers.
    pub items: Vec<Deletion>,
    /// The cursor to read on from.
    pub next: DeletionCursor,
    /// The page stopped at its limit: read on.
    pub more: bool,
    /// Entries logged after the cursor were purged before this read: the
    /// reader may have missed deletions and must reconcile its index with
    /// the store.
    pub lost: bool,
}

/// The log of deletions, written by the store in the transaction of each
/// deletion.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait DeletionLog: Send + Sync + std::fmt::Debug {
    /// The cursor of now.
    ///
    /// MUST be such that [`DeletionLog::deletions_since`] from it returns
    /// every deletion committed after this call returned (and possibly some
    /// committed before).
    async fn deletion_cursor(&self) -> Result<DeletionCursor, StoreError>;

    /// The deletions committed after `cursor` was taken, at most `limit`,
    /// in the order of their sequence numbers, and the cursor after them
    /// (an entry may come again in a later page; applying one twice must be
    /// harmless).
    ///
    /// MUST log, in the deleting transaction (whatever the path: a delete,
    /// a retention step, an erasure), every message deleted from a live
    /// thread (`message` set) and every thread marked deleted (`message`
    /// `None`); the messages of a thread marked deleted, swept later, MAY
    /// be logged too. MUST NOT miss an entry committed after `cursor` was
    /// taken, even by a transaction that began before. MUST say `more` when
    /// it stopped at `limit`, and `lost` when entries logged after
    /// `cursor.seq` were purged. `limit` 0 is `Invalid`.
    async fn deletions_since(&self, cursor: &DeletionCursor, limit: u32) -> Result<Deletions, StoreError>;

    /// Deletes entries logged before `before`, every tenant's, among the
    /// `limit` oldest (by number: an entry older than one it keeps may stay
    /// until the next purge); returns how many. Readers whose cursor they
    /// were after are told `lost` from then on.
    async fn purge_deletions(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
