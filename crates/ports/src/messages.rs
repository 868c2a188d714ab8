//! [`MessageStore`]: appends with gapless sequence numbers, keyset pages and
//! byte-budgeted reads ([`ByteBudget`]), and messages' token counts stored
//! per encoding.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{Cursor, Direction, Message, MessageId, NewMessage, Page, PageSize, Quota, Reach, ThreadId};

use crate::StoreError;

/// A run of one thread's messages: sequence numbers `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    /// The thread.
    pub thread: ThreadId,
    /// First sequence number.
    pub from: i64,
    /// Last sequence number (inclusive).
    pub to: i64,
}

/// What [`MessageStore::read_windows`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    /// The messages, each once, windows in the order given.
    pub messages: Vec<Message>,
    /// The byte budget stopped the read before every window was read.
    pub truncated: bool,
}

/// Accumulates messages in order within a byte budget: the shared rule of
/// [`MessageStore::page_within`] and [`MessageStore::read_windows`] for
/// adapters.
#[derive(Debug)]
pub struct ByteBudget {
    left: usize,
    taken: usize,
}

impl ByteBudget {
    /// A budget of `max_bytes`.
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self { left: max_bytes, taken: 0 }
    }

    /// Whether `m` fits: when it does, it is counted. With `at_least_one`
    /// the first message always fits.
    pub fn take(&mut self, m: &Message, at_least_one: bool) -> bool {
        let size = m.approx_bytes();
        if size <= self.left || (at_least_one && self.taken == 0) {
            self.left = self.left.saturating_sub(size);
            self.taken += 1;
            true
        } else {
            false
        }
    }

    /// Bytes still free.
    #[must_use]
    pub fn left(&self) -> usize {
        self.left
    }

    /// Messages counted.
    #[must_use]
    pub fn taken(&self) -> usize {
        self.taken
    }
}

/// The messages of threads, for `who` (see [`crate::ThreadStore`]).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait MessageStore: Send + Sync + std::fmt::Debug {
    /// Appends `batch` to the thread, in order.
    ///
    /// MUST be atomic: either every message is stored, with consecutive
    /// sequence numbers following the thread's last one, and the thread's
    /// `updated_at` and `last_seq` are bumped, or nothing changes. MUST keep
    /// sequence numbers strictly increasing without gaps under concurrent
    /// appenders. MUST return `Invalid` for an empty batch or one larger than
    /// [`memlayer_domain::MAX_BATCH`], and `NotFound` when the thread does not
    /// exist for this tenant. Returns the stored messages in order.
    /// [`MessageStore::append_within`] without a quota.
    async fn append(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Message>, StoreError> {
        self.append_within(who, thread, batch, &Quota::UNLIMITED).await
    }

    /// [`MessageStore::append`] within the tenant's storage quota: the
    /// messages count against `quota.messages` and their
    /// [`Message::approx_bytes`] against `quota.bytes` (see
    /// [`crate::UsageStore`]).
    ///
    /// MUST, in the transaction that stores the batch, count it and return
    /// `QuotaExceeded` storing none of the batch when the tenant's live
    /// messages or bytes would pass their limit; concurrent appends MUST NOT
    /// together pass a limit (the last free slot is taken exactly once).
    async fn append_within(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        batch: Vec<NewMessage>,
        quota: &Quota,
    ) -> Result<Vec<Message>, StoreError>;

    /// One page of the thread's messages by keyset on the sequence number:
    /// [`MessageStore::page_within`] without a byte budget.
    async fn page(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
    ) -> Result<Page<Message>, StoreError> {
        self.page_within(who, thread, cursor, direction, limit, usize::MAX).await
    }

    /// One page of the thread's messages by keyset on the sequence number,
    /// within a byte budget.
    ///
    /// Without a cursor, forward starts at the oldest and backward at the
    /// newest message. MUST return at most `limit` messages in the direction's
    /// order, a `next_cursor` exactly when more messages existed at read time,
    /// and never skip or repeat a message across pages, even while appends run.
    /// MUST stop before a message that would bring the page's
    /// [`Message::approx_bytes`] above `max_bytes` (then `next_cursor` follows
    /// the last message returned), but always return the first message, and
    /// MUST NOT read the whole `limit` into memory when the budget stops it
    /// (at most a small chunk of messages past the budget).
    /// MUST return `Invalid` when the cursor belongs to another thread or its
    /// direction contradicts `direction`, and `NotFound` for a missing thread.
    async fn page_within(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
        max_bytes: usize,
    ) -> Result<Page<Message>, StoreError>;

    /// Reads many runs of messages (the neighbour windows of search hits) in
    /// one query, within a byte budget.
    ///
    /// MUST return the messages of this tenant's threads whose sequence
    /// number lies in one of `windows`, each message once, in the order of
    /// the first window holding it and by sequence number within a window.
    /// A window of a missing or foreign thread, or with `from > to`, holds
    /// nothing (no error). MUST stop before a message that would bring the
    /// total [`Message::approx_bytes`] above `max_bytes` and then say
    /// `truncated`, reading at most a small chunk of messages past the budget.
    async fn read_windows(
        &self,
        who: &(dyn Reach + 'static),
        windows: Vec<SeqRange>,
        max_bytes: usize,
    ) -> Result<Windows, StoreError>;

    /// The last `n` messages of the thread, oldest first.
    ///
    /// MUST return `NotFound` for a missing thread; fewer than `n` when the
    /// thread is shorter.
    async fn last(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        n: PageSize,
    ) -> Result<Vec<Message>, StoreError>;

    /// One message by id.
    ///
    /// MUST return `NotFound` when it does not exist for this tenant.
    async fn get(&self, who: &(dyn Reach + 'static), id: MessageId) -> Result<Message, StoreError>;

    /// The messages with these ids that exist for this tenant, in the order
    /// of `ids`; missing or foreign ids are left out.
    async fn get_many(&self, who: &(dyn Reach + 'static), ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError>;

    /// Deletes one message with its vector, embedding job and full-text
    /// entry, atomically. Its sequence number is never reused (later pages
    /// simply skip it). It and its bytes stop counting against the tenant's
    /// quota in the same transaction.
    ///
    /// MUST return `NotFound` when it does not exist for this tenant.
    async fn delete(&self, who: &(dyn Reach + 'static), id: MessageId) -> Result<(), StoreError>;

    /// The token counts stored by [`save_token_counts`](Self::save_token_counts)
    /// under `encoding` for those of `ids` that have one, in any order.
    ///
    /// MUST leave out ids without a stored count under that encoding, and
    /// messages that do not exist for this tenant or whose thread is
    /// deleted; MUST return `Invalid` for an encoding name that is empty or
    /// over 64 bytes.
    async fn token_counts(
        &self,
        who: &(dyn Reach + 'static),
        encoding: &str,
        ids: Vec<MessageId>,
    ) -> Result<Vec<(MessageId, u32)>, StoreError>;

    /// Stores messages' token counts under `encoding` (a tokenizer's
    /// encoding, `o200k_base`), so that no later reader counts them again.
    ///
    /// A message's text never changes, so neither does its count: MUST
    /// keep a count already stored for a message and encoding (the first
    /// write wins, a second is no error); MUST ignore counts of messages
    /// that do not exist for this tenant; MUST drop a message's counts with
    /// the message; MUST return `Invalid` for an encoding name that is empty
    /// or over 64 bytes.
    async fn save_token_counts(
        &self,
        who: &(dyn Reach + 'static),
        encoding: &str,
        counts: Vec<(MessageId, u32)>,
    ) -> Result<(), StoreError>;
}
