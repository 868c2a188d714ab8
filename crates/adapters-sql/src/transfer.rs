//! The `TransferStore` (exports and imports keeping ids), written once for
//! both backends ([`transfer_store!`](crate::transfer_store)).
//!
//! Export reads are keyset pages (threads by id, messages and vectors by
//! seq, resource documents by scope id and version), so an export holds
//! one page at a time whatever the tenant's size. An import of a thread is
//! one write transaction: the thread row as given (`last_seq`, times),
//! its messages by multi-row `INSERT`s of [`MESSAGE_CHUNK`] rows (ids,
//! seqs and times kept, so the engines' own rules apply as for an append:
//! Postgres's insert trigger queues their embedding jobs, libSQL's catch-up
//! queues them and adds their full-text entries), its agent states,
//! summaries and working-memory versions, and the usage charge of the
//! thread and its messages ([`crate::usage::charge`]). An id already taken
//! is compared, never overwritten.

use std::collections::HashMap;

use memlayer_domain::{
    AgentConfig, AgentName, AgentState, Message, ModelConfig, Quota, Reach, ResourceId, Setting, SettingName,
    StateVersion, TenantId, Thread, ThreadId, ToolConfig, WorkingMemory, WorkingScope,
};
use memlayer_ports::{Catalog, Differs, Imported, StoreError, ThreadExtras, ThreadRecords, VectorEntry};
use uuid::Uuid;

use crate::catalog::{
    agent_row, agent_values, check_agent_refs, clear_default, get_on, insert_on, model_row, model_values, name_free,
    tool_row, tool_values, with_tools, work,
};
use crate::exec::{Executor, Row, Transactor};
use crate::messages::{MESSAGE_COLUMNS, decode as decode_message, page_sql, thread_exists_sql};
use crate::summaries::{SUMMARY_COLUMNS, decode_summary};
use crate::table::{AGENTS, MODELS, TOOLS};
use crate::threads::{THREAD_COLUMNS, decode as decode_thread, decode_vector, fork_counts_sql};
use crate::{Cells, Dialect, Sql, SqlValue, corrupt, usage};

/// Messages per `INSERT` of an import (15 parameters each).
pub const MESSAGE_CHUNK: usize = 64;

fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid(memlayer_domain::DomainError::new(field, message))
}

/// `NotFound` unless `thread` is the tenant's and live.
async fn ensure_thread(ex: &dyn Executor, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
    match ex.fetch_one("check thread", thread_exists_sql(ex.dialect(), tenant, thread)).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found("thread", thread)),
    }
}

/// `TransferStore::export_threads`.
///
/// # Errors
/// A failed read.
pub async fn export_threads<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    resource: Option<ResourceId>,
    after: Option<ThreadId>,
    limit: u32,
) -> Result<Vec<Thread>, StoreError> {
    let tenant = who.tenant().clone();
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ")).bind(tenant.as_str());
    sql.push(" AND deleted_at IS NULL");
    if let Some(r) = &resource {
        sql.push(" AND resource_id = ").bind(r.as_str());
    }
    if let Some(after) = after {
        sql.push(" AND id > ").bind(after.as_uuid());
    }
    sql.push(" ORDER BY id LIMIT ").bind(i64::from(limit));
    let rows = db.read(who, work(move |ex| Box::pin(async move { ex.fetch("export threads", sql).await }))).await?;
    rows.iter().map(|r| decode_thread(r, &tenant)).collect()
}

/// `TransferStore::export_messages`.
///
/// # Errors
/// `NotFound` for a missing thread; a failed read.
pub async fn export_messages<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let tenant = who.tenant().clone();
    let sql = page_sql(db.dialect(), &tenant, thread, memlayer_domain::Direction::Forward, after_seq, i64::from(limit));
    db.read(
        who,
        work(move |ex| {
            Box::pin(async move {
                let rows = ex.fetch("export messages", sql).await?;
                if rows.is_empty() {
                    ensure_thread(ex, &tenant, thread).await?;
                }
                rows.into_iter().map(decode_message).collect()
            })
        }),
    )
    .await
}

