//! Process settings: [`Config`] (compiled-in defaults, then a TOML file,
//! then `MEMLAYER_*` environment variables), validated at start-up, with
//! secrets in [`Secret`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use memlayer_ports::IndexKind;
use serde::{Deserialize, Serialize};

/// A secret value: never printed by `Debug` or logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is sent to its destination.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// memlayer's whole configuration.
///
/// Layers, later ones win: compiled-in defaults, then an optional TOML file
/// (`--config` or `MEMLAYER_CONFIG`), then the environment: `MEMLAYER_<KEY>`
/// with `__` between nested keys (`MEMLAYER_SERVER__ADDR`), plus
/// `DATABASE_URL` (Postgres), `LIBSQL_DATABASE_URL` and `LIBSQL_AUTH_TOKEN`
/// for the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded database lives (`<data_dir>/memlayer.db`).
    pub data_dir: PathBuf,
    /// Database selection and tuning.
    pub database: DatabaseConfig,
    /// HTTP server.
    pub server: ServerConfig,
    /// Memory behaviour.
    pub memory: MemoryConfig,
    /// Logging.
    pub log: LogConfig,
    /// Local embeddings.
    pub embedding: EmbeddingConfig,
    /// Semantic search.
    pub search: SearchConfig,
    /// The catalog's read cache.
    pub cache: CacheConfig,
    /// Authentication.
    pub auth: crate::AuthConfig,
    /// Rate limits.
    pub limits: crate::LimitsConfig,
    /// Limits and cache invalidations shared by several servers.
    pub redis: crate::RedisConfig,
    /// Thread summaries.
    pub summary: crate::SummaryConfig,
    /// The retention scheduler.
    pub retention: crate::RetentionConfig,
    /// Workflows: the runner loop and the runners.
    pub workflows: crate::WorkflowConfig,
    /// Observability: traces, evaluations, system metrics.
    pub observability: crate::ObservabilityConfig,
}

/// The in-process cache of catalog reads (models, agents, settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most entries per cache (LRU eviction beyond).
    pub max_entries: u64,
    /// Seconds an entry is served before it is read again; bounds how long
    /// a write by another process goes unseen (writes through this process
    /// invalidate at once).
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_entries: 10_000, ttl_secs: 60 }
    }
}

/// Local embeddings (all-MiniLM-L6-v2 on ONNX Runtime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Embed messages at all; when off, vector search answers 503.
    pub enabled: bool,
    /// Where `scripts/provision` put the model and runtime; unset for
    /// `$MEMLAYER_CACHE_DIR` or `~/.cache/memlayer`.
    pub cache_dir: Option<PathBuf>,
    /// `background`: appends return at once and a worker embeds; `inline`:
    /// an append waits until the worker has embedded what is due.
    pub mode: EmbeddingMode,
    /// Messages embedded per batch.
    pub batch_size: usize,
    /// Worker poll interval when idle, in milliseconds.
    pub poll_interval_ms: u64,
    /// First retry delay after a failed embedding, in milliseconds (doubles per attempt).
    pub base_backoff_ms: u64,
    /// Longest retry delay, in seconds.
    pub max_backoff_secs: u64,
    /// ONNX Runtime sessions for batch work (the embedding worker,
    /// `/api/embed`), run on low-priority threads.
    pub sessions: usize,
    /// ONNX Runtime sessions kept for search queries, each on a thread of
    /// its own, so a query never waits behind a batch; concurrent queries
    /// share a run.
    pub interactive_sessions: usize,
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// How long a claimed batch of embedding jobs stays leased to its
    /// worker, in seconds: another server on the same database does not take
    /// those jobs before then, and a crashed worker's jobs come back after
    /// it. Far longer than a batch ever takes.
    pub lease_secs: u64,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_dir: None,
            mode: EmbeddingMode::Background,
            batch_size: 64,
            poll_interval_ms: 500,
            base_backoff_ms: 1_000,
            max_backoff_secs: 300,
            sessions: 1,
            interactive_sessions: 1,
            intra_threads: 1,
            lease_secs: 300,
        }
    }
}

/// When an append's messages are embedded (`embedding.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingMode {
    /// Appends return at once; the worker embeds right after.
    #[default]
    Background,
    /// An append waits until the worker has embedded what is due.
    Inline,
}

