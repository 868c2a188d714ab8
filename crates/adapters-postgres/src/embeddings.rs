//! [`memlayer_ports::EmbeddingStore`] on Postgres (its shared rules in
//! `memlayer_adapters_sql::embeddings`): the embedding job queue, stored vectors
//! (pgvector `vector`, with model and dimension) and full-text search over
//! the `tsvector` column of migration 2.

use async_trait::async_trait;
use futures_util::future::try_join_all;
use memlayer_adapters_sql::Cells;
use memlayer_adapters_sql::embeddings::{self, Due, EmbeddingEngine};
use memlayer_domain::{
    COVERAGE_COUNT_LIMIT, Coverage, Embedding, EmbeddingCounts, MessageId, TenantId, ThreadId, Timestamp, now,
};
use memlayer_ports::{PendingEmbedding, ScoredHit, SearchFilter, StoreError, ThreadSelection, VectorEntry};
use pgvector::Vector;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, corrupt};
use crate::exec::{PgRow, row_values};
use crate::threads::{Param, refs};

memlayer_adapters_sql::embedding_store!(PgBackend);

#[async_trait]
impl EmbeddingEngine for PgBackend {
    async fn due_jobs(&self, due: Due) -> Result<Vec<PendingEmbedding>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx.prepare_cached(DUE_JOBS).await.ctx("read embedding jobs")?;
        let rows = tx.query(&stmt, &[&due.now, &int(due.limit.get())]).await.ctx("read embedding jobs")?;
        tx.commit().await.ctx("read embedding jobs")?;
        rows.iter().map(pending).collect()
    }

    async fn claim_jobs(&self, due: Due, lease_until: Timestamp) -> Result<Vec<PendingEmbedding>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx.prepare_cached(CLAIM_JOBS).await.ctx("claim embedding jobs")?;
        let limit = int(due.limit.get());
        let rows = tx.query(&stmt, &[&due.now, &limit, &lease_until]).await.ctx("claim embedding jobs")?;
        tx.commit().await.ctx("claim embedding jobs")?;
        rows.iter().map(pending).collect()
    }

    async fn complete_jobs(&self, done: Vec<(MessageId, Embedding)>) -> Result<Vec<VectorEntry>, StoreError> {
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        // A replaced vector takes a new position (`position = DEFAULT`), so a
        // `scan_vectors` reader that is past the old one sees it again.
        let store = tx
            .prepare_cached(
                "INSERT INTO message_vectors (message_id, tenant, thread_id, model, dim, embedding, created_at) \
                 SELECT id, tenant, thread_id, $2, $3, $4, $5 FROM messages WHERE id = $1 \
                 AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL) \
                 ON CONFLICT (message_id, model) DO UPDATE SET position = DEFAULT, dim = excluded.dim, \
                 embedding = excluded.embedding, created_at = excluded.created_at \
                 RETURNING tenant, thread_id",
            )
            .await
            .ctx("store vectors")?;
        let finish = tx
            .prepare_cached("DELETE FROM embedding_jobs WHERE message_id = ANY($1)")
            .await
            .ctx("delete embedding jobs")?;
        let vectors: Vec<(uuid::Uuid, Vector, i32)> = done
            .iter()
            .map(|(id, e)| (id.as_uuid(), Vector::from(e.vector().to_vec()), i32::try_from(e.dim()).unwrap_or(0)))
            .collect();
        // Pipelined: every insert is sent before the first answer is awaited.
        let stored = try_join_all(done.iter().zip(&vectors).map(|((_, e), (id, v, dim))| {
            let store = &store;
            let tx = &tx;
            async move { tx.query_opt(store, &[id, &e.model(), dim, v, &at]).await }
        }))
        .await
        .ctx("store vectors")?;
        let ids: Vec<uuid::Uuid> = vectors.iter().map(|(id, _, _)| *id).collect();
        tx.execute(&finish, &[&ids]).await.ctx("delete embedding jobs")?;
        tx.commit().await.ctx("store vectors")?;
        let mut entries = Vec::with_capacity(done.len());
        for ((id, embedding), row) in done.into_iter().zip(stored) {
            // Deleted meanwhile: its job went with it; nothing was stored.
            let Some(row) = row else { continue };
            let r = Cells::of(PgRow(&row), "message_vectors");
            entries.push(VectorEntry {
                id,
                tenant: r.parse(0, "tenant", TenantId::parse)?,
                thread: ThreadId::from_uuid(r.uuid(1, "thread_id")?),
                embedding,
            });
        }
        Ok(entries)
    }

    async fn fail_jobs(&self, ids: Vec<MessageId>, error: String, retry_at: Timestamp) -> Result<(), StoreError> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(MessageId::as_uuid).collect();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE embedding_jobs SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, \
                 leased_until = NULL WHERE message_id = ANY($1)",
            )
            .await
            .ctx("record failed embedding jobs")?;
        tx.execute(&stmt, &[&ids, &error, &retry_at]).await.ctx("record failed embedding jobs")?;
        tx.commit().await.ctx("record failed embedding jobs")?;
        Ok(())
    }

    async fn enqueue_missing(&self, model: String) -> Result<u64, StoreError> {
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO embedding_jobs (message_id, tenant, thread_id, attempts, next_attempt_at, last_error, \
                 created_at) SELECT m.id, m.tenant, m.thread_id, 0, $2, NULL, $2 FROM messages m \
                 WHERE m.thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL) \
                 AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model = $1) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .await
            .ctx("enqueue missing embeddings")?;
        let added = tx.execute(&stmt, &[&model, &at]).await.ctx("enqueue missing embeddings")?;
        // An explicit re-embed does not wait out the backoff of earlier
        // failures: every queued job is due now (attempts are kept).
        let due = tx
            .prepare_cached("UPDATE embedding_jobs SET next_attempt_at = $1 WHERE next_attempt_at > $1")
            .await
            .ctx("make embedding jobs due")?;
        tx.execute(&due, &[&at]).await.ctx("make embedding jobs due")?;
        tx.commit().await.ctx("enqueue missing embeddings")?;
        Ok(added)
    }

    async fn scan_rows(&self, model: String, after: i64, fetch: usize) -> Result<Vec<(i64, VectorEntry)>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(
                "SELECT position, message_id, thread_id, tenant, dim, embedding FROM message_vectors \
                 WHERE model = $1 AND position > $2 \
                 AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL) \
                 ORDER BY position LIMIT $3",
            )
            .await
            .ctx("scan vectors")?;
        let rows = tx.query(&stmt, &[&model, &after, &int(fetch)]).await.ctx("scan vectors")?;
        tx.commit().await.ctx("scan vectors")?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = Cells::of(PgRow(row), "message_vectors");
            let dim = usize::try_from(r.int(4, "dim")?).map_err(|e| corrupt("message_vectors", "dim", e))?;
            let vector = row.try_get::<_, Vector>(5).map_err(|e| corrupt("message_vectors", "embedding", e))?.to_vec();
            let embedding =
                Embedding::new(model.clone(), vector, dim).map_err(|e| corrupt("message_vectors", "embedding", e))?;
            let entry = VectorEntry {
                id: MessageId::from_uuid(r.uuid(1, "message_id")?),
                thread: ThreadId::from_uuid(r.uuid(2, "thread_id")?),
                tenant: r.parse(3, "tenant", TenantId::parse)?,
                embedding,
            };
            entries.push((r.int(0, "position")?, entry));
        }
        Ok(entries)
    }

    async fn embedding_counts(&self, filter: &SearchFilter, model: String) -> Result<EmbeddingCounts, StoreError> {
        let Some(threads) = thread_filter(filter) else {
            return Ok(EmbeddingCounts::default());
        };
        // `$3` is NULL for the whole tenant.
        let cond = "m.tenant = $2 AND ($3::uuid[] IS NULL OR m.thread_id = ANY($3)) \
                     AND m.thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)";
        let sql = format!(
            "SELECT \
             (SELECT count(*) FROM messages m JOIN message_vectors v ON v.message_id = m.id AND v.model = $1 \
              WHERE {cond}) AS embedded, \
             (SELECT count(*) FROM messages m JOIN embedding_jobs j ON j.message_id = m.id WHERE {cond}) AS pending, \
             (SELECT count(*) FROM messages m JOIN embedding_jobs j ON j.message_id = m.id \
              WHERE j.attempts > 0 AND {cond}) AS failing, \
             (SELECT count(*) FROM messages m WHERE {cond} \
              AND EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model <> $1) \
              AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model = $1)) AS other"
        );
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(filter)).await?;
        let stmt = tx.prepare_cached(&sql).await.ctx("count embeddings")?;
        let row = tx.query_one(&stmt, &[&model, &filter.tenant.as_str(), &threads]).await.ctx("count embeddings")?;
        tx.commit().await.ctx("count embeddings")?;
        embeddings::counts(&row_values(&row, "count embeddings")?)
    }

    async fn coverage(&self, filter: &SearchFilter, model: String) -> Result<Coverage, StoreError> {
        let Some(threads) = thread_filter(filter) else {
            return Ok(Coverage::default());
        };
        // Pending: driven by the job queue, which is small once the worker
        // keeps up, instead of by the filter's messages. Other model: counted
        // only when a vector of another model exists at all (two seeks on
        // the (model, position) index), which is never the case in a store
        // that has not changed models. Each count stops at
        // `COVERAGE_COUNT_LIMIT` rows, so a search's cost stays bounded
        // behind any backlog.
        let cond = "m.tenant = $2 AND ($3::uuid[] IS NULL OR m.thread_id = ANY($3)) \
                     AND m.thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)";
        let sql = format!(
            "SELECT \
             (SELECT count(*) FROM (SELECT 1 FROM embedding_jobs j JOIN messages m ON m.id = j.message_id \
              WHERE j.tenant = $2 AND {cond} LIMIT {LIMIT}) p) AS pending, \
             CASE WHEN EXISTS (SELECT 1 FROM message_vectors WHERE model < $1) \
                    OR EXISTS (SELECT 1 FROM message_vectors WHERE model > $1) \
             THEN (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE {cond} \
                   AND EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model <> $1) \
                   AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model = $1) \
                   LIMIT {LIMIT}) o) \
             ELSE 0 END AS other",
            LIMIT = COVERAGE_COUNT_LIMIT,
        );
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(filter)).await?;
        let stmt = tx.prepare_cached(&sql).await.ctx("count coverage")?;
        let row = tx.query_one(&stmt, &[&model, &filter.tenant.as_str(), &threads]).await.ctx("count coverage")?;
        tx.commit().await.ctx("count coverage")?;
        embeddings::coverage(&row_values(&row, "count coverage")?)
    }

    async fn match_text(&self, filter: &SearchFilter, matcher: String, k: usize) -> Result<Vec<ScoredHit>, StoreError> {
        let Some(threads) = thread_filter(filter) else {
            return Ok(Vec::new());
        };
        // The words reach `to_tsquery` only as quoted lexemes joined by `|`:
        // no operator of the user's is ever parsed. `memlayer_text_query`
        // stems them as the documents were (migration 20). `ts_rank` is
        // higher-better like the port's score; ties break by message order.
        let sql = "SELECT m.id, m.thread_id, ts_rank(m.document, q)::real AS score \
                   FROM messages m, memlayer_text_query($1) AS q \
                   WHERE m.document @@ q AND m.tenant = $2 AND ($3::uuid[] IS NULL OR m.thread_id = ANY($3)) \
                   AND m.thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL) \
                   ORDER BY score DESC, m.id LIMIT $4";
        let params: Vec<Param> =
            vec![Box::new(matcher), Box::new(filter.tenant.as_str().to_owned()), Box::new(threads), Box::new(int(k))];
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Of(filter)).await?;
        let stmt = tx.prepare_cached(sql).await.ctx("full-text search")?;
        let rows = tx.query(&stmt, &refs(&params)).await.ctx("full-text search")?;
        tx.commit().await.ctx("full-text search")?;
        rows.iter().map(|row| embeddings::scored_hit(&row_values(row, "full-text search")?, "messages")).collect()
    }
}

