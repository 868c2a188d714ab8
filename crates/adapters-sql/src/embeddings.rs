//! The embedding queue's and progress counts' rows, decoded once: a job as
//! the due and claim queries return it, the four counts of
//! `EmbeddingStore::embedding_counts` and the two of `coverage`, and the
//! full-text query a lexical search runs (none when it can find nothing).
//!
//! The `EmbeddingStore` itself is written here too ([`embedding_store!`](crate::embedding_store)):
//! the answers to requests for nothing, the stored error's bound, the
//! vector scan's paging and the pruning statement. The queue's, the counts'
//! and the searches' SQL stays in each engine ([`EmbeddingEngine`]): libSQL
//! keys jobs and vectors by the message's rowid, counts the messages its
//! catch-up has not queued yet as pending and leases with a time, Postgres
//! keys them by message id, claims with `FOR UPDATE SKIP LOCKED` and binds
//! thread lists as arrays; the two agree on what they return, which is
//! what is here.

use std::num::NonZeroUsize;

use async_trait::async_trait;
use memlayer_domain::{Coverage, Embedding, EmbeddingCounts, MessageId, TenantId, ThreadId, Timestamp, ToolCall};
use memlayer_ports::{PendingEmbedding, ScoredHit, SearchFilter, StoreError, VectorEntry};

use crate::{Cells, Dialect, Sql, SqlValue, Transactor, corrupt};

/// What [`embedding_store!`](crate::embedding_store) leaves to the engine: the job queue, the
/// stored vectors and the full-text index, in its own SQL. Each method is
/// the port's namesake after the shared checks: a request for nothing never
/// reaches it.
#[async_trait]
pub trait EmbeddingEngine: Transactor + Sized {
    /// `EmbeddingStore::due_jobs`.
    async fn due_jobs(&self, due: Due) -> Result<Vec<PendingEmbedding>, StoreError>;

    /// `EmbeddingStore::claim_jobs`.
    async fn claim_jobs(&self, due: Due, lease_until: Timestamp) -> Result<Vec<PendingEmbedding>, StoreError>;

    /// `EmbeddingStore::complete_jobs`, for at least one job.
    async fn complete_jobs(&self, done: Vec<(MessageId, Embedding)>) -> Result<Vec<VectorEntry>, StoreError>;

    /// `EmbeddingStore::fail_jobs`, for at least one job; `error` is bounded
    /// already (`memlayer_domain::job_error`).
    async fn fail_jobs(&self, ids: Vec<MessageId>, error: String, retry_at: Timestamp) -> Result<(), StoreError>;

    /// `EmbeddingStore::enqueue_missing`.
    async fn enqueue_missing(&self, model: String) -> Result<u64, StoreError>;

    /// At most `fetch` (at least 1) vectors of `model` with their storage
    /// positions, in storage order, after position `after`.
    async fn scan_rows(&self, model: String, after: i64, fetch: usize) -> Result<Vec<(i64, VectorEntry)>, StoreError>;

    /// `EmbeddingStore::embedding_counts`.
    async fn embedding_counts(&self, filter: &SearchFilter, model: String) -> Result<EmbeddingCounts, StoreError>;

    /// `EmbeddingStore::coverage`, cheaper than the full counts.
    async fn coverage(&self, filter: &SearchFilter, model: String) -> Result<Coverage, StoreError>;

    /// The best `k` (at least 1) of the filter's messages matching `matcher`,
    /// the engine's full-text query made by [`lexical_query`].
    async fn match_text(&self, filter: &SearchFilter, matcher: String, k: usize) -> Result<Vec<ScoredHit>, StoreError>;
}

/// The jobs a queue read asks for: those due at `now`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    /// The time jobs must be due at (next attempt and any lease at or before it).
    pub now: Timestamp,
    /// How many at most.
    pub limit: NonZeroUsize,
}

impl Due {
    /// `limit` jobs due at `now`; `None` for none.
    #[must_use]
    pub fn new(now: Timestamp, limit: usize) -> Option<Self> {
        NonZeroUsize::new(limit).map(|limit| Self { now, limit })
    }
}

