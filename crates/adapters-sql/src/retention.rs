//! The whole `RetentionStore` (migration 17), written once for both
//! engines: policies (`retention_policies`), the bounded steps that apply
//! one rule or erase a resource, receipts (`retention_runs`) and the
//! scheduler's lease (`retention_leases`).
//!
//! A step is ONE write transaction of at most `limit` threads or messages:
//! - thread rules and erasure *mark* threads deleted, exactly as
//!   `ThreadStore::delete` does (the sweeper removes their rows, the
//!   thread's counts are released from the tenant's usage at the mark);
//! - message rules delete messages as `MessageStore::delete` does (the
//!   engine's triggers or cascades remove vectors, jobs, full-text entries
//!   and `message_tokens`), take them off their thread's and tenant's
//!   counts, and delete the summary versions that now cover only deleted
//!   messages;
//! - both delete the `Idempotency-Key` records whose recorded response
//!   holds a deleted thread's id (message rules: only those recorded no
//!   later than the newest message deleted from the thread).
//!
//! Candidates are selected by one statement per rule, with the policy's
//! scope (tenant, agent, resource, live, not pinned) bound: a thread is
//! pinned when its metadata holds `"pinned": true`.

use std::collections::BTreeMap;

use memlayer_domain::{
    AgentName, DomainError, IdRange, MAX_POLICIES, MessageId, NewRetentionPolicy, PolicyId, ResourceId,
    RetentionPolicy, RetentionRule, RetentionRules, RetentionRun, RunCounts, RunId, RunKind, TenantId, ThreadId,
    Timestamp, now,
};
use memlayer_ports::{PruneStep, StoreError};

use crate::{Cells, Dialect, Executor, Sql, SqlValue, Transactor, corrupt, usage};

const POLICY_COLUMNS: &str = "id, tenant, agent_id, resource_id, max_thread_age_secs, max_message_age_secs, \
                              max_messages_per_thread, only_summarized, max_threads_per_resource, created_at, updated_at";
const RUN_COLUMNS: &str = "id, tenant, kind, policy_id, resource_id, dry_run, started_at, finished_at, receipt";

fn decode_policy(row: &[SqlValue]) -> Result<RetentionPolicy, StoreError> {
    let c = Cells::new(row, "retention_policies");
    let tenant = TenantId::parse(c.text(1, "tenant")?).map_err(|e| corrupt("retention_policies", "tenant", e))?;
    Ok(RetentionPolicy {
        id: PolicyId::from_uuid(c.uuid(0, "id")?),
        tenant,
        agent_id: c
            .opt_text(2, "agent_id")?
            .map(AgentName::parse)
            .transpose()
            .map_err(|e| corrupt("retention_policies", "agent_id", e))?,
        resource_id: c
            .opt_text(3, "resource_id")?
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| corrupt("retention_policies", "resource_id", e))?,
        rules: RetentionRules {
            max_thread_age_secs: c.opt_int(4, "max_thread_age_secs")?,
            max_message_age_secs: c.opt_int(5, "max_message_age_secs")?,
            max_messages_per_thread: c.opt_int(6, "max_messages_per_thread")?,
            only_summarized: c.bool(7, "only_summarized")?,
            max_threads_per_resource: c.opt_int(8, "max_threads_per_resource")?,
        },
        created_at: c.timestamp(9, "created_at")?,
        updated_at: c.timestamp(10, "updated_at")?,
    })
}

/// A receipt's stored JSON (versioned).
#[derive(serde::Serialize, serde::Deserialize)]
struct Receipt {
    v: u32,
    counts: RunCounts,
    thread_ids: Option<IdRange>,
    message_ids: Option<IdRange>,
}

fn decode_run(row: &[SqlValue]) -> Result<RetentionRun, StoreError> {
    let c = Cells::new(row, "retention_runs");
    let receipt: Receipt = c.json(8, "receipt")?;
    Ok(RetentionRun {
        id: RunId::from_uuid(c.uuid(0, "id")?),
        tenant: TenantId::parse(c.text(1, "tenant")?).map_err(|e| corrupt("retention_runs", "tenant", e))?,
        kind: RunKind::parse(&c.text(2, "kind")?).map_err(|e| corrupt("retention_runs", "kind", e))?,
        policy_id: match row.get(3) {
            None | Some(SqlValue::Null) => None,
            Some(_) => Some(PolicyId::from_uuid(c.uuid(3, "policy_id")?)),
        },
        resource_id: c
            .opt_text(4, "resource_id")?
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| corrupt("retention_runs", "resource_id", e))?,
        dry_run: c.bool(5, "dry_run")?,
        started_at: c.timestamp(6, "started_at")?,
        finished_at: match row.get(7) {
            None | Some(SqlValue::Null) => None,
            Some(_) => Some(c.timestamp(7, "finished_at")?),
        },
        counts: receipt.counts,
        thread_ids: receipt.thread_ids,
        message_ids: receipt.message_ids,
    })
}