/// The distance of pgvector's HNSW graph (`search.pgvector.metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistanceMetric {
    /// Cosine distance.
    #[default]
    Cosine,
    /// Euclidean distance.
    L2,
    /// Negative inner product.
    Ip,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Semantic search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Vector index: `hnsw` (in process, snapshot under data_dir; libSQL
    /// only), `exact` (in-process scan), `libsql` (libSQL's native DiskANN
    /// index, libSQL only) or `pgvector` (pgvector's HNSW index, Postgres
    /// only). Unset: `hnsw` on libSQL, `pgvector` on Postgres (see
    /// [`Config::index_kind`]). `hnsw` on Postgres is an error, not an alias
    /// for `pgvector`: an in-process graph there would miss the writes of
    /// every other server on the database.
    pub index: Option<IndexKind>,
    /// HNSW: searches whose filter admits at most this many vectors are done exactly (the
    /// libSQL index keeps its own, measured threshold).
    pub exact_below: usize,
    /// Unused since the HNSW graph takes inserts (it was the delta size that
    /// started a rebuild); still accepted so that configurations naming it load.
    pub rebuild_threshold: usize,
    /// HNSW: candidate list size while inserting.
    pub ef_construction: usize,
    /// HNSW: candidate list size at query time.
    pub ef_search: usize,
    /// libSQL index: neighbours per node.
    pub max_neighbors: usize,
    /// pgvector's HNSW index (Postgres).
    pub pgvector: PgvectorConfig,
    /// Lexical search: `tantivy` (an in-process index per tenant beside the
    /// database file, fed by the catch-up; embedded libSQL only) or
    /// `database` (FTS5 on libSQL, `tsvector` on Postgres). Unset: `tantivy`
    /// on an embedded libSQL database, `database` otherwise (see
    /// [`Config::lexical_kind`]).
    pub lexical: Option<LexicalKind>,
}

/// Where lexical search runs (`search.lexical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LexicalKind {
    /// The in-process tantivy index (embedded libSQL only).
    Tantivy,
    /// The database's own full text: FTS5 on libSQL, `tsvector` on Postgres.
    Database,
}

/// pgvector's HNSW index on Postgres. `metric`, `m` and `ef_construction`
/// apply when the index is built (an existing index keeps its own);
/// `ef_search` and `exact_below` per query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgvectorConfig {
    /// `cosine`, `l2` or `ip` (inner product); the same neighbours for unit vectors.
    pub metric: DistanceMetric,
    /// Neighbours per node (2–100).
    pub m: u32,
    /// Candidate list while building (4–1000, at least 2 × m).
    pub ef_construction: u32,
    /// Candidate list while searching (1–1000).
    pub ef_search: u32,
    /// Searches whose filter admits at most this many vectors compare exactly.
    pub exact_below: usize,
}

impl Default for PgvectorConfig {
    fn default() -> Self {
        Self { metric: DistanceMetric::Cosine, m: 16, ef_construction: 64, ef_search: 40, exact_below: 1_000 }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            index: None,
            exact_below: 20_000,
            rebuild_threshold: 5_000,
            ef_construction: 100,
            ef_search: 64,
            max_neighbors: 32,
            pgvector: PgvectorConfig::default(),
            lexical: None,
        }
    }
}

