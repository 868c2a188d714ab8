//! What both SQL vector indexes (libSQL's DiskANN, pgvector's HNSW) check and
//! answer alike: the dimension an index may hold, the vectors and queries it
//! accepts, the empty answer, the order of matches, and removing a thread's
//! entries; [`vector_index!`](crate::vector_index) writes the `VectorIndex` port from these.
//! How each searches and writes (its graph, its settings, libSQL's single
//! writer, Postgres's pipelined inserts) stays in its adapter, the
//! [`IndexEngine`].

use async_trait::async_trait;
use memlayer_domain::{DomainError, Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{IndexKind, ScoredHit, SearchFilter, StoreError, VectorEntry, VectorSearch};

use crate::{Dialect, Sql, Transactor};

/// What [`vector_index!`](crate::vector_index) leaves to an index: its table and how it writes,
/// searches and counts it. A request the shared rules answer (nothing to
/// write or remove, a query of another dimension, a search that can find
/// nothing) never reaches it.
#[allow(clippy::len_without_is_empty, reason = "the port's `len`, async and fallible, as `VectorIndex` has it")]
#[async_trait]
pub trait IndexEngine: Send + Sync {
    /// The backend its table lives in.
    type Backend: Transactor;

    /// The kind it reports.
    const KIND: IndexKind;

    /// Dimensions of the vectors it holds.
    fn dim(&self) -> usize;

    /// The backend, for the statements written once here.
    fn backend(&self) -> &Self::Backend;

    /// Its table (a name of the adapter's own making, never a caller's).
    fn table(&self) -> &str;

    /// `VectorIndex::upsert` of at least one entry, each of [`dim`](Self::dim).
    async fn upsert_entries(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError>;

    /// `VectorIndex::remove` of at least one id.
    async fn remove_entries(&self, ids: Vec<MessageId>) -> Result<(), StoreError>;

    /// `VectorIndex::search` for `k` ≥ 1, a query of [`dim`](Self::dim) and
    /// a filter admitting some thread.
    async fn nearest(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError>;

    /// `VectorIndex::len`.
    async fn len(&self) -> Result<usize, StoreError>;

    /// `VectorIndex::ids`.
    async fn ids(&self) -> Result<Vec<MessageId>, StoreError>;
}

/// `VectorIndex::upsert`.
///
/// # Errors
/// `Invalid` for an entry of another dimension (nothing is written); a
/// failed write.
pub async fn upsert<I: IndexEngine>(index: &I, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    check_entries(&entries, index.dim())?;
    index.upsert_entries(entries).await
}

/// `VectorIndex::remove`.
///
/// # Errors
/// A failed write.
pub async fn remove<I: IndexEngine>(index: &I, ids: Vec<MessageId>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    index.remove_entries(ids).await
}

/// `VectorIndex::search`.
///
/// # Errors
/// `Invalid` for a query of another dimension; a failed read.
pub async fn search<I: IndexEngine>(
    index: &I,
    filter: &SearchFilter,
    query: &Embedding,
    k: usize,
) -> Result<VectorSearch, StoreError> {
    check_query(query, index.dim())?;
    if filter.admits_nothing() || k == 0 {
        return Ok(nothing());
    }
    index.nearest(filter, query, k).await
}

/// Implements `memlayer_ports::VectorIndex` for an index type that
/// implements [`IndexEngine`], delegating to this module (a macro: the
/// orphan rule forbids a blanket impl of a foreign trait).
#[macro_export]
macro_rules! vector_index {
    ($index:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::VectorIndex for $index {
            fn kind(&self) -> ::memlayer_ports::IndexKind {
                <Self as $crate::vectors::IndexEngine>::KIND
            }

            async fn upsert(
                &self,
                entries: Vec<::memlayer_ports::VectorEntry>,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::vectors::upsert(self, entries).await
            }

            async fn remove(&self, ids: Vec<::memlayer_domain::MessageId>) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::vectors::remove(self, ids).await
            }

            async fn remove_thread(
                &self,
                tenant: &::memlayer_domain::TenantId,
                thread: ::memlayer_domain::ThreadId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                let (backend, table) =
                    ($crate::vectors::IndexEngine::backend(self), $crate::vectors::IndexEngine::table(self));
                $crate::vectors::remove_thread(backend, table, tenant, thread).await
            }

            async fn search(
                &self,
                filter: &::memlayer_ports::SearchFilter,
                query: &::memlayer_domain::Embedding,
                k: usize,
            ) -> Result<::memlayer_ports::VectorSearch, ::memlayer_ports::StoreError> {
                $crate::vectors::search(self, filter, query, k).await
            }

            async fn len(&self) -> Result<usize, ::memlayer_ports::StoreError> {
                $crate::vectors::IndexEngine::len(self).await
            }

            async fn ids(&self) -> Result<Vec<::memlayer_domain::MessageId>, ::memlayer_ports::StoreError> {
                $crate::vectors::IndexEngine::ids(self).await
            }
        }
    };
}

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
