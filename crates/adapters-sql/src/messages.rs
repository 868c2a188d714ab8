//! Message reads, written once: the statements of a page, of the last
//! messages, of one message and of a thread check, the row → [`Message`]
//! decoding, and the rules of a budgeted read ([`PageCut`], [`WindowCut`]:
//! when a page or a set of neighbour windows stops, what its cursor is).
//!
//! The whole `MessageStore` is written here ([`message_store!`](crate::message_store)); what
//! stays in each adapter ([`MessageEngine`]) is how an append stores its
//! batch (libSQL: multi-row inserts on its one writer; Postgres: binary
//! COPY), how rows stream (libSQL: row by row from one statement, decoded
//! straight from the driver's row; Postgres: portal fetches sized by what
//! the budget has left), so that a budget stops the read itself, and the
//! statements that only one engine can spell (Postgres: arrays for
//! `get_many` and the windows; libSQL: `VALUES` lists within SQLite's
//! parameter limit).
//!
//! The one difference in the shared statements is where a message's tenant
//! is: Postgres's `messages` carry it (row-level security), so a message is
//! the tenant's when its row says so and live unless its thread is marked
//! deleted; libSQL's reach it through their thread, checked in the same
//! `EXISTS` as the mark ([`Dialect::tenant_on_every_table`]).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use memlayer_domain::{
    Cursor, Direction, Message, MessageId, Metadata, NewMessage, Page, PageSize, Quota, Reach, Role, TenantId,
    ThreadId, Timestamp, TokenCount, ToolCall, now, resolve_message_cursor,
};
use memlayer_ports::{ByteBudget, SeqRange, StoreError, Windows};

use crate::usage::{self, Delta};
use crate::{Cells, Dialect, Executor, Sql, SqlValue, Transactor, corrupt};

/// What [`message_store!`](crate::message_store) leaves to the engine: storing an append's batch
/// and streaming the rows of budgeted reads.
#[async_trait]
pub trait MessageEngine: Transactor + Sized {
    /// Stores `batch` in one transaction: reserves its sequence numbers on
    /// the thread row (bumping `updated_at` and the thread's stored
    /// messages and bytes by [`Batch::delta`]), `NotFound` when the thread
    /// is not the tenant's or is marked deleted, inserts the messages with
    /// their [`crate::usage::stored_bytes`] and counts the batch against
    /// `quota` with [`crate::usage::charge`] (after the thread row: every
    /// write locks a thread before its tenant's counters; an engine whose
    /// writers run side by side counts last, so the counter row is held
    /// only until the commit), starting again in
    /// [`crate::usage::Mode::Exclusive`] when a shared charge does not
    /// settle; returns the messages with their sequence numbers.
    async fn insert_batch(&self, who: &dyn Reach, batch: Batch, quota: &Quota) -> Result<Vec<Message>, StoreError>;

    /// Reads `page` ([`PageCut::sql`]) until it is full, then checks the
    /// thread in the same transaction when the page is empty.
    async fn read_page(&self, who: &dyn Reach, page: PageCut) -> Result<Page<Message>, StoreError>;

    /// Reads the tenant's messages in `cut`'s windows, in window order, until
    /// the cut stops.
    async fn read_neighbours(&self, who: &dyn Reach, cut: WindowCut) -> Result<Windows, StoreError>;

