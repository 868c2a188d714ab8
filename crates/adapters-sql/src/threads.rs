//! Thread listing, written once: the keyset query over a tenant's threads
//! with optional resource, agent and metadata filters, newest first. The
//! one part that differs is how a metadata pair is compared (libSQL:
//! `json_type`/`json_extract` on JSON text; Postgres: `jsonb` equality);
//! both compare the same JSON type and value (`true` never matches 1, a
//! missing key never matches `null`). Also the patch statement and what a
//! created thread is, the row → [`Thread`] decoding, and every
//! `ThreadStore` operation over [`Transactor`] but the sweep's chunk, which
//! each engine runs its own way ([`ThreadEngine`]); [`thread_store!`](crate::thread_store)
//! implements the port from these. Every caller value is bound.

use std::num::NonZeroU32;

use async_trait::async_trait;
use memlayer_domain::{
    AgentName, Cursor, DomainError, Embedding, ForkThread, MessageId, Metadata, NewThread, Page, PageSize, Quota,
    Reach, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch, Timestamp, Title, now,
};
use memlayer_ports::{Fork, StoreError, Sweep, VectorEntry};

use crate::{Cells, Dialect, Sql, SqlValue, Transactor, corrupt, usage};

/// What [`thread_store!`](crate::thread_store) leaves to the engine: how a sweep chunk finds and
/// removes a marked thread's rows (libSQL: by rowid, its triggers removing
/// vectors and jobs and queueing full-text entries, agent states by hand;
/// Postgres: the thread locked `SKIP LOCKED` so servers sweep different
/// threads, the rest by cascade).
#[async_trait]
pub trait ThreadEngine: Send + Sync {
    /// One chunk of `ThreadStore::sweep_deleted`, in one transaction: the
    /// oldest marked thread's oldest `max_messages` messages, and the thread
    /// with its agent states once its last messages went.
    async fn sweep_chunk(&self, max_messages: NonZeroU32) -> Result<Sweep, StoreError>;
}

/// `ThreadStore::create_within`: the thread is counted and the quota
/// checked in the transaction that inserts it (see [`crate::usage`]).
///
/// # Errors
/// `QuotaExceeded` past `quota.threads`; a failed write.
pub async fn create<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    new: NewThread,
    quota: &Quota,
) -> Result<Thread, StoreError> {
    let tenant = who.tenant();
    usage::check_size(quota, usage::Delta::THREAD)?;
    let thread = created(tenant, new, now());
    for &mode in usage::modes(db.dialect(), quota, usage::Delta::THREAD) {
        let (sql, owner, id, quota) = (insert_sql(db.dialect(), &thread), tenant.clone(), thread.id, *quota);
        let charge = db
            .write(
                who,
                Box::new(move |db| {
                    Box::pin(async move {
                        let charge = usage::charge(db, &owner, id, usage::Delta::THREAD, &quota, mode).await?;
                        if charge == usage::Charge::Settled {
                            db.execute("create thread", sql).await?;
                        }
                        Ok(charge)
                    })
                }),
            )
            .await?;
        if charge == usage::Charge::Settled {
            return Ok(thread);
        }
    }
    Err(StoreError::backend("an exclusive quota charge did not settle"))
}

/// The `INSERT` of a [`created`] thread.
#[must_use]
pub fn insert_sql(dialect: Dialect, thread: &Thread) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("INSERT INTO threads ")
        .push("(id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, updated_at) VALUES (")
        .bind(thread.id.as_uuid())
        .push(", ")
        .bind(thread.tenant.as_str())
        .push(", ")
        .bind(thread.resource_id.as_ref().map(ResourceId::as_str))
        .push(", ")
        .bind(thread.agent_id.as_ref().map(AgentName::as_str))
        .push(", ")
        .bind(thread.title.as_ref().map(Title::as_str))
        .push(", ")
        .bind(thread.model.as_deref())
        .push(", ")
        .bind(SqlValue::Json(serde_json::Value::Object(thread.metadata.as_map().clone())));
    sql.push(", ").bind(thread.last_seq);
    let at = sql.arg(thread.created_at);
    sql.push(&format!(", {at}, {at})"));
    sql
}

/// `ThreadStore::resource_threads`.
///
/// # Errors
/// A failed read.
pub async fn resource_threads<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    resource: &ResourceId,
) -> Result<Vec<ThreadId>, StoreError> {
    let tenant = who.tenant();
    let mut sql = Sql::new(db.dialect());
    sql.push("SELECT id FROM threads WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND resource_id = ").bind(resource.as_str()).push(" AND deleted_at IS NULL ORDER BY id");
    let rows =
        db.read(who, Box::new(move |db| Box::pin(async move { db.fetch("list resource threads", sql).await }))).await?;
    rows.iter().map(|row| Ok(ThreadId::from_uuid(Cells::new(row, "threads").uuid(0, "id")?))).collect()
}