fn policy_values(sql: &mut Sql, new: &NewRetentionPolicy) {
    let r = &new.rules;
    sql.bind(new.agent_id.as_ref().map(AgentName::as_str)).push(", ");
    sql.bind(new.resource_id.as_ref().map(ResourceId::as_str)).push(", ");
    sql.bind(r.max_thread_age_secs).push(", ").bind(r.max_message_age_secs).push(", ");
    sql.bind(r.max_messages_per_thread).push(", ").bind(r.only_summarized).push(", ");
    sql.bind(r.max_threads_per_resource);
}

/// `RetentionStore::create_policy`: the count check and the insert in one
/// serial write.
///
/// # Errors
/// `Invalid` on a rule or past [`MAX_POLICIES`]; a failed write.
pub async fn create_policy<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    new: NewRetentionPolicy,
) -> Result<RetentionPolicy, StoreError> {
    new.validate()?;
    let at = now();
    let id = PolicyId::new();
    let mut count = Sql::new(db.dialect());
    count.push("SELECT count(*) FROM retention_policies WHERE tenant = ").bind(tenant.as_str());
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("INSERT INTO retention_policies ({POLICY_COLUMNS}) VALUES ("));
    sql.bind(id.as_uuid()).push(", ").bind(tenant.as_str()).push(", ");
    policy_values(&mut sql, &new);
    let t = sql.arg(at);
    sql.push(&format!(", {t}, {t}) RETURNING {POLICY_COLUMNS}"));
    let row = db
        .write_serial(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    let n = ex.fetch_one("count policies", count).await?;
                    let n = n.map(|r| Cells::new(&r, "retention_policies").int(0, "count")).transpose()?.unwrap_or(0);
                    if usize::try_from(n).unwrap_or(usize::MAX) >= MAX_POLICIES {
                        return Err(
                            DomainError::new("policies", format!("a tenant holds at most {MAX_POLICIES}")).into()
                        );
                    }
                    ex.fetch_one("create policy", sql).await
                })
            }),
        )
        .await?;
    decode_policy(&row.ok_or_else(|| StoreError::backend("the new policy's row vanished"))?)
}

/// `RetentionStore::get_policy`.
///
/// # Errors
/// `NotFound`; a failed read.
pub async fn get_policy<D: Transactor>(db: &D, tenant: &TenantId, id: PolicyId) -> Result<RetentionPolicy, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("SELECT {POLICY_COLUMNS} FROM retention_policies WHERE tenant = ")).bind(tenant.as_str());
    sql.push(" AND id = ").bind(id.as_uuid());
    let row = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch_one("get policy", sql)))).await?;
    decode_policy(&row.ok_or_else(|| StoreError::not_found("retention policy", id))?)
}

/// `RetentionStore::list_policies`, or every tenant's with `None`.
///
/// # Errors
/// A failed read.
pub async fn list_policies<D: Transactor>(
    db: &D,
    tenant: Option<&TenantId>,
) -> Result<Vec<RetentionPolicy>, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("SELECT {POLICY_COLUMNS} FROM retention_policies"));
    let rows = if let Some(tenant) = tenant {
        sql.push(" WHERE tenant = ").bind(tenant.as_str()).push(" ORDER BY id");
        db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("list policies", sql)))).await?
    } else {
        sql.push(" ORDER BY tenant, id");
        db.write_all_tenants(Box::new(move |ex| Box::pin(ex.fetch("list every policy", sql)))).await?
    };
    rows.iter().map(|r| decode_policy(r)).collect()
}

/// `RetentionStore::replace_policy`.
///
/// # Errors
/// `Invalid` on a rule; `NotFound`; a failed write.
pub async fn replace_policy<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    id: PolicyId,
    new: NewRetentionPolicy,
) -> Result<RetentionPolicy, StoreError> {
    new.validate()?;
    let mut sql = Sql::new(db.dialect());
    sql.push("UPDATE retention_policies SET (agent_id, resource_id, max_thread_age_secs, max_message_age_secs, ");
    sql.push("max_messages_per_thread, only_summarized, max_threads_per_resource, updated_at) = (");
    // SQLite's row-value SET needs a parenthesised list on both sides.
    policy_values(&mut sql, &new);
    sql.push(", ").bind(now()).push(") WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ").bind(id.as_uuid());
    sql.push(&format!(" RETURNING {POLICY_COLUMNS}"));
    let row = db.write(tenant, Box::new(move |ex| Box::pin(ex.fetch_one("replace policy", sql)))).await?;
    decode_policy(&row.ok_or_else(|| StoreError::not_found("retention policy", id))?)
}

