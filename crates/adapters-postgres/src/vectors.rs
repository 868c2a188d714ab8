//! [`memlayer_ports::VectorIndex`] on pgvector's HNSW index, in the memlayer
//! database itself; the port's shared rules are in
//! `memlayer_adapters_sql::vectors`.

use std::str::FromStr;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use memlayer_adapters_sql::embeddings;
use memlayer_adapters_sql::vectors::{self, IndexEngine, invalid};
use memlayer_domain::{DomainError, Embedding, MessageId};
use memlayer_ports::{IndexKind, SearchFilter, StoreError, VectorEntry, VectorSearch};
use pgvector::Vector;

use crate::PgBackend;
use crate::backend::{Access, begin, begin_with};
use crate::embeddings::thread_filter;
use crate::error::{Context as _, DriverError};
use crate::exec::row_values;

/// Distance the HNSW graph is built for. For unit vectors (every memlayer
/// embedding) the three order neighbours identically; scores are always the
/// cosine similarity, whatever the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// `vector_cosine_ops`, `<=>`.
    #[default]
    Cosine,
    /// `vector_l2_ops`, `<->`.
    L2,
    /// `vector_ip_ops`, `<#>` (negative inner product).
    InnerProduct,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
        }
    }

    fn ops(self) -> &'static str {
        match self {
            Metric::Cosine => "vector_cosine_ops",
            Metric::L2 => "vector_l2_ops",
            Metric::InnerProduct => "vector_ip_ops",
        }
    }

    fn operator(self) -> &'static str {
        match self {
            Metric::Cosine => "<=>",
            Metric::L2 => "<->",
            Metric::InnerProduct => "<#>",
        }
    }
}

impl FromStr for Metric {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            "ip" | "inner_product" => Ok(Metric::InnerProduct),
            other => Err(DomainError::new("metric", format!("must be cosine, l2 or ip, got {other:?}"))),
        }
    }
}

/// Settings of the HNSW index. `metric`, `m` and `ef_construction` apply
/// when the index is built; `ef_search` and `exact_below` per query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswConfig {
    /// Distance of the graph.
    pub metric: Metric,
    /// Neighbours per node (pgvector's `m`, default 16).
    pub m: u32,
    /// Candidate list while building (pgvector's `ef_construction`, default 64).
    pub ef_construction: u32,
    /// Candidate list while searching (`hnsw.ef_search`, set with `SET LOCAL`
    /// inside the search's transaction, so pooled connections keep their
    /// defaults).
    pub ef_search: u32,
    /// A search whose filter admits at most this many entries is answered
    /// exactly (index scans off), which is both exact and fast for small filters.
    pub exact_below: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self { metric: Metric::Cosine, m: 16, ef_construction: 64, ef_search: 40, exact_below: 1_000 }
    }
}

/// pgvector's largest indexable `vector` dimension.
pub const MAX_INDEXED_DIMENSIONS: usize = 2_000;

/// A nearest-neighbour index in Postgres: a table `pgvector_index_{dim}`
/// (message id, tenant, thread, model and a `vector({dim})`), a B-tree on
/// `(tenant, model, thread_id)` and an HNSW index on the vector, under the
/// same row-level security as every memlayer table.
///
/// Searches count the entries the filter admits, up to
/// [`HnswConfig::exact_below`]: that many or fewer are compared exactly
/// (strategy `exact`, index scans disabled with `SET LOCAL`); more go to the
/// planner with the HNSW index available, `hnsw.ef_search` set and
/// `hnsw.iterative_scan = relaxed_order` and sorting disabled (so the plan
/// is the graph's whether or not the table has been analysed), so a filter that discards most
/// neighbours makes the scan continue instead of returning too few (strategy
/// `pgvector`). Scores are recomputed as cosine similarity and the matches
/// re-sorted.
#[derive(Debug, Clone)]
pub struct PgVectorIndex {
    backend: PgBackend,
    dim: usize,
    table: String,
    hnsw: String,
    config: HnswConfig,
}

