//! `build(config) -> Services`: the one place adapters are chosen and wired
//! together, and the background tasks ([`Background`]) a server runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use memlayer_adapters_embed::{
    ExactIndex, HnswConfig, HnswIndex, MINILM_MODEL, OnnxConfig, OnnxEmbedder, TantivyLexicalIndex, TiktokenCounter,
};
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, LibsqlLocation, LibsqlVectorIndex, NativeIndexConfig};
use memlayer_adapters_postgres::{Metric, PgBackend, PgConfig, PgVectorIndex};
use memlayer_domain::{Embedding, TenantId};
use memlayer_ports::{
    CatalogStore, Database, DeletionLog, Embedder, EmbedderInfo, EmbeddingStore, IdempotencyStore, IndexKind, KeyStore,
    LexicalIndex, MessageStore, ObservabilityStore, RetentionStore, StateStore, StoreError, Summarizer, SummaryQueue,
    SummaryStore, ThreadStore, TokenCounter, TransferStore, UsageStore, VectorIndex, WorkingMemoryStore,
};
use tokio::sync::watch;

use crate::config::{DatabaseTarget, DistanceMetric, EmbeddingConfig, EmbeddingMode};
use crate::{
    CacheSettings, CatalogService, Config, EmbeddingWorker, MemoryService, SearchService, ThreadSweeper, WorkerSettings,
};

/// Everything a frontend needs, wired by [`build`].
#[derive(Debug, Clone)]
pub struct Services {
    /// The memory use cases.
    pub memory: MemoryService,
    /// Search and embeddings.
    pub search: SearchService,
    /// Models, agents, tools and settings, with the read cache.
    pub catalog: CatalogService,
    /// The embedding worker (run it with [`Services::start_background`], or
    /// drive it by hand as `memlayer reembed` does).
    pub worker: EmbeddingWorker,
    /// Removes deleted threads' rows in chunks (run by
    /// [`Services::start_background`], or by hand with
    /// [`ThreadSweeper::drain`]).
    pub sweeper: ThreadSweeper,
    /// The database: reachability and migrations.
    pub database: Arc<dyn Database>,
    /// The durable embeddings and job queue.
    pub embeddings: Arc<dyn EmbeddingStore>,
    /// The embedder, for status checks.
    pub embedder: Arc<dyn Embedder>,
    /// The vector index (closed by [`Background::stop`]).
    pub index: Arc<dyn VectorIndex>,
    /// The in-process lexical index the libSQL backend searches, if any
    /// (`search.lexical`; closed by [`Background::stop`], which snapshots it).
    pub lexical: Option<Arc<dyn LexicalIndex>>,
    /// Idempotency records of requests sent with an `Idempotency-Key`
    /// (expired ones are purged by [`Services::start_background`], or by
    /// [`Services::purge_expired_idempotency`]).
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Why the embedder cannot run, when it cannot.
    pub embedder_problem: Option<String>,
    /// Turns a request's credential into a principal (`auth.mode`).
    pub auth: crate::Authenticator,
    /// API keys: create, list, revoke; the verifier of `auth.mode = api_key`
    /// (last uses are written by [`Services::start_background`]).
    pub keys: crate::KeyService,
    /// Rate limits (`limits.*`), shared with the services it charges.
    pub limiter: crate::Limiter,
    /// The link to Redis (`redis.url`) the limiter and the catalog share
    /// with other servers, if configured.
    pub coordinator: Option<crate::Coordinator>,
    /// The validated configuration the services were built from.
    pub config: Arc<Config>,
    /// Working memory per resource or thread.
    pub working: crate::WorkingMemoryService,
    /// Thread summaries: current, versions, on demand, and the worker of
    /// summary jobs (run by [`Services::start_background`]).
    pub summaries: crate::SummaryService,
    /// Context assembly (system prompt, working memory, summary, recall,
    /// recent messages under a token budget).
    pub context: crate::ContextService,
    /// Retention policies, pruning, erasure of a resource and receipts
    /// (its scheduler is run by [`Services::start_background`] when
    /// `retention.enabled`).
    pub retention: crate::RetentionService,
    /// Exports and imports of a tenant's memory, keeping ids.
    pub transfer: crate::TransferService,
    /// Workflows, and the runner loop (run by [`Services::start_background`]
    /// when `workflows.enabled`).
    pub workflows: crate::WorkflowService,
    /// The store's log of deletions, which an in-process vector index
    /// follows (purged by [`Services::start_background`], or by
    /// [`Services::purge_deletion_log`]).
    pub deletions: Arc<dyn DeletionLog>,
    /// The in-process vector index's follower of `deletions` (`hnsw`,
    /// `exact`); `None` for an index the database keeps.
    follower: Option<Arc<crate::follower::FollowingIndex>>,
    /// The libSQL backend, whose deferred appends (`database.commit_delay_ms`)
    /// [`Background::stop`] commits.
    libsql: Option<Arc<memlayer_adapters_libsql::LibsqlBackend>>,
    /// Traces, model performance, costs, evaluations and system metrics
    /// (its sampler is run by [`Services::start_background`] when
    /// `observability.metrics.enabled`).
    pub observability: crate::ObservabilityService,
}

