//! [`DeletionLog`] on Postgres (migration 22): the statement trigger
//! `messages_deletion_log` logs the messages a statement deletes from live
//! threads, `threads_deletion_log` every thread marked deleted, in the
//! deleting transaction. Transactions commit in any order, so a cursor is
//! the newest number read plus the transactions in progress at that read:
//! their entries, numbered lower perhaps, are read again until they end.
//! A read's entries and that list come from one statement, so from one
//! snapshot.

use async_trait::async_trait;
use memlayer_domain::{DomainError, MessageId, TenantId, ThreadId, Timestamp};
use memlayer_ports::{Deletion, DeletionCursor, DeletionLog, Deletions, StoreError};

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, corrupt};

/// The transactions in progress in the statement's snapshot.
const IN_PROGRESS: &str = "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) x)";

#[async_trait]
impl DeletionLog for PgBackend {
    async fn deletion_cursor(&self) -> Result<DeletionCursor, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let sql = format!(
            "SELECT greatest(coalesce((SELECT max(seq) FROM deletion_log), 0), \
             (SELECT through FROM deletion_log_horizon)), {IN_PROGRESS}"
        );
        let stmt = tx.prepare_cached(&sql).await.ctx("read deletion log")?;
        let row = tx.query_one(&stmt, &[]).await.ctx("read deletion log")?;
        tx.commit().await.ctx("read deletion log")?;
        Ok(DeletionCursor {
            seq: row.try_get::<_, Option<i64>>(0).ctx("read deletion log")?.unwrap_or(0),
            pending: row.try_get(1).ctx("read deletion log")?,
        })
    }

    async fn deletions_since(&self, cursor: &DeletionCursor, limit: u32) -> Result<Deletions, StoreError> {
        if limit == 0 {
            return Err(DomainError::new("limit", "must be at least 1").into());
        }
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        // Row 0 carries the snapshot's transactions in progress and the
        // purge horizon; the others are the entries.
        let sql = format!(
            "SELECT 0 AS kind, NULL::bigint AS seq, NULL::text AS tenant, NULL::uuid AS thread_id, \
             NULL::uuid AS message_id, {IN_PROGRESS} AS pending, (SELECT through FROM deletion_log_horizon) AS through \
             UNION ALL (SELECT 1, seq, tenant, thread_id, message_id, NULL, NULL FROM deletion_log \
             WHERE seq > $1 OR xid = ANY($2) ORDER BY seq LIMIT $3)"
        );
        let stmt = tx.prepare_cached(&sql).await.ctx("read deletion log")?;
        let rows =
            tx.query(&stmt, &[&cursor.seq, &cursor.pending, &i64::from(limit)]).await.ctx("read deletion log")?;
        tx.commit().await.ctx("read deletion log")?;
        let (mut page, mut through) = (Deletions::default(), 0);
        let mut entries: Vec<(i64, Deletion)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: i32 = row.try_get(0).ctx("read deletion log")?;
            if kind == 0 {
                page.next.pending = row.try_get(5).ctx("read deletion log")?;
                through = row.try_get::<_, Option<i64>>(6).ctx("read deletion log")?.unwrap_or(0);
                continue;
            }
            let seq: Option<i64> = row.try_get(1).ctx("read deletion log")?;
            let tenant: Option<String> = row.try_get(2).ctx("read deletion log")?;
            let thread: Option<uuid::Uuid> = row.try_get(3).ctx("read deletion log")?;
            let message: Option<uuid::Uuid> = row.try_get(4).ctx("read deletion log")?;
            let (Some(seq), Some(tenant), Some(thread)) = (seq, tenant, thread) else {
                return Err(corrupt("deletion_log", "seq", "an entry without its number, tenant or thread"));
            };
            let tenant = TenantId::parse(tenant).map_err(|e| corrupt("deletion_log", "tenant", e))?;
            let deletion =
                Deletion { tenant, thread: ThreadId::from_uuid(thread), message: message.map(MessageId::from_uuid) };
            entries.push((seq, deletion));
        }
        entries.sort_by_key(|(seq, _)| *seq);
        page.more = entries.len() >= limit as usize;
        page.next.seq = entries.iter().map(|(seq, _)| *seq).fold(cursor.seq, i64::max);
        page.lost = through > cursor.seq;
        page.items = entries.into_iter().map(|(_, d)| d).collect();
        Ok(page)
    }

    async fn purge_deletions(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(
                "WITH gone AS (DELETE FROM deletion_log WHERE seq IN (SELECT seq FROM deletion_log \
                 ORDER BY seq LIMIT $2) AND created_at < $1 RETURNING seq), \
                 moved AS (UPDATE deletion_log_horizon SET through = greatest(through, (SELECT max(seq) FROM gone)) \
                 WHERE EXISTS (SELECT 1 FROM gone)) \
                 SELECT count(*) FROM gone",
            )
            .await
            .ctx("purge deletion log")?;
        let row = tx.query_one(&stmt, &[&before, &i64::from(limit)]).await.ctx("purge deletion log")?;
        tx.commit().await.ctx("purge deletion log")?;
        let n: i64 = row.try_get(0).ctx("purge deletion log")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