/// `ThreadStore::delete`: only the mark, one row whatever the thread's
/// size; from its commit on every query leaves the thread out, and
/// `sweep_deleted` removes its rows later in bounded transactions. The
/// thread, its messages and their bytes stop counting in the same
/// transaction (the thread row keeps their counts, so this is one
/// statement more, not a count of its messages).
///
/// # Errors
/// `NotFound` for a missing or already deleted thread.
pub async fn delete<D: Transactor>(db: &D, who: &dyn Reach, id: ThreadId) -> Result<(), StoreError> {
    let tenant = who.tenant();
    let mut sql = Sql::new(db.dialect());
    sql.push("UPDATE threads SET deleted_at = ").bind(now()).push(" WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(id.as_uuid()).push(" AND deleted_at IS NULL RETURNING stored_messages, stored_bytes");
    let owner = tenant.clone();
    let marked = db
        .write(
            who,
            Box::new(move |db| {
                Box::pin(async move {
                    let Some(row) = db.fetch_one("delete thread", sql).await? else { return Ok(false) };
                    let c = Cells::new(&row, "threads");
                    let held = usage::Delta {
                        threads: 1,
                        messages: c.int(0, "stored_messages")?,
                        bytes: c.int(1, "stored_bytes")?,
                    };
                    usage::release(db, &owner, id, held.negated()).await?;
                    Ok(true)
                })
            }),
        )
        .await?;
    if !marked {
        return Err(StoreError::not_found("thread", id));
    }
    Ok(())
}

/// `ThreadStore::fork`: one write transaction of a handful of statements,
/// each a set-based `INSERT … SELECT` whatever the number of messages, so
/// a fork of 10,000 messages costs what copying their rows costs (see
/// docs/BENCHMARKS.md, "Forking a thread"):
///
/// 1. the source read (live, the tenant's) and the fork made from it
///    ([`ForkThread::forked`]: `Invalid` on `at_seq` beyond its `last_seq`);
/// 2. the thread row, `last_seq` the fork's `at_seq`;
/// 3. the messages with `seq <= at_seq`, in seq order, each given the id at
///    position `seq - 1` of a blob of new UUIDv7 ids made here in order
///    (`substr` on SQLite; `substring` of `bytea` cast to `uuid` on
///    Postgres), so no id mapping is read back; deleted messages have no row
///    and are not copied, their seqs stay gaps;
/// 4. their vectors, matched by seq (`message_vectors`' `vector` blob on
///    libSQL; the `vector` column, tenant and thread on Postgres);
/// 5. pending embeddings: on libSQL the catch-up queues a job (and adds the
///    full-text entry) for every new message row, skipping those with a
///    vector; on Postgres the insert trigger queued a job for every copied
///    message, and those that got a vector lose it here, the same rule;
/// 6. the agent states and the thread's working-memory document as of
///    `at_seq` (forking the whole thread: the current ones; else each
///    agent's `agent_state_history` row and the `working_memory_versions`
///    row with the greatest seq, or version, at most `at_seq`; none when the
///    history kept none that old), and the newest summary with
///    `covers_through <= at_seq`, each as version 1 and entered in the
///    fork's own history under the seq it was saved at, so a fork of the
///    fork is as exact;
/// 7. the copied vectors read back for the vector index (Postgres:
///    `vector_send`, pgvector's binary form).
///
/// # Errors
/// `NotFound` for a missing or deleted source, `Invalid` on `at_seq` or on
/// `metadata` (naming the source made it too large), a failed write (then
/// nothing of the fork is stored).
pub async fn fork<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    source: ThreadId,
    request: ForkThread,
    quota: &Quota,
) -> Result<Fork, StoreError> {
    // A fork's size is known only once its messages are copied, so a
    // limited tenant's fork takes the exact (exclusive) path at once.
    let mode = if quota.is_limited() { usage::Mode::Exclusive } else { usage::Mode::Shared };
    let (tenant_owned, quota) = (who.tenant().clone(), *quota);
    let forked = db
        .write(
            who,
            Box::new(move |ex| {
                Box::pin(async move {
                    let tenant = &tenant_owned;
                    let dialect = ex.dialect();
                    let row = ex.fetch_one("read thread to fork", get_sql(dialect, tenant, source)).await?;
                    let source_thread = row
                        .as_deref()
                        .map(|r| decode(r, tenant))
                        .transpose()?
                        .ok_or_else(|| StoreError::not_found("thread", source))?;
                    let at = now();
                    let thread = request.forked(&source_thread, ThreadId::new(), at)?;
                    ex.execute("create fork", insert_sql(dialect, &thread)).await?;
                    let messages =
                        ex.execute("copy messages", fork_messages_sql(dialect, tenant, source, &thread)).await?;
                    let held = ex.fetch_one("count fork", fork_counts_sql(dialect, tenant, thread.id)).await?;
                    let held = held.ok_or_else(|| StoreError::backend("the fork's row vanished"))?;
                    let c = Cells::new(&held, "threads");
                    let delta = usage::Delta {
                        threads: 1,
                        messages: c.int(0, "stored_messages")?,
                        bytes: c.int(1, "stored_bytes")?,
                    };
                    let charge = usage::charge(ex, tenant, thread.id, delta, &quota, mode).await?;
                    if charge != usage::Charge::Settled {
                        return Err(StoreError::backend("an exclusive quota charge did not settle"));
                    }
                    ex.execute("copy vectors", fork_vectors_sql(dialect, tenant, source, &thread)).await?;
                    if dialect == Dialect::Postgres {
                        let mut sql = Sql::new(dialect);
                        sql.push(
                            "DELETE FROM embedding_jobs WHERE message_id IN (SELECT message_id FROM message_vectors ",
                        )
                        .push("WHERE tenant = ")
                        .bind(tenant.as_str())
                        .push(" AND thread_id = ")
                        .bind(thread.id.as_uuid())
                        .push(")");
                        ex.execute("drop jobs of copied vectors", sql).await?;
                    }
                    // The whole thread: the current state and document;
                    // up to an earlier seq: those as of it.
                    let whole = thread.last_seq == source_thread.last_seq;
                    for history in [false, true] {
                        let sql = fork_states_sql(dialect, history, tenant, source, &thread, whole, at);
                        ex.execute("copy agent states", sql).await?;
                    }
                    ex.execute("copy summary", fork_summary_sql(dialect, tenant, source, &thread)).await?;
                    for versions in [false, true] {
                        let sql = fork_working_sql(dialect, versions, tenant, source, &thread, whole, at);
                        ex.execute("copy working memory", sql).await?;
                    }
                    let rows = ex.fetch("read copied vectors", forked_vectors_sql(dialect, tenant, thread.id)).await?;
                    let vectors = rows
                        .iter()
                        .map(|row| decode_vector(dialect, row, tenant, thread.id))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Fork { thread, messages, vectors })
                })
            }),
        )
        .await?;
    Ok(forked)
}