    /// The messages of `ids` (at least one) that are the tenant's and live,
    /// in the order of `ids` ([`in_order`]).
    async fn read_many(&self, who: &dyn Reach, ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError>;

    /// `MessageStore::last`: the shared [`last`] unless the engine decodes
    /// its rows faster.
    async fn read_last(&self, who: &dyn Reach, thread: ThreadId, n: PageSize) -> Result<Vec<Message>, StoreError> {
        last(self, who, thread, n).await
    }
}

/// An append's messages, made once for both engines: at least one and at
/// most `MAX_BATCH`, all of one thread, created at one time, each with a
/// new id and its sequence number still 0 (the engine assigns them in its
/// transaction).
#[derive(Debug)]
pub struct Batch {
    thread: ThreadId,
    at: Timestamp,
    messages: Vec<Message>,
    delta: Delta,
}

impl Batch {
    /// The messages `batch` appends to `thread` at `at`.
    ///
    /// # Errors
    /// `Invalid` for an empty batch or one above `MAX_BATCH`.
    pub fn new(thread: ThreadId, batch: Vec<NewMessage>, at: Timestamp) -> Result<Self, StoreError> {
        memlayer_domain::check_batch(batch.len())?;
        let messages: Vec<Message> =
            batch.into_iter().map(|new| new.into_message(MessageId::new(), thread, 0, at)).collect();
        let delta = Delta::of_messages(&messages);
        Ok(Self { thread, at, messages, delta })
    }

    /// The thread appended to.
    #[must_use]
    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// When the messages were created.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// What storing the batch adds to its tenant's usage.
    #[must_use]
    pub fn delta(&self) -> Delta {
        self.delta
    }

    /// The messages, in order.
    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages, in order, owned.
    #[must_use]
    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }
}

/// `MessageStore::append_within`.
///
/// # Errors
/// `Invalid` for an empty or oversized batch, `QuotaExceeded` for a batch
/// larger than a limit of `quota` (before any transaction) or one that the
/// tenant's usage leaves no room for, `NotFound` for a missing thread, a
/// failed write.
pub async fn append<D: MessageEngine>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
    batch: Vec<NewMessage>,
    quota: &Quota,
) -> Result<Vec<Message>, StoreError> {
    let batch = Batch::new(thread, batch, now())?;
    usage::check_size(quota, batch.delta())?;
    db.insert_batch(who, batch, quota).await
}

/// `MessageStore::page_within`.
///
/// # Errors
/// `Invalid` for a cursor of another thread or direction, `NotFound` for a
/// missing thread, a failed read.
pub async fn page_within<D: MessageEngine>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
    cursor: Option<Cursor>,
    direction: Option<Direction>,
    limit: PageSize,
    max_bytes: usize,
) -> Result<Page<Message>, StoreError> {
    let page = PageCut::new(thread, cursor.as_ref(), direction, limit, max_bytes)?;
    db.read_page(who, page).await
}

/// `MessageStore::read_windows`: nothing to read without a window holding
/// a sequence number.
///
/// # Errors
/// A failed read.
pub async fn read_windows<D: MessageEngine>(
    db: &D,
    who: &dyn Reach,
    windows: Vec<SeqRange>,
    max_bytes: usize,
) -> Result<Windows, StoreError> {
    match WindowCut::new(windows, max_bytes) {
        Some(cut) => db.read_neighbours(who, cut).await,
        None => Ok(Windows::default()),
    }
}

/// `MessageStore::get_many`.
///
/// # Errors
/// A failed read.
pub async fn get_many<D: MessageEngine>(
    db: &D,
    who: &dyn Reach,
    ids: Vec<MessageId>,
) -> Result<Vec<Message>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    db.read_many(who, ids).await
}

/// `DELETE` of the message `id` if it is the tenant's and its thread is not
/// marked deleted, returning its thread and stored bytes.
#[must_use]
pub fn delete_sql(dialect: Dialect, tenant: &TenantId, id: MessageId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("DELETE FROM messages WHERE id = ").bind(id.as_uuid()).push(" AND ");
    push_tenant_live(&mut sql, tenant, "messages.thread_id");
    sql.push(" RETURNING thread_id, stored_bytes");
    sql
}

/// Takes one deleted message off its thread's stored counts.
#[must_use]
pub fn unstore_sql(dialect: Dialect, thread: ThreadId, bytes: i64) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("UPDATE threads SET stored_messages = stored_messages - 1, stored_bytes = stored_bytes - ").bind(bytes);
    sql.push(" WHERE id = ").bind(thread.as_uuid());
    sql
}

