//! [`memlayer_ports::VectorIndex`] on libSQL's native vector index
//! (DiskANN, `libsql_vector_idx`), with an exact path for small candidate
//! sets; the port's shared rules are in `memlayer_adapters_sql::vectors`.

use async_trait::async_trait;
use libsql::Value;
use memlayer_adapters_sql::vectors::{self, IndexEngine, best, invalid};
use memlayer_domain::{Embedding, MAX_DIMENSIONS, MessageId, ThreadId};
use memlayer_ports::{IndexKind, ScoredHit, SearchFilter, StoreError, VectorEntry, VectorSearch};

use crate::LibsqlBackend;
use crate::error::{Context as _, corrupt};
use crate::filter_sql::filter_sql;
use crate::rows::{cells, query_row};
use crate::values::{text, uuid};

/// Settings of the native index, fixed when its table is first created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeIndexConfig {
    /// DiskANN graph degree (`max_neighbors`). 20–64 is the usable range at
    /// 384 dimensions; more costs disk and insert time.
    pub max_neighbors: usize,
    /// Neighbour vector compression (`compress_neighbors`): `float8` stores
    /// a third of the default's bytes and inserts ~2.6× faster; `None` keeps
    /// libSQL's default (uncompressed, very costly at 384 dimensions).
    pub compress_neighbors: Option<String>,
    /// A search whose filter admits at most this many entries compares them
    /// all exactly (`vector_distance_cos`) instead of asking the index.
    pub exact_below: usize,
}

impl NativeIndexConfig {
    /// Default graph degree.
    pub const DEFAULT_MAX_NEIGHBORS: usize = 32;
    /// Default exact-search threshold, in admitted entries: where exact SQL
    /// and the index cost the same. Measured at 384 dimensions (20,000
    /// vectors, `float8`, 32 neighbours, k = 10): exact SQL took 0.9 ms for
    /// 200 admitted rows, 12 ms for 2,000 and 91 ms for 20,000; the index
    /// 11–18 ms. (SQL is far slower than a scan in RAM: every row is a page
    /// read plus an overflow page.)
    pub const DEFAULT_EXACT_BELOW: usize = 2_000;
}

impl Default for NativeIndexConfig {
    fn default() -> Self {
        Self {
            max_neighbors: Self::DEFAULT_MAX_NEIGHBORS,
            compress_neighbors: Some("float8".to_owned()),
            exact_below: Self::DEFAULT_EXACT_BELOW,
        }
    }
}

/// Neighbour compressions libSQL knows.
const COMPRESSIONS: &[&str] = &["float1bit", "float8", "float16", "floatb16", "float32"];
/// First over-fetch factor of an index search: `vector_top_k` takes no
/// filter, so `k × OVERFETCH` neighbours are fetched, then filtered.
const OVERFETCH: usize = 8;
/// libSQL's DiskANN search list size (`search_l`, default 200): however many
/// neighbours are asked for, `vector_top_k` returns about `max(search_l, k)`
/// (measured: 201 rows for 400, 1,000 or 5,000 asked). Fetching more is
/// useless; a filter that has not yielded `k` admitted entries by then is
/// searched exactly.
const SEARCH_L: usize = 200;

/// A nearest-neighbour index in the libSQL database itself: a table
/// `vector_index_f32_{dim}` (message id, tenant, thread, model and an
/// `F32_BLOB({dim})`) with a DiskANN index on the vector and a B-tree on
/// `(tenant, thread_id, model)`.
///
/// Searches count the entries the filter admits: up to
/// [`NativeIndexConfig::exact_below`] they are compared exactly in SQL
/// (strategy `exact`); above, `vector_top_k` is over-fetched (it returns
/// rowids only and takes no filter), joined back, filtered, and doubled until
/// `k` admitted entries are found (strategy `libsql`), up to libSQL's search
/// list size (200), falling back to the exact path when the graph cannot
/// produce them (a thin filter, or entries made unreachable by deletions;
/// still reported as `libsql`, since whether it happens depends on other
/// tenants' entries, which a search must not reveal). Scores are always
/// recomputed from the stored f32 vectors: true cosine similarity.
///
/// Writes go through the backend's single writer connection; DiskANN
/// inserts are slow (tens to hundreds per second at 384 dimensions), so a
/// large upsert holds the writer for a while.
#[derive(Debug, Clone)]
pub struct LibsqlVectorIndex {
    backend: LibsqlBackend,
    dim: usize,
    table: String,
    ann: String,
    exact_below: usize,
}

