//! Workflows, their steps and events (migration 19: `workflows`,
//! `workflow_steps`, `workflow_events`), written once for both backends.
//!
//! Every change is one write transaction: read the workflow row (on
//! Postgres `FOR UPDATE`, so writers of one workflow are serial; libSQL's
//! one writer already is), read its steps, apply the domain's
//! [`WorkflowState::apply`], then write the workflow row, the step rows that
//! changed and one event per transition. The state machine lives only in
//! the domain; this module stores what it decided.
//!
//! A step row keeps its columns for what queries filter on (status,
//! position, name) and the whole [`Step`] as JSON (`body`), so a new step
//! field needs no migration. A workflow row keeps `next_wake`, the earliest
//! time one of its steps may be claimed ([`WorkflowState::next_wake`]):
//! claims read `running` workflows by the index `(status, next_wake)` and
//! lock them `FOR UPDATE SKIP LOCKED` on Postgres, so two servers never
//! claim in one workflow at once and never share a step.

use memlayer_domain::{
    DomainError, Metadata, NewWorkflow, Reach, ResourceId, Step, StepId, TenantId, ThreadId, Timestamp, Transition,
    TransitionError, Workflow, WorkflowEvent, WorkflowFilter, WorkflowId, WorkflowOp, WorkflowPatch, WorkflowState,
    WorkflowStatus, now,
};
use memlayer_ports::{ClaimedStep, MAX_EVENT_PAGE, MAX_WORKFLOW_PAGE, StoreError};
use serde_json::{Value, json};

use crate::exec::{Executor, Row, Transactor};
use crate::{Cells, Dialect, Sql, SqlValue, usage};

const WORKFLOWS: &str = "workflows";
const STEPS: &str = "workflow_steps";
const EVENTS: &str = "workflow_events";

const WORKFLOW_COLUMNS: &str = "tenant, id, resource, name, status, body, created_at, updated_at";

/// The domain's refusal as the port's error.
#[must_use]
pub fn transition_error(e: TransitionError) -> StoreError {
    match e {
        TransitionError::Conflict(m) => StoreError::Conflict(m),
        TransitionError::Invalid(e) => StoreError::Invalid(e),
        TransitionError::StepNotFound(id) => StoreError::not_found("step", id),
    }
}

fn decode_workflow(row: &Row) -> Result<Workflow, StoreError> {
    let r = Cells::new(row, WORKFLOWS);
    let body: Value = r.json(5, "body")?;
    let resource = r
        .opt_text(2, "resource")?
        .map(ResourceId::parse)
        .transpose()
        .map_err(|e| crate::corrupt(WORKFLOWS, "resource", e))?;
    Ok(Workflow {
        tenant: r.parse(0, "tenant", TenantId::parse)?,
        id: WorkflowId::from_uuid(r.uuid(1, "id")?),
        resource,
        name: r.text(3, "name")?,
        status: r.parse(4, "status", |s: String| WorkflowStatus::parse(&s))?,
        description: body.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
        metadata: Metadata::from_stored("metadata", body.get("metadata").cloned().unwrap_or(Value::Null))
            .map_err(|e| crate::corrupt(WORKFLOWS, "body", e))?,
        created_at: r.timestamp(6, "created_at")?,
        updated_at: r.timestamp(7, "updated_at")?,
    })
}

fn body_of(w: &Workflow) -> SqlValue {
    SqlValue::Json(json!({"description": w.description, "metadata": w.metadata.as_map()}))
}

fn step_json(s: &Step) -> Result<SqlValue, StoreError> {
    serde_json::to_value(s).map(SqlValue::Json).map_err(StoreError::backend)
}

/// `AND` the workflow's resource is the bound caller's, if it is bound.
fn reach_filter(sql: &mut Sql, who: Option<&ResourceId>, alias: &str) {
    if let Some(r) = who {
        sql.push(" AND ").push(alias).push("resource = ").bind(r.as_str());
    }
}