/// `MessageStore::delete`: one transaction that deletes the message (the
/// engine's triggers (libSQL) or cascades (Postgres) removing its vectors,
/// job and full-text entry) and takes it off its thread's and its tenant's
/// stored counts.
///
/// # Errors
/// `NotFound` when it is not the tenant's or its thread is marked deleted.
pub async fn delete<D: Transactor>(db: &D, who: &dyn Reach, id: MessageId) -> Result<(), StoreError> {
    let tenant = who.tenant();
    let sql = delete_sql(db.dialect(), tenant, id);
    let owner = tenant.clone();
    let deleted = db
        .write(
            who,
            Box::new(move |db| {
                Box::pin(async move {
                    let Some(row) = db.fetch_one("delete message", sql).await? else { return Ok(false) };
                    let c = Cells::new(&row, "messages");
                    let (thread, bytes) = (ThreadId::from_uuid(c.uuid(0, "thread_id")?), c.int(1, "stored_bytes")?);
                    db.execute("delete message", unstore_sql(db.dialect(), thread, bytes)).await?;
                    let freed = Delta { threads: 0, messages: 1, bytes };
                    usage::release(db, &owner, thread, freed.negated()).await?;
                    Ok(true)
                })
            }),
        )
        .await?;
    if !deleted {
        return Err(StoreError::not_found("message", id));
    }
    Ok(())
}

/// Implements `memlayer_ports::MessageStore` for a backend type that
/// implements [`MessageEngine`], delegating to this module (a macro: the
/// orphan rule forbids a blanket impl of a foreign trait).
#[macro_export]
macro_rules! message_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::MessageStore for $backend {
            async fn append_within(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                batch: Vec<::memlayer_domain::NewMessage>,
                quota: &::memlayer_domain::Quota,
            ) -> Result<Vec<::memlayer_domain::Message>, ::memlayer_ports::StoreError> {
                $crate::messages::append(self, who, thread, batch, quota).await
            }

            async fn page_within(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                cursor: Option<::memlayer_domain::Cursor>,
                direction: Option<::memlayer_domain::Direction>,
                limit: ::memlayer_domain::PageSize,
                max_bytes: usize,
            ) -> Result<::memlayer_domain::Page<::memlayer_domain::Message>, ::memlayer_ports::StoreError> {
                $crate::messages::page_within(self, who, thread, cursor, direction, limit, max_bytes).await
            }

            async fn read_windows(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                windows: Vec<::memlayer_ports::SeqRange>,
                max_bytes: usize,
            ) -> Result<::memlayer_ports::Windows, ::memlayer_ports::StoreError> {
                $crate::messages::read_windows(self, who, windows, max_bytes).await
            }

            async fn last(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                n: ::memlayer_domain::PageSize,
            ) -> Result<Vec<::memlayer_domain::Message>, ::memlayer_ports::StoreError> {
                $crate::messages::MessageEngine::read_last(self, who, thread, n).await
            }

            async fn get(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::MessageId,
            ) -> Result<::memlayer_domain::Message, ::memlayer_ports::StoreError> {
                $crate::messages::get(self, who, id).await
            }

            async fn get_many(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                ids: Vec<::memlayer_domain::MessageId>,
            ) -> Result<Vec<::memlayer_domain::Message>, ::memlayer_ports::StoreError> {
                $crate::messages::get_many(self, who, ids).await
            }

            async fn delete(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::MessageId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::messages::delete(self, who, id).await
            }

            async fn token_counts(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                encoding: &str,
                ids: Vec<::memlayer_domain::MessageId>,
            ) -> Result<Vec<(::memlayer_domain::MessageId, u32)>, ::memlayer_ports::StoreError> {
                $crate::token_counts::token_counts(self, who, encoding, ids).await
            }

            async fn save_token_counts(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                encoding: &str,
                counts: Vec<(::memlayer_domain::MessageId, u32)>,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::token_counts::save_token_counts(self, who, encoding, counts).await
            }
        }
    };
}