/// Step 3's bookkeeping for the quota: the fork's thread row takes the count
/// and bytes of the messages just copied (each kept its `stored_bytes`),
/// which is what deleting the fork will release.
#[must_use]
pub fn fork_counts_sql(dialect: Dialect, tenant: &TenantId, fork: ThreadId) -> Sql {
    let mut sql = Sql::new(dialect);
    let id = sql.arg(fork.as_uuid());
    let mut live = format!("FROM messages WHERE thread_id = {id}");
    if dialect.tenant_on_every_table() {
        let t = sql.arg(tenant.as_str());
        live.push_str(&format!(" AND tenant = {t}"));
    }
    sql.push(&format!(
        "UPDATE threads SET stored_messages = (SELECT count(*) {live}), \
         stored_bytes = (SELECT coalesce(sum(stored_bytes), 0) {live}) WHERE id = {id}"
    ));
    sql.push(" AND tenant = ").bind(tenant.as_str()).push(" RETURNING stored_messages, stored_bytes");
    sql
}

/// Step 3 of [`fork`]: `INSERT INTO messages … SELECT` the source's messages
/// up to the fork's `last_seq`, in seq order, the new ids bound as one blob
/// of 16 bytes per seq.
#[must_use]
pub fn fork_messages_sql(dialect: Dialect, tenant: &TenantId, source: ThreadId, fork: &Thread) -> Sql {
    let count = usize::try_from(fork.last_seq).unwrap_or(0);
    let mut ids = Vec::with_capacity(count * 16);
    for _ in 0..count {
        ids.extend_from_slice(memlayer_domain::MessageId::new().as_uuid().as_bytes());
    }
    let copied = "seq, role, content, tool_call_id, tool_name, tool_calls, metadata, token_count, token_model, \
                  token_encoding, token_exact, stored_bytes, created_at";
    let mut sql = Sql::new(dialect);
    let ids = sql.arg(SqlValue::Blob(ids));
    let tenant_column = if dialect.tenant_on_every_table() { "tenant, " } else { "" };
    sql.push(&format!("INSERT INTO messages (id, {tenant_column}thread_id, {copied}) SELECT "));
    match dialect {
        Dialect::Sqlite => sql.push(&format!("substr({ids}, (seq - 1) * 16 + 1, 16), ")),
        Dialect::Postgres => {
            sql.push(&format!("encode(substring({ids}::bytea FROM ((seq - 1) * 16 + 1)::int FOR 16), 'hex')::uuid, "))
        }
    };
    if dialect.tenant_on_every_table() {
        sql.push("tenant, ");
    }
    sql.bind(fork.id.as_uuid()).push(&format!(", {copied} FROM messages WHERE thread_id = ")).bind(source.as_uuid());
    if dialect.tenant_on_every_table() {
        sql.push(" AND tenant = ").bind(tenant.as_str());
    }
    sql.push(" AND seq <= ").bind(fork.last_seq).push(" ORDER BY seq");
    sql
}

/// Step 4 of [`fork`]: the vectors of the copied messages, each source
/// message matched to its copy by seq.
#[must_use]
pub fn fork_vectors_sql(dialect: Dialect, tenant: &TenantId, source: ThreadId, fork: &Thread) -> Sql {
    let mut sql = Sql::new(dialect);
    match dialect {
        Dialect::Sqlite => {
            sql.push("INSERT INTO message_vectors (message_rowid, model, dim, vector, created_at) ")
                .push("SELECT n.rowid, v.model, v.dim, v.vector, v.created_at FROM messages s ")
                .push("JOIN message_vectors v ON v.message_rowid = s.rowid ")
                .push("JOIN messages n ON n.thread_id = ")
                .bind(fork.id.as_uuid())
                .push(" AND n.seq = s.seq WHERE s.thread_id = ")
                .bind(source.as_uuid())
                .push(" AND s.seq <= ")
                .bind(fork.last_seq)
                .push(" ORDER BY v.rowid");
        }
        Dialect::Postgres => {
            sql.push("INSERT INTO message_vectors (message_id, tenant, thread_id, model, dim, embedding, created_at) ")
                .push("SELECT n.id, n.tenant, n.thread_id, v.model, v.dim, v.embedding, v.created_at FROM messages s ")
                .push("JOIN message_vectors v ON v.message_id = s.id ")
                .push("JOIN messages n ON n.thread_id = ")
                .bind(fork.id.as_uuid())
                .push(" AND n.seq = s.seq WHERE s.thread_id = ")
                .bind(source.as_uuid())
                .push(" AND s.tenant = ")
                .bind(tenant.as_str())
                .push(" AND s.seq <= ")
                .bind(fork.last_seq)
                .push(" ORDER BY v.position");
        }
    }
    sql
}