impl LibsqlVectorIndex {
    /// Opens (creating when missing) the index table for vectors of `dim`
    /// dimensions. The graph settings apply when the index is created; an
    /// existing index keeps its own (a warning is logged when they differ).
    ///
    /// # Errors
    /// `Invalid` for a dimension of 0 or above the domain's maximum, a graph
    /// degree of 0, or an unknown compression; `Backend` when the table
    /// cannot be created (for instance a libSQL build without vector support).
    pub async fn open(backend: LibsqlBackend, dim: usize, config: NativeIndexConfig) -> Result<Self, StoreError> {
        vectors::check_dim(dim, MAX_DIMENSIONS)?;
        if config.max_neighbors == 0 {
            return Err(invalid("max_neighbors", "must be at least 1"));
        }
        let mut options = format!("'metric=cosine', 'max_neighbors={}'", config.max_neighbors);
        if let Some(c) = &config.compress_neighbors {
            if !COMPRESSIONS.contains(&c.as_str()) {
                return Err(invalid("compress_neighbors", format!("must be one of {COMPRESSIONS:?}, got {c:?}")));
            }
            options.push_str(&format!(", 'compress_neighbors={c}'"));
        }
        let table = format!("vector_index_f32_{dim}");
        let ann = format!("{table}_ann");
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                rowid      INTEGER PRIMARY KEY,
                message_id BLOB    NOT NULL UNIQUE CHECK (typeof(message_id) = 'blob' AND length(message_id) = 16),
                tenant     TEXT    NOT NULL,
                thread_id  BLOB    NOT NULL,
                model      TEXT    NOT NULL,
                embedding  F32_BLOB({dim}) NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {table}_scope ON {table} (tenant, thread_id, model);
            CREATE INDEX IF NOT EXISTS {ann} ON {table} (libsql_vector_idx(embedding, {options}));"
        );
        let wanted = options.clone();
        let index_name = ann.clone();
        let existing = backend
            .write(move |conn| async move {
                let existing = query_row(
                    &conn,
                    "read vector index",
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    vec![text(index_name)],
                    |row| cells(row, "sqlite_master").opt_text(0, "sql"),
                )
                .await?
                .flatten();
                conn.execute_batch(&ddl).await.ctx("create vector index")?;
                Ok(existing)
            })
            .await?;
        if let Some(sql) = existing.filter(|sql| !sql.contains(&wanted)) {
            tracing::warn!(index = %ann, existing = %sql, wanted = %wanted, "vector index exists with other settings; keeping it");
        }
        Ok(Self { backend, dim, table, ann, exact_below: config.exact_below })
    }

    /// Dimensions of the vectors it holds.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }
}

memlayer_adapters_sql::vector_index!(LibsqlVectorIndex);

#[async_trait]
impl IndexEngine for LibsqlVectorIndex {
    type Backend = LibsqlBackend;
    const KIND: IndexKind = IndexKind::Libsql;

    fn dim(&self) -> usize {
        self.dim
    }

    fn backend(&self) -> &LibsqlBackend {
        &self.backend
    }

    fn table(&self) -> &str {
        &self.table
    }

    async fn upsert_entries(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
        let rows: Vec<[Value; 5]> = entries
            .iter()
            .map(|e| {
                [
                    uuid(e.id.as_uuid()),
                    text(e.tenant.as_str()),
                    uuid(e.thread.as_uuid()),
                    text(e.embedding.model()),
                    Value::Blob(encode_f32(e.embedding.vector())),
                ]
            })
            .collect();
        let table = self.table.clone();
        self.backend
            .write(move |conn| async move {
                // Delete, then insert: the DiskANN graph drops the old node.
                let delete = conn
                    .prepare(&format!("DELETE FROM {table} WHERE message_id = ?1"))
                    .await
                    .ctx("upsert vectors")?;
                let insert = conn
                    .prepare(&format!(
                        "INSERT INTO {table} (message_id, tenant, thread_id, model, embedding) VALUES (?1, ?2, ?3, ?4, ?5)"
                    ))
                    .await
                    .ctx("upsert vectors")?;
                for row in rows {
                    let result = delete.execute(vec![row[0].clone()]).await;
                    delete.reset();
                    result.ctx("upsert vectors")?;
                    let result = insert.execute(row.to_vec()).await;
                    insert.reset();
                    result.ctx("upsert vectors")?;
                }
                Ok(())
            })
            .await
    }

