//! [`StateStore`] on Postgres: optimistic concurrency on a version number.

use async_trait::async_trait;
use memlayer_domain::{AgentId, AgentState, StateVersion, TenantId, ThreadId, now};
use memlayer_ports::{StateStore, StoreError};

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, corrupt};
use crate::rows::RowReader;

/// `$1` tenant, `$2` thread, `$3` agent: one row when the thread exists, with
/// NULL state columns when the agent has none.
const CURRENT: &str = "SELECT a.state, a.version, a.updated_at FROM threads t \
     LEFT JOIN agent_state a ON a.thread_id = t.id AND a.agent_id = $3 \
     WHERE t.tenant = $1 AND t.id = $2 AND t.deleted_at IS NULL";

#[async_trait]
impl StateStore for PgBackend {
    async fn load(
        &self,
        tenant: &TenantId,
        thread: ThreadId,
        agent: &AgentId,
    ) -> Result<Option<AgentState>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let stmt = tx.prepare_cached(CURRENT).await.ctx("load agent state")?;
        let row = tx
            .query_opt(&stmt, &[&tenant.as_str(), &thread.as_uuid(), &agent.as_str()])
            .await
            .ctx("load agent state")?
            .ok_or_else(|| StoreError::not_found("thread", thread))?;
        tx.commit().await.ctx("load agent state")?;
        let r = RowReader::new(&row, "agent_state");
        let Some(version) = r.get::<Option<i64>>("version")? else {
            return Ok(None);
        };
        Ok(Some(AgentState {
            thread_id: thread,
            agent_id: agent.clone(),
            state: r.get("state")?,
            version: StateVersion::try_from(version).map_err(|e| corrupt("agent_state", "version", e))?,
            updated_at: r.get("updated_at")?,
        }))
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
        let at = now();
        let version = AgentState::next_version(expected)?;
        // `next_version` bounds `expected` so both fit a bigint; should that
        // bound ever move, the caller's number is still a 400, not a 500.
        let (stored, expected_i) = match (i64::try_from(version), i64::try_from(expected)) {
            (Ok(v), Ok(e)) => (v, e),
            _ => {
                return Err(memlayer_domain::DomainError::new(
                    "expected_version",
                    format!("is {expected}, beyond what Postgres stores (a bigint)"),
                )
                .into());
            }
        };
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let current = tx.prepare_cached(CURRENT).await.ctx("save agent state")?;
        let row = tx
            .query_opt(&current, &[&tenant.as_str(), &thread.as_uuid(), &agent.as_str()])
            .await
            .ctx("save agent state")?
            .ok_or_else(|| StoreError::not_found("thread", thread))?;
        let seen = RowReader::new(&row, "agent_state").get::<Option<i64>>("version")?.unwrap_or(0);
        if seen != expected_i {
            return Err(StoreError::Conflict(format!("agent state version is {seen}, expected {expected}")));
        }
        // The write re-checks the version itself: of two savers that both
        // read `expected`, the second finds the row taken (insert) or its
        // version moved (update, re-evaluated after the first commits).
        let sql = if expected == 0 {
            "INSERT INTO agent_state (tenant, thread_id, agent_id, state, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (thread_id, agent_id) DO NOTHING"
        } else {
            "UPDATE agent_state SET state = $4, version = $5, updated_at = $6 \
             WHERE tenant = $1 AND thread_id = $2 AND agent_id = $3 AND version = $7"
        };
        let stmt = tx.prepare_cached(sql).await.ctx("save agent state")?;
        let (tenant_s, thread_u, agent_s) = (tenant.as_str(), thread.as_uuid(), agent.as_str());
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&tenant_s, &thread_u, &agent_s, &state, &stored, &at, &expected_i];
        let n = if expected == 0 { 6 } else { 7 };
        let written = tx.execute(&stmt, &params[..n]).await.ctx("save agent state")?;
        if written == 0 {
            return Err(StoreError::Conflict(format!(
                "agent state version moved past {expected} while saving (a concurrent save won)"
            )));
        }
        tx.commit().await.ctx("save agent state")?;
        Ok(AgentState { thread_id: thread, agent_id: agent.clone(), state, version, updated_at: at })
    }
}