/// Background tasks started by [`Services::start_background`].
#[derive(Debug)]
pub struct Background {
    shutdown: watch::Sender<bool>,
    worker: Option<tokio::task::JoinHandle<()>>,
    purge: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    keys: tokio::task::JoinHandle<()>,
    peers: Option<tokio::task::JoinHandle<()>>,
    index: Arc<dyn VectorIndex>,
    lexical: Option<Arc<dyn LexicalIndex>>,
    libsql: Option<Arc<memlayer_adapters_libsql::LibsqlBackend>>,
    summaries: tokio::task::JoinHandle<()>,
    retention: Option<tokio::task::JoinHandle<()>>,
    workflows: Option<tokio::task::JoinHandle<()>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

/// Longest wait in [`Background::stop`] for the embedding worker's round in
/// progress. A round still running then is left to finish on its own (not
/// cut mid-transaction); if the process exits first, its jobs stay in the
/// durable queue and the next start embeds them.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(3);

impl Background {
    /// Stops the tasks (waiting at most 3 s for an embedding round in
    /// progress, and for the thread sweeper's chunk in progress), then closes the vector index: a graph build in progress
    /// is abandoned, not awaited, and the in-memory index is persisted.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(peers) = self.peers {
            peers.abort();
        }
        if let Some(worker) = self.worker {
            match tokio::time::timeout(WORKER_STOP_WAIT, worker).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "embedding worker ended abnormally"),
                Err(_) => tracing::warn!(
                    wait = ?WORKER_STOP_WAIT,
                    "embedding worker still busy: not waiting for its round; unfinished jobs stay queued"
                ),
            }
        }
        // A summary step in progress is left to finish on its own (its
        // job's lease brings it back if the process exits first).
        if tokio::time::timeout(WORKER_STOP_WAIT, self.summaries).await.is_err() {
            tracing::warn!("summary worker still busy: not waiting; its job stays queued");
        }
        // A retention run stops between two steps (each one short
        // transaction); what is left is continued by the next run.
        if let Some(retention) = self.retention
            && let Err(e) = retention.await
        {
            tracing::warn!(error = %e, "retention scheduler ended abnormally");
        }
        // Running steps are abandoned: their leases expire and they run
        // again (same idempotency key) on the next claim.
        if let Some(w) = self.workflows {
            w.abort();
        }
        // A sample in progress is one short write; the next start samples again.
        if let Some(sampler) = self.sampler
            && tokio::time::timeout(WORKER_STOP_WAIT, sampler).await.is_err()
        {
            tracing::warn!("system metrics sampler still busy: not waiting");
        }
        if let Err(e) = self.purge.await {
            tracing::warn!(error = %e, "idempotency purge ended abnormally");
        }
        // At most one chunk (one short transaction) is in flight; the rest
        // stays marked and the next start resumes it.
        if let Err(e) = self.sweeper.await {
            tracing::warn!(error = %e, "thread sweeper ended abnormally");
        }
        // Writes the last uses not yet written.
        if let Err(e) = self.keys.await {
            tracing::warn!(error = %e, "API key last-use writer ended abnormally");
        }
        // Appends acknowledged under a commit delay; left uncommitted, they
        // would be applied again from the journal at the next start.
        if let Some(libsql) = &self.libsql
            && let Err(e) = libsql.commit_deferred().await
        {
            tracing::warn!(error = %e, "committing deferred appends failed; the next start applies them again");
        }
        if let Err(e) = self.index.close().await {
            tracing::warn!(error = %e, "closing the vector index failed; it is rebuilt from the store at start");
        }
        if let Some(lexical) = &self.lexical
            && let Err(e) = lexical.close().await
        {
            tracing::warn!(error = %e, "snapshotting the full-text index failed; it is rebuilt from the store at start");
        }
    }
}