impl PgVectorIndex {
    /// Opens (creating when missing) the index table and its HNSW index for
    /// vectors of `dim` dimensions. An existing index keeps its own build
    /// settings (a warning is logged when they differ).
    ///
    /// # Errors
    /// `Invalid` for a dimension of 0 or above [`MAX_INDEXED_DIMENSIONS`], or
    /// `m`/`ef_construction`/`ef_search` out of pgvector's ranges; `Backend`
    /// when the table cannot be created (pgvector missing).
    pub async fn open(backend: PgBackend, dim: usize, config: HnswConfig) -> Result<Self, StoreError> {
        vectors::check_dim(dim, MAX_INDEXED_DIMENSIONS)?;
        if !(2..=100).contains(&config.m) {
            return Err(invalid("m", format!("must be between 2 and 100, got {}", config.m)));
        }
        if !(4..=1000).contains(&config.ef_construction) || config.ef_construction < 2 * config.m {
            return Err(invalid(
                "ef_construction",
                format!("must be between 4 and 1000 and at least 2 × m, got {}", config.ef_construction),
            ));
        }
        if !(1..=1000).contains(&config.ef_search) {
            return Err(invalid("ef_search", format!("must be between 1 and 1000, got {}", config.ef_search)));
        }
        let table = format!("pgvector_index_{dim}");
        let hnsw = format!("{table}_hnsw_{}", config.metric.name());
        let index = Self { backend, dim, table, hnsw, config };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                message_id uuid NOT NULL PRIMARY KEY,
                tenant     text NOT NULL,
                thread_id  uuid NOT NULL,
                model      text NOT NULL,
                embedding  vector({dim}) NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {t}_scope ON {t} (tenant, model, thread_id);
            ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
            ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = '{t}' AND policyname = 'tenant_isolation') THEN
                    CREATE POLICY tenant_isolation ON {t} USING (memlayer_tenant_admits(tenant));
                END IF;
                -- A caller's resource, as on message_vectors (migration 12; its
                -- down migration drops this policy too).
                IF to_regprocedure('memlayer_resource_threads()') IS NOT NULL AND NOT EXISTS
                    (SELECT 1 FROM pg_policies WHERE tablename = '{t}' AND policyname = 'resource_isolation') THEN
                    CREATE POLICY resource_isolation ON {t} AS RESTRICTIVE USING ((SELECT memlayer_unbound())
                        OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
                END IF;
            END $$;",
            t = index.table
        );
        let mut client = index.backend.client().await?;
        // Schema set-up, like a migration: no statement timeout.
        let tx = begin_with(&mut client, Access::All, None).await?;
        // Serialise concurrent openers: CREATE … IF NOT EXISTS races otherwise.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&index.table]).await.ctx("lock vector index")?;
        tx.batch_execute(&ddl).await.ctx("create vector index table")?;
        let existing = tx
            .query_opt("SELECT indexdef FROM pg_indexes WHERE indexname = $1", &[&index.hnsw])
            .await
            .ctx("read vector index")?;
        tx.commit().await.ctx("create vector index table")?;
        drop(client);
        match existing {
            Some(row) => {
                let def: String = row.try_get(0).ctx("read vector index")?;
                let wanted = index.with_clause();
                if !def.contains(&wanted) {
                    tracing::warn!(index = %index.hnsw, existing = %def, wanted = %wanted, "HNSW index exists with other settings; keeping it");
                }
            }
            None => index.build_hnsw().await?,
        }
        Ok(index)
    }

    /// Dimensions of the vectors it holds.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &HnswConfig {
        &self.config
    }

    fn with_clause(&self) -> String {
        format!("WITH (m='{}', ef_construction='{}')", self.config.m, self.config.ef_construction)
    }

    /// Builds the HNSW index when it is missing (after a bulk load, building
    /// once is 5–35× faster than inserting into a built graph).
    ///
    /// # Errors
    /// `Backend` when Postgres refuses.
    pub async fn build_hnsw(&self) -> Result<(), StoreError> {
        let client = self.backend.client().await?;
        client
            .batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {}) {}",
                self.hnsw,
                self.table,
                self.config.metric.ops(),
                self.with_clause()
            ))
            .await
            .ctx("build HNSW index")
    }

    /// Drops the HNSW index (before a bulk load; searches stay correct, exact).
    ///
    /// # Errors
    /// `Backend` when Postgres refuses.
    pub async fn drop_hnsw(&self) -> Result<(), StoreError> {
        let client = self.backend.client().await?;
        client.batch_execute(&format!("DROP INDEX IF EXISTS {}", self.hnsw)).await.ctx("drop HNSW index")
    }

    /// Searches exactly, whatever the filter's size: the same query with
    /// index scans disabled (benchmarks and recall checks).
    ///
    /// # Errors
    /// As [`VectorIndex::search`].
    pub async fn search_exact(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
    ) -> Result<VectorSearch, StoreError> {
        self.run_search(filter, query, k, Some(true)).await
    }

    async fn run_search(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
        force_exact: Option<bool>,
    ) -> Result<VectorSearch, StoreError> {
        vectors::check_query(query, self.dim)?;
        let Some(threads) = thread_filter(filter) else {
            return Ok(vectors::nothing());
        };
        if k == 0 {
            return Ok(vectors::nothing());
        }
        let model = query.model();
        let vector = Vector::from(query.vector().to_vec());
        let tenant = filter.tenant.as_str();
        let t = &self.table;
        // Threads marked deleted (migration 9) are left out until the app's
        // `remove_thread` and the sweep have removed their rows.
        let cond = "tenant = $1 AND model = $2 AND ($3::uuid[] IS NULL OR thread_id = ANY($3)) \
                     AND thread_id NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)";
        let mut client = self.backend.client().await?;
        let tx = begin(&mut client, Access::Of(filter)).await?;
        let exact = match force_exact {
            Some(exact) => exact,
            None => {
                let count = tx
                    .prepare_cached(&format!("SELECT count(*) FROM (SELECT 1 FROM {t} WHERE {cond} LIMIT $4) s"))
                    .await
                    .ctx("count filtered vectors")?;
                let cap = i64::try_from(self.config.exact_below).unwrap_or(i64::MAX - 1) + 1;
                let row =
                    tx.query_one(&count, &[&tenant, &model, &threads, &cap]).await.ctx("count filtered vectors")?;
                row.try_get::<_, i64>(0).ctx("count filtered vectors")? < cap
            }
        };
        // SET LOCAL: these end with the transaction; the pooled connection's
        // next user gets the server defaults. Values are our own integers.
        let settings = if exact {
            "SET LOCAL enable_indexscan = off".to_owned()
        } else {
            // enable_sort off: without statistics (a table loaded since the
            // last ANALYZE) the planner estimates one row and sorts the
            // B-tree's rows instead, an exact scan reported as `pgvector`
            // whose choice changes when autovacuum runs.
            format!(
                "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order; \
                 SET LOCAL enable_sort = off",
                self.config.ef_search
            )
        };
        tx.batch_execute(&settings).await.ctx("configure vector search")?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT message_id, thread_id, (1 - (embedding <=> $5))::real AS score FROM {t} \
                 WHERE {cond} ORDER BY embedding {op} $5 LIMIT $4",
                op = self.config.metric.operator()
            ))
            .await
            .ctx("vector search")?;
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let rows = tx.query(&stmt, &[&tenant, &model, &threads, &limit, &vector]).await.ctx("vector search")?;
        tx.commit().await.ctx("vector search")?;
        let matches = rows
            .iter()
            .map(|row| embeddings::scored_hit(&row_values(row, "vector search")?, "pgvector_index"))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Iterative scans in relaxed order may return neighbours slightly out of order.
        Ok(VectorSearch {
            matches: vectors::best(matches, k),
            strategy: if exact { IndexKind::Exact } else { IndexKind::Pgvector },
        })
    }
}