/// Database selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Which database: unset for the embedded libSQL file under `data_dir`;
    /// `:memory:` for a throwaway in-memory database; `file:PATH` for another
    /// file; `libsql://…`, `https://…` or `http://…` for a remote
    /// libSQL/Turso server (needs the `remote` build feature);
    /// `postgres://…` or `postgresql://…` for Postgres with pgvector
    /// (`DATABASE_URL` sets it).
    pub url: Option<Secret>,
    /// Auth token for a remote libSQL server.
    pub auth_token: Option<Secret>,
    /// How long a write waits for a lock held by another process, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Most pooled reader connections open at once (libSQL). Default 16:
    /// with 4, reads queued behind searches holding every reader (under
    /// 16 clients of mixed load, read p99 131 ms against 30 ms with 16;
    /// docs/BENCHMARKS.md, "Under load"). A WAL reader costs a file handle
    /// and its page cache.
    pub readers: usize,
    /// Pooled connections (Postgres).
    pub pool_size: usize,
    /// How long opening a connection may take, in seconds (Postgres).
    pub connect_timeout_secs: u64,
    /// Apply pending migrations when the server starts.
    pub auto_migrate: bool,
    /// How long a read waits for a free pooled reader connection before it
    /// is answered 503, in milliseconds (libSQL).
    pub reader_timeout_ms: u64,
    /// How long a full-text search or progress count waits for the
    /// background catch-up to index what was appended before it, in
    /// milliseconds (libSQL); after that it searches what is indexed and
    /// reports the rest as pending.
    /// A search of the in-process (tantivy) index waits only behind a bulk
    /// import (more than 1,000 messages or 4 MiB waiting, or 20,000 of any
    /// tenant): fewer are ranked from the database.
    pub index_wait_ms: u64,
    /// Longest one statement may run, in milliseconds, before Postgres
    /// cancels it and the call fails 503 (`SET LOCAL statement_timeout` in
    /// every transaction but migrations); 0: memlayer sets none (Postgres).
    pub statement_timeout_ms: u64,
    /// Accept a Postgres role that bypasses row-level security (a superuser
    /// or `BYPASSRLS`); otherwise opening the database refuses it.
    pub allow_rls_bypass: bool,
    /// When an embedded libSQL file's commits reach the disk: `full` (the
    /// default: an append is acknowledged only once synced, nothing
    /// acknowledged is lost even to a power loss) or `normal` (opt-in,
    /// faster single writes: commits are synced at checkpoints, so a power
    /// loss or operating-system crash may lose the last acknowledged
    /// writes; a crash of memlayer alone loses none). Embedded files only.
    pub synchronous: Synchronous,
    /// Deferred commits of an embedded libSQL file, in milliseconds (0, the
    /// default: every write commits before it is acknowledged). Above 0,
    /// an append is acknowledged once written to the append journal beside
    /// the file, and appends are committed together at most this long
    /// later, or before any read or other write: the same promise as
    /// `synchronous = "normal"`, which it needs (a crash of memlayer loses
    /// nothing: the journal is applied again at the next start; a power
    /// loss may lose the last appends), for much faster appends one call at
    /// a time. At most 1,000.
    pub commit_delay_ms: u64,
}

/// `database.synchronous`: SQLite's `PRAGMA synchronous` for an embedded
/// libSQL file (always in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit synced before it is acknowledged (the default).
    #[default]
    Full,
    /// Commits synced at checkpoints: the last ones may be lost to a power
    /// loss (not to a crash of the process). What Mastra's LibSQLStore sets.
    Normal,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Requests taking longer are answered 503 (a write sent with an
    /// `Idempotency-Key` still finishes and records its outcome).
    pub request_timeout_secs: u64,
    /// How long an `Idempotency-Key` is remembered, in seconds: a retry with
    /// the same key within this time returns the first response.
    pub idempotency_ttl_secs: u64,
    /// How long a client may take to send a request's headers, in seconds;
    /// on HTTP/1.1 also how long a kept-alive connection may wait for its
    /// next request. Slower connections are closed.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight for this many seconds is
    /// closed gracefully (HTTP/1.1 and HTTP/2).
    pub idle_timeout_secs: u64,
    /// Most open client connections; one more is answered 503 (`overloaded`,
    /// `Retry-After`) and closed at once.
    pub max_connections: usize,
    /// Most requests handled at once (`/health` and `/ready` are not
    /// counted); unset: 6 per CPU core. More in flight only queues inside
    /// the CPU and the pools: on 2 cores, 12 served 15% more than 32 at 16
    /// clients with search p99 276 ms against 451 ms, and at 64 clients
    /// search p99 500 ms against 1,285 ms (docs/BENCHMARKS.md, "Under load").
    pub max_concurrent_requests: Option<usize>,
    /// How long a request may wait for one of `max_concurrent_requests`, in
    /// milliseconds, before it is answered 503 (`overloaded`, `Retry-After`).
    pub queue_timeout_ms: u64,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish,
    /// in seconds, before their connections are closed.
    pub shutdown_grace_secs: u64,
}

