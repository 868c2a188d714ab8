//! [`StateStore`] on libSQL: optimistic concurrency on a version number.

use async_trait::async_trait;
use libsql::Value;
use memlayer_domain::{AgentId, AgentState, StateVersion, TenantId, ThreadId, from_micros, now, to_micros};
use memlayer_ports::{StateStore, StoreError};

use crate::LibsqlBackend;
use crate::error::{Context as _, DriverError, corrupt};
use crate::rows::{RowReader, query_row};
use crate::values::{json_text, text, uuid};

/// `?1` tenant, `?2` thread, `?3` agent: one row when the thread exists, with
/// NULL state columns when the agent has none.
const CURRENT: &str = "SELECT a.state, a.version, a.updated_at FROM threads t \
     LEFT JOIN agent_state a ON a.thread_id = t.id AND a.agent_id = ?3 \
     WHERE t.tenant = ?1 AND t.id = ?2 AND t.deleted_at IS NULL";

#[async_trait]
impl StateStore for LibsqlBackend {
    async fn load(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        agent: &AgentId,
    ) -> Result<Option<AgentState>, StoreError> {
        let params = vec![text(tenant.as_str()), uuid(thread.as_uuid()), text(agent.as_str())];
        let agent = agent.clone();
        self.read(move |conn| async move {
            query_row(&conn, "load agent state", CURRENT, params, |row| {
                let r = RowReader::new(row, "agent_state");
                let Some(version) = r.opt_int(1, "version")? else {
                    return Ok(None);
                };
                Ok(Some(AgentState {
                    thread_id: thread,
                    agent_id: agent,
                    state: r.parse(0, "state", |s| serde_json::from_str(&s))?,
                    version: StateVersion::try_from(version).map_err(|e| corrupt("agent_state", "version", e))?,
                    updated_at: from_micros(r.int(2, "updated_at")?),
                }))
            })
            .await?
            .ok_or_else(|| StoreError::not_found("thread", thread))
        })
        .await
    }

    async fn save(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        agent: &AgentId,
        state: serde_json::Value,
        expected: StateVersion,
    ) -> Result<AgentState, StoreError> {
        AgentState::validate(&state)?;
        let version = AgentState::next_version(expected)?;
        let state_text = json_text(&state)?;
        let at = now();
        let lookup = vec![text(tenant.as_str()), uuid(thread.as_uuid()), text(agent.as_str())];
        let agent = agent.clone();
        self.write(move |conn| async move {
            let current = query_row(&conn, "save agent state", CURRENT, lookup, |row| {
                match RowReader::new(row, "agent_state").opt_int(1, "version")? {
                    None => Ok(0),
                    Some(v) => StateVersion::try_from(v).map_err(|e| corrupt("agent_state", "version", e)),
                }
            })
            .await?
            .ok_or_else(|| StoreError::not_found("thread", thread))?;
            if current != expected {
                return Err(StoreError::Conflict(format!("agent state version is {current}, expected {expected}")));
            }
            let stored = i64::try_from(version)
                .map_err(|_| StoreError::backend(DriverError::new("save agent state", "version overflow")))?;
            conn.execute(
                "INSERT INTO agent_state (thread_id, agent_id, state, version, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (thread_id, agent_id) DO UPDATE SET \
                 state = excluded.state, version = excluded.version, updated_at = excluded.updated_at",
                vec![
                    uuid(thread.as_uuid()),
                    text(agent.as_str()),
                    state_text,
                    Value::Integer(stored),
                    Value::Integer(to_micros(at)),
                ],
            )
            .await
            .ctx("save agent state")?;
            Ok(AgentState { thread_id: thread, agent_id: agent, state, version, updated_at: at })
        })
        .await
    }
}