/// The columns [`decode`] reads, in its order.
pub const MESSAGE_COLUMNS: &str = "id, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, \
     metadata, token_count, token_model, token_encoding, token_exact, created_at";

/// Decodes a row selected with [`MESSAGE_COLUMNS`], in either encoding. The
/// row is consumed: its text columns are moved into the message, not copied
/// (a page decodes many rows, and a message's content can be large).
///
/// # Errors
/// `Backend` (a corrupt row) naming the column that does not decode.
pub fn decode(mut row: Vec<SqlValue>) -> Result<Message, StoreError> {
    let role = take_text(&mut row, 3, "role")?;
    let content = take_text(&mut row, 4, "content")?;
    let tool_call_id = take_opt_text(&mut row, 5, "tool_call_id")?;
    let tool_name = take_opt_text(&mut row, 6, "tool_name")?;
    let c = Cells::new(&row, "messages");
    let tool_calls: Vec<ToolCall> = c.opt_json(7, "tool_calls")?.unwrap_or_default();
    let token_count = match c.opt_u32(9, "token_count")? {
        None => None,
        Some(count) => Some(TokenCount {
            count,
            model: c.text(10, "token_model")?,
            encoding: c.text(11, "token_encoding")?,
            exact: c.bool(12, "token_exact")?,
        }),
    };
    let metadata =
        Metadata::from_stored("metadata", c.json(8, "metadata")?).map_err(|e| corrupt("messages", "metadata", e))?;
    Ok(Message {
        id: MessageId::from_uuid(c.uuid(0, "id")?),
        thread_id: ThreadId::from_uuid(c.uuid(1, "thread_id")?),
        seq: c.int(2, "seq")?,
        role: role.parse::<Role>().map_err(|e| corrupt("messages", "role", e))?,
        content,
        tool_call_id,
        tool_name,
        tool_calls,
        metadata,
        token_count,
        created_at: c.timestamp(13, "created_at")?,
    })
}

/// Moves a text column (or NULL) out of `row`.
fn take_opt_text(row: &mut [SqlValue], idx: usize, column: &'static str) -> Result<Option<String>, StoreError> {
    match row.get_mut(idx).map(|v| std::mem::replace(v, SqlValue::Null)) {
        None => Err(corrupt("messages", column, "missing column")),
        Some(SqlValue::Null) => Ok(None),
        Some(SqlValue::Text(s)) => Ok(Some(s)),
        Some(other) => Err(corrupt("messages", column, format!("expected text, found {}", other.kind()))),
    }
}

/// Moves a text column out of `row`; NULL is a corrupt row.
fn take_text(row: &mut [SqlValue], idx: usize, column: &'static str) -> Result<String, StoreError> {
    take_opt_text(row, idx, column)?.ok_or_else(|| corrupt("messages", column, "unexpected NULL"))
}

/// Appends the condition that the message (columns of `messages`, unqualified)
/// belongs to `tenant` and to a thread not marked deleted; `thread` is the
/// thread's placeholder when the statement has one, else `messages.thread_id`.
fn push_tenant_live(sql: &mut Sql, tenant: &TenantId, thread: &str) {
    if sql.dialect().tenant_on_every_table() {
        let tenant = sql.arg(tenant.as_str());
        if thread == "messages.thread_id" {
            sql.push(&format!(
                "tenant = {tenant} AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)"
            ));
        } else {
            sql.push(&format!(
                "tenant = {tenant} AND NOT EXISTS (SELECT 1 FROM threads WHERE id = {thread} AND deleted_at IS NOT NULL)"
            ));
        }
    } else {
        let tenant = sql.arg(tenant.as_str());
        sql.push(&format!(
            "EXISTS (SELECT 1 FROM threads WHERE threads.id = {thread} AND threads.tenant = {tenant} \
             AND threads.deleted_at IS NULL)"
        ));
    }
}