/// Default concurrency limit per CPU core (`server.max_concurrent_requests`).
pub const REQUESTS_PER_CORE: usize = 6;

impl ServerConfig {
    /// `max_concurrent_requests`, or [`REQUESTS_PER_CORE`] per CPU core when unset.
    #[must_use]
    pub fn concurrency_limit(&self) -> usize {
        self.max_concurrent_requests.unwrap_or_else(|| {
            REQUESTS_PER_CORE * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// Memory behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Tenant used when a request names none.
    pub default_tenant: String,
    /// Count tokens of appended messages unless a request says otherwise.
    pub count_tokens: bool,
    /// Most bytes of messages one message page or one search returns
    /// (estimated per message, see `Message::approx_bytes`); a page or
    /// search that would pass it stops early, always with at least one message.
    pub max_response_bytes: usize,
    /// Messages of a deleted thread removed per transaction by the
    /// background sweeper (1–100000). A delete only marks the thread (it is
    /// gone for every caller at once); other writers get the database
    /// between chunks.
    pub sweep_chunk: u32,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `memlayer=debug,info`;
    /// `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".memlayer"),
            database: DatabaseConfig::default(),
            server: ServerConfig::default(),
            memory: MemoryConfig::default(),
            log: LogConfig::default(),
            embedding: EmbeddingConfig::default(),
            search: SearchConfig::default(),
            cache: CacheConfig::default(),
            auth: crate::AuthConfig::default(),
            limits: crate::LimitsConfig::default(),
            redis: crate::RedisConfig::default(),
            summary: crate::SummaryConfig::default(),
            retention: crate::RetentionConfig::default(),
            workflows: crate::WorkflowConfig::default(),
            observability: crate::ObservabilityConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            auth_token: None,
            busy_timeout_ms: 5_000,
            readers: 16,
            pool_size: 8,
            connect_timeout_secs: 5,
            auto_migrate: true,
            reader_timeout_ms: 2_000,
            index_wait_ms: 2_000,
            statement_timeout_ms: 30_000,
            allow_rls_bypass: false,
            synchronous: Synchronous::Full,
            commit_delay_ms: 0,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 8 * 1024 * 1024,
            request_timeout_secs: 30,
            idempotency_ttl_secs: 86_400,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 512,
            max_concurrent_requests: None,
            queue_timeout_ms: 100,
            shutdown_grace_secs: 4,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            default_tenant: "default".into(),
            count_tokens: false,
            max_response_bytes: crate::DEFAULT_MAX_RESPONSE_BYTES,
            sweep_chunk: crate::DEFAULT_SWEEP_CHUNK,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".into() }
    }
}

/// `database.url` from the environment variable `var`; empty counts as unset
/// (shells and CI often export an empty one).
fn url_from(var: &'static str) -> Env {
    Env::raw()
        .only(&[var])
        .filter_map(move |_| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()).then(|| "database.url".into()))
}

/// The configuration could not be read or is invalid; the message says what
/// to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be parsed.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range or inconsistent.
    #[error("configuration: {key}: {reason}")]
    Invalid {
        /// The key, as written in a config file.
        key: &'static str,
        /// What is wrong and what to set.
        reason: String,
    },
    /// A key of a closed set of values (`search.index`, `embedding.mode`…)
    /// holds another.
    #[error("configuration: {key}: unknown value {value:?}, expected one of {}{}", one_of(.expected), from(.origin))]
    UnknownValue {
        /// The key, as written in a config file.
        key: String,
        /// The value found.
        value: String,
        /// The accepted values.
        expected: &'static [&'static str],
        /// Which layer set it (a file, the environment), when known.
        origin: Option<String>,
    },
}

fn one_of(expected: &[&str]) -> String {
    expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
}

fn from(origin: &Option<String>) -> String {
    origin.as_ref().map(|s| format!(" (from {s})")).unwrap_or_default()
}

impl From<figment::Error> for ConfigError {
    /// An unknown value of an enum names its key; anything else keeps
    /// figment's own message (which names key and layer too).
    fn from(e: figment::Error) -> Self {
        match &e.kind {
            figment::error::Kind::UnknownVariant(value, expected) if !e.path.is_empty() => Self::UnknownValue {
                key: e.path.join("."),
                value: value.clone(),
                expected,
                origin: e.metadata.as_ref().map(|m| m.name.to_string()),
            },
            _ => Self::Load(Box::new(e)),
        }
    }
}