/// `TransferStore::export_vectors`: the vectors of the messages with a seq
/// in `after_seq + 1 ..= after_seq + span`.
///
/// # Errors
/// `NotFound` for a missing thread; a failed read.
pub async fn export_vectors<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
    after_seq: i64,
    span: u32,
) -> Result<Vec<(i64, VectorEntry)>, StoreError> {
    let tenant = who.tenant().clone();
    let dialect = db.dialect();
    let mut sql = Sql::new(dialect);
    match dialect {
        Dialect::Sqlite => {
            sql.push("SELECT n.id, v.model, v.dim, v.vector, n.seq FROM messages n ")
                .push("JOIN message_vectors v ON v.message_rowid = n.rowid WHERE n.thread_id = ")
                .bind(thread.as_uuid());
        }
        Dialect::Postgres => {
            sql.push("SELECT v.message_id, v.model, v.dim, vector_send(v.embedding), n.seq FROM message_vectors v ")
                .push("JOIN messages n ON n.id = v.message_id WHERE v.tenant = ")
                .bind(tenant.as_str())
                .push(" AND v.thread_id = ")
                .bind(thread.as_uuid())
                .push(" AND n.thread_id = ")
                .bind(thread.as_uuid());
        }
    }
    sql.push(" AND n.seq > ").bind(after_seq).push(" AND n.seq <= ").bind(after_seq.saturating_add(i64::from(span)));
    sql.push(" ORDER BY n.seq, v.model");
    db.read(
        who,
        work(move |ex| {
            Box::pin(async move {
                ensure_thread(ex, &tenant, thread).await?;
                let rows = ex.fetch("export vectors", sql).await?;
                rows.iter()
                    .map(|row| {
                        let seq = Cells::new(row, "messages").int(4, "seq")?;
                        Ok((seq, decode_vector(dialect, row, &tenant, thread)?))
                    })
                    .collect()
            })
        }),
    )
    .await
}

fn working_versions_sql(dialect: Dialect, tenant: &TenantId, kind: &'static str, id: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT format, content, version, updated_at FROM working_memory_versions WHERE tenant = ")
        .bind(tenant.as_str())
        .push(" AND scope_kind = ")
        .bind(kind)
        .push(" AND scope_id = ")
        .bind(id)
        .push(" ORDER BY version");
    sql
}

