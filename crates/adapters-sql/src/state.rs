//! The agent-state store, written once for both backends: optimistic
//! concurrency on a version number. A save reads the current version (the
//! thread must exist), refuses a stale `expected`, and writes with a
//! statement that re-checks the version itself: of two savers that both
//! read `expected`, the second finds the row taken (insert) or its version
//! moved (update), and gets `Conflict`.
//!
//! The same transaction records the state in `agent_state_history`
//! (migration 25) under the thread's `last_seq` at that moment, replacing a
//! state saved earlier at the same seq, and drops the history past the
//! newest [`HISTORY_KEEP`] seqs: what a fork as of a seq copies
//! ([`crate::threads::fork`]).

use memlayer_domain::{AgentName, AgentState, DomainError, Reach, StateVersion, TenantId, ThreadId, now};
use memlayer_ports::StoreError;

use crate::exec::{Executor, Transactor};
use crate::{Cells, Sql, SqlValue, corrupt};

/// How many seqs of a thread's agent state `agent_state_history` keeps
/// per agent: a fork at a seq older than the oldest kept finds no state.
/// A fixed bound, as many as an agent's working memory keeps by default
/// (`memory.working_memory.versions`), because a state may take up to
/// 1 MiB and a save has no per-agent option to carry another number; one
/// row per seq (not per save) so saves between two messages, which no fork
/// can tell apart, do not push older seqs out.
pub const HISTORY_KEEP: u32 = 10;

/// One row when the thread exists (and is not marked deleted), with NULL
/// state columns when the agent has none: `state`, `version`, `updated_at`.
fn current(ex: &dyn Executor, tenant: &TenantId, thread: ThreadId, agent: &AgentName) -> Sql {
    let mut sql = Sql::new(ex.dialect());
    sql.push("SELECT a.state, a.version, a.updated_at FROM threads t ")
        .push("LEFT JOIN agent_state a ON a.thread_id = t.id AND a.agent_id = ")
        .bind(agent.as_str())
        .push(" WHERE t.tenant = ")
        .bind(tenant.as_str())
        .push(" AND t.id = ")
        .bind(thread.as_uuid())
        .push(" AND t.deleted_at IS NULL");
    sql
}

fn version_of(cells: &Cells<&[SqlValue]>) -> Result<Option<StateVersion>, StoreError> {
    cells
        .opt_int(1, "version")?
        .map(StateVersion::try_from)
        .transpose()
        .map_err(|e| corrupt("agent_state", "version", e))
}

/// [`memlayer_ports::StateStore::load`].
pub async fn load<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    thread: ThreadId,
    agent: &AgentName,
) -> Result<Option<AgentState>, StoreError> {
    let tenant = who.tenant();
    let (t, agent) = (tenant.clone(), agent.clone());
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let row = ex
                    .fetch_one("load agent state", current(ex, &t, thread, &agent))
                    .await?
                    .ok_or_else(|| StoreError::not_found("thread", thread))?;
                let r = Cells::new(&row, "agent_state");
                let Some(version) = version_of(&r)? else {
                    return Ok(None);
                };
                Ok(Some(AgentState {
                    thread_id: thread,
                    agent_id: agent,
                    state: r.json(0, "state")?,
                    version,
                    updated_at: r.timestamp(2, "updated_at")?,
                }))
            })
        }),
    )
    .await
}

