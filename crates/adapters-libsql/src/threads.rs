//! [`ThreadStore`] on libSQL.

use async_trait::async_trait;
use libsql::Value;
use memlayer_adapters_sql::{Dialect, threads};
use memlayer_domain::{
    Cursor, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch, now,
    to_micros,
};
use memlayer_ports::{StoreError, ThreadStore};

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::rows::{RowReader, THREAD_COLUMNS, query_row, thread};
use crate::values::{json_text, opt_text, text, uuid};

#[async_trait]
impl ThreadStore for LibsqlBackend {
    async fn resource_threads(&self, tenant: &TenantId, resource: &ResourceId) -> Result<Vec<ThreadId>, StoreError> {
        let params = vec![text(tenant.as_str()), text(resource.as_str())];
        self.read(move |conn| async move {
            let mut rows = conn
                .query("SELECT id FROM threads WHERE tenant = ?1 AND resource_id = ?2 ORDER BY id", params)
                .await
                .ctx("list resource threads")?;
            let mut threads = Vec::new();
            while let Some(row) = rows.next().await.ctx("list resource threads")? {
                threads.push(ThreadId::from_uuid(RowReader::new(&row, "threads").uuid(0, "id")?));
            }
            Ok(threads)
        })
        .await
    }

    async fn create(&self, tenant: &TenantId, new: NewThread) -> Result<Thread, StoreError> {
        let at = now();
        let created = threads::created(tenant, new, at);
        let params = vec![
            uuid(created.id.as_uuid()),
            text(tenant.as_str()),
            opt_text(created.resource_id.as_ref().map(|r| r.as_str())),
            opt_text(created.agent_id.as_ref().map(|a| a.as_str())),
            opt_text(created.title.as_ref().map(|t| t.as_str())),
            opt_text(created.model.as_deref()),
            json_text(created.metadata.as_map())?,
            Value::Integer(to_micros(at)),
        ];
        self.write(|conn| async move {
            conn.execute(
                "INSERT INTO threads \
                 (id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)",
                params,
            )
            .await
            .ctx("create thread")?;
            Ok(())
        })
        .await?;
        Ok(created)
    }

    async fn get(&self, tenant: &TenantId, id: ThreadId) -> Result<Thread, StoreError> {
        let tenant = tenant.clone();
        self.read(move |conn| async move {
            query_row(
                &conn,
                "get thread",
                &format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ?1 AND id = ?2"),
                vec![text(tenant.as_str()), uuid(id.as_uuid())],
                |row| thread(row, &tenant),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("thread", id))
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError> {
        let (sql, limit) = threads::listing(Dialect::Sqlite, THREAD_COLUMNS, tenant, filter, cursor, limit)?;
        let (sql, params) = crate::exec::params(sql)?;
        let owner = tenant.clone();
        let items = self
            .read(move |conn| async move {
                let mut rows = conn.query(&sql, params).await.ctx("list threads")?;
                let mut items = Vec::with_capacity(limit.min(64) + 1);
                while let Some(row) = rows.next().await.ctx("list threads")? {
                    items.push(thread(&row, &owner)?);
                }
                Ok(items)
            })
            .await?;
        Ok(threads::page(tenant, filter, items, limit))
    }

    async fn update(&self, tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<Thread, StoreError> {
        if patch.is_empty() {
            return ThreadStore::get(self, tenant, id).await;
        }
        let (sql, params) = update_query(tenant, id, patch)?;
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            query_row(&conn, "update thread", &sql, params, |row| thread(row, &tenant))
                .await?
                .ok_or_else(|| StoreError::not_found("thread", id))
        })
        .await
    }

    async fn delete(&self, tenant: &TenantId, id: ThreadId) -> Result<(), StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |conn| async move {
            query_row(
                &conn,
                "delete thread",
                "SELECT 1 FROM threads WHERE tenant = ?1 AND id = ?2",
                vec![Value::Text(tenant), uuid(id.as_uuid())],
                |_| Ok(()),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("thread", id))?;
            for sql in [
                "DELETE FROM agent_state WHERE thread_id = ?1",
                "DELETE FROM messages WHERE thread_id = ?1",
                "DELETE FROM threads WHERE id = ?1",
            ] {
                conn.execute(sql, vec![uuid(id.as_uuid())]).await.ctx("delete thread")?;
            }
            Ok(())
        })
        .await
    }
}

/// The patch query (written once in `memlayer_adapters_sql::threads`),
/// with its values bound for libSQL: `UPDATE … RETURNING` the whole row.
fn update_query(tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<(String, Vec<Value>), StoreError> {
    crate::exec::params(threads::update_sql(Dialect::Sqlite, THREAD_COLUMNS, tenant, id, patch, now()))
}