/// Step 6 of [`fork`]: the source's agent states into `agent_state`, or
/// into `agent_state_history` (migration 25) when `history`, as version 1:
/// forking the `whole` thread, the current ones (in the history under the
/// seq their newest history row has, or the fork's `last_seq`); else each
/// agent's history row with the greatest `at_seq <= fork.last_seq`, an
/// agent without one getting none.
#[must_use]
pub fn fork_states_sql(
    dialect: Dialect,
    history: bool,
    tenant: &TenantId,
    source: ThreadId,
    fork: &Thread,
    whole: bool,
    at: Timestamp,
) -> Sql {
    let table = if history { "agent_state_history" } else { "agent_state" };
    let mut sql = Sql::new(dialect);
    let tenant_column = if dialect.tenant_on_every_table() { "tenant, " } else { "" };
    let seq_column = if history { "at_seq, " } else { "" };
    sql.push(&format!(
        "INSERT INTO {table} ({tenant_column}thread_id, agent_id, {seq_column}state, version, updated_at) SELECT "
    ));
    if dialect.tenant_on_every_table() {
        sql.push("a.tenant, ");
    }
    sql.bind(fork.id.as_uuid()).push(", a.agent_id, ");
    if history {
        if whole {
            sql.push(
                "coalesce((SELECT max(h.at_seq) FROM agent_state_history h \
                 WHERE h.thread_id = a.thread_id AND h.agent_id = a.agent_id), ",
            )
            .bind(fork.last_seq)
            .push("), ");
        } else {
            sql.push("a.at_seq, ");
        }
    }
    sql.push("a.state, 1, ").bind(at);
    let from = if whole { "agent_state" } else { "agent_state_history" };
    sql.push(&format!(" FROM {from} a WHERE a.thread_id = ")).bind(source.as_uuid());
    if dialect.tenant_on_every_table() {
        sql.push(" AND a.tenant = ").bind(tenant.as_str());
    }
    if !whole {
        sql.push(
            " AND a.at_seq = (SELECT max(m.at_seq) FROM agent_state_history m \
             WHERE m.thread_id = a.thread_id AND m.agent_id = a.agent_id AND m.at_seq <= ",
        )
        .bind(fork.last_seq)
        .push(")");
    }
    sql
}

/// Step 6 of [`fork`]: the source's newest summary that covers no message
/// past the fork's `at_seq` (`covers_through <= at_seq`), as version 1; none
/// when it has no such summary.
#[must_use]
pub fn fork_summary_sql(dialect: Dialect, tenant: &TenantId, source: ThreadId, fork: &Thread) -> Sql {
    let mut sql = Sql::new(dialect);
    let tenant_column = if dialect.tenant_on_every_table() { "tenant, " } else { "" };
    sql.push(&format!(
        "INSERT INTO thread_summaries ({tenant_column}thread_id, version, text, covers_through, covered_messages, \
         summarizer, created_at) SELECT {tenant_column}"
    ));
    sql.bind(fork.id.as_uuid())
        .push(", 1, text, covers_through, covered_messages, summarizer, created_at FROM thread_summaries WHERE thread_id = ")
        .bind(source.as_uuid());
    if dialect.tenant_on_every_table() {
        sql.push(" AND tenant = ").bind(tenant.as_str());
    }
    sql.push(" AND covers_through <= ").bind(fork.last_seq).push(" ORDER BY version DESC LIMIT 1");
    sql
}