/// `TransferStore::export_thread_extras`.
///
/// # Errors
/// `NotFound` for a missing thread; a failed read.
pub async fn export_thread_extras<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    thread: ThreadId,
) -> Result<ThreadExtras, StoreError> {
    let tenant = who.tenant().clone();
    db.read(
        who,
        work(move |ex| {
            Box::pin(async move {
                ensure_thread(ex, &tenant, thread).await?;
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                sql.push("SELECT agent_id, state, version, updated_at FROM agent_state WHERE thread_id = ")
                    .bind(thread.as_uuid())
                    .push(&format!(" ORDER BY {}", d.bytewise("agent_id")));
                let states = ex
                    .fetch("export agent states", sql)
                    .await?
                    .iter()
                    .map(|row| {
                        let c = Cells::new(row, "agent_state");
                        Ok(AgentState {
                            thread_id: thread,
                            agent_id: c.parse(0, "agent_id", AgentName::parse)?,
                            state: c.json(1, "state")?,
                            version: StateVersion::try_from(c.int(2, "version")?)
                                .map_err(|e| corrupt("agent_state", "version", e))?,
                            updated_at: c.timestamp(3, "updated_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let mut sql = Sql::new(d);
                sql.push(&format!("SELECT {SUMMARY_COLUMNS} FROM thread_summaries WHERE thread_id = "))
                    .bind(thread.as_uuid())
                    .push(" ORDER BY version");
                let summaries = ex
                    .fetch("export summaries", sql)
                    .await?
                    .iter()
                    .map(|row| decode_summary(thread, row))
                    .collect::<Result<Vec<_>, _>>()?;
                let scope = WorkingScope::Thread(thread);
                let sql = working_versions_sql(d, &tenant, "thread", &thread.to_string());
                let working = ex
                    .fetch("export working memory", sql)
                    .await?
                    .iter()
                    .filter_map(|row| crate::working::decode(row, &scope).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ThreadExtras { states, summaries, working })
            })
        }),
    )
    .await
}

/// `TransferStore::export_resource_working`.
///
/// # Errors
/// A failed read.
pub async fn export_resource_working<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    resource: Option<ResourceId>,
    after: Option<(ResourceId, u64)>,
    limit: u32,
) -> Result<Vec<WorkingMemory>, StoreError> {
    let d = db.dialect();
    let id = d.bytewise("scope_id");
    let mut sql = Sql::new(d);
    sql.push("SELECT scope_id, format, content, version, updated_at FROM working_memory_versions WHERE tenant = ")
        .bind(who.tenant().as_str())
        .push(" AND scope_kind = 'resource'");
    if let Some(r) = &resource {
        sql.push(" AND scope_id = ").bind(r.as_str());
    }
    if let Some((r, v)) = &after {
        let r = sql.arg(r.as_str());
        sql.push(&format!(" AND ({id} > {r} OR ({id} = {r} AND version > "));
        sql.bind(i64::try_from(*v).unwrap_or(i64::MAX)).push("))");
    }
    sql.push(&format!(" ORDER BY {id}, version LIMIT ")).bind(i64::from(limit));
    let rows =
        db.read(who, work(move |ex| Box::pin(async move { ex.fetch("export working memory", sql).await }))).await?;
    rows.iter()
        .filter_map(|row| {
            let scope = match Cells::new(row, "working_memory_versions").parse(0, "scope_id", ResourceId::parse) {
                Ok(r) => WorkingScope::Resource(r),
                Err(e) => return Some(Err(e)),
            };
            crate::working::decode(&row[1..], &scope).transpose()
        })
        .collect()
}

/// `TransferStore::export_catalog`.
///
/// # Errors
/// A failed read.
pub async fn export_catalog<D: Transactor>(db: &D, tenant: &TenantId) -> Result<Catalog, StoreError> {
    let t = tenant.clone();
    db.read(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let select = |table: &crate::table::Table| {
                    let mut sql = Sql::new(d);
                    table.select(&mut sql, t.as_str());
                    sql.push(" ORDER BY id");
                    sql
                };
                let rows = ex.fetch("export models", select(&MODELS)).await?;
                let models = rows.iter().map(|r| model_row(r, &t)).collect::<Result<Vec<_>, _>>()?;
                let rows = ex.fetch("export tools", select(&TOOLS)).await?;
                let tools = rows.iter().map(|r| tool_row(r, &t)).collect::<Result<Vec<_>, _>>()?;
                let rows = ex.fetch("export agents", select(&AGENTS)).await?;
                let agents = rows.iter().map(|r| agent_row(r, &t)).collect::<Result<Vec<_>, _>>()?;
                let agents = with_tools(ex, agents).await?;
                let mut sql = Sql::new(d);
                sql.push("SELECT category, key, value, updated_at FROM config_settings WHERE tenant = ")
                    .bind(t.as_str())
                    .push(&format!(" ORDER BY {}, {}", d.bytewise("category"), d.bytewise("key")));
                let settings = ex
                    .fetch("export settings", sql)
                    .await?
                    .iter()
                    .map(|row| {
                        let c = Cells::new(row, "config_settings");
                        Ok(Setting {
                            tenant: t.clone(),
                            category: c.parse(0, "category", SettingName::category)?,
                            key: c.parse(1, "key", SettingName::key)?,
                            value: c.json(2, "value")?,
                            updated_at: c.timestamp(3, "updated_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Catalog { models, tools, agents, settings })
            })
        }),
    )
    .await
}

/// Checks that an import's records hang together, before any transaction.
///
/// # Errors
/// `Invalid` naming the first field that does not.
pub fn check_records(tenant: &TenantId, r: &ThreadRecords) -> Result<(), StoreError> {
    let t = &r.thread;
    if &t.tenant != tenant {
        return Err(invalid("tenant", format!("the thread belongs to tenant `{}`", t.tenant.as_str())));
    }
    if t.last_seq < 0 {
        return Err(invalid("last_seq", "must not be negative"));
    }
    let mut prev = 0;
    for m in &r.messages {
        if m.thread_id != t.id {
            return Err(invalid("thread_id", format!("message {} belongs to thread {}", m.id, m.thread_id)));
        }
        if m.seq <= prev || m.seq > t.last_seq {
            return Err(invalid(
                "seq",
                format!("message {} has seq {}: seqs must increase and stay within 1..={}", m.id, m.seq, t.last_seq),
            ));
        }
        prev = m.seq;
    }
    let mut agents = std::collections::HashSet::new();
    for s in &r.states {
        if s.thread_id != t.id {
            return Err(invalid("thread_id", format!("an agent state belongs to thread {}", s.thread_id)));
        }
        if s.version == 0 || !agents.insert(s.agent_id.as_str()) {
            return Err(invalid("version", format!("agent `{}`: one state per agent, version >= 1", s.agent_id)));
        }
        AgentState::validate(&s.state)?;
    }
    let mut version = 0;
    let mut covers = 0;
    for s in &r.summaries {
        if s.thread_id != t.id {
            return Err(invalid("thread_id", format!("a summary belongs to thread {}", s.thread_id)));
        }
        if s.version <= version || s.covers_through < covers || s.covers_through > t.last_seq {
            return Err(invalid(
                "version",
                format!("summary version {} must follow {version} and cover at most seq {}", s.version, t.last_seq),
            ));
        }
        (version, covers) = (s.version, s.covers_through);
    }
    let mut version = 0;
    for w in &r.working {
        if w.scope != WorkingScope::Thread(t.id) {
            return Err(invalid(
                "scope",
                format!("a working-memory document of {} in thread {}", w.scope.id_text(), t.id),
            ));
        }
        if w.version <= version {
            return Err(invalid(
                "version",
                format!("working-memory versions must increase ({} after {version})", w.version),
            ));
        }
        w.content.validate()?;
        version = w.version;
    }
    Ok(())
}

/// The first field of a stored thread that differs from an imported one
/// (`last_seq` and `updated_at` move with later appends and are not
/// compared).
fn thread_differs(stored: &Thread, given: &Thread) -> Option<&'static str> {
    if stored.resource_id != given.resource_id {
        Some("resource_id")
    } else if stored.agent_id != given.agent_id {
        Some("agent_id")
    } else if stored.title != given.title {
        Some("title")
    } else if stored.model != given.model {
        Some("model")
    } else if stored.metadata != given.metadata {
        Some("metadata")
    } else if stored.created_at != given.created_at {
        Some("created_at")
    } else {
        None
    }
}

fn message_differs(stored: &Message, given: &Message) -> Option<&'static str> {
    if stored.thread_id != given.thread_id {
        Some("thread_id")
    } else if stored.seq != given.seq {
        Some("seq")
    } else if stored.role != given.role {
        Some("role")
    } else if stored.content != given.content {
        Some("content")
    } else if stored.tool_call_id != given.tool_call_id {
        Some("tool_call_id")
    } else if stored.tool_name != given.tool_name {
        Some("tool_name")
    } else if stored.tool_calls != given.tool_calls {
        Some("tool_calls")
    } else if stored.metadata != given.metadata {
        Some("metadata")
    } else if stored.token_count != given.token_count {
        Some("token_count")
    } else if stored.created_at != given.created_at {
        Some("created_at")
    } else {
        None
    }
}

fn insert_thread_sql(dialect: Dialect, t: &Thread) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "INSERT INTO threads (id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, \
         updated_at) VALUES (",
    )
    .bind(t.id.as_uuid())
    .push(", ")
    .bind(t.tenant.as_str())
    .push(", ")
    .bind(t.resource_id.as_ref().map(ResourceId::as_str))
    .push(", ")
    .bind(t.agent_id.as_ref().map(AgentName::as_str))
    .push(", ")
    .bind(t.title.as_ref().map(memlayer_domain::Title::as_str))
    .push(", ")
    .bind(t.model.as_deref())
    .push(", ")
    .bind(SqlValue::Json(serde_json::Value::Object(t.metadata.as_map().clone())))
    .push(", ")
    .bind(t.last_seq)
    .push(", ")
    .bind(t.created_at)
    .push(", ")
    .bind(t.updated_at)
    .push(")");
    sql
}

fn insert_messages_sql(dialect: Dialect, tenant: &TenantId, messages: &[Message]) -> Result<Sql, StoreError> {
    let with_tenant = dialect.tenant_on_every_table();
    let mut sql = Sql::new(dialect).dynamic();
    sql.push(&format!(
        "INSERT INTO messages (id, {}thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, metadata, \
         token_count, token_model, token_encoding, token_exact, stored_bytes, created_at) VALUES ",
        if with_tenant { "tenant, " } else { "" }
    ));
    for (i, m) in messages.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.bind(m.id.as_uuid()).push(", ");
        if with_tenant {
            sql.bind(tenant.as_str()).push(", ");
        }
        let calls = if m.tool_calls.is_empty() {
            SqlValue::Null
        } else {
            SqlValue::Json(serde_json::to_value(&m.tool_calls).map_err(StoreError::backend)?)
        };
        let t = m.token_count.as_ref();
        sql.bind(m.thread_id.as_uuid())
            .push(", ")
            .bind(m.seq)
            .push(", ")
            .bind(m.role.as_str())
            .push(", ")
            .bind(m.content.as_str())
            .push(", ")
            .bind(m.tool_call_id.as_deref())
            .push(", ")
            .bind(m.tool_name.as_deref())
            .push(", ")
            .bind(calls)
            .push(", ")
            .bind(SqlValue::Json(serde_json::Value::Object(m.metadata.as_map().clone())))
            .push(", ")
            .bind(t.map(|t| i64::from(t.count)))
            .push(", ")
            .bind(t.map(|t| t.model.as_str()))
            .push(", ")
            .bind(t.map(|t| t.encoding.as_str()))
            .push(", ")
            .bind(t.map(|t| t.exact))
            .push(", ")
            .bind(usage::stored_bytes(m))
            .push(", ")
            .bind(m.created_at)
            .push(")");
    }
    Ok(sql)
}