/// One page of a thread's messages after the exclusive `bound`, in
/// `direction`, at most `limit` rows: the thread first, then the bound, the
/// tenant and the limit. The rows come from a range scan of the `(thread_id,
/// seq)` index; the tenant check is a constant subquery.
#[must_use]
pub fn page_sql(
    dialect: Dialect,
    tenant: &TenantId,
    thread: ThreadId,
    direction: Direction,
    bound: i64,
    limit: i64,
) -> Sql {
    let (cmp, order) = match direction {
        Direction::Forward => (">", "ASC"),
        Direction::Backward => ("<", "DESC"),
    };
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = "));
    let thread = sql.arg(thread.as_uuid());
    sql.push(&thread).push(&format!(" AND seq {cmp} ")).bind(bound).push(" AND ");
    push_tenant_live(&mut sql, tenant, &thread);
    sql.push(&format!(" ORDER BY seq {order} LIMIT ")).bind(limit);
    sql
}

/// The message `id` if it is the tenant's and its thread is not marked deleted.
#[must_use]
pub fn get_sql(dialect: Dialect, tenant: &TenantId, id: MessageId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ")).bind(id.as_uuid()).push(" AND ");
    push_tenant_live(&mut sql, tenant, "messages.thread_id");
    sql
}

/// A row when `thread` exists for `tenant` and is not marked deleted.
#[must_use]
pub fn thread_exists_sql(dialect: Dialect, tenant: &TenantId, thread: ThreadId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT 1 FROM threads WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(thread.as_uuid()).push(" AND deleted_at IS NULL");
    sql
}

/// `NotFound` unless `thread` exists for `tenant`, inside the caller's
/// transaction.
///
/// # Errors
/// `NotFound` for a missing or deleted thread; a failed read.
pub async fn ensure_thread(db: &dyn Executor, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
    db.fetch_one("read thread", thread_exists_sql(db.dialect(), tenant, thread))
        .await?
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found("thread", thread))
}

/// The thread's last `n` messages, oldest first (`MessageStore::last`).
///
/// # Errors
/// `NotFound` when the thread has no message and does not exist.
pub async fn last<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
    n: PageSize,
) -> Result<Vec<Message>, StoreError> {
    let tenant = who.tenant();
    let sql = page_sql(db.dialect(), tenant, thread, Direction::Backward, i64::MAX, i64::from(n.get()));
    let owner = tenant.clone();
    db.read(
        who,
        Box::new(move |db| {
            Box::pin(async move {
                let rows = db.fetch("read messages", sql).await?;
                if rows.is_empty() {
                    ensure_thread(db, &owner, thread).await?;
                }
                let mut items = rows.into_iter().map(decode).collect::<Result<Vec<_>, _>>()?;
                items.reverse();
                Ok(items)
            })
        }),
    )
    .await
}

/// One message (`MessageStore::get`).
///
/// # Errors
/// `NotFound` when it is not the tenant's, or its thread is marked deleted.
pub async fn get<D: Transactor>(db: &D, who: &dyn Reach, id: MessageId) -> Result<Message, StoreError> {
    let tenant = who.tenant();
    let sql = get_sql(db.dialect(), tenant, id);
    db.read(who, Box::new(move |db| Box::pin(async move { db.fetch_one("get message", sql).await })))
        .await?
        .map(decode)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("message", id))
}

/// `found` in the order of `ids` (`MessageStore::get_many`), leaving out
/// the ids not found; an id asked for twice is answered twice (libSQL did
/// so, Postgres answered it once: the two now agree).
#[must_use]
pub fn in_order(ids: &[MessageId], found: impl IntoIterator<Item = Message>) -> Vec<Message> {
    let by_id: HashMap<MessageId, Message> = found.into_iter().map(|m| (m.id, m)).collect();
    ids.iter().filter_map(|id| by_id.get(id).cloned()).collect()
}