/// `EmbeddingStore::due_jobs`.
///
/// # Errors
/// A failed read.
pub async fn due_jobs<D: EmbeddingEngine>(
    db: &D,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<PendingEmbedding>, StoreError> {
    match Due::new(now, limit) {
        Some(due) => db.due_jobs(due).await,
        None => Ok(Vec::new()),
    }
}

/// `EmbeddingStore::claim_jobs`.
///
/// # Errors
/// A failed write.
pub async fn claim_jobs<D: EmbeddingEngine>(
    db: &D,
    now: Timestamp,
    limit: usize,
    lease_until: Timestamp,
) -> Result<Vec<PendingEmbedding>, StoreError> {
    match Due::new(now, limit) {
        Some(due) => db.claim_jobs(due, lease_until).await,
        None => Ok(Vec::new()),
    }
}

/// `EmbeddingStore::complete_jobs`.
///
/// # Errors
/// A failed write.
pub async fn complete_jobs<D: EmbeddingEngine>(
    db: &D,
    done: Vec<(MessageId, Embedding)>,
) -> Result<Vec<VectorEntry>, StoreError> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    db.complete_jobs(done).await
}

/// `EmbeddingStore::fail_jobs`: the error is stored bounded.
///
/// # Errors
/// A failed write.
pub async fn fail_jobs<D: EmbeddingEngine>(
    db: &D,
    ids: Vec<MessageId>,
    error: String,
    retry_at: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    db.fail_jobs(ids, memlayer_domain::job_error(error), retry_at).await
}

/// `EmbeddingStore::scan_vectors`: one more row than the page is read, to
/// know whether another follows; the position to continue from is the
/// page's last.
///
/// # Errors
/// A failed read, a corrupt vector.
pub async fn scan_vectors<D: EmbeddingEngine>(
    db: &D,
    model: String,
    after: Option<i64>,
    limit: usize,
) -> Result<(Vec<VectorEntry>, Option<i64>), StoreError> {
    if limit == 0 {
        return Ok((Vec::new(), after));
    }
    let rows = db.scan_rows(model, after.unwrap_or(0), limit.saturating_add(1)).await?;
    Ok(scan_page(rows, limit))
}

/// The first `limit` of `rows` and, when more followed, the position after
/// which the next page starts.
fn scan_page(mut rows: Vec<(i64, VectorEntry)>, limit: usize) -> (Vec<VectorEntry>, Option<i64>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(|(position, _)| *position) } else { None };
    (rows.into_iter().map(|(_, entry)| entry).collect(), next)
}

/// `EmbeddingStore::prune_vectors`.
///
/// # Errors
/// A failed write.
pub async fn prune_vectors<D: Transactor>(db: &D, keep: String) -> Result<u64, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push("DELETE FROM message_vectors WHERE model <> ").bind(keep);
    db.write_all_tenants(Box::new(move |db| Box::pin(async move { db.execute("prune vectors", sql).await }))).await
}

/// `EmbeddingStore::lexical_search`: nothing to search without a word or
/// with `k` = 0.
///
/// # Errors
/// A failed read.
pub async fn lexical_search<D: EmbeddingEngine>(
    db: &D,
    filter: &SearchFilter,
    query: String,
    k: usize,
) -> Result<Vec<ScoredHit>, StoreError> {
    match lexical_query(db.dialect(), &query, k) {
        Some(matcher) => db.match_text(filter, matcher, k).await,
        None => Ok(Vec::new()),
    }
}