/// `RetentionStore::delete_policy`.
///
/// # Errors
/// `NotFound`; a failed write.
pub async fn delete_policy<D: Transactor>(db: &D, tenant: &TenantId, id: PolicyId) -> Result<(), StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push("DELETE FROM retention_policies WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(id.as_uuid());
    let n = db.write(tenant, Box::new(move |ex| Box::pin(ex.execute("delete policy", sql)))).await?;
    if n == 0 {
        return Err(StoreError::not_found("retention policy", id));
    }
    Ok(())
}

/// The policy's scope over the threads aliased `t`: its tenant, live,
/// its agent and resource if it names them, not pinned.
fn push_scope(sql: &mut Sql, policy: &RetentionPolicy) {
    sql.push("t.tenant = ").bind(policy.tenant.as_str()).push(" AND t.deleted_at IS NULL");
    if let Some(agent) = &policy.agent_id {
        sql.push(" AND t.agent_id = ").bind(agent.as_str());
    }
    if let Some(resource) = &policy.resource_id {
        sql.push(" AND t.resource_id = ").bind(resource.as_str());
    }
    push_unpinned(sql);
}

/// Leaves out threads `t` whose metadata holds `"pinned": true`.
fn push_unpinned(sql: &mut Sql) {
    match sql.dialect() {
        Dialect::Sqlite => sql.push(" AND json_type(t.metadata, '$.pinned') IS NOT 'true'"),
        Dialect::Postgres => sql.push(" AND NOT (t.metadata @> '{\"pinned\": true}'::jsonb)"),
    };
}