fn insert_working_sql(
    dialect: Dialect,
    table: &str,
    tenant: &TenantId,
    w: &WorkingMemory,
    at_seq: Option<i64>,
) -> Result<Sql, StoreError> {
    let thread = match &w.scope {
        WorkingScope::Thread(t) => Some(t.as_uuid()),
        WorkingScope::Resource(_) => None,
    };
    let version = i64::try_from(w.version).map_err(|e| invalid("version", e.to_string()))?;
    let mut sql = Sql::new(dialect);
    let versions = table == "working_memory_versions";
    let seq_column = if versions { ", at_seq" } else { "" };
    sql.push(&format!(
        "INSERT INTO {table} (tenant, scope_kind, scope_id, version, thread_id, format, content, updated_at\
         {seq_column}) VALUES ("
    ))
    .bind(tenant.as_str())
    .push(", ")
    .bind(w.scope.kind().as_str())
    .push(", ")
    .bind(w.scope.id_text())
    .push(", ")
    .bind(version)
    .push(", ")
    .bind(SqlValue::from(thread))
    .push(", ")
    .bind(w.content.format().as_str())
    .push(", ")
    .bind(crate::working::stored_text(&w.content)?)
    .push(", ")
    .bind(w.updated_at);
    if versions {
        sql.push(", ").bind(at_seq);
    }
    sql.push(")");
    Ok(sql)
}