/// Reads the workflow and its steps inside `ex`'s transaction, locking the
/// workflow's row on Postgres when `lock`.
async fn load(
    ex: &dyn Executor,
    tenant: &TenantId,
    resource: Option<&ResourceId>,
    id: WorkflowId,
    lock: bool,
) -> Result<(WorkflowState, i64), StoreError> {
    let d = ex.dialect();
    let mut sql = Sql::new(d);
    sql.push("SELECT ").push(WORKFLOW_COLUMNS).push(", last_event FROM workflows WHERE tenant = ");
    sql.bind(tenant.as_str()).push(" AND id = ").bind(id.as_uuid());
    reach_filter(&mut sql, resource, "");
    if lock && d == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    let row = ex.fetch_one("read workflow", sql).await?.ok_or_else(|| StoreError::not_found("workflow", id))?;
    let workflow = decode_workflow(&row)?;
    let last_event = Cells::new(&row, WORKFLOWS).int(8, "last_event")?;
    let steps = load_steps(ex, id).await?;
    Ok((WorkflowState { workflow, steps }, last_event))
}

async fn load_steps(ex: &dyn Executor, id: WorkflowId) -> Result<Vec<Step>, StoreError> {
    let mut sql = Sql::new(ex.dialect());
    sql.push("SELECT body FROM workflow_steps WHERE workflow_id = ").bind(id.as_uuid()).push(" ORDER BY position");
    let rows = ex.fetch("read workflow steps", sql).await?;
    rows.iter().map(|row| Cells::new(row, STEPS).json::<Step>(0, "body")).collect()
}

async fn insert_step(ex: &dyn Executor, tenant: &TenantId, s: &Step) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    sql.push("INSERT INTO workflow_steps (tenant, workflow_id, id, position, name, status, body) VALUES (");
    sql.bind(tenant.as_str()).push(", ").bind(s.workflow_id.as_uuid()).push(", ").bind(s.id.as_uuid());
    sql.push(", ").bind(i64::from(s.position)).push(", ").bind(s.name.as_str()).push(", ").bind(s.status.as_str());
    sql.push(", ").bind(step_json(s)?).push(")");
    ex.execute("insert workflow step", sql).await?;
    Ok(())
}

async fn insert_events(
    ex: &dyn Executor,
    tenant: &TenantId,
    workflow: WorkflowId,
    first_seq: i64,
    at: Timestamp,
    transitions: &[Transition],
) -> Result<(), StoreError> {
    // One statement per 100 events keeps within SQLite's parameter limit.
    for (chunk_no, chunk) in transitions.chunks(100).enumerate() {
        let mut sql = Sql::new(ex.dialect()).dynamic();
        sql.push("INSERT INTO workflow_events (tenant, workflow_id, seq, at, step_id, from_status, to_status, cause) VALUES ");
        for (i, t) in chunk.iter().enumerate() {
            let seq = first_seq + i64::try_from(chunk_no * 100 + i).unwrap_or(i64::MAX);
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").bind(tenant.as_str()).push(", ").bind(workflow.as_uuid()).push(", ").bind(seq);
            sql.push(", ").bind(at).push(", ").bind(t.step.map(|s| s.as_uuid()));
            sql.push(", ")
                .bind(t.from.clone())
                .push(", ")
                .bind(t.to.clone())
                .push(", ")
                .bind(t.cause.as_str())
                .push(")");
        }
        ex.execute("record workflow events", sql).await?;
    }
    Ok(())
}