/// Where a streamed read hands its messages, one at a time.
pub trait Collect {
    /// Takes `m`; `false` when the read should stop (`m` left out or the
    /// last one wanted).
    fn accept(&mut self, m: Message) -> bool;

    /// The byte budget, for sizing the next fetch.
    fn budget(&self) -> &ByteBudget;
}

/// One page of a thread's messages being read (`MessageStore::page_within`):
/// at most `limit` messages and `max_bytes` (at least one message), a cursor
/// when more follow.
#[derive(Debug)]
pub struct PageCut {
    thread: ThreadId,
    direction: Direction,
    bound: i64,
    limit: usize,
    budget: ByteBudget,
    items: Vec<Message>,
    more: bool,
}

impl PageCut {
    /// A page after `cursor` (or from the start in `direction`).
    ///
    /// # Errors
    /// `Invalid` for a cursor of another thread or listing.
    pub fn new(
        thread: ThreadId,
        cursor: Option<&Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
        max_bytes: usize,
    ) -> Result<Self, StoreError> {
        let (direction, after) = resolve_message_cursor(thread, cursor, direction)?;
        let bound = match direction {
            Direction::Forward => after.unwrap_or(0),
            Direction::Backward => after.unwrap_or(i64::MAX),
        };
        let limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
        Ok(Self {
            thread,
            direction,
            bound,
            limit,
            budget: ByteBudget::new(max_bytes),
            items: Vec::with_capacity(limit.min(256)),
            more: false,
        })
    }

    /// The statement reading one more than the page, to know whether
    /// another follows.
    #[must_use]
    pub fn sql(&self, dialect: Dialect, tenant: &TenantId) -> Sql {
        let fetch = i64::try_from(self.limit).unwrap_or(i64::MAX).saturating_add(1);
        page_sql(dialect, tenant, self.thread, self.direction, self.bound, fetch)
    }

    /// The thread paged.
    #[must_use]
    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// Whether the page is empty so far (then the thread must be checked:
    /// an empty page of a missing thread is `NotFound`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The page and the cursor after its last message when more follow.
    #[must_use]
    pub fn finish(self) -> Page<Message> {
        let next_cursor = if self.more {
            self.items.last().map(|m| Cursor::messages(self.thread, self.direction, m.seq))
        } else {
            None
        };
        Page { items: self.items, next_cursor }
    }
}

impl Collect for PageCut {
    fn accept(&mut self, m: Message) -> bool {
        if self.items.len() == self.limit || !self.budget.take(&m, true) {
            self.more = true;
            return false;
        }
        self.items.push(m);
        true
    }

    fn budget(&self) -> &ByteBudget {
        &self.budget
    }
}

/// Neighbour windows being read (`MessageStore::read_windows`): each
/// message once, in window order, until `max_bytes` (none required).
#[derive(Debug)]
pub struct WindowCut {
    windows: Vec<SeqRange>,
    budget: ByteBudget,
    seen: HashSet<MessageId>,
    out: Windows,
}

impl WindowCut {
    /// The windows of `windows` that can hold a message (`from <= to`),
    /// within `max_bytes`; `None` when none can.
    #[must_use]
    pub fn new(windows: Vec<SeqRange>, max_bytes: usize) -> Option<Self> {
        let windows: Vec<SeqRange> = windows.into_iter().filter(|w| w.from <= w.to).collect();
        if windows.is_empty() {
            return None;
        }
        Some(Self { windows, budget: ByteBudget::new(max_bytes), seen: HashSet::new(), out: Windows::default() })
    }

    /// The windows to read, in order.
    #[must_use]
    pub fn windows(&self) -> &[SeqRange] {
        &self.windows
    }