/// Which storage backend a configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// libSQL: an embedded file, in memory, or a remote server.
    Libsql,
    /// Postgres with pgvector.
    Postgres,
}

/// What `database.url` names: the one classification of the URL, which
/// every caller (validation, wiring, `doctor`) matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A libSQL file: `<data_dir>/memlayer.db` when the URL is unset, else
    /// `file:PATH` or a plain path.
    File(PathBuf),
    /// A throwaway in-memory libSQL database (`:memory:`).
    Memory,
    /// A remote libSQL or Turso server (`libsql://`, `https://`, `http://`).
    RemoteLibsql(Secret),
    /// Postgres (`postgres://`, `postgresql://`).
    Postgres(Secret),
}

impl DatabaseTarget {
    /// The backend that serves it.
    #[must_use]
    pub fn backend(&self) -> BackendKind {
        match self {
            Self::File(_) | Self::Memory | Self::RemoteLibsql(_) => BackendKind::Libsql,
            Self::Postgres(_) => BackendKind::Postgres,
        }
    }
}

/// The longest `server.idempotency_ttl_secs` accepted: 365 days.
const MAX_IDEMPOTENCY_TTL_SECS: u64 = 365 * 24 * 3600;

/// Postgres's largest `statement_timeout` (an `int` of milliseconds).
const MAX_STATEMENT_TIMEOUT_MS: u64 = i32::MAX as u64;

/// `MEMLAYER_` variables that are not configuration keys: the config file's
/// path, the provisioning cache (read by [`crate::default_cache_dir`]), the
/// provisioning scripts' Python, the local servers' scripts (`scripts/postgres`,
/// `scripts/redis`) and the test suite's Postgres and Redis. Any other
/// unknown `MEMLAYER_` variable is an error naming it, so a typo is caught.
const NOT_CONFIG: &[&str] =
    &["CONFIG", "CACHE_DIR", "PYTHON", "PG_DIR", "PG_USER", "REDIS_DIR", "TEST_DATABASE_URL", "TEST_REDIS_URL"];