/// Writes `after` over `before` (both the same workflow): the workflow row,
/// added, removed and changed steps, and the transitions as events.
async fn save(
    ex: &dyn Executor,
    before: &WorkflowState,
    after: &WorkflowState,
    last_event: i64,
    transitions: &[Transition],
    at: Timestamp,
) -> Result<(), StoreError> {
    let d = ex.dialect();
    let w = &after.workflow;
    let count = i64::try_from(transitions.len()).unwrap_or(i64::MAX);
    let mut sql = Sql::new(d);
    sql.push("UPDATE workflows SET name = ").bind(w.name.as_str()).push(", status = ").bind(w.status.as_str());
    sql.push(", body = ").bind(body_of(w)).push(", updated_at = ").bind(w.updated_at);
    sql.push(", next_wake = ").bind(after.next_wake()).push(", last_event = ").bind(last_event + count);
    sql.push(" WHERE tenant = ").bind(w.tenant.as_str()).push(" AND id = ").bind(w.id.as_uuid());
    ex.execute("update workflow", sql).await?;
    for old in &before.steps {
        if after.step(old.id).is_none() {
            let mut sql = Sql::new(d);
            sql.push("DELETE FROM workflow_steps WHERE workflow_id = ").bind(w.id.as_uuid());
            sql.push(" AND id = ").bind(old.id.as_uuid());
            ex.execute("remove workflow step", sql).await?;
        }
    }
    for s in &after.steps {
        match before.step(s.id) {
            None => insert_step(ex, &w.tenant, s).await?,
            Some(old) if old != s => {
                let mut sql = Sql::new(d);
                sql.push("UPDATE workflow_steps SET status = ").bind(s.status.as_str());
                sql.push(", body = ").bind(step_json(s)?).push(" WHERE workflow_id = ").bind(w.id.as_uuid());
                sql.push(" AND id = ").bind(s.id.as_uuid());
                ex.execute("update workflow step", sql).await?;
            }
            Some(_) => {}
        }
    }
    insert_events(ex, &w.tenant, w.id, last_event + 1, at, transitions).await
}

/// [`memlayer_ports::WorkflowStore::create_workflow`].
pub async fn create<B: Transactor>(b: &B, who: &dyn Reach, new: NewWorkflow) -> Result<WorkflowState, StoreError> {
    let at = now();
    if let (Some(bound), Some(r)) = (who.resource(), new.resource.as_ref())
        && bound != r
    {
        return Err(StoreError::Forbidden(format!(
            "resource_id: this credential is bound to resource `{bound}` and cannot create a workflow of `{r}`"
        )));
    }
    let mut new = new;
    if new.resource.is_none() {
        new.resource = who.resource().cloned();
    }
    let (state, transitions) = WorkflowState::create(who.tenant().clone(), new, at).map_err(transition_error)?;
    let out = state.clone();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let w = &state.workflow;
                let mut sql = Sql::new(ex.dialect());
                sql.push("INSERT INTO workflows (").push(WORKFLOW_COLUMNS).push(", next_wake, last_event) VALUES (");
                sql.bind(w.tenant.as_str()).push(", ").bind(w.id.as_uuid()).push(", ");
                sql.bind(w.resource.as_ref().map(ResourceId::as_str)).push(", ").bind(w.name.as_str());
                sql.push(", ").bind(w.status.as_str()).push(", ").bind(body_of(w)).push(", ").bind(w.created_at);
                sql.push(", ").bind(w.updated_at).push(", NULL, ");
                sql.bind(i64::try_from(transitions.len()).unwrap_or(i64::MAX)).push(")");
                ex.execute("insert workflow", sql).await?;
                for s in &state.steps {
                    insert_step(ex, &w.tenant, s).await?;
                }
                insert_events(ex, &w.tenant, w.id, 1, at, &transitions).await
            })
        }),
    )
    .await?;
    Ok(out)
}

/// [`memlayer_ports::WorkflowStore::workflow`].
pub async fn get<B: Transactor>(b: &B, who: &dyn Reach, id: WorkflowId) -> Result<WorkflowState, StoreError> {
    let tenant = who.tenant().clone();
    let resource = who.resource().cloned();
    b.read(
        who,
        Box::new(move |ex| Box::pin(async move { Ok(load(ex, &tenant, resource.as_ref(), id, false).await?.0) })),
    )
    .await
}

/// The listing's statement: newest first, keyset on the id.
#[must_use]
pub fn list_sql(
    dialect: Dialect,
    tenant: &TenantId,
    resource: Option<&ResourceId>,
    filter: &WorkflowFilter,
    after: Option<WorkflowId>,
    limit: u32,
) -> Sql {
    let mut sql = Sql::new(dialect).dynamic();
    sql.push("SELECT ").push(WORKFLOW_COLUMNS).push(" FROM workflows WHERE tenant = ").bind(tenant.as_str());
    reach_filter(&mut sql, resource, "");
    if let Some(s) = filter.status {
        sql.push(" AND status = ").bind(s.as_str());
    }
    if let Some(r) = &filter.resource {
        sql.push(" AND resource = ").bind(r.as_str());
    }
    if let Some(n) = &filter.name {
        sql.push(" AND name = ").bind(n.as_str());
    }
    if let Some(a) = after {
        sql.push(" AND id < ").bind(a.as_uuid());
    }
    sql.push(" ORDER BY id DESC LIMIT ").bind(limit.min(MAX_WORKFLOW_PAGE));
    sql
}

