//! [`memlayer_ports::MessageStore`] on Postgres: written once in
//! `memlayer_adapters_sql::messages`; here appends, which lock the thread
//! row, assign sequence numbers and load the batch with binary COPY in one
//! transaction, and reads streamed by portal fetches.

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use memlayer_adapters_sql::Dialect;
use memlayer_adapters_sql::messages::{self, Batch, Collect, MESSAGE_COLUMNS, MessageEngine, PageCut, WindowCut};
use memlayer_adapters_sql::usage;
use memlayer_domain::{Message, MessageId, Page, Quota, Reach, TenantId, ThreadId, now};
use memlayer_ports::{StoreError, Windows};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, DriverError};
use crate::exec::{PgExecutor, arg_refs, pg_parts, row_values};

/// The columns an append writes, in the order of [`COLUMN_TYPES`].
const INSERT_COLUMNS: &str = "id, tenant, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, \
     metadata, token_count, token_model, token_encoding, token_exact, created_at, stored_bytes";

/// Binary COPY needs each column's type up front; all are built-in types
/// with fixed OIDs.
const COLUMN_TYPES: [Type; 16] = [
    Type::UUID,
    Type::TEXT,
    Type::UUID,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::TIMESTAMPTZ,
    Type::INT8,
];

/// A message's column values, owned, in [`INSERT_COLUMNS`] order.
struct InsertRow {
    id: uuid::Uuid,
    thread: uuid::Uuid,
    seq: i64,
    role: &'static str,
    content: String,
    tool_call_id: Option<String>,
    tool_name: Option<String>,
    tool_calls: Option<serde_json::Value>,
    metadata: serde_json::Value,
    token_count: Option<i64>,
    token_model: Option<String>,
    token_encoding: Option<String>,
    token_exact: Option<bool>,
    created_at: time::OffsetDateTime,
    stored_bytes: i64,
}

impl InsertRow {
    fn new(m: &Message) -> Result<Self, StoreError> {
        let tool_calls = if m.tool_calls.is_empty() {
            None
        } else {
            Some(
                serde_json::to_value(&m.tool_calls)
                    .map_err(|e| StoreError::backend(DriverError::new("encode tool calls", e.to_string())))?,
            )
        };
        let token = m.token_count.as_ref();
        Ok(Self {
            id: m.id.as_uuid(),
            thread: m.thread_id.as_uuid(),
            seq: m.seq,
            role: m.role.as_str(),
            content: m.content.clone(),
            tool_call_id: m.tool_call_id.clone(),
            tool_name: m.tool_name.clone(),
            tool_calls,
            metadata: serde_json::Value::Object(m.metadata.as_map().clone()),
            token_count: token.map(|t| i64::from(t.count)),
            token_model: token.map(|t| t.model.clone()),
            token_encoding: token.map(|t| t.encoding.clone()),
            token_exact: token.map(|t| t.exact),
            created_at: m.created_at,
            stored_bytes: usage::stored_bytes(m),
        })
    }

    fn params<'a>(&'a self, tenant: &'a &'a str) -> [&'a (dyn ToSql + Sync); 16] {
        [
            &self.id,
            tenant,
            &self.thread,
            &self.seq,
            &self.role,
            &self.content,
            &self.tool_call_id,
            &self.tool_name,
            &self.tool_calls,
            &self.metadata,
            &self.token_count,
            &self.token_model,
            &self.token_encoding,
            &self.token_exact,
            &self.created_at,
            &self.stored_bytes,
        ]
    }
}

memlayer_adapters_sql::message_store!(PgBackend);

#[async_trait]
impl MessageEngine for PgBackend {
    async fn insert_batch(&self, who: &dyn Reach, batch: Batch, quota: &Quota) -> Result<Vec<Message>, StoreError> {
        let (tenant, thread, delta) = (who.tenant(), batch.thread(), batch.delta());
        let mut messages = batch.into_messages();
        let mut client = self.client().await?;
        for &mode in usage::modes(Dialect::Postgres, quota, delta) {
            let tx = begin(&mut client, Access::Of(who)).await?;
            reserve(&tx, tenant, thread, &mut messages, delta).await?;
            // Counted last, just before the commit: the tenant's counter row
            // (its shard) stays locked from there to the commit only, not
            // through the insert (a COPY of a batch takes milliseconds).
            let charge = if let [_] = messages.as_slice() {
                // One message is one INSERT: the charge's first statement is
                // sent without waiting for the insert's answer (the driver
                // pipelines), saving the append a round trip. Which of the
                // two the server runs first does not matter: both are in this
                // transaction, and the check reads the sum after its own
                // increment either way.
                let ex = PgExecutor(&tx);
                let both = futures_util::future::try_join(
                    insert(&tx, tenant, &messages),
                    usage::charge(&ex, tenant, thread, delta, quota, mode),
                );
                both.await?.1
            } else {
                insert(&tx, tenant, &messages).await?;
                usage::charge(&PgExecutor(&tx), tenant, thread, delta, quota, mode).await?
            };
            if charge == usage::Charge::Unsettled {
                // Dropped: rolled back, the thread row's lock released.
                continue;
            }
            tx.commit().await.ctx("append messages")?;
            return Ok(messages);
        }
        Err(StoreError::backend("an exclusive quota charge did not settle"))
    }

