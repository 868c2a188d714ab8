//! [`DeletionLog`] on libSQL (migration 22): the triggers of
//! `messages_deletion_log` and `threads_deletion_log` log every deleted
//! message (its position too: the in-process full-text index's key) and
//! every thread marked deleted in the deleting statement. One writer
//! commits in order, so a cursor is a sequence number alone. The backend's
//! own in-process full-text index follows the log in the catch-up
//! (`LibsqlBackend::follow_deletions`).

use async_trait::async_trait;
use memlayer_domain::{DomainError, MessageId, TenantId, ThreadId, Timestamp, to_micros};
use memlayer_ports::{Deletion, DeletionCursor, DeletionLog, Deletions, StoreError};

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::rows::{cells, query_row};

/// The newest sequence number logged (or purged, when the log is empty).
const NEWEST: &str = "SELECT max(coalesce((SELECT max(seq) FROM deletion_log), 0), \
     (SELECT through FROM deletion_log_horizon)) AS seq";

/// The newest sequence number purged.
const HORIZON: &str = "SELECT through FROM deletion_log_horizon";

#[async_trait]
impl DeletionLog for LibsqlBackend {
    async fn deletion_cursor(&self) -> Result<DeletionCursor, StoreError> {
        let seq = self.read(|conn| async move { newest(&conn).await }).await?;
        Ok(DeletionCursor { seq, pending: Vec::new() })
    }

    async fn deletions_since(&self, cursor: &DeletionCursor, limit: u32) -> Result<Deletions, StoreError> {
        if limit == 0 {
            return Err(DomainError::new("limit", "must be at least 1").into());
        }
        let after = cursor.seq;
        self.read(move |conn| async move {
            let through = horizon(&conn).await?;
            let mut rows = conn
                .query(
                    "SELECT seq, tenant, thread_id, message_id FROM deletion_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    [after, i64::from(limit)],
                )
                .await
                .ctx("read deletion log")?;
            let (mut items, mut last) = (Vec::new(), after);
            while let Some(row) = rows.next().await.ctx("read deletion log")? {
                let r = cells(&row, "deletion_log");
                last = r.int(0, "seq")?;
                let message = match r.opt_blob(3, "message_id")? {
                    Some(_) => Some(MessageId::from_uuid(r.uuid(3, "message_id")?)),
                    None => None,
                };
                items.push(Deletion {
                    tenant: r.parse(1, "tenant", TenantId::parse)?,
                    thread: ThreadId::from_uuid(r.uuid(2, "thread_id")?),
                    message,
                });
            }
            let more = items.len() >= limit as usize;
            Ok(Deletions {
                items,
                next: DeletionCursor { seq: last, pending: Vec::new() },
                more,
                lost: through > after,
            })
        })
        .await
    }

    async fn purge_deletions(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        // This process's own full-text index reads what is to go first, so
        // its own purge never makes it miss an entry.
        if self.lexical().is_some() {
            self.catch_up().await?;
        }
        let params = [to_micros(before), i64::from(limit)];
        self.write(move |conn| async move {
            let mut rows = conn
                .query(
                    "DELETE FROM deletion_log WHERE seq IN \
                     (SELECT seq FROM deletion_log ORDER BY seq LIMIT ?2) AND created_at < ?1 RETURNING seq",
                    params,
                )
                .await
                .ctx("purge deletion log")?;
            let (mut n, mut through) = (0u64, 0i64);
            while let Some(row) = rows.next().await.ctx("purge deletion log")? {
                n += 1;
                through = through.max(cells(&row, "deletion_log").int(0, "seq")?);
            }
            drop(rows);
            if n > 0 {
                conn.execute("UPDATE deletion_log_horizon SET through = max(through, ?1)", [through])
                    .await
                    .ctx("purge deletion log")?;
            }
            Ok(n)
        })
        .await
    }
}

/// The newest sequence number logged or purged.
pub(crate) async fn newest(conn: &libsql::Connection) -> Result<i64, StoreError> {
    Ok(query_row(conn, "read deletion log", NEWEST, (), |row| cells(row, "deletion_log").int(0, "seq"))
        .await?
        .unwrap_or(0))
}

/// The newest sequence number purged.
pub(crate) async fn horizon(conn: &libsql::Connection) -> Result<i64, StoreError> {
    Ok(query_row(conn, "read deletion log", HORIZON, (), |row| cells(row, "deletion_log_horizon").int(0, "through"))
        .await?
        .unwrap_or(0))
}