/// [`memlayer_ports::WorkflowStore::list_workflows`].
pub async fn list<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    filter: &WorkflowFilter,
    after: Option<WorkflowId>,
    limit: u32,
) -> Result<Vec<Workflow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sql = list_sql(b.dialect(), who.tenant(), who.resource(), filter, after, limit);
    let rows = b.read(who, Box::new(|ex| Box::pin(ex.fetch("list workflows", sql)))).await?;
    rows.iter().map(decode_workflow).collect()
}

/// [`memlayer_ports::WorkflowStore::patch_workflow`].
pub async fn patch<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    id: WorkflowId,
    patch: WorkflowPatch,
) -> Result<WorkflowState, StoreError> {
    patch.validate()?;
    let tenant = who.tenant().clone();
    let resource = who.resource().cloned();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let (before, last_event) = load(ex, &tenant, resource.as_ref(), id, true).await?;
                let mut after = before.clone();
                let w = &mut after.workflow;
                if let Some(n) = patch.name {
                    w.name = n;
                }
                if let Some(d) = patch.description {
                    w.description = d;
                }
                if let Some(m) = patch.metadata {
                    w.metadata = m;
                }
                if after != before {
                    after.workflow.updated_at = now();
                    save(ex, &before, &after, last_event, &[], after.workflow.updated_at).await?;
                }
                Ok(after)
            })
        }),
    )
    .await
}

/// [`memlayer_ports::WorkflowStore::delete_workflow`].
pub async fn delete<B: Transactor>(b: &B, who: &dyn Reach, id: WorkflowId) -> Result<(), StoreError> {
    let tenant = who.tenant().clone();
    let resource = who.resource().cloned();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let (state, _) = load(ex, &tenant, resource.as_ref(), id, true).await?;
                let status = state.workflow.status;
                if status == WorkflowStatus::Running {
                    return Err(StoreError::Conflict(format!("workflow is {status}; cancel it before deleting it")));
                }
                if let Some(s) = state.steps.iter().find(|s| s.status == memlayer_domain::StepStatus::Running) {
                    return Err(StoreError::Conflict(format!(
                        "workflow is {status} and step `{}` is running; cancel it before deleting it",
                        s.name
                    )));
                }
                let at = now();
                for thread in state.steps.iter().filter_map(|s| s.thread_id) {
                    mark_thread_deleted(ex, &tenant, thread, at).await?;
                }
                for table in ["workflow_events", "workflow_steps"] {
                    let mut sql = Sql::new(d);
                    sql.push("DELETE FROM ").push(table).push(" WHERE workflow_id = ").bind(id.as_uuid());
                    ex.execute("delete workflow rows", sql).await?;
                }
                let mut sql = Sql::new(d);
                sql.push("DELETE FROM workflows WHERE tenant = ").bind(tenant.as_str());
                sql.push(" AND id = ").bind(id.as_uuid());
                ex.execute("delete workflow", sql).await?;
                Ok(())
            })
        }),
    )
    .await
}

