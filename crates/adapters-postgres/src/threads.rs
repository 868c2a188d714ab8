//! [`ThreadStore`] on Postgres.

use async_trait::async_trait;
use memlayer_adapters_sql::Dialect;
use memlayer_domain::{Cursor, NewThread, Page, PageSize, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch, now};
use memlayer_ports::{StoreError, ThreadStore};
use tokio_postgres::types::ToSql;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::Context as _;
use crate::exec::PgArg;
use crate::rows::{THREAD_COLUMNS, thread};

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Borrowed views of boxed parameters, as the driver takes them.
pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

#[async_trait]
impl ThreadStore for PgBackend {
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
            .prepare_cached(&format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = $1 AND id = $2"))
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
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = tx.query(&sql, &params).await.ctx("list threads")?;
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
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        // Messages (with their vectors, jobs and full-text entries) and agent
        // states go by ON DELETE CASCADE, in this statement.
        let stmt = tx.prepare_cached("DELETE FROM threads WHERE tenant = $1 AND id = $2").await.ctx("delete thread")?;
        let deleted = tx.execute(&stmt, &[&tenant.as_str(), &id.as_uuid()]).await.ctx("delete thread")?;
        if deleted == 0 {
            return Err(StoreError::not_found("thread", id));
        }
        tx.commit().await.ctx("delete thread")?;
        Ok(())
    }
}

/// The listing query (written once in `memlayer_adapters_sql::threads`),
/// with its values bound for Postgres.
fn list_query(tenant: &TenantId, filter: &ThreadFilter, after: Option<ThreadId>, limit: usize) -> (String, Vec<PgArg>) {
    let sql = memlayer_adapters_sql::threads::list_sql(Dialect::Postgres, THREAD_COLUMNS, tenant, filter, after, limit);
    let (text, args) = sql.into_parts();
    (text, args.into_iter().map(PgArg).collect())
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
    let sql =
        format!("UPDATE threads SET {} WHERE tenant = $2 AND id = $3 RETURNING {THREAD_COLUMNS}", sets.join(", "));
    (sql, params)
}
