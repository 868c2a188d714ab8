//! The embedding queue's and progress counts' rows, decoded once: a job as
//! the due and claim queries return it, the four counts of
//! `EmbeddingStore::embedding_counts` and the two of `coverage`, and the
//! full-text query a lexical search runs (none when it can find nothing).
//!
//! The queue's and the counts' SQL stays in each adapter: libSQL keys jobs
//! and vectors by the message's rowid, counts the messages its catch-up has
//! not queued yet as pending and leases with a time, Postgres keys them by
//! message id, claims with `FOR UPDATE SKIP LOCKED` and binds thread lists as
//! arrays; the two agree on what they return, which is what is here.

use memlayer_domain::{Coverage, EmbeddingCounts, MessageId, TenantId, ThreadId, ToolCall};
use memlayer_ports::{PendingEmbedding, ScoredHit, StoreError};

use crate::{Cells, Dialect, SqlValue, corrupt};

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
    fn a_search_that_can_find_nothing_has_no_query() {
        assert_eq!(lexical_query(Dialect::Postgres, "refund", 0), None);
        assert_eq!(lexical_query(Dialect::Sqlite, "--", 5), None);
        assert_eq!(lexical_query(Dialect::Sqlite, "refund", 5).as_deref(), Some("\"refund\""));
    }
}