/// `now - secs`, clamped to the epoch.
fn cutoff(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_sub(time::Duration::seconds(secs)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Pushes the candidates of a thread rule onto `sql`: `SELECT id,
/// stored_messages` of at most `limit` threads, least recently active
/// first; `false` (nothing pushed) for a message rule or one the policy
/// does not set.
fn thread_candidates(sql: &mut Sql, policy: &RetentionPolicy, rule: RetentionRule, at: Timestamp, limit: u32) -> bool {
    let Some(value) = policy.rules.limit(rule) else { return false };
    match rule {
        RetentionRule::ThreadAge => {
            sql.push("SELECT t.id, t.stored_messages FROM threads t WHERE ");
            push_scope(sql, policy);
            sql.push(" AND t.updated_at < ").bind(cutoff(at, value)).push(" ORDER BY t.updated_at");
        }
        RetentionRule::ThreadsPerResource => {
            sql.push("SELECT id, stored_messages FROM (SELECT t.id, t.stored_messages, t.updated_at, ");
            sql.push("row_number() OVER (PARTITION BY t.resource_id ORDER BY t.updated_at DESC, t.id DESC) AS rn ");
            sql.push("FROM threads t WHERE ");
            push_scope(sql, policy);
            sql.push(" AND t.resource_id IS NOT NULL) ranked WHERE rn > ").bind(value).push(" ORDER BY updated_at");
        }
        RetentionRule::MessageAge | RetentionRule::MessagesPerThread => return false,
    }
    sql.push(" LIMIT ").bind(i64::from(limit));
    true
}

/// Pushes the candidates of a message rule onto `sql`: `SELECT id` of at
/// most `limit` messages; `false` as [`thread_candidates`].
fn message_candidates(sql: &mut Sql, policy: &RetentionPolicy, rule: RetentionRule, at: Timestamp, limit: u32) -> bool {
    let Some(value) = policy.rules.limit(rule) else { return false };
    let dialect = sql.dialect();
    let same_tenant = if dialect.tenant_on_every_table() { " AND m.tenant = t.tenant" } else { "" };
    match rule {
        RetentionRule::MessageAge => {
            sql.push(&format!("SELECT m.id FROM messages m JOIN threads t ON t.id = m.thread_id{same_tenant} WHERE "));
            push_scope(sql, policy);
            sql.push(" AND m.created_at < ").bind(cutoff(at, value));
        }
        RetentionRule::MessagesPerThread => {
            sql.push("SELECT id FROM (SELECT m.id, m.seq, ");
            sql.push("row_number() OVER (PARTITION BY m.thread_id ORDER BY m.seq DESC) AS rn, ");
            sql.push("(SELECT max(s.covers_through) FROM thread_summaries s WHERE s.thread_id = t.id) AS covered ");
            sql.push(&format!("FROM messages m JOIN threads t ON t.id = m.thread_id{same_tenant} WHERE "));
            push_scope(sql, policy);
            sql.push(" AND t.stored_messages > ").bind(value).push(") ranked WHERE rn > ").bind(value);
            if policy.rules.only_summarized {
                sql.push(" AND seq <= coalesce(covered, 0)");
            }
        }
        RetentionRule::ThreadAge | RetentionRule::ThreadsPerResource => return false,
    }
    sql.push(" LIMIT ").bind(i64::from(limit));
    true
}

/// `UPDATE threads SET deleted_at … WHERE id IN (<candidates>) RETURNING
/// id, stored_messages, stored_bytes`; `None` when `candidates` pushes
/// nothing.
fn mark_sql(
    dialect: Dialect,
    tenant: &TenantId,
    at: Timestamp,
    candidates: impl FnOnce(&mut Sql) -> bool,
) -> Option<Sql> {
    let mut sql = Sql::new(dialect).dynamic();
    sql.push("UPDATE threads SET deleted_at = ").bind(at).push(" WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND deleted_at IS NULL AND id IN (SELECT id FROM (");
    if !candidates(&mut sql) {
        return None;
    }
    sql.push(") c) RETURNING id, stored_messages, stored_bytes");
    Some(sql)
}

/// `DELETE FROM messages WHERE id IN (<candidates>) RETURNING …`; `None`
/// when `candidates` pushes nothing.
fn delete_sql(dialect: Dialect, candidates: impl FnOnce(&mut Sql) -> bool) -> Option<Sql> {
    let mut sql = Sql::new(dialect).dynamic();
    sql.push("DELETE FROM messages WHERE id IN (SELECT id FROM (");
    if !candidates(&mut sql) {
        return None;
    }
    sql.push(") c) RETURNING id, thread_id, stored_bytes, created_at");
    Some(sql)
}

/// Runs a [`mark_sql`] statement, releases the marked threads' usage and
/// deletes the idempotency records holding their ids.
async fn mark_threads(
    ex: &dyn Executor,
    tenant: &TenantId,
    sql: Sql,
    at: Timestamp,
    step: &mut PruneStep,
) -> Result<(), StoreError> {
    let rows = ex.fetch("mark threads", sql).await?;
    for row in &rows {
        let c = Cells::new(row, "threads");
        let id = ThreadId::from_uuid(c.uuid(0, "id")?);
        let held =
            usage::Delta { threads: 1, messages: c.int(1, "stored_messages")?, bytes: c.int(2, "stored_bytes")? };
        usage::release(ex, tenant, id, held.negated()).await?;
        step.counts.threads += 1;
        step.counts.messages += u64::try_from(held.messages).unwrap_or(0);
        step.counts.idempotency_records += purge_idempotency(ex, tenant, id, at).await?;
        step.threads.push(id);
    }
    Ok(())
}

/// Deletes the tenant's idempotency records recorded no later than `before`
/// whose response holds `thread`'s id.
async fn purge_idempotency(
    ex: &dyn Executor,
    tenant: &TenantId,
    thread: ThreadId,
    before: Timestamp,
) -> Result<u64, StoreError> {
    let mut sql = Sql::new(ex.dialect());
    sql.push("DELETE FROM idempotency_records WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND created_at <= ").bind(before);
    let needle = sql.arg(SqlValue::Blob(thread.to_string().into_bytes()));
    sql.push(&match ex.dialect() {
        Dialect::Sqlite => format!(" AND instr(CAST(body AS BLOB), {needle}) > 0"),
        Dialect::Postgres => format!(" AND position({needle}::bytea IN body) > 0"),
    });
    ex.execute("purge idempotency records of deleted data", sql).await
}

/// Runs a [`delete_sql`] statement, takes the messages off their threads'
/// and tenant's counts, and deletes the summaries and idempotency records
/// they leave covering or holding nothing live.
async fn delete_messages(
    ex: &dyn Executor,
    tenant: &TenantId,
    sql: Sql,
    keep_newest_summary: bool,
    step: &mut PruneStep,
) -> Result<(), StoreError> {
    let dialect = ex.dialect();
    let rows = ex.fetch("delete messages", sql).await?;
    // Per thread: messages, bytes, newest creation.
    let mut threads: BTreeMap<ThreadId, (i64, i64, Timestamp)> = BTreeMap::new();
    for row in &rows {
        let c = Cells::new(row, "messages");
        step.messages.push(MessageId::from_uuid(c.uuid(0, "id")?));
        let thread = ThreadId::from_uuid(c.uuid(1, "thread_id")?);
        let (bytes, created) = (c.int(2, "stored_bytes")?, c.timestamp(3, "created_at")?);
        let e = threads.entry(thread).or_insert((0, 0, created));
        e.0 += 1;
        e.1 += bytes;
        e.2 = e.2.max(created);
    }
    step.counts.messages += rows.len() as u64;
    for (thread, (messages, bytes, newest)) in threads {
        let mut unstore = Sql::new(dialect);
        unstore.push("UPDATE threads SET stored_messages = stored_messages - ").bind(messages);
        unstore.push(", stored_bytes = stored_bytes - ").bind(bytes).push(" WHERE id = ").bind(thread.as_uuid());
        ex.execute("unstore pruned messages", unstore).await?;
        usage::release(ex, tenant, thread, usage::Delta { threads: 0, messages, bytes }.negated()).await?;
        let mut summaries = Sql::new(dialect);
        let t = summaries.arg(thread.as_uuid());
        summaries.push(&format!(
            "DELETE FROM thread_summaries WHERE thread_id = {t} AND covers_through > 0 AND NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.thread_id = {t} AND m.seq <= thread_summaries.covers_through)"
        ));
        if keep_newest_summary {
            summaries.push(&format!(
                " AND version < (SELECT max(s2.version) FROM thread_summaries s2 WHERE s2.thread_id = {t})"
            ));
        }
        step.counts.summaries += ex.execute("delete summaries of pruned messages", summaries).await?;
        step.counts.idempotency_records += purge_idempotency(ex, tenant, thread, newest).await?;
    }
    Ok(())
}

/// `RetentionStore::prune_step`.
///
/// # Errors
/// `Invalid` for `limit` 0; a failed write (then nothing of the step is
/// deleted).
pub async fn prune_step<D: Transactor>(
    db: &D,
    policy: &RetentionPolicy,
    rule: RetentionRule,
    at: Timestamp,
    limit: u32,
) -> Result<PruneStep, StoreError> {
    check_limit(limit)?;
    let dialect = db.dialect();
    let threads = mark_sql(dialect, &policy.tenant, at, |sql| thread_candidates(sql, policy, rule, at, limit));
    let messages = delete_sql(dialect, |sql| message_candidates(sql, policy, rule, at, limit));
    if threads.is_none() && messages.is_none() {
        return Ok(PruneStep::default());
    }
    let tenant = policy.tenant.clone();
    let keep_newest = rule == RetentionRule::MessagesPerThread && policy.rules.only_summarized;
    let mut step = db
        .write(
            &policy.tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    let mut step = PruneStep::default();
                    if let Some(sql) = threads {
                        mark_threads(ex, &tenant, sql, at, &mut step).await?;
                    }
                    if let Some(sql) = messages {
                        delete_messages(ex, &tenant, sql, keep_newest, &mut step).await?;
                    }
                    Ok(step)
                })
            }),
        )
        .await?;
    step.more = step.threads.len() + step.messages.len() >= limit as usize;
    Ok(step)
}