/// Stores a checked import of a thread that does not exist yet, in the
/// caller's transaction.
async fn insert_records(ex: &dyn Executor, tenant: &TenantId, r: &ThreadRecords) -> Result<(), StoreError> {
    let d = ex.dialect();
    let id = r.thread.id;
    ex.execute("import thread", insert_thread_sql(d, &r.thread)).await?;
    for chunk in r.messages.chunks(MESSAGE_CHUNK) {
        ex.execute("import messages", insert_messages_sql(d, tenant, chunk)?).await?;
    }
    let with_tenant = d.tenant_on_every_table();
    let tenant_column = if with_tenant { "tenant, " } else { "" };
    for s in &r.states {
        let mut sql = Sql::new(d);
        sql.push(&format!(
            "INSERT INTO agent_state ({tenant_column}thread_id, agent_id, state, version, updated_at) VALUES ("
        ));
        if with_tenant {
            sql.bind(tenant.as_str()).push(", ");
        }
        sql.bind(id.as_uuid()).push(", ").bind(s.agent_id.as_str()).push(", ").bind(SqlValue::Json(s.state.clone()));
        let version = i64::try_from(s.version).map_err(|e| invalid("version", e.to_string()))?;
        sql.push(", ").bind(version).push(", ").bind(s.updated_at).push(")");
        ex.execute("import agent state", sql).await?;
        // The file holds no history: the imported state is dated by the
        // thread's last seq, as migration 25 dated the states it found.
        let sql = crate::state::history_sql(d, tenant, id, &s.agent_id, s.state.clone(), version, s.updated_at);
        ex.execute("import agent state", sql).await?;
    }
    for s in &r.summaries {
        let mut sql = Sql::new(d);
        sql.push(&format!(
            "INSERT INTO thread_summaries ({tenant_column}thread_id, version, text, covers_through, \
             covered_messages, summarizer, created_at) VALUES ("
        ));
        if with_tenant {
            sql.bind(tenant.as_str()).push(", ");
        }
        let version = i64::try_from(s.version).map_err(|e| invalid("version", e.to_string()))?;
        let covered = i64::try_from(s.covered_messages).map_err(|e| invalid("covered_messages", e.to_string()))?;
        sql.bind(id.as_uuid()).push(", ").bind(version).push(", ").bind(s.text.as_str());
        sql.push(", ").bind(s.covers_through).push(", ").bind(covered).push(", ").bind(s.summarizer.as_str());
        sql.push(", ").bind(s.created_at).push(")");
        ex.execute("import summary", sql).await?;
    }
    // Versions dated by the thread's last seq, as migration 25 dated those
    // it found (the file holds no seq for them).
    let at_seq = Some(r.thread.last_seq);
    for w in &r.working {
        let sql = insert_working_sql(d, "working_memory_versions", tenant, w, at_seq)?;
        ex.execute("import working memory", sql).await?;
    }
    if let Some(current) = r.working.last() {
        ex.execute("import working memory", insert_working_sql(d, "working_memory", tenant, current, None)?).await?;
    }
    Ok(())
}