/// Rows per upsert transaction chunk (pipelined inserts).
const UPSERT_CHUNK: usize = 1_000;

memlayer_adapters_sql::vector_index!(PgVectorIndex);

#[async_trait]
impl IndexEngine for PgVectorIndex {
    type Backend = PgBackend;
    const KIND: IndexKind = IndexKind::Pgvector;

    fn dim(&self) -> usize {
        self.dim
    }

    fn backend(&self) -> &PgBackend {
        &self.backend
    }

    fn table(&self) -> &str {
        &self.table
    }

    async fn upsert_entries(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
        let mut client = self.backend.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO {} (message_id, tenant, thread_id, model, embedding) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (message_id) DO UPDATE SET tenant = excluded.tenant, thread_id = excluded.thread_id, \
                 model = excluded.model, embedding = excluded.embedding",
                self.table
            ))
            .await
            .ctx("upsert vectors")?;
        for chunk in entries.chunks(UPSERT_CHUNK) {
            let rows: Vec<(uuid::Uuid, &str, uuid::Uuid, &str, Vector)> = chunk
                .iter()
                .map(|e| {
                    (
                        e.id.as_uuid(),
                        e.tenant.as_str(),
                        e.thread.as_uuid(),
                        e.embedding.model(),
                        Vector::from(e.embedding.vector().to_vec()),
                    )
                })
                .collect();
            // Pipelined: every insert is sent before the first answer is awaited.
            try_join_all(rows.iter().map(|(id, tenant, thread, model, v)| {
                let (tx, stmt) = (&tx, &stmt);
                async move { tx.execute(stmt, &[id, tenant, thread, model, v]).await }
            }))
            .await
            .ctx("upsert vectors")?;
        }
        tx.commit().await.ctx("upsert vectors")?;
        Ok(())
    }

    async fn remove_entries(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(MessageId::as_uuid).collect();
        let mut client = self.backend.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(&format!("DELETE FROM {} WHERE message_id = ANY($1)", self.table))
            .await
            .ctx("remove vectors")?;
        tx.execute(&stmt, &[&ids]).await.ctx("remove vectors")?;
        tx.commit().await.ctx("remove vectors")
    }

    async fn nearest(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        self.run_search(filter, query, k, None).await
    }

    async fn len(&self) -> Result<usize, StoreError> {
        let mut client = self.backend.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let row = tx.query_one(&format!("SELECT count(*) FROM {}", self.table), &[]).await.ctx("count vectors")?;
        tx.commit().await.ctx("count vectors")?;
        let n: i64 = row.try_get(0).ctx("count vectors")?;
        usize::try_from(n).map_err(|e| StoreError::backend(DriverError::new("count vectors", e.to_string())))
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        let mut client = self.backend.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let rows = tx.query(&format!("SELECT message_id FROM {}", self.table), &[]).await.ctx("list vector ids")?;
        tx.commit().await.ctx("list vector ids")?;
        rows.iter().map(|r| Ok(MessageId::from_uuid(r.try_get(0).ctx("list vector ids")?))).collect()
    }
}