    async fn read_page(&self, who: &dyn Reach, mut page: PageCut) -> Result<Page<Message>, StoreError> {
        let tenant = who.tenant();
        let (sql, args) = pg_parts(page.sql(Dialect::Postgres, tenant));
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(who)).await?;
        let stmt = tx.prepare_cached(&sql).await.ctx("read messages")?;
        read_in_chunks(&tx, &stmt, &arg_refs(&args), &mut page).await?;
        if page.is_empty() {
            messages::ensure_thread(&PgExecutor(&tx), tenant, page.thread()).await?;
        }
        tx.commit().await.ctx("read messages")?;
        Ok(page.finish())
    }

    async fn read_neighbours(&self, who: &dyn Reach, mut cut: WindowCut) -> Result<Windows, StoreError> {
        let tenant = who.tenant();
        // Sequence numbers start at 1 and stay far below 2^62: a window
        // ending below 0 or starting past 2^62 holds nothing, and clamping
        // keeps `hi - lo + 1` in the query from overflowing.
        let readable = || cut.windows().iter().filter(|w| w.to >= 0 && w.from <= i64::MAX / 2);
        let threads: Vec<uuid::Uuid> = readable().map(|w| w.thread.as_uuid()).collect();
        if threads.is_empty() {
            return Ok(cut.finish());
        }
        let from: Vec<i64> = readable().map(|w| w.from.max(0)).collect();
        let to: Vec<i64> = readable().map(|w| w.to.min(i64::MAX / 2)).collect();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(who)).await?;
        let stmt = tx.prepare_cached(WINDOWS).await.ctx("read windows")?;
        read_in_chunks(&tx, &stmt, &[&threads, &from, &to, &tenant.as_str()], &mut cut).await?;
        tx.commit().await.ctx("read windows")?;
        Ok(cut.finish())
    }

    async fn read_many(&self, who: &dyn Reach, ids: Vec<MessageId>) -> Result<Vec<Message>, StoreError> {
        let tenant = who.tenant();
        let uuids: Vec<uuid::Uuid> = ids.iter().map(MessageId::as_uuid).collect();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(who)).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1) AND tenant = $2 AND {LIVE}"
            ))
            .await
            .ctx("get messages")?;
        let rows = tx.query(&stmt, &[&uuids, &tenant.as_str()]).await.ctx("get messages")?;
        tx.commit().await.ctx("get messages")?;
        let found = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        Ok(messages::in_order(&ids, found))
    }
}

/// The first step of an append, inside the caller's transaction: `UPDATE …
/// RETURNING` takes the thread row's lock (as `SELECT … FOR UPDATE` would),
/// reserves the sequence numbers and adds the batch to the thread's stored
/// counts in one round trip, so concurrent appenders queue on the row and
/// get consecutive, gap-free ranges; the messages get their numbers.
async fn reserve(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    thread: ThreadId,
    messages: &mut [Message],
    delta: usage::Delta,
) -> Result<(), StoreError> {
    let n =
        i64::try_from(messages.len()).map_err(|e| StoreError::backend(DriverError::new("append", e.to_string())))?;
    let at = messages.first().map_or_else(now, |m| m.created_at);
    let bump = tx
        .prepare_cached(
            "UPDATE threads SET last_seq = last_seq + $1, updated_at = greatest(updated_at, $2), \
             stored_messages = stored_messages + $1, stored_bytes = stored_bytes + $5 \
             WHERE tenant = $3 AND id = $4 AND deleted_at IS NULL RETURNING last_seq",
        )
        .await
        .ctx("reserve sequence numbers")?;
    let row = tx
        .query_opt(&bump, &[&n, &at, &tenant.as_str(), &thread.as_uuid(), &delta.bytes])
        .await
        .ctx("reserve sequence numbers")?
        .ok_or_else(|| StoreError::not_found("thread", thread))?;
    let last: i64 = row.try_get(0).ctx("reserve sequence numbers")?;
    for (seq, m) in (last - n + 1..).zip(messages.iter_mut()) {
        m.seq = seq;
    }
    Ok(())
}

/// The last step of an append: the rows go in by binary COPY (one prepared
/// `INSERT` for a single message), and the statement trigger of migration 2
/// adds their embedding jobs. Nothing is visible to others until the caller
/// commits.
async fn insert(tx: &Transaction<'_>, tenant: &TenantId, messages: &[Message]) -> Result<(), StoreError> {
    let rows = messages.iter().map(InsertRow::new).collect::<Result<Vec<_>, _>>()?;
    if let [one] = rows.as_slice() {
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO messages ({INSERT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ))
            .await
            .ctx("insert message")?;
        tx.execute(&stmt, &one.params(&tenant.as_str())).await.ctx("insert message")?;
    } else {
        copy_rows(tx, tenant.as_str(), &rows).await?;
    }
    Ok(())
}