/// `RetentionStore::prune_preview`: the same candidates, read only.
///
/// # Errors
/// `Invalid` for `limit` 0; a failed read.
pub async fn prune_preview<D: Transactor>(
    db: &D,
    policy: &RetentionPolicy,
    rule: RetentionRule,
    at: Timestamp,
    limit: u32,
) -> Result<PruneStep, StoreError> {
    check_limit(limit)?;
    let mut sql = Sql::new(db.dialect()).dynamic();
    if !thread_candidates(&mut sql, policy, rule, at, limit) && !message_candidates(&mut sql, policy, rule, at, limit) {
        return Ok(PruneStep::default());
    }
    let rows = db.read(&policy.tenant, Box::new(move |ex| Box::pin(ex.fetch("preview prune", sql)))).await?;
    let mut step = PruneStep::default();
    for row in &rows {
        let c = Cells::new(row, "threads");
        let id = c.uuid(0, "id")?;
        if rule.deletes_threads() {
            step.threads.push(ThreadId::from_uuid(id));
            step.counts.threads += 1;
            step.counts.messages += u64::try_from(c.int(1, "stored_messages")?).unwrap_or(0);
        } else {
            step.messages.push(MessageId::from_uuid(id));
            step.counts.messages += 1;
        }
    }
    step.more = rows.len() >= limit as usize;
    Ok(step)
}