/// Marks a step's thread deleted and frees what it held, as
/// [`crate::threads::delete`] does (the sweeper removes its rows later); a
/// thread already deleted is left alone.
async fn mark_thread_deleted(
    ex: &dyn Executor,
    tenant: &TenantId,
    id: ThreadId,
    at: Timestamp,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    sql.push("UPDATE threads SET deleted_at = ").bind(at).push(" WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(id.as_uuid()).push(" AND deleted_at IS NULL RETURNING stored_messages, stored_bytes");
    if let Some(row) = ex.fetch_one("delete step thread", sql).await? {
        let c = Cells::new(&row, "threads");
        let held =
            usage::Delta { threads: 1, messages: c.int(0, "stored_messages")?, bytes: c.int(1, "stored_bytes")? };
        usage::release(ex, tenant, id, held.negated()).await?;
    }
    Ok(())
}

/// [`memlayer_ports::WorkflowStore::apply_workflow`].
pub async fn apply<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    id: WorkflowId,
    op: WorkflowOp,
    at: Timestamp,
) -> Result<WorkflowState, StoreError> {
    let tenant = who.tenant().clone();
    let resource = who.resource().cloned();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let (before, last_event) = load(ex, &tenant, resource.as_ref(), id, true).await?;
                let mut after = before.clone();
                let transitions = after.apply(op, at).map_err(transition_error)?;
                if after != before {
                    save(ex, &before, &after, last_event, &transitions, at).await?;
                }
                Ok(after)
            })
        }),
    )
    .await
}

/// [`memlayer_ports::WorkflowStore::claim_steps`]: the running workflows
/// with a step to claim, earliest first (Postgres: locked, skipping those
/// another claimer holds), then each one's claimable steps until `limit`.
pub async fn claim<B: Transactor>(
    b: &B,
    holder: &str,
    at: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<ClaimedStep>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let holder = holder.to_owned();
    b.write_all_tenants(Box::new(move |ex| {
        Box::pin(async move {
            let d = ex.dialect();
            let mut sql = Sql::new(d);
            sql.push("SELECT ").push(WORKFLOW_COLUMNS).push(", last_event FROM workflows WHERE status = 'running'");
            sql.push(" AND next_wake <= ").bind(at).push(" ORDER BY next_wake, id LIMIT ").bind(limit);
            if d == Dialect::Postgres {
                sql.push(" FOR UPDATE SKIP LOCKED");
            }
            let rows = ex.fetch("find claimable workflows", sql).await?;
            let mut claimed = Vec::new();
            for row in &rows {
                if claimed.len() >= limit as usize {
                    break;
                }
                let workflow = decode_workflow(row)?;
                let last_event = Cells::new(row, WORKFLOWS).int(8, "last_event")?;
                let steps = load_steps(ex, workflow.id).await?;
                let before = WorkflowState { workflow, steps };
                let mut after = before.clone();
                let mut transitions = Vec::new();
                let mut taken: Vec<StepId> = Vec::new();
                for step in before.claimable(at) {
                    if claimed.len() + taken.len() >= limit as usize {
                        break;
                    }
                    let op = WorkflowOp::Claim { step, holder: holder.clone(), until: lease_until };
                    match after.apply(op, at) {
                        Ok(t) => {
                            transitions.extend(t);
                            if after.step(step).is_some_and(|s| s.lease.as_ref().is_some_and(|l| l.holder == holder)) {
                                taken.push(step);
                            }
                        }
                        // A claim the state machine refuses (the workflow
                        // failed through an earlier step's expiry) is skipped.
                        Err(_) => continue,
                    }
                }
                save(ex, &before, &after, last_event, &transitions, at).await?;
                for step in taken {
                    if let Some(s) = after.step(step).filter(|s| s.status == memlayer_domain::StepStatus::Running) {
                        claimed.push(ClaimedStep { workflow: after.workflow.clone(), step: s.clone() });
                    }
                }
            }
            Ok(claimed)
        })
    }))
    .await
}