/// Step 6 of [`fork`]: the source's working-memory document into
/// `working_memory`, or into `working_memory_versions` when `versions`, as
/// version 1: forking
/// the `whole` thread, the current one (kept with the seq of its version,
/// or the fork's `last_seq`); else the newest kept version with
/// `at_seq <= fork.last_seq`, none when no kept version is that old.
#[must_use]
pub fn fork_working_sql(
    dialect: Dialect,
    versions: bool,
    tenant: &TenantId,
    source: ThreadId,
    fork: &Thread,
    whole: bool,
    at: Timestamp,
) -> Sql {
    let table = if versions { "working_memory_versions" } else { "working_memory" };
    let mut sql = Sql::new(dialect);
    let seq_column = if versions { ", at_seq" } else { "" };
    sql.push(&format!(
        "INSERT INTO {table} (tenant, scope_kind, scope_id, thread_id, format, content, version, updated_at\
         {seq_column}) SELECT w.tenant, w.scope_kind, "
    ))
    .bind(fork.id.to_string())
    .push(", ")
    .bind(fork.id.as_uuid())
    .push(", w.format, w.content, 1, ")
    .bind(at);
    if versions {
        if whole {
            sql.push(
                ", coalesce((SELECT v.at_seq FROM working_memory_versions v WHERE v.tenant = w.tenant \
                 AND v.scope_kind = w.scope_kind AND v.scope_id = w.scope_id AND v.version = w.version), ",
            )
            .bind(fork.last_seq)
            .push(")");
        } else {
            sql.push(", w.at_seq");
        }
    }
    let from = if whole { "working_memory" } else { "working_memory_versions" };
    sql.push(&format!(" FROM {from} w WHERE w.tenant = "))
        .bind(tenant.as_str())
        .push(" AND w.scope_kind = 'thread' AND w.scope_id = ")
        .bind(source.to_string());
    if !whole {
        sql.push(" AND w.at_seq <= ").bind(fork.last_seq).push(" ORDER BY w.version DESC LIMIT 1");
    }
    sql
}

/// Step 7 of [`fork`]: the fork's vectors (message id, model, dim, vector
/// bytes).
#[must_use]
pub fn forked_vectors_sql(dialect: Dialect, tenant: &TenantId, fork: ThreadId) -> Sql {
    let mut sql = Sql::new(dialect);
    match dialect {
        Dialect::Sqlite => {
            sql.push("SELECT n.id, v.model, v.dim, v.vector FROM messages n ")
                .push("JOIN message_vectors v ON v.message_rowid = n.rowid WHERE n.thread_id = ")
                .bind(fork.as_uuid());
        }
        Dialect::Postgres => {
            sql.push("SELECT message_id, model, dim, vector_send(embedding) FROM message_vectors WHERE tenant = ")
                .bind(tenant.as_str())
                .push(" AND thread_id = ")
                .bind(fork.as_uuid());
        }
    }
    sql
}

/// A row of [`forked_vectors_sql`] as an index entry: libSQL stores
/// little-endian `f32`s; pgvector's binary form is a big-endian `int16`
/// dimension, an unused `int16`, then big-endian `float4`s.
pub(crate) fn decode_vector(
    dialect: Dialect,
    row: &[SqlValue],
    tenant: &TenantId,
    thread: ThreadId,
) -> Result<VectorEntry, StoreError> {
    let c = Cells::new(row, "message_vectors");
    let dim = usize::try_from(c.int(2, "dim")?).map_err(|e| corrupt("message_vectors", "dim", e))?;
    let bytes = c.blob(3, "vector")?;
    let body = match dialect {
        Dialect::Sqlite => bytes.as_slice(),
        Dialect::Postgres => bytes.get(4..).unwrap_or_default(),
    };
    if body.len() != dim * 4 {
        return Err(corrupt("message_vectors", "vector", format!("{} bytes for dimension {dim}", body.len())));
    }
    let vector = body
        .chunks_exact(4)
        .map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            match dialect {
                Dialect::Sqlite => f32::from_le_bytes(b),
                Dialect::Postgres => f32::from_be_bytes(b),
            }
        })
        .collect();
    let embedding =
        Embedding::new(c.text(1, "model")?, vector, dim).map_err(|e| corrupt("message_vectors", "vector", e))?;
    Ok(VectorEntry { id: MessageId::from_uuid(c.uuid(0, "id")?), tenant: tenant.clone(), thread, embedding })
}

/// `ThreadStore::sweep_deleted`: one [`ThreadEngine::sweep_chunk`].
///
/// # Errors
/// `Invalid` for a chunk of no message.
pub async fn sweep_deleted<D: ThreadEngine>(db: &D, max_messages: u32) -> Result<Sweep, StoreError> {
    let Some(max_messages) = NonZeroU32::new(max_messages) else {
        return Err(StoreError::Invalid(DomainError::new("max_messages", "must be at least 1")));
    };
    db.sweep_chunk(max_messages).await
}

/// Implements `memlayer_ports::ThreadStore` for a backend type that
/// implements [`Transactor`] and [`ThreadEngine`], delegating to this
/// module (a macro: the orphan rule forbids a blanket impl of a foreign
/// trait).
#[macro_export]
macro_rules! thread_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::ThreadStore for $backend {
            async fn create_within(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                new: ::memlayer_domain::NewThread,
                quota: &::memlayer_domain::Quota,
            ) -> Result<::memlayer_domain::Thread, ::memlayer_ports::StoreError> {
                $crate::threads::create(self, who, new, quota).await
            }

            async fn get(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::ThreadId,
            ) -> Result<::memlayer_domain::Thread, ::memlayer_ports::StoreError> {
                $crate::threads::get(self, who, id).await
            }

            async fn resource_threads(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                resource: &::memlayer_domain::ResourceId,
            ) -> Result<Vec<::memlayer_domain::ThreadId>, ::memlayer_ports::StoreError> {
                $crate::threads::resource_threads(self, who, resource).await
            }

            async fn list(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                filter: &::memlayer_domain::ThreadFilter,
                cursor: Option<::memlayer_domain::Cursor>,
                limit: ::memlayer_domain::PageSize,
            ) -> Result<::memlayer_domain::Page<::memlayer_domain::Thread>, ::memlayer_ports::StoreError> {
                $crate::threads::list(self, who, filter, cursor, limit).await
            }

            async fn update(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::ThreadId,
                patch: ::memlayer_domain::ThreadPatch,
            ) -> Result<::memlayer_domain::Thread, ::memlayer_ports::StoreError> {
                $crate::threads::update(self, who, id, patch, ::memlayer_domain::now()).await
            }

            async fn delete(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::ThreadId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::threads::delete(self, who, id).await
            }

            async fn fork_within(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                source: ::memlayer_domain::ThreadId,
                fork: ::memlayer_domain::ForkThread,
                quota: &::memlayer_domain::Quota,
            ) -> Result<::memlayer_ports::Fork, ::memlayer_ports::StoreError> {
                $crate::threads::fork(self, who, source, fork, quota).await
            }

            async fn sweep_deleted(
                &self,
                max_messages: u32,
            ) -> Result<::memlayer_ports::Sweep, ::memlayer_ports::StoreError> {
                $crate::threads::sweep_deleted(self, max_messages).await
            }
        }
    };
}

