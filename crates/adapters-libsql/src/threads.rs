//! [`ThreadStore`] on libSQL.

use async_trait::async_trait;
use libsql::Value;
use memlayer_domain::{
    Cursor, DomainError, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch,
    now, to_micros,
};
use memlayer_ports::{StoreError, Sweep, ThreadStore};

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
                .query(
                    "SELECT id FROM threads WHERE tenant = ?1 AND resource_id = ?2 AND deleted_at IS NULL ORDER BY id",
                    params,
                )
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
                &format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL"),
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
        // Only the mark, one row whatever the thread's size: from this commit
        // on every query leaves the thread out; `sweep_deleted` removes its
        // messages later in bounded transactions.
        let params = vec![Value::Integer(to_micros(now())), text(tenant.as_str()), uuid(id.as_uuid())];
        self.write(move |conn| async move {
            let marked = conn
                .execute(
                    "UPDATE threads SET deleted_at = ?1 WHERE tenant = ?2 AND id = ?3 AND deleted_at IS NULL",
                    params,
                )
                .await
                .ctx("delete thread")?;
            if marked == 0 {
                return Err(StoreError::not_found("thread", id));
            }
            Ok(())
        })
        .await
    }

    async fn sweep_deleted(&self, max_messages: u32) -> Result<Sweep, StoreError> {
        if max_messages == 0 {
            return Err(StoreError::Invalid(DomainError::new("max_messages", "must be at least 1")));
        }
        self.write(move |conn| async move {
            let Some(thread) = query_row(&conn, "sweep deleted threads", NEXT_MARKED, (), |row| {
                RowReader::new(row, "threads").blob(0, "id")
            })
            .await?
            else {
                return Ok(Sweep::default());
            };
            // Oldest first; the delete trigger removes each message's vectors
            // and job and queues its full-text entry for the catch-up (it
            // finds the tenant through the thread row, still present).
            let messages = conn
                .execute(SWEEP_MESSAGES, vec![Value::Blob(thread.clone()), Value::Integer(i64::from(max_messages))])
                .await
                .ctx("sweep deleted thread's messages")?;
            let mut threads = 0;
            if messages < u64::from(max_messages) {
                conn.execute("DELETE FROM agent_state WHERE thread_id = ?1", vec![Value::Blob(thread.clone())])
                    .await
                    .ctx("sweep deleted thread's state")?;
                threads = conn
                    .execute("DELETE FROM threads WHERE id = ?1 AND deleted_at IS NOT NULL", vec![Value::Blob(thread)])
                    .await
                    .ctx("sweep deleted thread")?;
            }
            let more = query_row(&conn, "sweep deleted threads", NEXT_MARKED, (), |_| Ok(())).await?.is_some();
            Ok(Sweep { messages, threads, more })
        })
        .await
    }
}

/// `?1` thread, `?2` chunk: its oldest messages, found by a range search of
/// `messages_thread_seq`.
pub(crate) const SWEEP_MESSAGES: &str = "DELETE FROM messages WHERE rowid IN \
     (SELECT rowid FROM messages WHERE thread_id = ?1 ORDER BY seq LIMIT ?2)";

/// The marked thread to sweep next: the oldest mark (partial index
/// `threads_deleted`, migration 9).
pub(crate) const NEXT_MARKED: &str =
    "SELECT id FROM threads WHERE deleted_at IS NOT NULL ORDER BY deleted_at, id LIMIT 1";

/// The listing query: fixed SQL fragments with numbered parameters; no
/// caller-supplied text ever becomes SQL.
pub(crate) fn list_query(
    tenant: &TenantId,
    filter: &ThreadFilter,
    after: Option<ThreadId>,
    limit: usize,
) -> Result<(String, Vec<Value>), StoreError> {
    let mut sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ?1 AND deleted_at IS NULL");
    let mut params = vec![text(tenant.as_str())];
    let bind = |params: &mut Vec<Value>, value: Value| {
        params.push(value);
        params.len()
    };
    if let Some(after) = after {
        let n = bind(&mut params, uuid(after.as_uuid()));
        sql.push_str(&format!(" AND id < ?{n}"));
    }
    if let Some(resource) = &filter.resource_id {
        let n = bind(&mut params, text(resource.as_str()));
        sql.push_str(&format!(" AND resource_id = ?{n}"));
    }
    if let Some(agent) = &filter.agent_id {
        let n = bind(&mut params, text(agent.as_str()));
        sql.push_str(&format!(" AND agent_id = ?{n}"));
    }
    for m in &filter.metadata {
        // The key is validated by the domain (letters, digits, `_`, `-`), so
        // quoting it in a JSON path is safe; the path is still a parameter.
        let path = bind(&mut params, text(format!("$.\"{}\"", m.key())));
        let value = bind(&mut params, json_text(m.value())?);
        // Same JSON type and same value: `true` never matches 1, a missing
        // key never matches `null`.
        sql.push_str(&format!(
            " AND json_type(metadata, ?{path}) = json_type(?{value}) \
             AND json_extract(metadata, ?{path}) IS json_extract(?{value}, '$')"
        ));
    }
    let n = bind(&mut params, Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{n}"));
    Ok((sql, params))
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
    let sql = format!(
        "UPDATE threads SET {} WHERE tenant = ?2 AND id = ?3 AND deleted_at IS NULL RETURNING {THREAD_COLUMNS}",
        sets.join(", ")
    );
    Ok((sql, params))
}
