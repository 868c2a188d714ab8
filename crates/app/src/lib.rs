//! memlayer's application layer.
//!
//! [`build`] turns a [`Config`] into [`Services`]: the adapters chosen by the
//! configuration, wired behind `Arc<dyn Port>`, and the [`MemoryService`],
//! [`SearchService`], [`CatalogService`] and [`WorkingMemoryService`] that
//! every frontend (HTTP server, CLI, an embedding program) calls.
//!
//! Invariants:
//! - this is the only crate that names adapter crates; the backend is chosen
//!   in one place, [`build`];
//! - no HTTP or JSON wire shapes here: those belong to `memlayer-api`;
//! - the catalog read cache (`moka`) lives here and nowhere else; every
//!   catalog write goes through [`CatalogService`], which invalidates it;
//! - use-case rules live in the services, so every frontend applies them
//!   alike: a model for token counting, tenant isolation, an agent's memory
//!   options as defaults (`last_n` for pages, `top_k` for a search within a
//!   thread), a deleted message belonging to the named thread; storage rules
//!   stay with the ports.

mod auth;
mod catalog;
mod config;
mod context;
mod coordination;
mod follower;
mod jwt;
mod keys;
mod limits;
mod memory;
mod observability;
pub mod processors;
mod retention;
pub mod runners;
mod search;
pub mod self_tracing;
mod summary;
mod sweeper;
mod transfer;
mod wiring;
mod worker;
mod workflows;
mod working;

pub use auth::{AuthConfig, AuthError, AuthMode, AuthModes, Authenticator, Verifier};
pub use catalog::{CacheSettings, CatalogService};
pub use config::{
    BackendKind, CacheConfig, Config, ConfigError, DatabaseConfig, DatabaseTarget, DistanceMetric, EmbeddingConfig,
    EmbeddingMode, LexicalKind, LogConfig, LogFormat, MemoryConfig, PgvectorConfig, SearchConfig, Secret, ServerConfig,
    Synchronous,
};
pub use context::{
    AssembledContext, ContextError, ContextMessage, ContextRequest, ContextService, Dropped, ProcessorReport,
    RECALL_HEADER, SectionReport, SectionTokens, Source, WORKING_MEMORY_HEADER, recalled_name,
};
pub use coordination::{Coordinator, RedisConfig};
pub use jwt::{JwtConfig, JwtVerifier};
pub use keys::{
    CreatedKey, GrantError, KeyService, KeysConfig, MAX_KEY_LIFETIME, NewKey, UNKNOWN_KEY, check_grant, parse_lifetime,
};
pub use limits::{
    Budget, Exceeded, LIMITS_CATEGORY, Limiter, LimitsConfig, QUOTA_KEY, Rate, Standing, embedding_cost,
    parse_quota_override, validate_limits_setting,
};
pub use memory::{AppendOptions, MemoryService, TenantUsage};
pub use observability::{
    CostReport, MetricsConfig, ModelCost, ObservabilityConfig, ObservabilityService, PROJECTION_BASIS_DAYS,
    PROJECTION_HORIZON_DAYS, PerformanceReport, Sampler, host_name,
};
pub use processors::{MemoryProcessor, ProcessorStats};
pub use retention::{RetentionConfig, RetentionService, ScheduledRun};
pub use search::{MAX_EMBED_BYTES, MAX_EMBED_TEXTS, SearchResults, SearchService};
pub use self_tracing::{SelfTracing, SelfTracingConfig, SelfTracingHandle};
pub use summary::{
    OpenAiSummaryConfig, Step, SummarizerKind, SummaryConfig, SummaryError, SummaryRound, SummaryRun, SummaryService,
    SummaryTrigger, SummaryView,
};
pub use sweeper::{DEFAULT_SWEEP_CHUNK, ThreadSweeper};
pub use transfer::{
    ExportModel, ExportOptions, FORMAT_VERSION, Header, ImportError, ImportFailure, ImportReport, Importer, Record,
    RecordSink, Totals, TransferService,
};
pub use wiring::{
    Background, BuildError, Services, build, default_cache_dir, open_database, open_keys, probe_embedder,
};
pub use worker::{EmbeddingWorker, Round, WorkerSettings};
pub use workflows::{
    NoopRunner, OpenAiRunnerConfig, RunRound, Runners, STEP_METADATA_KEY, WorkflowConfig, WorkflowPage, WorkflowService,
};
pub use working::{MAX_MERGE_ATTEMPTS, WorkingDocument, WorkingMemoryService, check_agent_schema};

pub use memlayer_ports::{IndexKind, StoreError};

/// The default response byte budget of a message page or a search
/// (`memory.max_response_bytes`): 8 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