/// The columns [`decode`] reads, in its order (the tenant is the one the
/// query is scoped by).
pub const THREAD_COLUMNS: &str = "id, resource_id, agent_id, title, model, metadata, last_seq, created_at, updated_at";

/// Decodes a row selected with [`THREAD_COLUMNS`], in either encoding.
///
/// # Errors
/// `Backend` (a corrupt row) naming the column that does not decode.
pub fn decode(row: &[SqlValue], tenant: &TenantId) -> Result<Thread, StoreError> {
    let c = Cells::new(row, "threads");
    let opt = |idx, column| c.opt_text(idx, column);
    Ok(Thread {
        id: ThreadId::from_uuid(c.uuid(0, "id")?),
        tenant: tenant.clone(),
        resource_id: opt(1, "resource_id")?
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| corrupt("threads", "resource_id", e))?,
        agent_id: opt(2, "agent_id")?
            .map(AgentName::parse)
            .transpose()
            .map_err(|e| corrupt("threads", "agent_id", e))?,
        title: opt(3, "title")?.map(Title::parse).transpose().map_err(|e| corrupt("threads", "title", e))?,
        model: opt(4, "model")?,
        metadata: Metadata::from_stored("metadata", c.json(5, "metadata")?)
            .map_err(|e| corrupt("threads", "metadata", e))?,
        last_seq: c.int(6, "last_seq")?,
        created_at: c.timestamp(7, "created_at")?,
        updated_at: c.timestamp(8, "updated_at")?,
    })
}

/// `SELECT` one live thread of the tenant.
#[must_use]
pub fn get_sql(dialect: Dialect, tenant: &TenantId, id: ThreadId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ")).bind(tenant.as_str());
    sql.push(" AND id = ").bind(id.as_uuid()).push(" AND deleted_at IS NULL");
    sql
}

/// One row of a single-row statement decoded as a thread, `NotFound` when
/// there is none.
async fn one<D: Transactor>(
    db: &D,
    write: bool,
    context: &'static str,
    who: &dyn Reach,
    id: ThreadId,
    sql: Sql,
) -> Result<Thread, StoreError> {
    let tenant = who.tenant();
    let work: crate::Work<Option<crate::Row>> =
        Box::new(move |db| Box::pin(async move { db.fetch_one(context, sql).await }));
    let row = if write { db.write(who, work).await? } else { db.read(who, work).await? };
    row.as_deref().map(|r| decode(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found("thread", id))
}

/// `ThreadStore::get`.
///
/// # Errors
/// `NotFound` for a missing or deleted thread.
pub async fn get<D: Transactor>(db: &D, who: &dyn Reach, id: ThreadId) -> Result<Thread, StoreError> {
    let tenant = who.tenant();
    one(db, false, "get thread", who, id, get_sql(db.dialect(), tenant, id)).await
}

/// `ThreadStore::update`: an empty patch reads the thread.
///
/// # Errors
/// `NotFound` for a missing or deleted thread.
pub async fn update<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    id: ThreadId,
    patch: ThreadPatch,
    at: Timestamp,
) -> Result<Thread, StoreError> {
    let tenant = who.tenant();
    if patch.is_empty() {
        return get(db, who, id).await;
    }
    let sql = update_sql(db.dialect(), THREAD_COLUMNS, tenant, id, patch, at);
    one(db, true, "update thread", who, id, sql).await
}

/// `ThreadStore::list`.
///
/// # Errors
/// `Invalid` for a bad filter or a cursor of another listing.
pub async fn list<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    filter: &ThreadFilter,
    cursor: Option<Cursor>,
    limit: PageSize,
) -> Result<Page<Thread>, StoreError> {
    let tenant = who.tenant();
    let (sql, limit) = listing(db.dialect(), THREAD_COLUMNS, tenant, filter, cursor, limit)?;
    let rows = db.read(who, Box::new(move |db| Box::pin(async move { db.fetch("list threads", sql).await }))).await?;
    let items = rows.iter().map(|r| decode(r, tenant)).collect::<Result<Vec<_>, _>>()?;
    Ok(page(tenant, filter, items, limit))
}