impl Config {
    /// The layered sources: defaults, then `file` (or `MEMLAYER_CONFIG`) if
    /// any, then the environment.
    #[must_use]
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(Self::default()));
        let file = file.map(Path::to_path_buf).or_else(|| std::env::var_os("MEMLAYER_CONFIG").map(PathBuf::from));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig.merge(Env::prefixed("MEMLAYER_").ignore(NOT_CONFIG).split("__"))
            .merge(url_from("LIBSQL_DATABASE_URL"))
            .merge(Env::raw().only(&["LIBSQL_AUTH_TOKEN"]).map(|_| "database.auth_token".into()))
            .merge(url_from("DATABASE_URL"))
    }

    /// Loads and validates the layered configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key to fix.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let set = |var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
        if set("DATABASE_URL") && set("LIBSQL_DATABASE_URL") {
            return Err(ConfigError::Invalid {
                key: "database.url",
                reason: "both DATABASE_URL (Postgres) and LIBSQL_DATABASE_URL (libSQL) are set; unset one".into(),
            });
        }
        Self::from_figment(&Self::figment(file))
    }

    /// Extracts and validates a configuration from `figment`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key to fix.
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_owned() });
        if memlayer_domain::TenantId::parse(self.memory.default_tenant.clone()).is_err() {
            return invalid("memory.default_tenant", "must be 1 to 64 ASCII letters, digits, - _ . : @");
        }
        if self.server.body_limit_bytes < 1024 {
            return invalid("server.body_limit_bytes", "must be at least 1024");
        }
        if self.server.request_timeout_secs == 0 {
            return invalid("server.request_timeout_secs", "must be at least 1");
        }
        if !(1..=MAX_IDEMPOTENCY_TTL_SECS).contains(&self.server.idempotency_ttl_secs) {
            return invalid("server.idempotency_ttl_secs", "must be between 1 and 31536000 (365 days)");
        }
        let server = &self.server;
        if server.header_read_timeout_secs == 0 || server.idle_timeout_secs == 0 {
            return invalid("server.header_read_timeout_secs", "and server.idle_timeout_secs must be at least 1");
        }
        if server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if server.max_concurrent_requests == Some(0) {
            return invalid("server.max_concurrent_requests", "must be at least 1 (unset: 6 per CPU core)");
        }
        if server.shutdown_grace_secs > 3600 {
            return invalid("server.shutdown_grace_secs", "must be at most 3600");
        }
        if self.memory.max_response_bytes < 1024 {
            return invalid("memory.max_response_bytes", "must be at least 1024");
        }
        if self.memory.sweep_chunk == 0 || self.memory.sweep_chunk > 100_000 {
            return invalid("memory.sweep_chunk", "must be between 1 and 100000");
        }
        if self.database.readers == 0 || self.database.readers > 64 {
            return invalid("database.readers", "must be between 1 and 64");
        }
        if !(1..=60_000).contains(&self.database.reader_timeout_ms) {
            return invalid("database.reader_timeout_ms", "must be between 1 and 60000");
        }
        if self.database.index_wait_ms > 60_000 {
            return invalid("database.index_wait_ms", "must be at most 60000");
        }
        if self.embedding.batch_size == 0 || self.embedding.batch_size > 1024 {
            return invalid("embedding.batch_size", "must be between 1 and 1024");
        }
        if self.embedding.sessions == 0 || self.embedding.sessions > 16 {
            return invalid("embedding.sessions", "must be between 1 and 16");
        }
        if self.embedding.interactive_sessions == 0 || self.embedding.interactive_sessions > 16 {
            return invalid("embedding.interactive_sessions", "must be between 1 and 16");
        }
        if self.embedding.intra_threads == 0 || self.embedding.intra_threads > 64 {
            return invalid("embedding.intra_threads", "must be between 1 and 64");
        }
        if !(10..=86_400).contains(&self.embedding.lease_secs) {
            return invalid("embedding.lease_secs", "must be between 10 and 86400 (a day)");
        }
        if self.search.ef_search == 0 || self.search.ef_construction == 0 || self.search.max_neighbors == 0 {
            return invalid("search", "ef_search, ef_construction and max_neighbors must be at least 1");
        }
        if let Err(reason) = self.auth.validate() {
            return Err(ConfigError::Invalid { key: "auth.mode", reason });
        }
        if let Err((key, reason)) = self.auth.keys.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.limits.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.redis.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.summary.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.retention.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.workflows.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.observability.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if self.auth.mode.has(crate::AuthMode::Jwt) {
            self.auth.jwt.validate()?;
        }
        if self.cache.max_entries == 0 {
            return invalid("cache.max_entries", "must be at least 1");
        }
        if self.cache.ttl_secs == 0 {
            return invalid("cache.ttl_secs", "must be at least 1");
        }
        let postgres = self.database_target()?.backend() == BackendKind::Postgres;
        match (self.index_kind(), postgres) {
            (IndexKind::Libsql, true) => {
                return invalid(
                    "search.index",
                    "`libsql` needs a libSQL database; on Postgres use `pgvector` or `exact`, or leave it unset",
                );
            }
            (IndexKind::Hnsw, true) => {
                return invalid(
                    "search.index",
                    "`hnsw` is the in-process index of libSQL; on Postgres use `pgvector` (HNSW in the database) \
                     or `exact`, or leave it unset",
                );
            }
            (IndexKind::Pgvector, false) => {
                return invalid("search.index", "`pgvector` needs a Postgres database.url (or DATABASE_URL)");
            }
            _ => {}
        }
        let embedded = matches!(self.database_target()?, DatabaseTarget::File(_) | DatabaseTarget::Memory);
        if self.database.synchronous != Synchronous::Full && !embedded {
            return invalid(
                "database.synchronous",
                "applies to an embedded libSQL file only (a remote or Postgres server keeps its own durability settings); \
                 leave it unset",
            );
        }
        if self.database.commit_delay_ms > 0 {
            if !matches!(self.database_target()?, DatabaseTarget::File(_)) {
                return invalid(
                    "database.commit_delay_ms",
                    "deferred commits apply to an embedded libSQL file only; leave it 0",
                );
            }
            if self.database.synchronous != Synchronous::Normal {
                return invalid(
                    "database.commit_delay_ms",
                    "deferred commits keep the promise of `database.synchronous = \"normal\"` and need it set: \
                     with `full`, every acknowledged append must be synced first",
                );
            }
            if self.database.commit_delay_ms > 1_000 {
                return invalid("database.commit_delay_ms", "must be at most 1000");
            }
        }
        if self.search.lexical == Some(LexicalKind::Tantivy) && !embedded {
            return invalid(
                "search.lexical",
                "`tantivy` is the in-process index of an embedded libSQL database; use `database` or leave it unset",
            );
        }
        if postgres {
            if self.database.pool_size == 0 || self.database.pool_size > 256 {
                return invalid("database.pool_size", "must be between 1 and 256");
            }
            if self.database.connect_timeout_secs == 0 {
                return invalid("database.connect_timeout_secs", "must be at least 1");
            }
            if self.database.statement_timeout_ms > MAX_STATEMENT_TIMEOUT_MS {
                return invalid(
                    "database.statement_timeout_ms",
                    "must be at most 2147483647 (Postgres's limit, about 24 days); 0 sets none",
                );
            }
            let p = &self.search.pgvector;
            if !(2..=100).contains(&p.m) {
                return invalid("search.pgvector.m", "must be between 2 and 100");
            }
            if !(4..=1000).contains(&p.ef_construction) || p.ef_construction < 2 * p.m {
                return invalid("search.pgvector.ef_construction", "must be between 4 and 1000 and at least 2 × m");
            }
            if !(1..=1000).contains(&p.ef_search) {
                return invalid("search.pgvector.ef_search", "must be between 1 and 1000");
            }
        }
        Ok(())
    }

    /// What `database.url` names (see [`DatabaseTarget`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on `database.url` when it is empty or has an
    /// unknown scheme.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let Some(url) = &self.database.url else {
            return Ok(DatabaseTarget::File(self.database_file()));
        };
        let url = url.expose().trim();
        if url.is_empty() {
            return Err(ConfigError::Invalid {
                key: "database.url",
                reason: "is empty; unset it to use the embedded file under data_dir".into(),
            });
        }
        if url == ":memory:" {
            return Ok(DatabaseTarget::Memory);
        }
        match url.split_once("://") {
            None => Ok(DatabaseTarget::File(PathBuf::from(url.strip_prefix("file:").unwrap_or(url)))),
            Some(("postgres" | "postgresql", _)) => Ok(DatabaseTarget::Postgres(url.into())),
            Some(("libsql" | "https" | "http", _)) => Ok(DatabaseTarget::RemoteLibsql(url.into())),
            Some((scheme, _)) => Err(ConfigError::Invalid {
                key: "database.url",
                reason: format!(
                    "unknown scheme `{scheme}://`; use postgres:// or postgresql:// (Postgres), libsql://, https:// \
                     or http:// (remote libSQL), file:PATH, or :memory:"
                ),
            }),
        }
    }

    /// Whether `database.url` selects Postgres (`postgres://` or `postgresql://`).
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        self.database_target().is_ok_and(|t| t.backend() == BackendKind::Postgres)
    }

    /// The vector index: `search.index`, or when unset the backend's own
    /// (`hnsw` on libSQL, `pgvector` on Postgres).
    #[must_use]
    pub fn index_kind(&self) -> IndexKind {
        self.search.index.unwrap_or(if self.is_postgres() { IndexKind::Pgvector } else { IndexKind::Hnsw })
    }

    /// Where lexical search runs: `search.lexical`, or when unset `tantivy`
    /// on an embedded libSQL database (file or `:memory:`) and `database`
    /// otherwise.
    #[must_use]
    pub fn lexical_kind(&self) -> LexicalKind {
        self.search.lexical.unwrap_or(
            if matches!(self.database_target(), Ok(DatabaseTarget::File(_) | DatabaseTarget::Memory)) {
                LexicalKind::Tantivy
            } else {
                LexicalKind::Database
            },
        )
    }

    /// The embedded database file when no URL is set.
    #[must_use]
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join("memlayer.db")
    }
}