/// A session-private staging table for binary COPY: Postgres refuses COPY
/// FROM into a table under row-level security, so the rows are copied here
/// and moved into `messages` by one `INSERT … SELECT`, which the policies
/// check like any insert. `ON COMMIT DELETE ROWS` empties it at the end of
/// every transaction (a rollback discards its rows too), so nothing carries
/// over to the pooled connection's next user.
const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS memlayer_append_staging (
    id uuid, tenant text, thread_id uuid, seq bigint, role text, content text, tool_call_id text,
    tool_name text, tool_calls jsonb, metadata jsonb, token_count bigint, token_model text,
    token_encoding text, token_exact boolean, created_at timestamptz, stored_bytes bigint
) ON COMMIT DELETE ROWS";

async fn copy_rows(tx: &Transaction<'_>, tenant: &str, rows: &[InsertRow]) -> Result<(), StoreError> {
    tx.batch_execute(STAGING).await.ctx("stage messages")?;
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY memlayer_append_staging ({INSERT_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await
        .ctx("copy messages")?;
    let writer = BinaryCopyInWriter::new(sink, &COLUMN_TYPES);
    futures_util::pin_mut!(writer);
    for row in rows {
        writer.as_mut().write(&row.params(&tenant)).await.ctx("copy messages")?;
    }
    writer.finish().await.ctx("copy messages")?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO messages ({INSERT_COLUMNS}) SELECT {INSERT_COLUMNS} FROM memlayer_append_staging ORDER BY seq"
        ))
        .await
        .ctx("insert messages")?;
    tx.execute(&insert, &[]).await.ctx("insert messages")?;
    Ok(())
}

/// Leaves out the messages of threads marked deleted (migration 9): a short
/// set, read once per statement through the partial index `threads_deleted`.
pub(crate) const LIVE: &str = "thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)";

/// Rows of the first portal fetch of a budgeted read: at most this many
/// whole messages are read before the budget is first consulted.
const FIRST_CHUNK: i32 = 8;
/// Largest portal fetch.
const MAX_CHUNK: i32 = 1_000;

/// Runs `stmt` through a portal, fetching rows in chunks sized by what the
/// budget has left (after a first chunk of [`FIRST_CHUNK`], as many as the
/// average message so far says still fit, plus one), and hands each
/// message to `accept` until it returns `false` or the rows run out. A
/// budgeted read so stops the query on the server instead of receiving
/// `limit` whole messages. `sink` is fresh: its budget is the whole budget.
async fn read_in_chunks(
    tx: &Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
    sink: &mut impl Collect,
) -> Result<(), StoreError> {
    let max_bytes = sink.budget().left();
    let portal = tx.bind(stmt, params).await.ctx("read messages")?;
    let mut chunk = FIRST_CHUNK;
    loop {
        let rows = tx.query_portal(&portal, chunk).await.ctx("read messages")?;
        let exhausted = rows.len() < usize::try_from(chunk).unwrap_or(usize::MAX);
        for row in &rows {
            if !sink.accept(message(row)?) {
                return Ok(());
            }
        }
        if exhausted {
            return Ok(());
        }
        let budget = sink.budget();
        let used = max_bytes.saturating_sub(budget.left());
        let average = (used / budget.taken().max(1)).max(1);
        chunk = i32::try_from(budget.left() / average + 1).unwrap_or(MAX_CHUNK).clamp(1, MAX_CHUNK);
    }
}

/// `$1` threads, `$2` first and `$3` last seqs (arrays, one element per
/// window), `$4` tenant. Each window is an index range scan on `(thread_id,
/// seq)` in a lateral join over the windows in their given order: the
/// `LIMIT` (never binding: a window holds at most `hi - lo + 1` rows) keeps
/// the planner from flattening the lateral subquery into a hash join over a
/// sequential scan and a full sort (measured with EXPLAIN on 20,000 rows of
/// one thread), and the ordinality is a sort key the planner knows, so the
/// plan is a nested loop with an incremental sort of each window's few rows
/// and the rows stream out in window order.
const WINDOWS: &str = "SELECT x.id, x.thread_id, x.seq, x.role, x.content, x.tool_call_id, x.tool_name, x.tool_calls, \
     x.metadata, x.token_count, x.token_model, x.token_encoding, x.token_exact, x.created_at \
     FROM unnest($1::uuid[], $2::int8[], $3::int8[]) WITH ORDINALITY AS w(thread, lo, hi, ord) \
     CROSS JOIN LATERAL (SELECT id, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, \
     metadata, token_count, token_model, token_encoding, token_exact, created_at FROM messages \
     WHERE tenant = $4 AND thread_id = w.thread AND seq >= w.lo AND seq <= w.hi \
     AND NOT EXISTS (SELECT 1 FROM threads WHERE id = w.thread AND deleted_at IS NOT NULL) \
     ORDER BY seq LIMIT w.hi - w.lo + 1) x \
     ORDER BY w.ord, x.seq";

/// A message from a row selected with [`MESSAGE_COLUMNS`].
fn message(row: &tokio_postgres::Row) -> Result<Message, StoreError> {
    messages::decode(row_values(row, "read messages")?)
}