/// Compares an import with the stored thread `stored` and its messages.
async fn compare_records(ex: &dyn Executor, stored: &Thread, r: &ThreadRecords) -> Result<Imported, StoreError> {
    if let Some(field) = thread_differs(stored, &r.thread) {
        return Ok(Imported::Differs(Differs::Thread { field }));
    }
    for chunk in r.messages.chunks(1_000) {
        let (first, last) = (chunk[0].seq, chunk[chunk.len() - 1].seq);
        let mut sql = Sql::new(ex.dialect());
        sql.push(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = "))
            .bind(stored.id.as_uuid())
            .push(" AND seq >= ")
            .bind(first)
            .push(" AND seq <= ")
            .bind(last);
        let found: HashMap<_, _> = ex
            .fetch("compare messages", sql)
            .await?
            .into_iter()
            .map(|row| decode_message(row).map(|m| (m.id, m)))
            .collect::<Result<_, _>>()?;
        for m in chunk {
            match found.get(&m.id) {
                None => return Ok(Imported::Differs(Differs::Message { id: m.id, field: "missing" })),
                Some(s) => {
                    if let Some(field) = message_differs(s, m) {
                        return Ok(Imported::Differs(Differs::Message { id: m.id, field }));
                    }
                }
            }
        }
    }
    Ok(Imported::Unchanged)
}

/// `TransferStore::import_thread`.
///
/// # Errors
/// `Invalid` from [`check_records`], `Conflict` for a taken id,
/// `QuotaExceeded`, a failed write (then nothing is stored).
pub async fn import_thread<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    records: ThreadRecords,
    quota: &Quota,
) -> Result<Imported, StoreError> {
    let tenant = who.tenant().clone();
    check_records(&tenant, &records)?;
    let mode = if quota.is_limited() { usage::Mode::Exclusive } else { usage::Mode::Shared };
    let quota = *quota;
    db.write(
        who,
        work(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let id = records.thread.id;
                let mut sql = Sql::new(d);
                sql.push(&format!(
                    "SELECT {THREAD_COLUMNS}, tenant, CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END \
                     FROM threads WHERE id = "
                ))
                .bind(id.as_uuid());
                if let Some(row) = ex.fetch_one("read imported thread", sql).await? {
                    let c = Cells::new(&row, "threads");
                    if c.text(9, "tenant")? != tenant.as_str() {
                        return Err(StoreError::Conflict(format!("thread id {id} is taken")));
                    }
                    if c.int(10, "deleted_at")? != 0 {
                        return Err(StoreError::Conflict(format!(
                            "thread id {id} is taken by a deleted thread not yet swept"
                        )));
                    }
                    let stored = decode_thread(&row, &tenant)?;
                    return compare_records(ex, &stored, &records).await;
                }
                insert_records(ex, &tenant, &records).await?;
                let held = ex.fetch_one("count import", fork_counts_sql(d, &tenant, id)).await?;
                let held = held.ok_or_else(|| StoreError::backend("the imported thread's row vanished"))?;
                let c = Cells::new(&held, "threads");
                let delta = usage::Delta {
                    threads: 1,
                    messages: c.int(0, "stored_messages")?,
                    bytes: c.int(1, "stored_bytes")?,
                };
                let charge = usage::charge(ex, &tenant, id, delta, &quota, mode).await?;
                if charge != usage::Charge::Settled {
                    return Err(StoreError::backend("an exclusive quota charge did not settle"));
                }
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

/// `TransferStore::import_resource_working`.
///
/// # Errors
/// `Invalid` for no version, a thread scope or versions out of order; a
/// failed write.
pub async fn import_resource_working<D: Transactor>(
    db: &D,
    who: &dyn Reach,
    versions: Vec<WorkingMemory>,
) -> Result<Imported, StoreError> {
    let Some(current) = versions.last().cloned() else {
        return Err(invalid("version", "no version to import"));
    };
    let WorkingScope::Resource(resource) = &current.scope else {
        return Err(invalid("scope", "a thread's working memory is imported with its thread"));
    };
    let mut prev = 0;
    for w in &versions {
        if w.scope != current.scope || w.version <= prev {
            return Err(invalid("version", "one resource's versions, increasing"));
        }
        w.content.validate()?;
        prev = w.version;
    }
    let tenant = who.tenant().clone();
    let resource = resource.clone();
    db.write_serial(
        who,
        work(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                sql.push("SELECT format, content, version, updated_at FROM working_memory WHERE tenant = ")
                    .bind(tenant.as_str())
                    .push(" AND scope_kind = 'resource' AND scope_id = ")
                    .bind(resource.as_str());
                if let Some(row) = ex.fetch_one("read working memory", sql).await? {
                    let Some(stored) = crate::working::decode(&row, &current.scope)? else {
                        return Err(corrupt("working_memory", "version", "NULL"));
                    };
                    return Ok(if stored.version != current.version {
                        Imported::Differs(Differs::Record { field: "version" })
                    } else if stored.content != current.content {
                        Imported::Differs(Differs::Record { field: "content" })
                    } else {
                        Imported::Unchanged
                    });
                }
                for w in &versions {
                    let sql = insert_working_sql(d, "working_memory_versions", &tenant, w, None)?;
                    ex.execute("import working memory", sql).await?;
                }
                let sql = insert_working_sql(d, "working_memory", &tenant, &current, None)?;
                ex.execute("import working memory", sql).await?;
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

fn check_tenant(tenant: &TenantId, of: &TenantId) -> Result<(), StoreError> {
    if tenant == of {
        Ok(())
    } else {
        Err(invalid("tenant", format!("the record belongs to tenant `{}`", of.as_str())))
    }
}

/// The stored row `id`, when there is one.
async fn stored<T>(
    ex: &dyn Executor,
    table: &crate::table::Table,
    tenant: &TenantId,
    id: Uuid,
    decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    match get_on(ex, table, tenant, id, decode).await {
        Ok(found) => Ok(Some(found)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `TransferStore::import_model`.
///
/// # Errors
/// `Invalid` for another tenant's or an invalid model, `Conflict` for a
/// taken name; a failed write.
pub async fn import_model<D: Transactor>(db: &D, tenant: &TenantId, m: ModelConfig) -> Result<Imported, StoreError> {
    check_tenant(tenant, &m.tenant)?;
    m.spec.validate()?;
    db.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let t = &m.tenant;
                if let Some(s) = stored(ex, &MODELS, t, m.id.as_uuid(), model_row).await? {
                    return Ok(same(&s.spec, &m.spec));
                }
                name_free(ex, &MODELS, t, &m.spec.name, None).await?;
                if m.spec.is_default {
                    clear_default(ex, t, m.id, m.updated_at).await?;
                }
                insert_on(ex, &MODELS, t, model_values(&m)).await?;
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

fn same<T: PartialEq>(stored: &T, given: &T) -> Imported {
    if stored == given { Imported::Unchanged } else { Imported::Differs(Differs::Record { field: "spec" }) }
}

/// `TransferStore::import_tool`.
///
/// # Errors
/// As [`import_model`].
pub async fn import_tool<D: Transactor>(db: &D, tenant: &TenantId, tool: ToolConfig) -> Result<Imported, StoreError> {
    check_tenant(tenant, &tool.tenant)?;
    tool.spec.validate()?;
    db.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let t = &tool.tenant;
                if let Some(s) = stored(ex, &TOOLS, t, tool.id.as_uuid(), tool_row).await? {
                    return Ok(same(&s.spec, &tool.spec));
                }
                name_free(ex, &TOOLS, t, &tool.spec.name, None).await?;
                insert_on(ex, &TOOLS, t, tool_values(&tool)).await?;
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

/// `TransferStore::import_agent`.
///
/// # Errors
/// As [`import_model`], and `Invalid` for a missing model or tool.
pub async fn import_agent<D: Transactor>(db: &D, tenant: &TenantId, a: AgentConfig) -> Result<Imported, StoreError> {
    check_tenant(tenant, &a.tenant)?;
    a.spec.validate()?;
    db.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let t = &a.tenant;
                if let Some(s) = stored(ex, &AGENTS, t, a.id.as_uuid(), agent_row).await? {
                    let s = with_tools(ex, vec![s]).await?.remove(0);
                    return Ok(same(&s.spec, &a.spec));
                }
                check_agent_refs(ex, t, &a.spec).await?;
                name_free(ex, &AGENTS, t, a.spec.name.as_str(), None).await?;
                insert_on(ex, &AGENTS, t, agent_values(&a)).await?;
                crate::catalog::write_agent_tools(ex, t, a.id, &a.spec.tool_ids).await?;
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

/// `TransferStore::import_setting`.
///
/// # Errors
/// As [`import_model`].
pub async fn import_setting<D: Transactor>(db: &D, tenant: &TenantId, s: Setting) -> Result<Imported, StoreError> {
    check_tenant(tenant, &s.tenant)?;
    memlayer_domain::validate_setting_value(&s.value)?;
    db.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                sql.push("SELECT value FROM config_settings WHERE tenant = ")
                    .bind(s.tenant.as_str())
                    .push(" AND category = ")
                    .bind(s.category.as_str())
                    .push(" AND key = ")
                    .bind(s.key.as_str());
                if let Some(row) = ex.fetch_one("read setting", sql).await? {
                    let value = Cells::new(&row, "config_settings").json::<serde_json::Value>(0, "value")?;
                    return Ok(if value == s.value {
                        Imported::Unchanged
                    } else {
                        Imported::Differs(Differs::Record { field: "value" })
                    });
                }
                let mut sql = Sql::new(d);
                sql.push("INSERT INTO config_settings (tenant, category, key, value, updated_at) VALUES (")
                    .bind(s.tenant.as_str())
                    .push(", ")
                    .bind(s.category.as_str())
                    .push(", ")
                    .bind(s.key.as_str())
                    .push(", ")
                    .bind(SqlValue::Json(s.value.clone()))
                    .push(", ")
                    .bind(s.updated_at)
                    .push(")");
                ex.execute("import setting", sql).await?;
                Ok(Imported::Created)
            })
        }),
    )
    .await
}

/// Implements `memlayer_ports::TransferStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! transfer_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::TransferStore for $backend {
            async fn export_threads(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                resource: Option<::memlayer_domain::ResourceId>,
                after: Option<::memlayer_domain::ThreadId>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::Thread>, ::memlayer_ports::StoreError> {
                $crate::transfer::export_threads(self, who, resource, after, limit).await
            }

            async fn export_messages(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::Message>, ::memlayer_ports::StoreError> {
                $crate::transfer::export_messages(self, who, thread, after_seq, limit).await
            }

            async fn export_vectors(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                after_seq: i64,
                span: u32,
            ) -> Result<Vec<(i64, ::memlayer_ports::VectorEntry)>, ::memlayer_ports::StoreError> {
                $crate::transfer::export_vectors(self, who, thread, after_seq, span).await
            }

            async fn export_thread_extras(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
            ) -> Result<::memlayer_ports::ThreadExtras, ::memlayer_ports::StoreError> {
                $crate::transfer::export_thread_extras(self, who, thread).await
            }

            async fn export_resource_working(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                resource: Option<::memlayer_domain::ResourceId>,
                after: Option<(::memlayer_domain::ResourceId, u64)>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::WorkingMemory>, ::memlayer_ports::StoreError> {
                $crate::transfer::export_resource_working(self, who, resource, after, limit).await
            }

            async fn export_catalog(
                &self,
                tenant: &::memlayer_domain::TenantId,
            ) -> Result<::memlayer_ports::Catalog, ::memlayer_ports::StoreError> {
                $crate::transfer::export_catalog(self, tenant).await
            }

            async fn import_thread(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                records: ::memlayer_ports::ThreadRecords,
                quota: &::memlayer_domain::Quota,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_thread(self, who, records, quota).await
            }

            async fn import_resource_working(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                versions: Vec<::memlayer_domain::WorkingMemory>,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_resource_working(self, who, versions).await
            }

            async fn import_model(
                &self,
                tenant: &::memlayer_domain::TenantId,
                model: ::memlayer_domain::ModelConfig,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_model(self, tenant, model).await
            }

            async fn import_tool(
                &self,
                tenant: &::memlayer_domain::TenantId,
                tool: ::memlayer_domain::ToolConfig,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_tool(self, tenant, tool).await
            }

            async fn import_agent(
                &self,
                tenant: &::memlayer_domain::TenantId,
                agent: ::memlayer_domain::AgentConfig,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_agent(self, tenant, agent).await
            }

            async fn import_setting(
                &self,
                tenant: &::memlayer_domain::TenantId,
                setting: ::memlayer_domain::Setting,
            ) -> Result<::memlayer_ports::Imported, ::memlayer_ports::StoreError> {
                $crate::transfer::import_setting(self, tenant, setting).await
            }
        }
    };
}