/// [`memlayer_ports::WorkflowStore::workflow_events`].
pub async fn events<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    id: WorkflowId,
    after: u64,
    limit: u32,
) -> Result<Vec<WorkflowEvent>, StoreError> {
    let after = i64::try_from(after).map_err(|_| DomainError::new("after", "is beyond the events' range"))?;
    let tenant = who.tenant().clone();
    let resource = who.resource().cloned();
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let mut check = Sql::new(ex.dialect());
                check.push("SELECT id FROM workflows WHERE tenant = ").bind(tenant.as_str());
                check.push(" AND id = ").bind(id.as_uuid());
                reach_filter(&mut check, resource.as_ref(), "");
                ex.fetch_one("find workflow", check).await?.ok_or_else(|| StoreError::not_found("workflow", id))?;
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let mut sql = Sql::new(ex.dialect());
                sql.push(
                    "SELECT seq, at, step_id, from_status, to_status, cause FROM workflow_events WHERE workflow_id = ",
                );
                sql.bind(id.as_uuid()).push(" AND seq > ").bind(after);
                sql.push(" ORDER BY seq LIMIT ").bind(limit.min(MAX_EVENT_PAGE));
                let rows = ex.fetch("read workflow events", sql).await?;
                rows.iter()
                    .map(|row| {
                        let r = Cells::new(row, EVENTS);
                        let step_id = match row.get(2) {
                            None | Some(SqlValue::Null) => None,
                            Some(_) => Some(StepId::from_uuid(r.uuid(2, "step_id")?)),
                        };
                        Ok(WorkflowEvent {
                            workflow_id: id,
                            seq: u64::try_from(r.int(0, "seq")?).map_err(|e| crate::corrupt(EVENTS, "seq", e))?,
                            at: r.timestamp(1, "at")?,
                            step_id,
                            from: r.opt_text(3, "from_status")?,
                            to: r.opt_text(4, "to_status")?,
                            cause: r.text(5, "cause")?,
                        })
                    })
                    .collect()
            })
        }),
    )
    .await
}

/// Implements `memlayer_ports::WorkflowStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! workflow_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::WorkflowStore for $backend {
            async fn create_workflow(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                new: ::memlayer_domain::NewWorkflow,
            ) -> Result<::memlayer_domain::WorkflowState, ::memlayer_ports::StoreError> {
                $crate::workflows::create(self, who, new).await
            }

            async fn workflow(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::WorkflowId,
            ) -> Result<::memlayer_domain::WorkflowState, ::memlayer_ports::StoreError> {
                $crate::workflows::get(self, who, id).await
            }

            async fn list_workflows(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                filter: &::memlayer_domain::WorkflowFilter,
                after: Option<::memlayer_domain::WorkflowId>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::Workflow>, ::memlayer_ports::StoreError> {
                $crate::workflows::list(self, who, filter, after, limit).await
            }

            async fn patch_workflow(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::WorkflowId,
                patch: ::memlayer_domain::WorkflowPatch,
            ) -> Result<::memlayer_domain::WorkflowState, ::memlayer_ports::StoreError> {
                $crate::workflows::patch(self, who, id, patch).await
            }

            async fn delete_workflow(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::WorkflowId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::workflows::delete(self, who, id).await
            }

            async fn apply_workflow(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::WorkflowId,
                op: ::memlayer_domain::WorkflowOp,
                now: ::memlayer_domain::Timestamp,
            ) -> Result<::memlayer_domain::WorkflowState, ::memlayer_ports::StoreError> {
                $crate::workflows::apply(self, who, id, op, now).await
            }

            async fn claim_steps(
                &self,
                holder: &str,
                now: ::memlayer_domain::Timestamp,
                lease_until: ::memlayer_domain::Timestamp,
                limit: u32,
            ) -> Result<Vec<::memlayer_ports::ClaimedStep>, ::memlayer_ports::StoreError> {
                $crate::workflows::claim(self, holder, now, lease_until, limit).await
            }

            async fn workflow_events(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                id: ::memlayer_domain::WorkflowId,
                after: u64,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::WorkflowEvent>, ::memlayer_ports::StoreError> {
                $crate::workflows::events(self, who, id, after, limit).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_bind_every_filter_and_page_newest_first() {
        let t = TenantId::parse("t").unwrap();
        let f = WorkflowFilter {
            status: Some(WorkflowStatus::Running),
            resource: Some(ResourceId::parse("r").unwrap()),
            name: Some("n".into()),
        };
        let s = list_sql(Dialect::Postgres, &t, None, &f, Some(WorkflowId::new()), 10_000);
        assert!(
            s.text().ends_with("AND status = $2 AND resource = $3 AND name = $4 AND id < $5 ORDER BY id DESC LIMIT $6"),
            "{}",
            s.text()
        );
        assert_eq!(s.args()[5], SqlValue::Int(i64::from(MAX_WORKFLOW_PAGE)));
    }
}