/// `SELECT <columns> FROM threads WHERE tenant = ? AND … ORDER BY id DESC
/// LIMIT limit + 1` (one more than the page, to know whether another
/// follows). `columns` is the adapter's thread column list. The text varies
/// with the filter, so the statement is marked dynamic.
#[must_use]
pub fn list_sql(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    filter: &ThreadFilter,
    after: Option<ThreadId>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::new(dialect).dynamic();
    sql.push(&format!("SELECT {columns} FROM threads WHERE tenant = ")).bind(tenant.as_str());
    // Threads marked deleted (migration 9) are gone for every caller.
    sql.push(" AND deleted_at IS NULL");
    if let Some(after) = after {
        sql.push(" AND id < ").bind(after.as_uuid());
    }
    if let Some(resource) = &filter.resource_id {
        sql.push(" AND resource_id = ").bind(resource.as_str());
    }
    if let Some(agent) = &filter.agent_id {
        sql.push(" AND agent_id = ").bind(agent.as_str());
    }
    for m in &filter.metadata {
        match dialect {
            Dialect::Sqlite => {
                // The key is validated by the domain (letters, digits, `_`,
                // `-`), so quoting it in a JSON path is safe; the path is
                // still a parameter.
                let path = sql.arg(format!("$.\"{}\"", m.key()));
                let value = sql.arg(SqlValue::Json(m.value().clone()));
                sql.push(&format!(
                    " AND json_type(metadata, {path}) = json_type({value}) \
                     AND json_extract(metadata, {path}) IS json_extract({value}, '$')"
                ));
            }
            Dialect::Postgres => {
                let key = sql.arg(m.key());
                let value = sql.arg(SqlValue::Json(m.value().clone()));
                sql.push(&format!(" AND metadata -> {key}::text = {value}::jsonb"));
            }
        }
    }
    sql.push(" ORDER BY id DESC LIMIT ").bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
    sql
}

/// A listing request resolved: the filter checked, the cursor opened
/// (bound to tenant and filter), the query for one more than `limit`.
/// Returns the statement and the page size.
///
/// # Errors
/// `Invalid` for a bad filter or a cursor of another listing.
pub fn listing(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    filter: &ThreadFilter,
    cursor: Option<Cursor>,
    limit: PageSize,
) -> Result<(Sql, usize), StoreError> {
    filter.check()?;
    let after = cursor.map(|c| c.for_threads(tenant, filter)).transpose()?;
    let limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
    Ok((list_sql(dialect, columns, tenant, filter, after, limit), limit))
}

/// Cuts a `limit + 1` read to a page and the cursor after its last thread.
#[must_use]
pub fn page(tenant: &TenantId, filter: &ThreadFilter, mut items: Vec<Thread>, limit: usize) -> Page<Thread> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|t| Cursor::threads(tenant, filter, t.id))
    } else {
        None
    };
    Page { items, next_cursor }
}

/// The thread `create` stores: a new id, no messages yet, created now.
#[must_use]
pub fn created(tenant: &TenantId, new: NewThread, at: Timestamp) -> Thread {
    Thread {
        id: ThreadId::new(),
        tenant: tenant.clone(),
        resource_id: new.resource_id,
        agent_id: new.agent_id,
        title: new.title,
        model: new.model,
        metadata: new.metadata,
        last_seq: 0,
        created_at: at,
        updated_at: at,
    }
}