/// `RetentionStore::erase_step`: at most `limit` of the resource's threads
/// marked deleted; once none is left, its working memory and its workflows
/// (with their steps and events) in the same transaction; and, in that
/// transaction too, what it deleted added to the receipt `run` (read and
/// written back, so the stored receipt is whole whatever run resumes it).
///
/// # Errors
/// `Invalid` for `limit` 0; `NotFound` for a `run` not stored; a failed
/// write.
pub async fn erase_step<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    resource: &ResourceId,
    run: Option<RunId>,
    limit: u32,
) -> Result<PruneStep, StoreError> {
    check_limit(limit)?;
    let candidates = mark_sql(db.dialect(), tenant, now(), |sql| {
        sql.push("SELECT t.id FROM threads t WHERE t.tenant = ").bind(tenant.as_str());
        sql.push(" AND t.resource_id = ").bind(resource.as_str()).push(" AND t.deleted_at IS NULL LIMIT ");
        sql.bind(i64::from(limit));
        true
    })
    .ok_or_else(|| StoreError::backend("no erasure statement"))?;
    let (owner, resource) = (tenant.clone(), resource.clone());
    db.write(
        tenant,
        Box::new(move |ex| {
            Box::pin(async move {
                let mut step = PruneStep::default();
                mark_threads(ex, &owner, candidates, now(), &mut step).await?;
                step.more = step.threads.len() >= limit as usize;
                if !step.more {
                    for table in ["working_memory_versions", "working_memory"] {
                        let mut sql = Sql::new(ex.dialect());
                        sql.push(&format!("DELETE FROM {table} WHERE tenant = ")).bind(owner.as_str());
                        sql.push(" AND scope_kind = 'resource' AND scope_id = ").bind(resource.as_str());
                        let n = ex.execute("erase resource working memory", sql).await?;
                        if table == "working_memory" {
                            step.counts.working_memory += n;
                        }
                    }
                    // The resource's workflows: their inputs and outputs are
                    // the resource's data too. Steps and events cascade.
                    let mut sql = Sql::new(ex.dialect());
                    sql.push("DELETE FROM workflows WHERE tenant = ").bind(owner.as_str());
                    sql.push(" AND resource = ").bind(resource.as_str());
                    step.counts.workflows += ex.execute("erase resource workflows", sql).await?;
                }
                if let Some(run) = run {
                    add_to_receipt(ex, &owner, run, &step).await?;
                }
                Ok(step)
            })
        }),
    )
    .await
}

/// Adds what `step` deleted to the stored receipt `run` (its counts and id
/// ranges), in the caller's transaction: the row read (locked on
/// Postgres) and written back.
async fn add_to_receipt(ex: &dyn Executor, tenant: &TenantId, run: RunId, step: &PruneStep) -> Result<(), StoreError> {
    let d = ex.dialect();
    let mut sql = Sql::new(d);
    sql.push("SELECT receipt FROM retention_runs WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(run.as_uuid());
    if d == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    let row = ex.fetch_one("read erasure receipt", sql).await?.ok_or_else(|| StoreError::not_found("run", run))?;
    let mut receipt: Receipt = Cells::new(&row, "retention_runs").json(0, "receipt")?;
    receipt.counts.add(&step.counts);
    for t in &step.threads {
        IdRange::widen(&mut receipt.thread_ids, t.as_uuid());
    }
    for m in &step.messages {
        IdRange::widen(&mut receipt.message_ids, m.as_uuid());
    }
    let receipt = serde_json::to_value(&receipt).map_err(StoreError::backend)?;
    let mut sql = Sql::new(d);
    sql.push("UPDATE retention_runs SET receipt = ").bind(SqlValue::Json(receipt));
    sql.push(" WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ").bind(run.as_uuid());
    ex.execute("save erasure progress", sql).await?;
    Ok(())
}

fn check_limit(limit: u32) -> Result<(), StoreError> {
    if limit == 0 {
        return Err(DomainError::new("limit", "must be at least 1").into());
    }
    Ok(())
}

/// `RetentionStore::save_run`: an upsert by id.
///
/// # Errors
/// A failed write.
pub async fn save_run<D: Transactor>(db: &D, run: &RetentionRun) -> Result<(), StoreError> {
    let receipt = Receipt { v: 1, counts: run.counts, thread_ids: run.thread_ids, message_ids: run.message_ids };
    let receipt = serde_json::to_value(&receipt).map_err(StoreError::backend)?;
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("INSERT INTO retention_runs ({RUN_COLUMNS}) VALUES ("));
    sql.bind(run.id.as_uuid()).push(", ").bind(run.tenant.as_str()).push(", ").bind(run.kind.as_str()).push(", ");
    sql.bind(run.policy_id.map(|p| p.as_uuid())).push(", ");
    sql.bind(run.resource_id.as_ref().map(ResourceId::as_str)).push(", ").bind(run.dry_run).push(", ");
    sql.bind(run.started_at).push(", ").bind(run.finished_at).push(", ").bind(SqlValue::Json(receipt));
    sql.push(") ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, receipt = excluded.receipt");
    db.write(&run.tenant, Box::new(move |ex| Box::pin(ex.execute("save retention run", sql)))).await?;
    Ok(())
}