    async fn remove_entries(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        let table = self.table.clone();
        self.backend
            .write(move |conn| async move {
                let delete =
                    conn.prepare(&format!("DELETE FROM {table} WHERE message_id = ?1")).await.ctx("remove vectors")?;
                for id in ids {
                    let result = delete.execute(vec![uuid(id.as_uuid())]).await;
                    delete.reset();
                    result.ctx("remove vectors")?;
                }
                Ok(())
            })
            .await
    }

    async fn nearest(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        let Some(cond) = filter_sql(filter, "v.tenant", "v.thread_id", 3) else {
            return Ok(vectors::nothing());
        };
        let search = Search {
            table: self.table.clone(),
            ann: self.ann.clone(),
            filter_sql: cond.sql,
            filter_params: cond.params,
            model: query.model().to_owned(),
            query: query.vector().to_vec(),
            k,
            exact_below: self.exact_below,
        };
        self.backend.read(move |conn| async move { search.run(&conn).await }).await
    }

    async fn len(&self) -> Result<usize, StoreError> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        self.backend
            .read(move |conn| async move {
                let n = query_row(&conn, "count vectors", &sql, (), |row| cells(row, "vector_index").int(0, "count"))
                    .await?
                    .unwrap_or(0);
                usize::try_from(n).map_err(|e| corrupt("vector_index", "count", e))
            })
            .await
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        let sql = format!("SELECT message_id FROM {}", self.table);
        self.backend
            .read(move |conn| async move {
                let mut rows = conn.query(&sql, ()).await.ctx("list vector ids")?;
                let mut ids = Vec::new();
                while let Some(row) = rows.next().await.ctx("list vector ids")? {
                    ids.push(MessageId::from_uuid(cells(&row, "vector_index").uuid(0, "message_id")?));
                }
                Ok(ids)
            })
            .await
    }
}

/// One search, moved onto a reader connection.
struct Search {
    table: String,
    ann: String,
    /// Filter condition on alias `v`, parameters numbered from 3.
    filter_sql: String,
    filter_params: Vec<Value>,
    model: String,
    query: Vec<f32>,
    k: usize,
    exact_below: usize,
}

impl Search {
    /// `?1` query vector, `?2` model or limit, `?3…` the filter.
    fn params(&self, second: Value) -> Vec<Value> {
        let mut params = vec![Value::Blob(encode_f32(&self.query)), second];
        params.extend(self.filter_params.iter().cloned());
        params
    }