    /// Whether the budget ran out (no further message is wanted).
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.out.truncated
    }

    /// The messages read.
    #[must_use]
    pub fn finish(self) -> Windows {
        self.out
    }
}

impl Collect for WindowCut {
    fn accept(&mut self, m: Message) -> bool {
        if self.seen.contains(&m.id) {
            return true;
        }
        if !self.budget.take(&m, false) {
            self.out.truncated = true;
            return false;
        }
        self.seen.insert(m.id);
        self.out.messages.push(m);
        true
    }

    fn budget(&self) -> &ByteBudget {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    const COLUMNS: &str = "id, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, metadata, \
                           token_count, token_model, token_encoding, token_exact, created_at";

    #[test]
    fn page_statements_render_per_dialect() {
        let tenant = TenantId::parse("acme").unwrap();
        let thread = ThreadId::new();
        let sql = page_sql(Dialect::Sqlite, &tenant, thread, Direction::Forward, 0, 11);
        assert_eq!(
            sql.text(),
            format!(
                "SELECT {COLUMNS} FROM messages WHERE thread_id = ?1 AND seq > ?2 AND EXISTS (SELECT 1 FROM threads \
                 WHERE threads.id = ?1 AND threads.tenant = ?3 AND threads.deleted_at IS NULL) ORDER BY seq ASC LIMIT ?4"
            )
        );
        assert_eq!(
            sql.args(),
            [SqlValue::Uuid(thread.as_uuid()), SqlValue::Int(0), SqlValue::from("acme"), SqlValue::Int(11)]
        );
        let sql = page_sql(Dialect::Postgres, &tenant, thread, Direction::Backward, i64::MAX, 5);
        assert_eq!(
            sql.text(),
            format!(
                "SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND seq < $2 AND tenant = $3 AND NOT EXISTS \
                 (SELECT 1 FROM threads WHERE id = $1 AND deleted_at IS NOT NULL) ORDER BY seq DESC LIMIT $4"
            )
        );
        assert!(sql.is_fixed());
    }

    #[test]
    fn one_message_and_thread_checks_render_per_dialect() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = MessageId::new();
        let sql = get_sql(Dialect::Sqlite, &tenant, id);
        assert!(sql.text().ends_with(
            "FROM messages WHERE id = ?1 AND EXISTS (SELECT 1 FROM threads WHERE threads.id = messages.thread_id \
             AND threads.tenant = ?2 AND threads.deleted_at IS NULL)"
        ));
        let sql = get_sql(Dialect::Postgres, &tenant, id);
        assert!(sql.text().ends_with(
            "FROM messages WHERE id = $1 AND tenant = $2 \
             AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)"
        ));
        assert_eq!(sql.args(), [SqlValue::Uuid(id.as_uuid()), SqlValue::from("acme")]);
        let sql = thread_exists_sql(Dialect::Postgres, &tenant, ThreadId::new());
        assert_eq!(sql.text(), "SELECT 1 FROM threads WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL");
    }