/// Implements `memlayer_ports::EmbeddingStore` for a backend type that
/// implements [`EmbeddingEngine`], delegating to this module (a macro: the
/// orphan rule forbids a blanket impl of a foreign trait).
#[macro_export]
macro_rules! embedding_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::EmbeddingStore for $backend {
            async fn due_jobs(
                &self,
                now: ::memlayer_domain::Timestamp,
                limit: usize,
            ) -> Result<Vec<::memlayer_ports::PendingEmbedding>, ::memlayer_ports::StoreError> {
                $crate::embeddings::due_jobs(self, now, limit).await
            }

            async fn claim_jobs(
                &self,
                now: ::memlayer_domain::Timestamp,
                limit: usize,
                lease_until: ::memlayer_domain::Timestamp,
            ) -> Result<Vec<::memlayer_ports::PendingEmbedding>, ::memlayer_ports::StoreError> {
                $crate::embeddings::claim_jobs(self, now, limit, lease_until).await
            }

            async fn complete_jobs(
                &self,
                done: Vec<(::memlayer_domain::MessageId, ::memlayer_domain::Embedding)>,
            ) -> Result<Vec<::memlayer_ports::VectorEntry>, ::memlayer_ports::StoreError> {
                $crate::embeddings::complete_jobs(self, done).await
            }

            async fn fail_jobs(
                &self,
                ids: Vec<::memlayer_domain::MessageId>,
                error: String,
                retry_at: ::memlayer_domain::Timestamp,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::embeddings::fail_jobs(self, ids, error, retry_at).await
            }

            async fn enqueue_missing(&self, model: String) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::embeddings::EmbeddingEngine::enqueue_missing(self, model).await
            }

            async fn scan_vectors(
                &self,
                model: String,
                after: Option<i64>,
                limit: usize,
            ) -> Result<(Vec<::memlayer_ports::VectorEntry>, Option<i64>), ::memlayer_ports::StoreError> {
                $crate::embeddings::scan_vectors(self, model, after, limit).await
            }

            async fn embedding_counts(
                &self,
                filter: &::memlayer_ports::SearchFilter,
                model: String,
            ) -> Result<::memlayer_domain::EmbeddingCounts, ::memlayer_ports::StoreError> {
                $crate::embeddings::EmbeddingEngine::embedding_counts(self, filter, model).await
            }

            async fn coverage(
                &self,
                filter: &::memlayer_ports::SearchFilter,
                model: String,
            ) -> Result<::memlayer_domain::Coverage, ::memlayer_ports::StoreError> {
                $crate::embeddings::EmbeddingEngine::coverage(self, filter, model).await
            }

            async fn prune_vectors(&self, keep: String) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::embeddings::prune_vectors(self, keep).await
            }

            async fn lexical_search(
                &self,
                filter: &::memlayer_ports::SearchFilter,
                query: String,
                k: usize,
            ) -> Result<Vec<::memlayer_ports::ScoredHit>, ::memlayer_ports::StoreError> {
                $crate::embeddings::lexical_search(self, filter, query, k).await
            }
        }
    };
}

/// A job from a row whose first columns are the message's `id, thread_id,
/// tenant, content, tool_calls` and the job's `attempts`.
///
/// # Errors
/// `Backend` (a corrupt row) naming the column that does not decode.
pub fn pending(row: &[SqlValue]) -> Result<PendingEmbedding, StoreError> {
    let c = Cells::new(row, "embedding_jobs");
    let calls: Vec<ToolCall> = c.opt_json(4, "tool_calls")?.unwrap_or_default();
    Ok(PendingEmbedding {
        id: MessageId::from_uuid(c.uuid(0, "id")?),
        thread: ThreadId::from_uuid(c.uuid(1, "thread_id")?),
        tenant: c.parse(2, "tenant", TenantId::parse)?,
        text: memlayer_domain::model_text(&c.text(3, "content")?, &calls),
        attempts: c.u32(5, "attempts")?,
    })
}

fn count(c: &Cells<&[SqlValue]>, idx: usize) -> Result<u64, StoreError> {
    u64::try_from(c.int(idx, "count")?).map_err(|e| corrupt("message_vectors", "count", e))
}

/// The counts `embedded, pending, failing, other_model`, in that order.
///
/// # Errors
/// `Backend` for a count that is not a non-negative integer.
pub fn counts(row: &[SqlValue]) -> Result<EmbeddingCounts, StoreError> {
    let c = Cells::new(row, "message_vectors");
    Ok(EmbeddingCounts {
        embedded: count(&c, 0)?,
        pending: count(&c, 1)?,
        failing: count(&c, 2)?,
        other_model: count(&c, 3)?,
    })
}

/// The counts `pending, other_model`, in that order.
///
/// # Errors
/// `Backend` for a count that is not a non-negative integer.
pub fn coverage(row: &[SqlValue]) -> Result<Coverage, StoreError> {
    let c = Cells::new(row, "message_vectors");
    Ok(Coverage { pending: count(&c, 0)?, other_model: count(&c, 1)? })
}

/// A search hit from a row `message id, thread id, score` of `table`
/// (lexical and vector searches alike; the score as the engine computed it,
/// higher better).
///
/// # Errors
/// `Backend` (a corrupt row) naming the column that does not decode.
pub fn scored_hit(row: &[SqlValue], table: &'static str) -> Result<ScoredHit, StoreError> {
    let c = Cells::new(row, table);
    #[allow(clippy::cast_possible_truncation, reason = "scores are small; f32 is the port's type")]
    Ok(ScoredHit {
        id: MessageId::from_uuid(c.uuid(0, "message_id")?),
        thread: ThreadId::from_uuid(c.uuid(1, "thread_id")?),
        score: c.real(2, "score")? as f32,
    })
}