    async fn run(self, conn: &libsql::Connection) -> Result<VectorSearch, StoreError> {
        // Counting stops past what the decision needs (the threshold, and `k`
        // for the over-fetch), so a large tenant is not counted in full on
        // every search. `?1` is unused here; bound anyway to keep one numbering.
        let cap = i64::try_from(self.exact_below.max(self.k)).unwrap_or(i64::MAX - 1).saturating_add(1);
        let count_sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {} v WHERE v.model = ?2 {} LIMIT {cap})",
            self.table, self.filter_sql
        );
        let admitted =
            query_row(conn, "count vector candidates", &count_sql, self.params(text(self.model.as_str())), |row| {
                cells(row, "vector_index").int(0, "count")
            })
            .await?
            .unwrap_or(0);
        let admitted = usize::try_from(admitted).map_err(|e| corrupt("vector_index", "count", e))?;
        if admitted == 0 {
            return Ok(vectors::nothing());
        }
        // The strategy reported is the one the filter's own size chose:
        // whether the graph yields `k` admitted entries depends on the other
        // tenants' entries around them, which the report must not reveal.
        if admitted > self.exact_below {
            let matches = match self.native(conn, admitted).await? {
                Some(matches) => matches,
                None => self.exact(conn).await?,
            };
            return Ok(VectorSearch { matches, strategy: IndexKind::Libsql });
        }
        Ok(VectorSearch { matches: self.exact(conn).await?, strategy: IndexKind::Exact })
    }

    /// Every admitted entry compared in SQL; the best `k` re-scored here.
    async fn exact(&self, conn: &libsql::Connection) -> Result<Vec<ScoredHit>, StoreError> {
        let sql = format!(
            "SELECT v.message_id, v.thread_id, v.embedding FROM {} v WHERE v.model = ?2 {} \
             ORDER BY vector_distance_cos(v.embedding, vector32(?1)) LIMIT {}",
            self.table, self.filter_sql, self.k
        );
        let mut rows = conn.query(&sql, self.params(text(self.model.as_str()))).await.ctx("exact vector search")?;
        let mut found = Vec::with_capacity(self.k);
        while let Some(row) = rows.next().await.ctx("exact vector search")? {
            found.push(self.scored(&row)?);
        }
        Ok(best(found, self.k))
    }

    /// `vector_top_k` over-fetched and filtered; `None` when even the largest
    /// fetch, or the whole graph, yields fewer than `min(k, admitted)` entries.
    async fn native(&self, conn: &libsql::Connection, admitted: usize) -> Result<Option<Vec<ScoredHit>>, StoreError> {
        let wanted = self.k.min(admitted);
        let cap = SEARCH_L.max(self.k);
        let mut n = (self.k * OVERFETCH).clamp(64, cap);
        // LEFT JOIN with the filter in ON: rows the filter rejects come back
        // with NULLs, so the raw neighbour count tells when the graph ran dry.
        let sql = format!(
            "SELECT v.message_id, v.thread_id, v.embedding FROM vector_top_k('{ann}', vector32(?1), ?2) AS top \
             LEFT JOIN {table} v ON v.rowid = top.id AND v.model = ?{model} {filter}",
            ann = self.ann,
            table = self.table,
            model = 3 + self.filter_params.len(),
            filter = self.filter_sql,
        );
        loop {
            let mut params = self.params(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
            params.push(text(self.model.as_str()));
            let mut rows = conn.query(&sql, params).await.ctx("vector index search")?;
            let mut raw = 0usize;
            let mut found = Vec::new();
            while let Some(row) = rows.next().await.ctx("vector index search")? {
                raw += 1;
                if !matches!(row.get_value(0).ctx("read column")?, Value::Null) {
                    found.push(self.scored(&row)?);
                }
            }
            if found.len() >= wanted {
                return Ok(Some(best(found, self.k)));
            }
            if raw < n || n >= cap {
                tracing::debug!(
                    found = found.len(),
                    wanted,
                    fetched = n,
                    "vector index came up short; searching exactly"
                );
                return Ok(None);
            }
            n = (n * 2).min(cap);
        }
    }

    /// A row `(message_id, thread_id, embedding)` with its true cosine similarity.
    fn scored(&self, row: &libsql::Row) -> Result<ScoredHit, StoreError> {
        let r = cells(row, "vector_index");
        let vector = decode_f32(&r.blob(2, "embedding")?)
            .filter(|v| v.len() == self.query.len())
            .ok_or_else(|| corrupt("vector_index", "embedding", "wrong length"))?;
        Ok(ScoredHit {
            id: MessageId::from_uuid(r.uuid(0, "message_id")?),
            thread: ThreadId::from_uuid(r.uuid(1, "thread_id")?),
            score: cosine(&vector, &self.query),
        })
    }
}

/// Little-endian f32 bytes, the layout of `F32_BLOB` and of `message_vectors.vector`.
pub(crate) fn encode_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`encode_f32`]; `None` when the length is not a multiple of 4.
pub(crate) fn decode_f32(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Cosine similarity, accumulated in f64; 0 when either vector is zero.
#[allow(clippy::cast_possible_truncation, reason = "a cosine is within [-1, 1]")]
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { (dot / (na.sqrt() * nb.sqrt())) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_blobs_round_trip() {
        let v = vec![0.5, -1.25, f32::MIN_POSITIVE, 3.0e7];
        let bytes = encode_f32(&v);
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..4], &0.5f32.to_le_bytes());
        assert_eq!(decode_f32(&bytes), Some(v));
        assert_eq!(decode_f32(&[1, 2, 3]), None);
    }

    #[test]
    fn cosine_is_scale_free() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-7);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-7);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