/// Expired idempotency records deleted per transaction.
const PURGE_BATCH: u32 = 1_000;
/// Most transactions of one purge round, so a round's work is bounded.
const PURGE_BATCHES_PER_ROUND: u32 = 100;
/// Time between purge rounds of the background task.
const PURGE_INTERVAL: Duration = Duration::from_secs(300);
/// How long deletion log entries are kept: a running process reads the log
/// before every search (and before its own purge), so only one that has not
/// read it for this long misses entries, and then reconciles.
const DELETION_LOG_KEEP: Duration = Duration::from_secs(86_400);

impl Services {
    /// Starts the thread sweeper (which first resumes any sweep a crash cut
    /// short), the idempotency purge and the embedding worker, unless
    /// embeddings are switched off
    /// (`embedding.enabled = false`): then messages stay queued, pending and
    /// not failing, until embeddings are switched on or `memlayer reembed`
    /// runs.
    #[must_use]
    pub fn start_background(&self) -> Background {
        let (shutdown, rx) = watch::channel(false);
        let worker = if self.config.embedding.enabled {
            Some(self.worker.clone().spawn(rx.clone()))
        } else {
            tracing::info!("embeddings are disabled: the embedding worker is not started");
            None
        };
        let sweeper = self.sweeper.clone().spawn(rx.clone());
        // Other servers' catalog changes, through Redis: drop the cached reads.
        let peers = self.coordinator.clone().map(|coordinator| {
            let catalog = self.catalog.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                coordinator.follow_invalidations(move || catalog.invalidate_from_peer(), rx).await;
            })
        });
        let keys = self.spawn_key_uses(rx.clone());
        let summaries = self.summaries.clone().spawn(rx.clone());
        let retention = self.config.retention.enabled.then(|| self.retention.clone().spawn(rx.clone()));
        let workflows = self.config.workflows.enabled.then(|| self.workflows.clone().spawn(rx.clone()));
        let o = &self.config.observability;
        let sampler = (o.enabled && o.metrics.enabled).then(|| {
            self.observability.sampler(self.config.data_dir.clone(), Some(self.index.clone())).spawn(rx.clone())
        });
        let purge = self.spawn_purge(rx);
        Background {
            shutdown,
            worker,
            purge,
            sweeper,
            keys,
            peers,
            index: self.index.clone(),
            lexical: self.lexical.clone(),
            libsql: self.libsql.clone(),
            summaries,
            retention,
            workflows,
            sampler,
        }
    }

    /// Deletes expired idempotency records, in transactions of at most
    /// 1,000 and at most 100,000 per call; returns how many it deleted. The
    /// background task calls this every five minutes; expired records
    /// already count as absent, so purging only reclaims space.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn purge_expired_idempotency(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for _ in 0..PURGE_BATCHES_PER_ROUND {
            let n = self.idempotency.purge_expired(memlayer_domain::now(), PURGE_BATCH).await?;
            total += n;
            if n < u64::from(PURGE_BATCH) {
                break;
            }
        }
        Ok(total)
    }

    /// Deletes the deletion log's entries older than a day, in
    /// transactions of at most 1,000 and at most 100,000 per call; returns
    /// how many. This process's index reads the log first, so its own purge
    /// never makes it miss an entry; another process that has not read the
    /// log for a day reconciles its index with the store instead. The
    /// background task calls this with the idempotency purge.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn purge_deletion_log(&self) -> Result<u64, StoreError> {
        if let Some(follower) = &self.follower {
            follower.follow().await?;
        }
        let before = memlayer_domain::now() - DELETION_LOG_KEEP;
        let mut total = 0;
        for _ in 0..PURGE_BATCHES_PER_ROUND {
            let n = self.deletions.purge_deletions(before, PURGE_BATCH).await?;
            total += n;
            if n < u64::from(PURGE_BATCH) {
                break;
            }
        }
        Ok(total)
    }

    /// Writes the API keys' last uses every `auth.keys.flush_interval_secs`,
    /// and once more at shutdown.
    fn spawn_key_uses(&self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        let interval = self.config.auth.keys.flush_interval();
        tokio::spawn(async move {
            loop {
                // Stopping (or the `Background` dropped): one last write, then out.
                let stop = tokio::select! {
                    () = tokio::time::sleep(interval) => false,
                    changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
                };
                match keys.flush_uses().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(keys = n, "API key last uses written"),
                    Err(e) => tracing::warn!(error = %e, "API key last uses: store error; kept for the next write"),
                }
                if stop {
                    break;
                }
            }
        })
    }

    fn spawn_purge(&self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let services = self.clone();
        tokio::spawn(async move {
            loop {
                match services.purge_expired_idempotency().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired idempotency records purged"),
                    Err(e) => tracing::warn!(error = %e, "idempotency purge: store error"),
                }
                match services.purge_deletion_log().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "deletion log entries purged"),
                    Err(e) => tracing::warn!(error = %e, "deletion log purge: store error"),
                }
                tokio::select! {
                    () = tokio::time::sleep(PURGE_INTERVAL) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

/// Stands in for the embedder when embeddings are switched off.
#[derive(Debug)]
struct DisabledEmbedder;

#[async_trait]
impl Embedder for DisabledEmbedder {
    fn info(&self) -> EmbedderInfo {
        EmbedderInfo { model: MINILM_MODEL.to_owned(), dim: 384, max_tokens: 256 }
    }

    async fn embed(&self, _texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        Err(StoreError::Unprovisioned(
            "embeddings are disabled (embedding.enabled = false); enable them to use vector search".into(),
        ))
    }
}

/// Building the services failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database {location}")]
    Database {
        /// Where (no secrets).
        location: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// An `auth.mode` cannot be served with this build or configuration.
    #[error("auth.mode: {0}")]
    Auth(String),
}

fn describe(loc: &LibsqlLocation) -> String {
    match loc {
        LibsqlLocation::File(p) => format!("file {}", p.display()),
        LibsqlLocation::Memory => "in memory".to_owned(),
        LibsqlLocation::Remote { url, .. } => format!("remote {url}"),
    }
}

/// The storage backend `database.url` selects.
#[derive(Debug, Clone)]
enum Backend {
    Libsql(Arc<LibsqlBackend>),
    Postgres(Arc<PgBackend>),
}

impl Backend {
    fn database(&self) -> Arc<dyn Database> {
        match self {
            Backend::Libsql(b) => b.clone(),
            Backend::Postgres(b) => b.clone(),
        }
    }

    fn stores(&self) -> Stores {
        match self {
            Backend::Libsql(b) => Stores::of(b),
            Backend::Postgres(b) => Stores::of(b),
        }
    }
}

/// The storage ports of one backend.
struct Stores {
    threads: Arc<dyn ThreadStore>,
    messages: Arc<dyn MessageStore>,
    states: Arc<dyn StateStore>,
    embeddings: Arc<dyn EmbeddingStore>,
    catalog: Arc<dyn CatalogStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    keys: Arc<dyn KeyStore>,
    working: Arc<dyn WorkingMemoryStore>,
    summaries: Arc<dyn SummaryStore>,
    summary_queue: Arc<dyn SummaryQueue>,
    usage: Arc<dyn UsageStore>,
    retention: Arc<dyn RetentionStore>,
    transfer: Arc<dyn TransferStore>,
    workflows: Arc<dyn memlayer_ports::WorkflowStore>,
    deletions: Arc<dyn DeletionLog>,
    observability: Arc<dyn ObservabilityStore>,
}

impl Stores {
    fn of<B>(b: &Arc<B>) -> Self
    where
        B: ThreadStore
            + MessageStore
            + StateStore
            + EmbeddingStore
            + CatalogStore
            + IdempotencyStore
            + KeyStore
            + WorkingMemoryStore
            + SummaryStore
            + SummaryQueue
            + UsageStore
            + RetentionStore
            + TransferStore
            + memlayer_ports::WorkflowStore
            + DeletionLog
            + ObservabilityStore
            + 'static,
    {
        Self {
            threads: b.clone(),
            messages: b.clone(),
            states: b.clone(),
            embeddings: b.clone(),
            catalog: b.clone(),
            idempotency: b.clone(),
            keys: b.clone(),
            working: b.clone(),
            summaries: b.clone(),
            summary_queue: b.clone(),
            usage: b.clone(),
            retention: b.clone(),
            transfer: b.clone(),
            workflows: b.clone(),
            deletions: b.clone(),
            observability: b.clone(),
        }
    }
}

async fn open_backend(config: &Config) -> Result<Backend, BuildError> {
    config.validate()?;
    let location = match config.database_target()? {
        DatabaseTarget::Postgres(url) => return open_postgres(config, url.expose()).await,
        DatabaseTarget::File(path) => LibsqlLocation::File(path),
        DatabaseTarget::Memory => LibsqlLocation::Memory,
        DatabaseTarget::RemoteLibsql(url) => LibsqlLocation::Remote {
            url: url.expose().to_owned(),
            auth_token: config.database.auth_token.as_ref().map(|s| s.expose().to_owned()),
        },
    };
    open_libsql(config, location).await
}

async fn open_postgres(config: &Config, url: &str) -> Result<Backend, BuildError> {
    let db = &config.database;
    let pg = PgConfig {
        pool_size: db.pool_size,
        connect_timeout: Duration::from_secs(db.connect_timeout_secs),
        statement_timeout: Some(Duration::from_millis(db.statement_timeout_ms)).filter(|t| !t.is_zero()),
        allow_rls_bypass: db.allow_rls_bypass,
        ..PgConfig::new(url.to_owned())
    };
    PgBackend::open(pg)
        .await
        .map(|b| Backend::Postgres(Arc::new(b)))
        .map_err(|source| BuildError::Database { location: memlayer_adapters_postgres::describe_url(url), source })
}

async fn open_libsql(config: &Config, location: LibsqlLocation) -> Result<Backend, BuildError> {
    let described = describe(&location);
    let db = &config.database;
    let libsql = LibsqlConfig {
        location,
        busy_timeout: Duration::from_millis(db.busy_timeout_ms),
        readers: db.readers,
        reader_timeout: Duration::from_millis(db.reader_timeout_ms),
        index_wait: Duration::from_millis(db.index_wait_ms),
        synchronous: match db.synchronous {
            crate::Synchronous::Full => memlayer_adapters_libsql::Synchronous::Full,
            crate::Synchronous::Normal => memlayer_adapters_libsql::Synchronous::Normal,
        },
        commit_delay: Duration::from_millis(db.commit_delay_ms),
    };
    LibsqlBackend::open(libsql)
        .await
        .map(|b| Backend::Libsql(Arc::new(b)))
        .map_err(|source| BuildError::Database { location: described, source })
}

/// Opens the configured database (libSQL or Postgres) without migrating it
/// (for `migrate` and `doctor`).
///
/// # Errors
/// [`BuildError`] saying what could not be opened.
pub async fn open_database(config: &Config) -> Result<Arc<dyn Database>, BuildError> {
    open_backend(config).await.map(|b| b.database())
}

/// The API key service alone on the configured database, migrated when
/// `database.auto_migrate` is set (for `memlayer keys`, which needs neither
/// the model nor the vector index).
///
/// # Errors
/// [`BuildError`] saying what could not be opened or migrated.
pub async fn open_keys(config: &Config) -> Result<crate::KeyService, BuildError> {
    let backend = open_backend(config).await?;
    if config.database.auto_migrate {
        migrate(backend.database().as_ref()).await?;
    }
    Ok(crate::KeyService::new(backend.stores().keys, &config.auth.keys))
}

/// Applies every pending migration.
async fn migrate(database: &dyn Database) -> Result<(), BuildError> {
    let applied =
        database.migrate_up().await.map_err(|source| BuildError::Database { location: database.describe(), source })?;
    for m in &applied {
        tracing::info!(version = m.version, name = %m.name, "applied migration");
    }
    Ok(())
}

/// The ONNX embedder, or a stand-in when embeddings are off; with why it
/// cannot embed, when it cannot.
fn open_embedder(e: &EmbeddingConfig) -> (Arc<dyn Embedder>, Option<String>) {
    if !e.enabled {
        return (Arc::new(DisabledEmbedder), Some("embeddings are disabled (embedding.enabled = false)".to_owned()));
    }
    let cache = e.cache_dir.clone().unwrap_or_else(memlayer_adapters_embed::default_cache_dir);
    let onnx = OnnxConfig {
        sessions: e.sessions,
        interactive_sessions: e.interactive_sessions,
        intra_threads: e.intra_threads,
        ..OnnxConfig::from_cache_dir(&cache)
    };
    let embedder = OnnxEmbedder::new(onnx);
    let problem = embedder.status().err();
    if let Some(p) = &problem {
        tracing::warn!(problem = %p, "embedder unavailable: messages are stored and stay pending until it works");
    }
    (Arc::new(embedder), problem)
}

/// Gives an embedded libSQL backend the in-process lexical index when
/// [`Config::lexical_kind`] says `tantivy`, kept in memory with its
/// snapshot beside the database file (`<file>-lexical`, so a copied or
/// moved database keeps its own; none for `:memory:`). The backend's
/// catch-up feeds it from the snapshot's position (everything, without one).
fn use_lexical_index(config: &Config, backend: &Backend) -> Result<Option<Arc<dyn LexicalIndex>>, BuildError> {
    let Backend::Libsql(libsql) = backend else { return Ok(None) };
    if config.lexical_kind() != crate::config::LexicalKind::Tantivy {
        return Ok(None);
    }
    let db_error = |source| BuildError::Database { location: backend.database().describe(), source };
    let index = match config.database_target()? {
        DatabaseTarget::File(path) => {
            let mut dir = path.into_os_string();
            dir.push("-lexical");
            TantivyLexicalIndex::open(PathBuf::from(dir)).map_err(db_error)?
        }
        _ => TantivyLexicalIndex::in_memory(),
    };
    let index: Arc<dyn LexicalIndex> = Arc::new(index);
    libsql.use_lexical_index(index.clone()).map_err(db_error)?;
    Ok(Some(index))
}

/// The vector index [`Config::index_kind`] names, on `backend`, for
/// vectors of `dim` dimensions.
async fn open_index(config: &Config, backend: &Backend, dim: usize) -> Result<Arc<dyn VectorIndex>, BuildError> {
    let search = &config.search;
    let db_error = |source| BuildError::Database { location: backend.database().describe(), source };
    Ok(match (config.index_kind(), backend) {
        (IndexKind::Exact, _) => Arc::new(ExactIndex::new()),
        (IndexKind::Pgvector, Backend::Postgres(pg)) => {
            let p = &search.pgvector;
            let hnsw = memlayer_adapters_postgres::HnswConfig {
                metric: match p.metric {
                    DistanceMetric::Cosine => Metric::Cosine,
                    DistanceMetric::L2 => Metric::L2,
                    DistanceMetric::Ip => Metric::InnerProduct,
                },
                m: p.m,
                ef_construction: p.ef_construction,
                ef_search: p.ef_search,
                exact_below: p.exact_below,
            };
            Arc::new(PgVectorIndex::open((**pg).clone(), dim, hnsw).await.map_err(db_error)?)
        }
        (IndexKind::Libsql, Backend::Libsql(backend)) => Arc::new(
            LibsqlVectorIndex::open(
                (**backend).clone(),
                dim,
                // The native index keeps its own exact threshold: exact search
                // in SQL breaks even with the index near 2,000 rows, far below
                // the in-process scan's.
                NativeIndexConfig { max_neighbors: search.max_neighbors, ..NativeIndexConfig::default() },
            )
            .await
            .map_err(db_error)?,
        ),
        (IndexKind::Hnsw, Backend::Libsql(_)) => {
            let snapshot = config.database.url.is_none().then(|| config.data_dir.join("index").join("hnsw.snapshot"));
            Arc::new(
                HnswIndex::open(HnswConfig {
                    snapshot_path: snapshot,
                    rebuild_threshold: search.rebuild_threshold,
                    exact_below: search.exact_below,
                    ef_construction: search.ef_construction,
                    ef_search: search.ef_search,
                })
                .map_err(db_error)?,
            )
        }
        // `Config::validate` refuses these pairs already.
        (kind @ (IndexKind::Pgvector | IndexKind::Libsql | IndexKind::Hnsw), _) => {
            return Err(crate::ConfigError::Invalid {
                key: "search.index",
                reason: format!("`{kind}` does not run on this database"),
            }
            .into());
        }
    })
}

fn worker_settings(e: &EmbeddingConfig) -> WorkerSettings {
    WorkerSettings {
        batch_size: e.batch_size,
        poll_interval: Duration::from_millis(e.poll_interval_ms),
        base_backoff: Duration::from_millis(e.base_backoff_ms),
        max_backoff: Duration::from_secs(e.max_backoff_secs),
        lease: Duration::from_secs(e.lease_secs),
    }
}

/// Wires the adapters chosen by `config` into [`Services`]. Applies pending
/// migrations when `database.auto_migrate` is set, and loads the vector
/// index from the stored vectors.
///
/// # Errors
/// [`BuildError`] when the configuration is invalid or the database cannot be
/// opened or migrated.
pub async fn build(config: Config) -> Result<Services, BuildError> {
    let backend = open_backend(&config).await?;
    let database = backend.database();
    let libsql = match &backend {
        Backend::Libsql(b) => Some(b.clone()),
        Backend::Postgres(_) => None,
    };
    if config.database.auto_migrate {
        migrate(database.as_ref()).await?;
    }
    let lexical = use_lexical_index(&config, &backend)?;
    let Stores {
        threads,
        messages,
        states,
        embeddings,
        catalog,
        idempotency,
        keys,
        working,
        summaries,
        summary_queue,
        usage,
        retention,
        transfer,
        workflows: workflow_store,
        deletions,
        observability,
    } = backend.stores();
    let keys = crate::KeyService::new(keys, &config.auth.keys);
    let cache =
        CacheSettings { max_entries: config.cache.max_entries, ttl: Duration::from_secs(config.cache.ttl_secs) };
    let coordinator = crate::Coordinator::new(&config.redis)
        .map_err(|reason| crate::ConfigError::Invalid { key: "redis.url", reason })?;
    let catalog = CatalogService::new(catalog, cache).with_coordinator(coordinator.clone());
    let (embedder, embedder_problem) = open_embedder(&config.embedding);
    let info = embedder.info();
    let index = open_index(&config, &backend, info.dim).await?;
    let db_error = |source| BuildError::Database { location: database.describe(), source };
    // An index in this process follows the log of what other processes
    // delete, from before the reconcile on.
    let (index, follower): (Arc<dyn VectorIndex>, _) = match index.kind() {
        IndexKind::Hnsw | IndexKind::Exact => {
            let follower =
                crate::follower::FollowingIndex::new(index, deletions.clone(), embeddings.clone(), info.model.clone())
                    .await
                    .map_err(db_error)?;
            let follower = Arc::new(follower);
            (follower.clone(), Some(follower))
        }
        // Kept by the database: a deletion reaches it in its transaction.
        IndexKind::Libsql | IndexKind::Pgvector => (index, None),
    };
    let loaded =
        crate::follower::reconcile(embeddings.as_ref(), index.as_ref(), &info.model).await.map_err(db_error)?;
    tracing::info!(index = %index.kind(), loaded, model = %info.model, "vector index ready");

    let worker =
        EmbeddingWorker::new(embedder.clone(), embeddings.clone(), index.clone(), worker_settings(&config.embedding));
    let default_tenant = TenantId::parse(config.memory.default_tenant.clone())
        .map_err(|e| crate::ConfigError::Invalid { key: "memory.default_tenant", reason: e.to_string() })?;
    let tokens: Arc<dyn TokenCounter> = Arc::new(TiktokenCounter::new());
    let inline = config.embedding.mode == EmbeddingMode::Inline;
    let sweeper = ThreadSweeper::new(threads.clone(), config.memory.sweep_chunk);
    let limits_on = config.limits.enabled.unwrap_or(!config.auth.mode.has(crate::AuthMode::None));
    let limiter =
        crate::Limiter::new(config.limits.clone(), limits_on, Some(catalog.clone())).with_shared(coordinator.clone());
    let summarizer = open_summarizer(&config.summary, embedder.clone())?;
    let summary_service = crate::SummaryService::new(
        summaries.clone(),
        summary_queue,
        messages.clone(),
        threads.clone(),
        summarizer,
        config.summary.clone(),
    );
    let context = crate::ContextService::new(threads.clone(), messages.clone(), tokens.clone(), catalog.clone())
        .with_max_response_bytes(config.memory.max_response_bytes)
        .with_working_memory(working.clone())
        .with_summaries(summaries);
    let mut memory = MemoryService::new(
        threads.clone(),
        messages.clone(),
        states,
        tokens,
        default_tenant,
        config.memory.count_tokens,
    )
    .with_semantic(index.clone(), worker.clone(), inline)
    .with_sweeper(sweeper.clone())
    .with_catalog(catalog.clone())
    .with_max_response_bytes(config.memory.max_response_bytes)
    .with_limiter(limiter.clone())
    .with_usage(usage);
    let working = crate::WorkingMemoryService::new(working, threads.clone()).with_catalog(catalog.clone());
    if let Some(trigger) = summary_service.trigger() {
        memory = memory.with_summary_trigger(trigger);
    }
    let search = SearchService::new(embedder.clone(), index.clone(), embeddings.clone(), messages, threads.clone())
        .with_max_response_bytes(config.memory.max_response_bytes)
        .with_limiter(limiter.clone());
    let context = context.with_search(search.clone());
    let observability = crate::ObservabilityService::new(observability, config.observability.clone(), limiter.clone())
        .with_catalog(catalog.clone());
    let retention = crate::RetentionService::new(retention, config.retention.clone())
        .with_observability(observability.store(), config.observability.clone())
        .with_index(index.clone())
        .with_sweeper(sweeper.clone())
        .with_idempotency(idempotency.clone());
    let transfer = crate::TransferService::new(
        transfer,
        threads.clone(),
        embeddings.clone(),
        index.clone(),
        crate::ExportModel { model: info.model.clone(), dim: info.dim },
    )
    .with_worker(worker.clone())
    .with_limiter(limiter.clone());
    let workflows = open_workflows(&config.workflows, workflow_store, memory.clone(), catalog.clone())?
        .with_context(context.clone());
    Ok(Services {
        memory,
        search,
        catalog,
        worker,
        sweeper,
        database,
        embeddings,
        embedder,
        index,
        lexical,
        embedder_problem,
        idempotency,
        auth: crate::auth::authenticator(&config, Some(Arc::new(keys.clone())), crate::jwt::verifier(&config).await?)?,
        keys,
        limiter,
        coordinator,
        config: Arc::new(config),
        context,
        working,
        summaries: summary_service,
        retention,
        transfer,
        workflows,
        deletions,
        follower,
        libsql,
        observability,
    })
}

/// The workflow service with the `http`, `openai` and in-process no-op
/// runners of `workflows.*`.
fn open_workflows(
    config: &crate::WorkflowConfig,
    store: Arc<dyn memlayer_ports::WorkflowStore>,
    memory: MemoryService,
    catalog: CatalogService,
) -> Result<crate::WorkflowService, BuildError> {
    let runner_error = |e: StoreError| crate::ConfigError::Invalid { key: "workflows", reason: e.to_string() };
    let runners = crate::Runners {
        http: Arc::new(crate::runners::HttpRunner::new(config.signing_secret.clone()).map_err(runner_error)?),
        openai: Arc::new(
            crate::runners::OpenAiRunner::new(
                &config.openai.base_url,
                config.openai.api_key.clone(),
                &config.openai.model,
            )
            .map_err(runner_error)?,
        ),
        noop: Arc::new(crate::NoopRunner),
    };
    Ok(crate::WorkflowService::new(store, memory, runners, config.clone()).with_catalog(catalog))
}

/// The summariser `summary.summarizer` names: the local extractive one over
/// `embedder` (no network), or the chat-completions client of
/// `summary.openai.*`.
fn open_summarizer(
    config: &crate::SummaryConfig,
    embedder: Arc<dyn Embedder>,
) -> Result<Arc<dyn Summarizer>, BuildError> {
    use memlayer_adapters_embed::{ChatConfig, ChatKey, ChatSummarizer, ExtractiveConfig, ExtractiveSummarizer};
    Ok(match config.summarizer {
        crate::SummarizerKind::Local => Arc::new(ExtractiveSummarizer::new(embedder, ExtractiveConfig::default())),
        crate::SummarizerKind::Openai => {
            let o = &config.openai;
            let chat = ChatConfig {
                base_url: o.base_url.clone(),
                api_key: o.api_key.as_ref().map(|k| ChatKey::new(k.expose())),
                model: o.model.clone(),
                timeout: Duration::from_millis(o.timeout_ms),
                max_retries: o.max_retries,
                backoff: Duration::from_millis(o.retry_backoff_ms),
                // The configured max backoff, but never over a quarter of the
                // job's lease: the job waits inline, still leased.
                max_backoff: Duration::from_secs(config.max_backoff_secs.min(config.lease_secs / 4)),
                max_input_chars: o.max_input_chars,
            };
            Arc::new(
                ChatSummarizer::new(chat)
                    .map_err(|e| crate::ConfigError::Invalid { key: "summary.openai", reason: e.to_string() })?,
            )
        }
    })
}

/// The default model and runtime cache (`$MEMLAYER_CACHE_DIR` or
/// `~/.cache/memlayer`).
#[must_use]
pub fn default_cache_dir() -> PathBuf {
    memlayer_adapters_embed::default_cache_dir()
}

/// Loads the embedder from `cache` and reports what it is, or what is
/// missing and how to fix it (for `memlayer doctor`).
///
/// # Errors
/// The problem, with the fix.
pub fn probe_embedder(cache: &std::path::Path) -> Result<EmbedderInfo, String> {
    OnnxEmbedder::new(OnnxConfig::from_cache_dir(cache)).status()
}