/// Each tenant's first `$2` due, unleased jobs (at `$1`), in due order:
/// `tenants` finds every tenant with a job by a skip scan of
/// `embedding_jobs_tenant_due` (one seek per tenant, migration 7), the
/// LATERAL subquery takes the tenant's first due jobs by a range search of
/// the same index (ordered by `j.tenant` too, a constant there, so the
/// planner sees the index's order). `$lock` is empty or a locking clause.
/// With 100,000 due jobs of one tenant and one of another: about 1 ms
/// (2 ms claiming), against 280 ms for the old unfair query and 100 ms for
/// a window over every due job.
macro_rules! picked_jobs {
    ($lock:literal) => {
        concat!(
            "WITH RECURSIVE tenants (tenant) AS ( \
                 (SELECT tenant FROM embedding_jobs ORDER BY tenant LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT j.tenant FROM embedding_jobs j WHERE j.tenant > t.tenant ORDER BY j.tenant LIMIT 1) \
                 FROM tenants t WHERE t.tenant IS NOT NULL), \
             picked AS ( \
                 SELECT p.message_id, p.next_attempt_at, p.attempts, \
                 row_number() OVER (PARTITION BY t.tenant ORDER BY p.next_attempt_at, p.message_id) AS turn \
                 FROM tenants t CROSS JOIN LATERAL ( \
                     SELECT j.message_id, j.next_attempt_at, j.attempts FROM embedding_jobs j \
                     WHERE j.tenant = t.tenant AND j.next_attempt_at <= $1 \
                     AND (j.leased_until IS NULL OR j.leased_until <= $1) \
                     AND NOT EXISTS (SELECT 1 FROM messages dm JOIN threads dt ON dt.id = dm.thread_id \
                         WHERE dm.id = j.message_id AND dt.deleted_at IS NOT NULL) \
                     ORDER BY j.tenant, j.next_attempt_at, j.message_id LIMIT $2 ",
            $lock,
            ") p WHERE t.tenant IS NOT NULL), \
             chosen AS (SELECT * FROM picked ORDER BY turn, next_attempt_at, message_id LIMIT $2) "
        )
    };
}