/// The full-text query of a lexical search for the best `k` ([`Dialect::text_query`]);
/// `None` when it can find nothing (no word, or `k` = 0), before any store
/// is read.
#[must_use]
pub fn lexical_query(dialect: Dialect, query: &str, k: usize) -> Option<String> {
    if k == 0 {
        return None;
    }
    dialect.text_query(query)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn jobs_decode_alike_from_either_encoding() {
        let (id, thread) = (uuid::Uuid::from_u128(7), uuid::Uuid::from_u128(8));
        let calls = serde_json::json!([{"id": "c1", "name": "lookup", "arguments": {"order": "A-17"}}]);
        let sqlite = [
            SqlValue::Blob(id.as_bytes().to_vec()),
            SqlValue::Blob(thread.as_bytes().to_vec()),
            SqlValue::from("acme"),
            SqlValue::from("refund"),
            SqlValue::Text(calls.to_string()),
            SqlValue::Int(2),
            SqlValue::Int(99),
        ];
        let postgres = [
            SqlValue::Uuid(id),
            SqlValue::Uuid(thread),
            SqlValue::from("acme"),
            SqlValue::from("refund"),
            SqlValue::Json(calls),
            SqlValue::Int(2),
        ];
        let a = pending(&sqlite).unwrap();
        let b = pending(&postgres).unwrap();
        assert_eq!((a.id, a.thread, &a.tenant, &a.text, a.attempts), (b.id, b.thread, &b.tenant, &b.text, b.attempts));
        assert!(a.text.starts_with("refund") && a.text.contains("lookup"), "{}", a.text);
        let mut none = postgres.clone();
        none[4] = SqlValue::Null;
        assert_eq!(pending(&none).unwrap().text, "refund");
        none[5] = SqlValue::Int(-1);
        assert!(pending(&none).unwrap_err().to_string().contains("embedding_jobs.attempts"));
    }

    #[test]
    fn counts_are_read_in_order_and_never_negative() {
        let row = [SqlValue::Int(4), SqlValue::Int(3), SqlValue::Int(2), SqlValue::Int(1)];
        let c = counts(&row).unwrap();
        assert_eq!((c.embedded, c.pending, c.failing, c.other_model), (4, 3, 2, 1));
        let c = coverage(&row[2..]).unwrap();
        assert_eq!((c.pending, c.other_model), (2, 1));
        assert!(coverage(&[SqlValue::Int(-1), SqlValue::Int(0)]).unwrap_err().to_string().contains("count"));
    }

    #[test]
    fn hits_decode_from_either_encoding() {
        let (id, thread) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let pg = [SqlValue::Uuid(id), SqlValue::Uuid(thread), SqlValue::Real(0.5)];
        let lite =
            [SqlValue::Blob(id.as_bytes().to_vec()), SqlValue::Blob(thread.as_bytes().to_vec()), SqlValue::Real(0.5)];
        for row in [&pg[..], &lite[..]] {
            let hit = scored_hit(row, "messages").unwrap();
            assert_eq!((hit.id.as_uuid(), hit.thread.as_uuid(), hit.score), (id, thread, 0.5));
        }
        assert!(scored_hit(&pg[..2], "messages").unwrap_err().to_string().contains("messages.score"));
    }

    #[test]
    fn a_scan_page_continues_after_its_last_entry_only_when_more_follow() {
        let entry = |position: i64| {
            let embedding = Embedding::new("m".to_owned(), vec![1.0, 0.0], 2).unwrap();
            let tenant = TenantId::parse("acme").unwrap();
            (position, VectorEntry { id: MessageId::new(), tenant, thread: ThreadId::new(), embedding })
        };
        let (page, next) = scan_page(vec![entry(3), entry(5), entry(9)], 2);
        assert_eq!((page.len(), next), (2, Some(5)));
        let (page, next) = scan_page(vec![entry(3), entry(5)], 2);
        assert_eq!((page.len(), next), (2, None));
        assert_eq!(scan_page(Vec::new(), 2).1, None);
    }

    #[test]
    fn a_queue_read_for_no_job_is_none() {
        assert!(Due::new(memlayer_domain::now(), 0).is_none());
        assert_eq!(Due::new(memlayer_domain::now(), 3).map(|d| d.limit.get()), Some(3));
    }

    #[test]
    fn a_search_that_can_find_nothing_has_no_query() {
        assert_eq!(lexical_query(Dialect::Postgres, "refund", 0), None);
        assert_eq!(lexical_query(Dialect::Sqlite, "--", 5), None);
        assert_eq!(lexical_query(Dialect::Sqlite, "refund", 5).as_deref(), Some("\"refund\""));
    }
}