/// `RetentionStore::list_runs`.
///
/// # Errors
/// A failed read.
pub async fn list_runs<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    before: Option<RunId>,
    limit: u32,
) -> Result<Vec<RetentionRun>, StoreError> {
    let mut sql = Sql::new(db.dialect()).dynamic();
    sql.push(&format!("SELECT {RUN_COLUMNS} FROM retention_runs WHERE tenant = ")).bind(tenant.as_str());
    if let Some(before) = before {
        sql.push(" AND id < ").bind(before.as_uuid());
    }
    sql.push(" ORDER BY id DESC LIMIT ").bind(i64::from(limit));
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("list retention runs", sql)))).await?;
    rows.iter().map(|r| decode_run(r)).collect()
}

/// `RetentionStore::unfinished_erasures`.
///
/// # Errors
/// A failed read.
pub async fn unfinished_erasures<D: Transactor>(db: &D) -> Result<Vec<RetentionRun>, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!(
        "SELECT {RUN_COLUMNS} FROM retention_runs WHERE finished_at IS NULL AND kind = 'erase' ORDER BY id"
    ));
    let rows = db.write_all_tenants(Box::new(move |ex| Box::pin(ex.fetch("unfinished erasures", sql)))).await?;
    rows.iter().map(|r| decode_run(r)).collect()
}

/// `RetentionStore::try_lease`: one upsert that changes the row only when
/// the lease is expired or already the holder's.
///
/// # Errors
/// A failed write.
pub async fn try_lease<D: Transactor>(
    db: &D,
    name: &str,
    holder: &str,
    at: Timestamp,
    until: Timestamp,
) -> Result<bool, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push("INSERT INTO retention_leases (name, holder, expires_at) VALUES (").bind(name).push(", ");
    sql.bind(holder).push(", ").bind(until);
    sql.push(") ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at ");
    sql.push("WHERE retention_leases.expires_at <= ").bind(at);
    sql.push(" OR retention_leases.holder = excluded.holder RETURNING holder");
    let row = db.write_all_tenants(Box::new(move |ex| Box::pin(ex.fetch_one("take retention lease", sql)))).await?;
    Ok(row.is_some())
}

/// `RetentionStore::release_lease`.
///
/// # Errors
/// A failed write.
pub async fn release_lease<D: Transactor>(db: &D, name: &str, holder: &str) -> Result<(), StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push("DELETE FROM retention_leases WHERE name = ").bind(name).push(" AND holder = ").bind(holder);
    db.write_all_tenants(Box::new(move |ex| Box::pin(ex.execute("release retention lease", sql)))).await?;
    Ok(())
}

/// `RetentionStore::purge_runs`.
///
/// # Errors
/// A failed write.
pub async fn purge_runs<D: Transactor>(db: &D, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
    let mut sql = Sql::new(db.dialect());
    let (before, limit) = (sql.arg(before), sql.arg(i64::from(limit)));
    // Finished receipts by their end; prunes an error cut short (never
    // finished, unlike an erasure, which is resumed) by their start.
    sql.push(&format!(
        "DELETE FROM retention_runs WHERE id IN (SELECT id FROM retention_runs WHERE finished_at IS NOT NULL \
         AND finished_at < {before} LIMIT {limit}) OR id IN (SELECT id FROM retention_runs WHERE finished_at IS NULL \
         AND kind = 'prune' AND started_at < {before} LIMIT {limit})"
    ));
    db.write_all_tenants(Box::new(move |ex| Box::pin(ex.execute("purge retention runs", sql)))).await
}