/// `$1` now, `$2` limit: due jobs, fair across tenants (see
/// `EmbeddingStore::due_jobs`): the first of every tenant's, then the
/// second, and so on. The work is a few seeks per tenant plus `$2` rows per
/// tenant, whatever the length of the queue.
const DUE_JOBS: &str = concat!(
    picked_jobs!(""),
    "SELECT m.id, m.thread_id, m.tenant, m.content, m.tool_calls, c.attempts \
     FROM chosen c JOIN messages m ON m.id = c.message_id ORDER BY c.turn, c.next_attempt_at, c.message_id"
);

/// `$1` now, `$2` limit, `$3` lease end: [`DUE_JOBS`], each job locked as
/// it is picked (`FOR UPDATE SKIP LOCKED`: a concurrent claimer skips it
/// rather than waiting, and one that already committed its lease has
/// `leased_until` re-checked on the newest row version), then leased.
const CLAIM_JOBS: &str = concat!(
    picked_jobs!("FOR UPDATE OF j SKIP LOCKED"),
    ", leased AS (UPDATE embedding_jobs j SET leased_until = $3 FROM chosen c \
         WHERE j.message_id = c.message_id RETURNING j.message_id) \
     SELECT m.id, m.thread_id, m.tenant, m.content, m.tool_calls, c.attempts \
     FROM chosen c JOIN leased l ON l.message_id = c.message_id JOIN messages m ON m.id = c.message_id \
     ORDER BY c.turn, c.next_attempt_at, c.message_id"
);

/// A job as `DUE_JOBS` and `CLAIM_JOBS` return it.
fn pending(row: &tokio_postgres::Row) -> Result<PendingEmbedding, StoreError> {
    embeddings::pending(&row_values(row, "read embedding jobs")?)
}

/// The filter's threads as a parameter: `Some(None)` for the whole tenant,
/// `Some(Some(ids))` for these threads, `None` when it admits nothing.
pub(crate) fn thread_filter(filter: &SearchFilter) -> Option<Option<Vec<uuid::Uuid>>> {
    match &filter.threads {
        ThreadSelection::All => Some(None),
        ThreadSelection::These(ts) if ts.is_empty() => None,
        ThreadSelection::These(ts) => Some(Some(ts.iter().map(ThreadId::as_uuid).collect())),
    }
}

fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