/// [`memlayer_ports::StateStore::save`].
pub async fn save<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    thread: ThreadId,
    agent: &AgentName,
    state: serde_json::Value,
    expected: StateVersion,
) -> Result<AgentState, StoreError> {
    let tenant = who.tenant();
    AgentState::validate(&state)?;
    let at = now();
    let version = AgentState::next_version(expected)?;
    // `next_version` bounds `expected` so both fit an i64; should that bound
    // ever move, the caller's number is still a 400, not a 500.
    let (Ok(stored), Ok(expected_i)) = (i64::try_from(version), i64::try_from(expected)) else {
        return Err(DomainError::new("expected_version", format!("is {expected}, beyond what the store keeps")).into());
    };
    let (t, a, value, history) = (tenant.clone(), agent.clone(), state.clone(), state.clone());
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let row = ex
                    .fetch_one("save agent state", current(ex, &t, thread, &a))
                    .await?
                    .ok_or_else(|| StoreError::not_found("thread", thread))?;
                let seen = version_of(&Cells::new(&row, "agent_state"))?.unwrap_or(0);
                if seen != expected {
                    return Err(StoreError::Conflict(format!("agent state version is {seen}, expected {expected}")));
                }
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                if expected == 0 {
                    if d.tenant_on_every_table() {
                        sql.push("INSERT INTO agent_state (tenant, thread_id, agent_id, state, version, updated_at) VALUES (");
                        sql.bind(t.as_str()).push(", ");
                    } else {
                        sql.push("INSERT INTO agent_state (thread_id, agent_id, state, version, updated_at) VALUES (");
                    }
                    sql.bind(thread.as_uuid()).push(", ").bind(a.as_str()).push(", ").bind(SqlValue::Json(value));
                    sql.push(", ").bind(stored).push(", ").bind(at);
                    sql.push(") ON CONFLICT (thread_id, agent_id) DO NOTHING");
                } else {
                    sql.push("UPDATE agent_state SET state = ").bind(SqlValue::Json(value));
                    sql.push(", version = ").bind(stored).push(", updated_at = ").bind(at);
                    sql.push(" WHERE thread_id = ").bind(thread.as_uuid()).push(" AND agent_id = ").bind(a.as_str());
                    sql.push(" AND version = ").bind(expected_i);
                }
                if ex.execute("save agent state", sql).await? == 0 {
                    return Err(StoreError::Conflict(format!(
                        "agent state version moved past {expected} while saving (a concurrent save won)"
                    )));
                }
                ex.execute("keep agent state history", history_sql(d, &t, thread, &a, history, stored, at)).await?;
                ex.execute("drop old agent state history", prune_history_sql(d, thread, &a, HISTORY_KEEP)).await?;
                Ok(())
            })
        }),
    )
    .await?;
    Ok(AgentState { thread_id: thread, agent_id: agent.clone(), state, version, updated_at: at })
}

/// Records a saved state in `agent_state_history` under the thread's
/// current `last_seq`, replacing one saved at the same seq.
#[must_use]
pub fn history_sql(
    dialect: crate::Dialect,
    tenant: &TenantId,
    thread: ThreadId,
    agent: &AgentName,
    state: serde_json::Value,
    version: i64,
    at: memlayer_domain::Timestamp,
) -> Sql {
    let mut sql = Sql::new(dialect);
    let tenant_column = if dialect.tenant_on_every_table() { "tenant, " } else { "" };
    sql.push(&format!(
        "INSERT INTO agent_state_history ({tenant_column}thread_id, agent_id, at_seq, state, version, updated_at) SELECT "
    ));
    if dialect.tenant_on_every_table() {
        sql.push("tenant, ");
    }
    sql.push("id, ").bind(agent.as_str()).push(", last_seq, ").bind(SqlValue::Json(state));
    sql.push(", ").bind(version).push(", ").bind(at);
    sql.push(" FROM threads WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ").bind(thread.as_uuid());
    sql.push(
        " ON CONFLICT (thread_id, agent_id, at_seq) DO UPDATE SET state = excluded.state, \
         version = excluded.version, updated_at = excluded.updated_at",
    );
    sql
}

/// Deletes an agent's history on a thread past its newest `keep` seqs (a
/// range of the primary key; nothing while it holds `keep` or fewer).
#[must_use]
pub fn prune_history_sql(dialect: crate::Dialect, thread: ThreadId, agent: &AgentName, keep: u32) -> Sql {
    let mut sql = Sql::new(dialect);
    let (th, ag) = (sql.arg(thread.as_uuid()), sql.arg(agent.as_str()));
    sql.push(&format!(
        "DELETE FROM agent_state_history WHERE thread_id = {th} AND agent_id = {ag} AND at_seq < \
         (SELECT at_seq FROM agent_state_history WHERE thread_id = {th} AND agent_id = {ag} \
         ORDER BY at_seq DESC LIMIT 1 OFFSET "
    ));
    sql.bind(i64::from(keep.saturating_sub(1))).push(")");
    sql
}

/// Implements `memlayer_ports::StateStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! state_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::StateStore for $backend {
            async fn load(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                agent: &::memlayer_domain::AgentName,
            ) -> Result<Option<::memlayer_domain::AgentState>, ::memlayer_ports::StoreError> {
                $crate::state::load(self, who, thread, agent).await
            }

            async fn save(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                agent: &::memlayer_domain::AgentName,
                state: ::serde_json::Value,
                expected: ::memlayer_domain::StateVersion,
            ) -> Result<::memlayer_domain::AgentState, ::memlayer_ports::StoreError> {
                $crate::state::save(self, who, thread, agent, state, expected).await
            }
        }
    };
}
