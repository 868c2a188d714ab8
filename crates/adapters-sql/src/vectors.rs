//! What both SQL vector indexes (libSQL's DiskANN, pgvector's HNSW) check and
//! answer alike: the dimension an index may hold, the vectors and queries it
//! accepts, the empty answer, the order of matches, and removing a thread's
//! entries. How each searches and writes (its graph, its settings, libSQL's
//! single writer, Postgres's pipelined inserts) stays in its adapter.

use memlayer_domain::{DomainError, Embedding, TenantId, ThreadId};
use memlayer_ports::{IndexKind, ScoredHit, StoreError, VectorEntry, VectorSearch};

use crate::{Dialect, Sql, Transactor};

/// `Invalid`, naming `field`.
#[must_use]
pub fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid(DomainError::new(field, message.into()))
}

/// An index of `dim` dimensions can be made (`1..=max`).
///
/// # Errors
/// `Invalid` (`dim`) otherwise.
pub fn check_dim(dim: usize, max: usize) -> Result<(), StoreError> {
    if dim == 0 || dim > max {
        return Err(invalid("dim", format!("must be between 1 and {max}, got {dim}")));
    }
    Ok(())
}

/// Every entry has the index's `dim` dimensions.
///
/// # Errors
/// `Invalid` (`vector`) naming the first that has not.
pub fn check_entries(entries: &[VectorEntry], dim: usize) -> Result<(), StoreError> {
    match entries.iter().find(|e| e.embedding.dim() != dim) {
        Some(e) => Err(invalid("vector", format!("has {} dimensions, this index holds {dim}", e.embedding.dim()))),
        None => Ok(()),
    }
}

/// The query has the index's `dim` dimensions.
///
/// # Errors
/// `Invalid` (`query`) otherwise.
pub fn check_query(query: &Embedding, dim: usize) -> Result<(), StoreError> {
    if query.dim() != dim {
        return Err(invalid("query", format!("has {} dimensions, this index holds {dim}", query.dim())));
    }
    Ok(())
}

/// The answer of a search that can find nothing (a filter admitting no
/// thread, `k` = 0, no admitted entry): no match, no index consulted.
#[must_use]
pub fn nothing() -> VectorSearch {
    VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact }
}

/// The best `k` matches, highest score first.
#[must_use]
pub fn best(mut found: Vec<ScoredHit>, k: usize) -> Vec<ScoredHit> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(k);
    found
}

/// Deletes a thread's entries from the index table `table` (a name of the
/// adapter's own making, never a caller's).
#[must_use]
pub fn remove_thread_sql(dialect: Dialect, table: &str, tenant: &TenantId, thread: ThreadId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!("DELETE FROM {table} WHERE tenant = ")).bind(tenant.as_str());
    sql.push(" AND thread_id = ").bind(thread.as_uuid());
    sql
}

/// `VectorIndex::remove_thread` on the index table `table`.
///
/// # Errors
/// A failed write.
pub async fn remove_thread<D: Transactor>(
    db: &D,
    table: &str,
    tenant: &TenantId,
    thread: ThreadId,
) -> Result<(), StoreError> {
    let sql = remove_thread_sql(db.dialect(), table, tenant, thread);
    db.write(
        tenant,
        Box::new(move |db| {
            Box::pin(async move {
                db.execute("remove thread vectors", sql).await?;
                Ok(())
            })
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_domain::MessageId;

    use super::*;
    use crate::SqlValue;

    #[test]
    fn dimensions_are_checked_alike() {
        assert!(check_dim(384, 2_000).is_ok());
        for bad in [0, 2_001] {
            let e = check_dim(bad, 2_000).unwrap_err().to_string();
            assert!(e.contains("dim") && e.contains("between 1 and 2000"), "{e}");
        }
        let query = Embedding::new("m".to_owned(), vec![1.0, 0.0], 2).unwrap();
        assert!(check_query(&query, 2).is_ok());
        assert!(check_query(&query, 3).unwrap_err().to_string().contains("has 2 dimensions, this index holds 3"));
        let entry = VectorEntry {
            id: MessageId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            thread: ThreadId::new(),
            embedding: query,
        };
        assert!(check_entries(std::slice::from_ref(&entry), 2).is_ok());
        assert!(check_entries(&[entry], 4).unwrap_err().to_string().contains("vector"));
    }

    #[test]
    fn best_keeps_the_highest_scores_first() {
        let hit = |score| ScoredHit { id: MessageId::new(), thread: ThreadId::new(), score };
        let got = best(vec![hit(0.1), hit(0.9), hit(0.5)], 2);
        assert_eq!(got.iter().map(|h| h.score).collect::<Vec<_>>(), [0.9, 0.5]);
    }

    #[test]
    fn removing_a_thread_binds_tenant_and_thread() {
        let tenant = TenantId::parse("acme").unwrap();
        let thread = ThreadId::new();
        let sql = remove_thread_sql(Dialect::Postgres, "pgvector_index_384", &tenant, thread);
        assert_eq!(sql.text(), "DELETE FROM pgvector_index_384 WHERE tenant = $1 AND thread_id = $2");
        assert_eq!(sql.args(), [SqlValue::from("acme"), SqlValue::Uuid(thread.as_uuid())]);
        let sql = remove_thread_sql(Dialect::Sqlite, "vector_index_f32_384", &tenant, thread);
        assert_eq!(sql.text(), "DELETE FROM vector_index_f32_384 WHERE tenant = ?1 AND thread_id = ?2");
    }
}
