//! [`ThreadStore`] on libSQL.

use async_trait::async_trait;
use libsql::Value;
use memlayer_adapters_sql::threads;
use memlayer_domain::{
    Cursor, DomainError, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch,
    now, to_micros,
};
use memlayer_ports::{StoreError, Sweep, ThreadStore};

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::rows::{cells, query_row};
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
                threads.push(ThreadId::from_uuid(cells(&row, "threads").uuid(0, "id")?));
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
            let Some(thread) =
                query_row(&conn, "sweep deleted threads", NEXT_MARKED, (), |row| cells(row, "threads").blob(0, "id"))
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
