//! [`ThreadStore`] on libSQL.

use async_trait::async_trait;
use libsql::Value;
use memlayer_adapters_sql::Dialect;
use memlayer_domain::{
    Cursor, NewThread, Page, PageSize, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch, now, to_micros,
};
use memlayer_ports::{StoreError, ThreadStore};

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::rows::{THREAD_COLUMNS, query_row, thread};
use crate::values::{json_text, opt_text, text, uuid};

#[async_trait]
impl ThreadStore for LibsqlBackend {
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
        filter.check()?;
        let after = cursor.map(|c| c.for_threads(tenant, filter)).transpose()?;
        let limit = usize::try_from(limit.get()).unwrap_or(usize::MAX);
        let (sql, params) = list_query(tenant, filter, after, limit)?;
        let tenant = tenant.clone();
        let filter = filter.clone();
        self.read(move |conn| async move {
            let mut rows = conn.query(&sql, params).await.ctx("list threads")?;
            let mut items = Vec::with_capacity(limit.min(64) + 1);
            while let Some(row) = rows.next().await.ctx("list threads")? {
                items.push(thread(&row, &tenant)?);
            }
            let next_cursor = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|t| Cursor::threads(&tenant, &filter, t.id))
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
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

/// The listing query (written once in `memlayer_adapters_sql::threads`),
/// with its values bound for libSQL.
pub(crate) fn list_query(
    tenant: &TenantId,
    filter: &ThreadFilter,
    after: Option<ThreadId>,
    limit: usize,
) -> Result<(String, Vec<Value>), StoreError> {
    crate::exec::params(memlayer_adapters_sql::threads::list_sql(
        Dialect::Sqlite,
        THREAD_COLUMNS,
        tenant,
        filter,
        after,
        limit,
    ))
}

/// The patch query: `UPDATE … RETURNING` the whole row, `NotFound` on no row.
fn update_query(tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<(String, Vec<Value>), StoreError> {
    let mut sets = vec!["updated_at = ?1".to_owned()];
    let mut params = vec![Value::Integer(to_micros(now())), text(tenant.as_str()), uuid(id.as_uuid())];
    let mut set = |column: &str, value: Value| {
        params.push(value);
        sets.push(format!("{column} = ?{}", params.len()));
    };
    if let Some(title) = patch.title {
        set("title", opt_text(title.as_ref().map(|t| t.as_str())));
    }
    if let Some(resource) = patch.resource_id {
        set("resource_id", opt_text(resource.as_ref().map(|r| r.as_str())));
    }
    if let Some(agent) = patch.agent_id {
        set("agent_id", opt_text(agent.as_ref().map(|a| a.as_str())));
    }
    if let Some(model) = patch.model {
        set("model", opt_text(model.as_deref()));
    }
    if let Some(metadata) = patch.metadata {
        set("metadata", json_text(metadata.as_map())?);
    }
    let sql =
        format!("UPDATE threads SET {} WHERE tenant = ?2 AND id = ?3 RETURNING {THREAD_COLUMNS}", sets.join(", "));
    Ok((sql, params))
}