    #[test]
    fn a_delete_checks_tenant_and_mark_per_dialect() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = MessageId::new();
        assert_eq!(
            delete_sql(Dialect::Sqlite, &tenant, id).text(),
            "DELETE FROM messages WHERE id = ?1 AND EXISTS (SELECT 1 FROM threads WHERE threads.id = \
             messages.thread_id AND threads.tenant = ?2 AND threads.deleted_at IS NULL) \
             RETURNING thread_id, stored_bytes"
        );
        let sql = delete_sql(Dialect::Postgres, &tenant, id);
        assert_eq!(
            sql.text(),
            "DELETE FROM messages WHERE id = $1 AND tenant = $2 \
             AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL) \
             RETURNING thread_id, stored_bytes"
        );
        assert_eq!(sql.args(), [SqlValue::Uuid(id.as_uuid()), SqlValue::from("acme")]);
    }

    #[test]
    fn only_windows_that_can_hold_a_message_are_read() {
        let thread = ThreadId::new();
        let w = |from, to| SeqRange { thread, from, to };
        assert!(WindowCut::new(Vec::new(), 100).is_none());
        assert!(WindowCut::new(vec![w(5, 4)], 100).is_none());
        let cut = WindowCut::new(vec![w(5, 4), w(1, 3), w(7, 7)], 100).unwrap();
        assert_eq!(cut.windows().iter().map(|w| (w.from, w.to)).collect::<Vec<_>>(), [(1, 3), (7, 7)]);
        assert_eq!(cut.finish(), Windows::default());
    }

    #[test]
    fn a_batch_is_checked_and_made_once() {
        let thread = ThreadId::new();
        assert!(matches!(Batch::new(thread, Vec::new(), now()), Err(StoreError::Invalid(_))));
        let new = |text: &str| NewMessage::new(Role::User, text, None, None, Vec::new(), Metadata::default()).unwrap();
        let at = now();
        let batch = Batch::new(thread, vec![new("a"), new("b")], at).unwrap();
        assert_eq!((batch.thread(), batch.at(), batch.messages().len()), (thread, at, 2));
        let messages = batch.into_messages();
        assert!(messages.iter().all(|m| m.thread_id == thread && m.seq == 0 && m.created_at == at));
        assert_ne!(messages[0].id, messages[1].id);
    }

    fn row(sqlite: bool) -> Vec<SqlValue> {
        let id = uuid::Uuid::from_u128(1);
        let thread = uuid::Uuid::from_u128(2);
        let at = memlayer_domain::from_micros(1_700_000_000_000_000);
        let calls = serde_json::json!([{"id": "c1", "name": "lookup", "arguments": {"q": 1}}]);
        if sqlite {
            vec![
                SqlValue::Blob(id.as_bytes().to_vec()),
                SqlValue::Blob(thread.as_bytes().to_vec()),
                SqlValue::Int(3),
                SqlValue::from("assistant"),
                SqlValue::from("hi"),
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Text(calls.to_string()),
                SqlValue::from("{\"k\":\"v\"}"),
                SqlValue::Int(4),
                SqlValue::from("gpt-4o"),
                SqlValue::from("o200k_base"),
                SqlValue::Int(1),
                SqlValue::Int(1_700_000_000_000_000),
            ]
        } else {
            vec![
                SqlValue::Uuid(id),
                SqlValue::Uuid(thread),
                SqlValue::Int(3),
                SqlValue::from("assistant"),
                SqlValue::from("hi"),
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Json(calls),
                SqlValue::Json(serde_json::json!({"k": "v"})),
                SqlValue::Int(4),
                SqlValue::from("gpt-4o"),
                SqlValue::from("o200k_base"),
                SqlValue::Bool(true),
                SqlValue::Timestamp(at),
            ]
        }
    }

    #[test]
    fn many_come_back_in_the_order_asked_for() {
        let a = decode(row(true)).unwrap();
        let mut b = a.clone();
        b.id = MessageId::new();
        let ids = [b.id, MessageId::new(), a.id, b.id];
        let got = in_order(&ids, [a.clone(), b.clone()]);
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [b.id, a.id, b.id]);
    }

    #[test]
    fn rows_decode_alike_from_either_encoding() {
        let a = decode(row(true)).unwrap();
        let b = decode(row(false)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.tool_calls.len(), 1);
        assert_eq!(a.token_count.as_ref().map(|t| (t.count, t.exact)), Some((4, true)));
        assert_eq!(a.tool_call_id, None);
        let mut bad = row(true);
        bad[9] = SqlValue::Int(-1);
        assert!(decode(bad).unwrap_err().to_string().contains("messages.token_count"));
        let mut bad = row(false);
        bad[3] = SqlValue::from("wizard");
        assert!(decode(bad).unwrap_err().to_string().contains("messages.role"));
    }
}
