//! [`ThreadStore`] on Postgres.

use async_trait::async_trait;
use memlayer_domain::{
    Cursor, DomainError, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch,
    now,
};
use memlayer_ports::{StoreError, Sweep, ThreadStore};
use tokio_postgres::types::ToSql;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::Context as _;
use crate::rows::{RowReader, THREAD_COLUMNS, thread};

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
        rows.iter().map(|row| Ok(ThreadId::from_uuid(RowReader::new(row, "threads").get("id")?))).collect()
    }

    async fn create(&self, tenant: &TenantId, new: NewThread) -> Result<Thread, StoreError> {
        let at = now();
        let created = Thread {
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
        };
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
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL"
            ))
            .await
            .ctx("get thread")?;
        let row = tx.query_opt(&stmt, &[&tenant.as_str(), &id.as_uuid()]).await.ctx("get thread")?;
        tx.commit().await.ctx("get thread")?;
        row.as_ref().map(thread).transpose()?.ok_or_else(|| StoreError::not_found("thread", id))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError> {
        filter.check()?;
        let after = cursor.map(|c| c.for_threads(tenant, filter)).transpose()?;
        let limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
        let (sql, params) = list_query(tenant, filter, after, limit);
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        // Not `prepare_cached`: the text varies with the filter (which
        // fields, how many metadata pairs), and every distinct text would
        // stay in the connection's statement cache for its lifetime.
        let rows = tx.query(&sql, &refs(&params)).await.ctx("list threads")?;
        tx.commit().await.ctx("list threads")?;
        let mut items = rows.iter().map(thread).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| Cursor::threads(tenant, filter, t.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<Thread, StoreError> {
        if patch.is_empty() {
            return ThreadStore::get(self, tenant, id).await;
        }
        let (sql, params) = update_query(tenant, id, patch);
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        // Not `prepare_cached`: the text varies with the patched fields.
        let row = tx.query_opt(&sql, &refs(&params)).await.ctx("update thread")?;
        tx.commit().await.ctx("update thread")?;
        row.as_ref().map(thread).transpose()?.ok_or_else(|| StoreError::not_found("thread", id))
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

/// The listing query: fixed SQL fragments with numbered parameters; no
/// caller-supplied text ever becomes SQL.
fn list_query(tenant: &TenantId, filter: &ThreadFilter, after: Option<ThreadId>, limit: usize) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = $1 AND deleted_at IS NULL");
    let mut params: Vec<Param> = vec![Box::new(tenant.as_str().to_owned())];
    let bind = |params: &mut Vec<Param>, value: Param| {
        params.push(value);
        params.len()
    };
    if let Some(after) = after {
        let n = bind(&mut params, Box::new(after.as_uuid()));
        sql.push_str(&format!(" AND id < ${n}"));
    }
    if let Some(resource) = &filter.resource_id {
        let n = bind(&mut params, Box::new(resource.as_str().to_owned()));
        sql.push_str(&format!(" AND resource_id = ${n}"));
    }
    if let Some(agent) = &filter.agent_id {
        let n = bind(&mut params, Box::new(agent.as_str().to_owned()));
        sql.push_str(&format!(" AND agent_id = ${n}"));
    }
    for m in &filter.metadata {
        let key = bind(&mut params, Box::new(m.key().to_owned()));
        let value = bind(&mut params, Box::new(m.value().clone()));
        // jsonb equality: same JSON type and value; `true` never matches 1,
        // a missing key (SQL NULL) never matches `null`.
        sql.push_str(&format!(" AND metadata -> ${key}::text = ${value}::jsonb"));
    }
    let n = bind(&mut params, Box::new(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${n}"));
    (sql, params)
}

/// The patch query: `UPDATE … RETURNING` the whole row, `NotFound` on no row.
fn update_query(tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> (String, Vec<Param>) {
    let mut sets = vec!["updated_at = $1".to_owned()];
    let mut params: Vec<Param> = vec![Box::new(now()), Box::new(tenant.as_str().to_owned()), Box::new(id.as_uuid())];
    let mut set = |column: &str, value: Param| {
        params.push(value);
        sets.push(format!("{column} = ${}", params.len()));
    };
    if let Some(title) = patch.title {
        set("title", Box::new(title.map(|t| t.as_str().to_owned())));
    }
    if let Some(resource) = patch.resource_id {
        set("resource_id", Box::new(resource.map(|r| r.as_str().to_owned())));
    }
    if let Some(agent) = patch.agent_id {
        set("agent_id", Box::new(agent.map(|a| a.as_str().to_owned())));
    }
    if let Some(model) = patch.model {
        set("model", Box::new(model));
    }
    if let Some(metadata) = patch.metadata {
        set("metadata", Box::new(serde_json::Value::Object(metadata.into_map())));
    }
    let sql = format!(
        "UPDATE threads SET {} WHERE tenant = $2 AND id = $3 AND deleted_at IS NULL RETURNING {THREAD_COLUMNS}",
        sets.join(", ")
    );
    (sql, params)
}
