//! [`LexicalIndex`]: an in-process full-text index (BM25, per tenant) that a
//! storage adapter feeds from its own catch-up and searches instead of its
//! engine's full text.

use async_trait::async_trait;
use memlayer_domain::{MessageId, TenantId, ThreadId};

use crate::{ScoredHit, SearchFilter, StoreError};

/// One message's text as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexicalEntry {
    /// The message's position in the feeding store (libSQL: its rowid):
    /// unique among live messages, the key of replacement and removal.
    pub position: i64,
    /// The message.
    pub id: MessageId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its thread.
    pub thread: ThreadId,
    /// The text to index (content plus tool calls).
    pub text: String,
}

/// What the feeding store knows and the index may not reflect yet, so a
/// search need not wait for the feed: entries to leave out, and entries to
/// score as if the index held them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LexicalDelta {
    /// Positions of deleted or edited messages not yet removed.
    pub positions: Vec<i64>,
    /// Threads marked deleted whose entries may not be removed yet.
    pub threads: Vec<ThreadId>,
    /// Live entries the index may not hold as they are now: stored above
    /// its position, or at one of `positions` (an edit, or a position
    /// handed out again). They replace any entry of the same message.
    pub pending: Vec<LexicalEntry>,
}

/// An in-process full-text index with BM25 ranking.
///
/// A storage adapter owns the feeding: it adds what it stored, in order of
/// position, removes what was deleted, and records how far it got with
/// [`apply`](Self::apply); a restart resumes from the position the index
/// reports (0: everything again).
#[async_trait]
pub trait LexicalIndex: Send + Sync + std::fmt::Debug {
    /// Every entry at or below this position was applied (0 for a new or
    /// rebuilt index). A restart never finds it ahead of the entries it
    /// finds (an index kept in memory starts over unless it was closed).
    fn position(&self) -> i64;

    /// Removes the entries at `removals` (tenant, position; unknown ones are
    /// ignored), then adds `entries`, each replacing any entry at its
    /// position, and, when `through` is given, records it as the position.
    /// MUST make all of it searchable before returning.
    async fn apply(
        &self,
        removals: Vec<(TenantId, i64)>,
        entries: Vec<LexicalEntry>,
        through: Option<i64>,
    ) -> Result<(), StoreError>;

    /// The best `k` entries admitted by `filter` and not left out by
    /// `delta`, that hold any of `terms` (plain words, tokenised like the
    /// indexed text), by BM25 over the tenant's own entries (no other
    /// tenant's statistics; an index MAY narrow them to the threads
    /// `filter` names), best first, higher scores better. `delta.pending`
    /// MUST be ranked as if added to the index: one ranking, their words
    /// counted in the statistics, and each replaces any entry of its
    /// message.
    async fn search(
        &self,
        filter: &SearchFilter,
        terms: Vec<String>,
        k: usize,
        delta: LexicalDelta,
    ) -> Result<Vec<ScoredHit>, StoreError>;

    /// Forgets every entry of every tenant and goes back to position 0, so
    /// the feeding store adds everything again: what it does when it finds
    /// it may have missed deletions. MUST leave nothing searchable.
    async fn clear(&self) -> Result<(), StoreError>;

    /// The process is shutting down: persist what is kept only in memory,
    /// promptly. The index MUST still answer every other method afterwards.
    /// The default does nothing.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
