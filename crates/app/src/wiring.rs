use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use memlayer_adapters_embed::TiktokenCounter;
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, LibsqlLocation};
use memlayer_domain::TenantId;
use memlayer_ports::{Database, MessageStore, StateStore, StoreError, ThreadStore, TokenCounter};

use crate::{Config, MemoryService};

/// Everything a frontend needs, wired by [`build`].
#[derive(Debug, Clone)]
pub struct Services {
    /// The use cases.
    pub memory: MemoryService,
    /// The database: reachability and migrations.
    pub database: Arc<dyn Database>,
    /// The validated configuration the services were built from.
    pub config: Arc<Config>,
}

/// Building the services failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database {location}: {source}")]
    Database {
        /// Where (no secrets).
        location: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

fn location(config: &Config) -> LibsqlLocation {
    match config.database.url.as_deref().map(str::trim) {
        None => LibsqlLocation::File(config.database_file()),
        Some(":memory:") => LibsqlLocation::Memory,
        Some(url) if url.starts_with("libsql://") || url.starts_with("https://") || url.starts_with("http://") => {
            LibsqlLocation::Remote {
                url: url.to_owned(),
                auth_token: config.database.auth_token.as_ref().map(|s| s.expose().to_owned()),
            }
        }
        Some(path) => LibsqlLocation::File(PathBuf::from(path.strip_prefix("file:").unwrap_or(path))),
    }
}

fn describe(loc: &LibsqlLocation) -> String {
    match loc {
        LibsqlLocation::File(p) => format!("file {}", p.display()),
        LibsqlLocation::Memory => "in memory".to_owned(),
        LibsqlLocation::Remote { url, .. } => format!("remote {url}"),
    }
}

/// Opens the configured database without migrating it (for `migrate` and
/// `doctor`).
///
/// # Errors
/// [`BuildError`] saying what could not be opened.
pub async fn open_database(config: &Config) -> Result<Arc<LibsqlBackend>, BuildError> {
    config.validate()?;
    let loc = location(config);
    let described = describe(&loc);
    let libsql = LibsqlConfig {
        location: loc,
        busy_timeout: Duration::from_millis(config.database.busy_timeout_ms),
        readers: config.database.readers,
    };
    LibsqlBackend::open(libsql)
        .await
        .map(Arc::new)
        .map_err(|source| BuildError::Database { location: described, source })
}

/// Wires the adapters chosen by `config` into [`Services`]. Applies pending
/// migrations when `database.auto_migrate` is set.
///
/// # Errors
/// [`BuildError`] when the configuration is invalid or the database cannot be
/// opened or migrated.
pub async fn build(config: Config) -> Result<Services, BuildError> {
    let backend = open_database(&config).await?;
    if config.database.auto_migrate {
        let applied = backend
            .migrate_up()
            .await
            .map_err(|source| BuildError::Database { location: backend.describe(), source })?;
        for m in &applied {
            tracing::info!(version = m.version, name = %m.name, "applied migration");
        }
    }
    let threads: Arc<dyn ThreadStore> = backend.clone();
    let messages: Arc<dyn MessageStore> = backend.clone();
    let states: Arc<dyn StateStore> = backend.clone();
    let database: Arc<dyn Database> = backend;
    let tokens: Arc<dyn TokenCounter> = Arc::new(TiktokenCounter::new());
    let default_tenant = TenantId::parse(config.memory.default_tenant.clone())
        .map_err(|e| crate::ConfigError::Invalid { key: "memory.default_tenant", reason: e.to_string() })?;
    let memory = MemoryService::new(threads, messages, states, tokens, default_tenant, config.memory.count_tokens);
    Ok(Services { memory, database, config: Arc::new(config) })
}
