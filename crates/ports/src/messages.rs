use async_trait::async_trait;
use memlayer_domain::{Cursor, Direction, Message, MessageId, NewMessage, Page, PageSize, TenantId, ThreadId};

use crate::StoreError;

/// The messages of threads.
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
    async fn append(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Message>, StoreError>;

    /// One page of the thread's messages by keyset on the sequence number.
    ///
    /// Without a cursor, forward starts at the oldest and backward at the
    /// newest message. MUST return at most `limit` messages in the direction's
    /// order, a `next_cursor` exactly when more messages existed at read time,
    /// and never skip or repeat a message across pages, even while appends run.
    /// MUST return `Invalid` when the cursor belongs to another thread or its
    /// direction contradicts `direction`, and `NotFound` for a missing thread.
    async fn page(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
    ) -> Result<Page<Message>, StoreError>;

    /// The last `n` messages of the thread, oldest first.
    ///
    /// MUST return `NotFound` for a missing thread; fewer than `n` when the
    /// thread is shorter.
    async fn last(&self, tenant: &TenantId, thread: ThreadId, n: PageSize) -> Result<Vec<Message>, StoreError>;

    /// One message by id.
    ///
    /// MUST return `NotFound` when it does not exist for this tenant.
    async fn get(&self, tenant: &TenantId, id: MessageId) -> Result<Message, StoreError>;

    /// The messages with these ids that exist for this tenant, in the order
    /// of `ids`; missing or foreign ids are left out.
    async fn get_many(&self, tenant: &TenantId, ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError>;

    /// The thread's messages with `from <= seq <= to`, in order.
    ///
    /// MUST return `NotFound` for a missing thread.
    async fn range(&self, tenant: &TenantId, thread: ThreadId, from: i64, to: i64) -> Result<Vec<Message>, StoreError>;

    /// Deletes one message with its vector, embedding job and full-text
    /// entry, atomically. Its sequence number is never reused (later pages
    /// simply skip it).
    ///
    /// MUST return `NotFound` when it does not exist for this tenant.
    async fn delete(&self, tenant: &TenantId, id: MessageId) -> Result<(), StoreError>;
}