/// Implements `memlayer_ports::RetentionStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! retention_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::RetentionStore for $backend {
            async fn create_policy(
                &self,
                tenant: &::memlayer_domain::TenantId,
                new: ::memlayer_domain::NewRetentionPolicy,
            ) -> Result<::memlayer_domain::RetentionPolicy, ::memlayer_ports::StoreError> {
                $crate::retention::create_policy(self, tenant, new).await
            }

            async fn get_policy(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::PolicyId,
            ) -> Result<::memlayer_domain::RetentionPolicy, ::memlayer_ports::StoreError> {
                $crate::retention::get_policy(self, tenant, id).await
            }

            async fn list_policies(
                &self,
                tenant: &::memlayer_domain::TenantId,
            ) -> Result<Vec<::memlayer_domain::RetentionPolicy>, ::memlayer_ports::StoreError> {
                $crate::retention::list_policies(self, Some(tenant)).await
            }

            async fn all_policies(
                &self,
            ) -> Result<Vec<::memlayer_domain::RetentionPolicy>, ::memlayer_ports::StoreError> {
                $crate::retention::list_policies(self, None).await
            }

            async fn replace_policy(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::PolicyId,
                new: ::memlayer_domain::NewRetentionPolicy,
            ) -> Result<::memlayer_domain::RetentionPolicy, ::memlayer_ports::StoreError> {
                $crate::retention::replace_policy(self, tenant, id, new).await
            }

            async fn delete_policy(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::PolicyId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::retention::delete_policy(self, tenant, id).await
            }

            async fn prune_step(
                &self,
                policy: &::memlayer_domain::RetentionPolicy,
                rule: ::memlayer_domain::RetentionRule,
                now: ::memlayer_domain::Timestamp,
                limit: u32,
            ) -> Result<::memlayer_ports::PruneStep, ::memlayer_ports::StoreError> {
                $crate::retention::prune_step(self, policy, rule, now, limit).await
            }

            async fn prune_preview(
                &self,
                policy: &::memlayer_domain::RetentionPolicy,
                rule: ::memlayer_domain::RetentionRule,
                now: ::memlayer_domain::Timestamp,
                limit: u32,
            ) -> Result<::memlayer_ports::PruneStep, ::memlayer_ports::StoreError> {
                $crate::retention::prune_preview(self, policy, rule, now, limit).await
            }

            async fn erase_step(
                &self,
                tenant: &::memlayer_domain::TenantId,
                resource: &::memlayer_domain::ResourceId,
                run: Option<::memlayer_domain::RunId>,
                limit: u32,
            ) -> Result<::memlayer_ports::PruneStep, ::memlayer_ports::StoreError> {
                $crate::retention::erase_step(self, tenant, resource, run, limit).await
            }

            async fn save_run(
                &self,
                run: &::memlayer_domain::RetentionRun,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::retention::save_run(self, run).await
            }

            async fn list_runs(
                &self,
                tenant: &::memlayer_domain::TenantId,
                before: Option<::memlayer_domain::RunId>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::RetentionRun>, ::memlayer_ports::StoreError> {
                $crate::retention::list_runs(self, tenant, before, limit).await
            }

            async fn unfinished_erasures(
                &self,
            ) -> Result<Vec<::memlayer_domain::RetentionRun>, ::memlayer_ports::StoreError> {
                $crate::retention::unfinished_erasures(self).await
            }

            async fn try_lease(
                &self,
                name: &str,
                holder: &str,
                now: ::memlayer_domain::Timestamp,
                until: ::memlayer_domain::Timestamp,
            ) -> Result<bool, ::memlayer_ports::StoreError> {
                $crate::retention::try_lease(self, name, holder, now, until).await
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::retention::release_lease(self, name, holder).await
            }

            async fn purge_runs(
                &self,
                before: ::memlayer_domain::Timestamp,
                limit: u32,
            ) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::retention::purge_runs(self, before, limit).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    fn policy(rules: RetentionRules) -> RetentionPolicy {
        RetentionPolicy {
            id: PolicyId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            agent_id: Some(AgentName::parse("bot").unwrap()),
            resource_id: None,
            rules,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn candidates_bind_every_value_and_leave_pinned_threads_out() {
        let p =
            policy(RetentionRules { max_messages_per_thread: Some(5), only_summarized: true, ..Default::default() });
        let mut sql = Sql::new(Dialect::Postgres);
        assert!(message_candidates(&mut sql, &p, RetentionRule::MessagesPerThread, now(), 7));
        assert!(sql.text().contains("NOT (t.metadata @> '{\"pinned\": true}'::jsonb)"), "{}", sql.text());
        assert!(sql.text().contains("AND seq <= coalesce(covered, 0)"));
        assert!(sql.text().contains("t.agent_id = $2"));
        assert_eq!(sql.args().last(), Some(&SqlValue::Int(7)));
        assert!(!thread_candidates(&mut Sql::new(Dialect::Sqlite), &p, RetentionRule::MessagesPerThread, now(), 7));
        let p = policy(RetentionRules { max_threads_per_resource: Some(2), ..Default::default() });
        let mut sql = Sql::new(Dialect::Sqlite);
        assert!(thread_candidates(&mut sql, &p, RetentionRule::ThreadsPerResource, now(), 3));
        assert!(sql.text().contains("json_type(t.metadata, '$.pinned') IS NOT 'true'"));
        assert!(sql.text().contains("PARTITION BY t.resource_id ORDER BY t.updated_at DESC"));
        let none = thread_candidates(&mut Sql::new(Dialect::Sqlite), &p, RetentionRule::ThreadAge, now(), 3);
        assert!(!none, "a rule the policy does not set selects nothing");
    }
}