/// `UPDATE threads SET updated_at = <at>, <patched columns> WHERE tenant = ?
/// AND id = ? RETURNING <columns>`; a field the patch leaves out keeps its
/// value, a field set to `None` is cleared; `pinned` alone sets that one
/// metadata key in place (json_set, jsonb `||`), keeping the others.
#[must_use]
pub fn update_sql(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    id: ThreadId,
    patch: ThreadPatch,
    at: Timestamp,
) -> Sql {
    let text = |v: Option<&str>| SqlValue::from(v.map(str::to_owned));
    let mut sql = Sql::new(dialect).dynamic();
    sql.push("UPDATE threads SET updated_at = ").bind(at);
    let mut set = |column: &str, value: SqlValue| {
        sql.push(", ").push(column).push(" = ").bind(value);
    };
    if let Some(title) = patch.title {
        set("title", text(title.as_ref().map(|t| t.as_str())));
    }
    if let Some(resource) = patch.resource_id {
        set("resource_id", text(resource.as_ref().map(|r| r.as_str())));
    }
    if let Some(agent) = patch.agent_id {
        set("agent_id", text(agent.as_ref().map(|a| a.as_str())));
    }
    if let Some(model) = patch.model {
        set("model", text(model.as_deref()));
    }
    match (patch.metadata, patch.pinned) {
        (Some(metadata), pinned) => {
            let mut map = metadata.into_map();
            if let Some(pinned) = pinned {
                map.insert(memlayer_domain::PINNED_KEY.to_owned(), serde_json::Value::Bool(pinned));
            }
            set("metadata", SqlValue::Json(serde_json::Value::Object(map)));
        }
        // One key changed in place, the rest kept, in the same statement.
        (None, Some(pinned)) => match dialect {
            Dialect::Sqlite => {
                sql.push(", metadata = json_set(metadata, '$.pinned', json(").bind(pinned.to_string()).push("))");
            }
            Dialect::Postgres => {
                sql.push(", metadata = metadata || jsonb_build_object('pinned', ").bind(pinned).push("::boolean)");
            }
        },
        (None, None) => {}
    }
    sql.push(" WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ").bind(id.as_uuid());
    sql.push(" AND deleted_at IS NULL");
    sql.push(&format!(" RETURNING {columns}"));
    sql
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_domain::{MetadataFilter, ResourceId};

    use super::*;

    #[test]
    fn filters_render_per_dialect_with_every_value_bound() {
        let tenant = TenantId::parse("acme").unwrap();
        let evil = "x' OR 1=1 --";
        let filter = ThreadFilter {
            resource_id: Some(ResourceId::parse("user-42").unwrap()),
            metadata: vec![MetadataFilter::new("lang", serde_json::json!(evil)).unwrap()],
            ..ThreadFilter::default()
        };
        let after = ThreadId::new();
        let sql = list_sql(Dialect::Postgres, "id", &tenant, &filter, Some(after), 10);
        assert_eq!(
            sql.text(),
            "SELECT id FROM threads WHERE tenant = $1 AND deleted_at IS NULL AND id < $2 AND resource_id = $3 \
             AND metadata -> $4::text = $5::jsonb ORDER BY id DESC LIMIT $6"
        );
        assert_eq!(sql.args()[2], SqlValue::from("user-42"));
        assert_eq!(sql.args()[4], SqlValue::Json(serde_json::json!(evil)));
        assert_eq!(sql.args()[5], SqlValue::Int(11));
        let sql = list_sql(Dialect::Sqlite, "id", &tenant, &filter, None, 10);
        assert!(sql.text().contains(
            "AND json_type(metadata, ?3) = json_type(?4) AND json_extract(metadata, ?3) IS json_extract(?4, '$')"
        ));
        assert_eq!(sql.args()[2], SqlValue::from("$.\"lang\""));
        assert!(!sql.text().contains(evil) && !sql.is_fixed());
    }

    #[test]
    fn rows_decode_alike_from_either_encoding() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = uuid::Uuid::from_u128(5);
        let sqlite = [
            SqlValue::Blob(id.as_bytes().to_vec()),
            SqlValue::from("user-42"),
            SqlValue::Null,
            SqlValue::from("Refund"),
            SqlValue::Null,
            SqlValue::from("{\"lang\":\"en\"}"),
            SqlValue::Int(3),
            SqlValue::Int(1_700_000_000_000_000),
            SqlValue::Int(1_700_000_000_000_001),
        ];
        let postgres = [
            SqlValue::Uuid(id),
            SqlValue::from("user-42"),
            SqlValue::Null,
            SqlValue::from("Refund"),
            SqlValue::Null,
            SqlValue::Json(serde_json::json!({"lang": "en"})),
            SqlValue::Int(3),
            SqlValue::Timestamp(memlayer_domain::from_micros(1_700_000_000_000_000)),
            SqlValue::Timestamp(memlayer_domain::from_micros(1_700_000_000_000_001)),
        ];
        let a = decode(&sqlite, &tenant).unwrap();
        assert_eq!(a, decode(&postgres, &tenant).unwrap());
        assert_eq!((a.last_seq, a.agent_id, a.tenant), (3, None, tenant.clone()));
        let mut bad = postgres;
        bad[1] = SqlValue::from("");
        assert!(decode(&bad, &tenant).unwrap_err().to_string().contains("threads.resource_id"));
        assert_eq!(
            get_sql(Dialect::Postgres, &tenant, ThreadId::new()).text(),
            format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL")
        );
    }

    #[test]
    fn a_created_thread_inserts_every_field_bound() {
        let tenant = TenantId::parse("acme").unwrap();
        let new = NewThread { title: Some(Title::parse("x' --").unwrap()), ..NewThread::default() };
        let thread = created(&tenant, new, memlayer_domain::now());
        let sql = insert_sql(Dialect::Sqlite, &thread);
        assert_eq!(
            sql.text(),
            "INSERT INTO threads (id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        );
        assert_eq!(sql.args()[4], SqlValue::from("x' --"));
        assert_eq!(sql.args()[6], SqlValue::Json(serde_json::json!({})));
        assert_eq!(sql.args()[7], SqlValue::Int(0));
        assert_eq!(sql.args()[8], SqlValue::Timestamp(thread.created_at));
        assert!(insert_sql(Dialect::Postgres, &thread).text().ends_with("($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"));
    }

    #[test]
    fn a_patch_sets_only_what_it_names() {
        let tenant = TenantId::parse("acme").unwrap();
        let resource = Some(ResourceId::parse("user-7").unwrap());
        let patch = ThreadPatch { title: Some(None), resource_id: Some(resource), ..ThreadPatch::default() };
        let sql = update_sql(Dialect::Sqlite, "id", &tenant, ThreadId::new(), patch, memlayer_domain::now());
        assert_eq!(
            sql.text(),
            "UPDATE threads SET updated_at = ?1, title = ?2, resource_id = ?3 WHERE tenant = ?4 AND id = ?5 \
             AND deleted_at IS NULL RETURNING id"
        );
        assert_eq!(sql.args()[1], SqlValue::Null);
        assert_eq!(sql.args()[2], SqlValue::from("user-7"));
    }
}
