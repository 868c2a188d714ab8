//! [`ThreadStore`] on Postgres.

use async_trait::async_trait;
use memlayer_adapters_sql::{Cells, threads};
use memlayer_domain::{
    Cursor, DomainError, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch,
    now,
};
use memlayer_ports::{StoreError, Sweep, ThreadStore};
use tokio_postgres::types::ToSql;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::Context as _;
use crate::exec::PgRow;

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Borrowed views of boxed parameters, as the driver takes them.
pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

#[async_trait]
impl ThreadStore for PgBackend {
    async fn resource_threads(&self, tenant: &TenantId, resource: &ResourceId) -> Result<Vec<ThreadId>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let stmt = tx
            .prepare_cached(
                "SELECT id FROM threads WHERE tenant = $1 AND resource_id = $2 AND deleted_at IS NULL ORDER BY id",
            )
            .await
            .ctx("list resource threads")?;
        let rows = tx.query(&stmt, &[&tenant.as_str(), &resource.as_str()]).await.ctx("list resource threads")?;
        tx.commit().await.ctx("list resource threads")?;
        rows.iter().map(|row| Ok(ThreadId::from_uuid(Cells::of(PgRow(row), "threads").uuid(0, "id")?))).collect()
    }

    async fn create(&self, tenant: &TenantId, new: NewThread) -> Result<Thread, StoreError> {
        let at = now();
        let created = threads::created(tenant, new, at);
        let metadata = serde_json::Value::Object(created.metadata.as_map().clone());
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO threads \
                 (id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
            )
            .await
            .ctx("create thread")?;
        tx.execute(
            &stmt,
            &[
                &created.id.as_uuid(),
                &tenant.as_str(),
                &created.resource_id.as_ref().map(|r| r.as_str()),
                &created.agent_id.as_ref().map(|a| a.as_str()),
                &created.title.as_ref().map(|t| t.as_str()),
                &created.model.as_deref(),
                &metadata,
                &at,
            ],
        )
        .await
        .ctx("create thread")?;
        tx.commit().await.ctx("create thread")?;
        Ok(created)
    }

    async fn get(&self, tenant: &TenantId, id: ThreadId) -> Result<Thread, StoreError> {
        threads::get(self, tenant, id).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError> {
        threads::list(self, tenant, filter, cursor, limit).await
    }

    async fn update(&self, tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<Thread, StoreError> {
        threads::update(self, tenant, id, patch, now()).await
    }

    async fn delete(&self, tenant: &TenantId, id: ThreadId) -> Result<(), StoreError> {
        // Only the mark, one row whatever the thread's size: from this commit
        // on every query leaves the thread out; `sweep_deleted` removes its
        // messages (vectors and jobs by cascade) later in bounded transactions.
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let stmt = tx
            .prepare_cached("UPDATE threads SET deleted_at = $3 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL")
            .await
            .ctx("delete thread")?;
        let marked = tx.execute(&stmt, &[&tenant.as_str(), &id.as_uuid(), &now()]).await.ctx("delete thread")?;
        if marked == 0 {
            return Err(StoreError::not_found("thread", id));
        }
        tx.commit().await.ctx("delete thread")?;
        Ok(())
    }

    async fn sweep_deleted(&self, max_messages: u32) -> Result<Sweep, StoreError> {
        if max_messages == 0 {
            return Err(StoreError::Invalid(DomainError::new("max_messages", "must be at least 1")));
        }
        let mut client = self.client().await?;
        // Every tenant's marked threads: the sweeper serves them all.
        let tx = begin(&mut client, Access::All).await?;
        let next =
            tx.prepare_cached(&format!("{NEXT_MARKED} FOR UPDATE SKIP LOCKED")).await.ctx("sweep deleted threads")?;
        let any = tx.prepare_cached(NEXT_MARKED).await.ctx("sweep deleted threads")?;
        let Some(row) = tx.query_opt(&next, &[]).await.ctx("sweep deleted threads")? else {
            // Every marked thread (if any) is another sweeper's right now.
            let more = tx.query_opt(&any, &[]).await.ctx("sweep deleted threads")?.is_some();
            tx.commit().await.ctx("sweep deleted threads")?;
            return Ok(Sweep { more, ..Sweep::default() });
        };
        let thread: uuid::Uuid = row.try_get(0).ctx("sweep deleted threads")?;
        // Oldest first; vectors and jobs go by ON DELETE CASCADE.
        let chunk = tx
            .prepare_cached(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE thread_id = $1 ORDER BY seq LIMIT $2)",
            )
            .await
            .ctx("sweep deleted thread's messages")?;
        let messages =
            tx.execute(&chunk, &[&thread, &i64::from(max_messages)]).await.ctx("sweep deleted thread's messages")?;
        let mut threads = 0;
        if messages < u64::from(max_messages) {
            // Agent states go by ON DELETE CASCADE.
            let row = tx
                .prepare_cached("DELETE FROM threads WHERE id = $1 AND deleted_at IS NOT NULL")
                .await
                .ctx("sweep deleted thread")?;
            threads = tx.execute(&row, &[&thread]).await.ctx("sweep deleted thread")?;
        }
        let more = tx.query_opt(&any, &[]).await.ctx("sweep deleted threads")?.is_some();
        tx.commit().await.ctx("sweep deleted threads")?;
        Ok(Sweep { messages, threads, more })
    }
}

/// The marked thread to sweep next: the oldest mark (partial index
/// `threads_deleted`, migration 9). The sweep locks it `SKIP LOCKED`, so
/// sweepers of several servers on one database take different threads.
const NEXT_MARKED: &str = "SELECT id FROM threads WHERE deleted_at IS NOT NULL ORDER BY deleted_at, id LIMIT 1";
