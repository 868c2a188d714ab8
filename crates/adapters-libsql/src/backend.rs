//! The shared handle: one writer connection, a small pool of readers, and the
//! helpers every store operation goes through.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libsql::{Connection, TransactionBehavior};
use memlayer_ports::{DurabilitySetting, StoreError};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::{LibsqlConfig, LibsqlLocation, redact_url};
use crate::error::{Context as _, DriverError};

/// A libSQL database implementing every storage port of memlayer.
///
/// Cloning is cheap and shares the connections. All writes go through one
/// writer connection, serialised by an async mutex, each in an `IMMEDIATE`
/// transaction; reads use separate pooled connections (WAL lets them run
/// beside the writer). For `:memory:` every connection would be a separate
/// database, so the writer connection serves reads too.
///
/// Local databases run each operation on tokio's blocking pool: the driver is
/// synchronous underneath, and a query or a wait for another process's lock
/// must not stall the async workers.
#[derive(Clone)]
pub struct LibsqlBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: libsql::Database,
    writer: Arc<AsyncMutex<Connection>>,
    /// Idle readers; unused when `shared_reader` is set.
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Reads use the writer connection (`:memory:`).
    shared_reader: bool,
    /// Run operations on the blocking pool (local databases).
    blocking: bool,
    busy_timeout: Duration,
    description: String,
}

impl fmt::Debug for LibsqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibsqlBackend").field("location", &self.inner.description).finish_non_exhaustive()
    }
}

impl LibsqlBackend {
    /// Opens the database (creating the file and its parent directories when
    /// missing), switches a file to WAL, sets the busy timeout and foreign
    /// keys on every connection and `synchronous = FULL` on the local writer.
    /// Does not migrate.
    ///
    /// # Errors
    /// `Invalid` for a remote URL when built without feature `remote`;
    /// `Unavailable` when the database is locked; `Backend` otherwise.
    pub async fn open(config: LibsqlConfig) -> Result<Self, StoreError> {
        let LibsqlConfig { location, busy_timeout, readers } = config;
        let opened = match location {
            LibsqlLocation::Remote { url, auth_token } => {
                let description = format!("libsql remote {}", redact_url(&url));
                let db = open_remote(url, auth_token).await?;
                let writer = db.connect().ctx("connect writer")?;
                writer.busy_timeout(busy_timeout).ctx("set busy timeout")?;
                Opened { db, writer, description, shared_reader: false, blocking: false }
            }
            LibsqlLocation::File(path) => open_local(Some(path), busy_timeout).await?,
            LibsqlLocation::Memory => open_local(None, busy_timeout).await?,
        };
        let Opened { db, writer, description, shared_reader, blocking } = opened;

        let backend = Self {
            inner: Arc::new(Inner {
                db,
                writer: Arc::new(AsyncMutex::new(writer)),
                idle: Mutex::new(Vec::new()),
                max_idle: readers.max(1),
                shared_reader,
                blocking,
                busy_timeout,
                description,
            }),
        };
        tracing::debug!(backend = %backend.inner.description, "opened libsql backend");
        Ok(backend)
    }

    /// [`LibsqlBackend::open`], then applies every pending migration.
    ///
    /// # Errors
    /// As [`LibsqlBackend::open`], and any migration failure.
    pub async fn open_migrated(config: LibsqlConfig) -> Result<Self, StoreError> {
        let backend = Self::open(config).await?;
        crate::migrations::migrate_up(&backend).await?;
        Ok(backend)
    }

    pub(crate) fn description(&self) -> &str {
        &self.inner.description
    }

    /// Runs `f` on a reader connection (the writer's, for `:memory:`).
    pub(crate) async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if self.inner.shared_reader {
            let guard = Arc::clone(&self.inner.writer).lock_owned().await;
            return self
                .run(async move {
                    let result = f(Connection::clone(&guard)).await;
                    drop(guard);
                    result
                })
                .await;
        }
        let inner = Arc::clone(&self.inner);
        self.run(async move {
            let conn = inner.checkout()?;
            let result = f(conn.clone()).await;
            inner.checkin(conn);
            result
        })
        .await
    }

    /// Runs `f` in one `IMMEDIATE` transaction on the writer connection:
    /// committed when `f` succeeds, rolled back when it fails.
    pub(crate) async fn write<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        self.run(async move {
            if !guard.is_autocommit() {
                // A previous operation died inside its transaction (a panic):
                // never let its half-done work join ours.
                tracing::warn!("writer connection was left inside a transaction; rolling it back");
                guard.execute_batch("ROLLBACK;").await.ctx("roll back abandoned transaction")?;
            }
            let tx =
                guard.transaction_with_behavior(TransactionBehavior::Immediate).await.ctx("begin write transaction")?;
            let result = f(Connection::clone(&tx)).await;
            let result = match result {
                Ok(value) => tx.commit().await.ctx("commit").map(|()| value),
                Err(e) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::debug!(error = %rollback, "rollback after a failed write");
                    }
                    Err(e)
                }
            };
            drop(guard);
            result
        })
        .await
    }

    /// `PRAGMA synchronous` and `journal_mode` as the writer connection
    /// reports them (none for a remote database: its server decides).
    pub(crate) async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError> {
        if !self.inner.blocking {
            return Ok(Vec::new());
        }
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        self.run(async move {
            let synchronous = match pragma(&guard, "synchronous").await? {
                libsql::Value::Integer(n) => {
                    let name = match n {
                        0 => "OFF",
                        1 => "NORMAL",
                        2 => "FULL",
                        3 => "EXTRA",
                        _ => "unknown",
                    };
                    format!("{name} ({n})")
                }
                other => format!("{other:?}"),
            };
            let journal = match pragma(&guard, "journal_mode").await? {
                libsql::Value::Text(mode) => mode,
                other => format!("{other:?}"),
            };
            drop(guard);
            Ok(vec![
                DurabilitySetting { name: "synchronous".to_owned(), value: synchronous },
                DurabilitySetting { name: "journal_mode".to_owned(), value: journal },
            ])
        })
        .await
    }

    /// Drives `fut` to completion: on the blocking pool for local databases,
    /// inline for remote ones (their I/O is truly asynchronous). A local
    /// operation always runs to its end, even when the caller stops waiting,
    /// so a transaction is never cut in half.
    async fn run<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if !self.inner.blocking {
            return fut.await;
        }
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(fut))
            .await
            .map_err(|e| StoreError::backend(format!("storage task failed: {e}")))?
    }
}

impl Inner {
    fn checkout(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = self.db.connect().ctx("connect reader")?;
                conn.busy_timeout(self.busy_timeout).ctx("set busy timeout")?;
                Ok(conn)
            }
        }
    }

    fn checkin(&self, conn: Connection) {
        if !conn.is_autocommit() {
            return; // never reuse a connection left inside a transaction
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// What opening produced, before the handle is assembled.
struct Opened {
    db: libsql::Database,
    writer: Connection,
    description: String,
    shared_reader: bool,
    blocking: bool,
}

/// Opens a file (`Some`) or a private in-memory database (`None`) on the
/// blocking pool: opening touches the file and may wait for another process's
/// lock, which must not stall an async worker.
async fn open_local(path: Option<PathBuf>, busy_timeout: Duration) -> Result<Opened, StoreError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(open_local_blocking(path, busy_timeout)))
        .await
        .map_err(|e| StoreError::backend(format!("open task failed: {e}")))?
}

async fn open_local_blocking(path: Option<PathBuf>, busy_timeout: Duration) -> Result<Opened, StoreError> {
    let (db, description, shared_reader) = match path {
        Some(path) => {
            create_parent(&path)?;
            let db = libsql::Builder::new_local(&path).build().await.ctx("open database file")?;
            (db, format!("libsql file {}", path.display()), false)
        }
        None => {
            let db = libsql::Builder::new_local(":memory:").build().await.ctx("open in-memory database")?;
            (db, "libsql in-memory database".to_owned(), true)
        }
    };
    let writer = db.connect().ctx("connect writer")?;
    writer.busy_timeout(busy_timeout).ctx("set busy timeout")?;
    if !shared_reader {
        enable_wal(&writer).await?;
    }
    writer.execute_batch("PRAGMA foreign_keys = ON;").await.ctx("enable foreign keys")?;
    // Explicit, not the build's default: every commit is on disk before the
    // append is acknowledged, also across power loss (NORMAL in WAL mode can
    // lose the last commits). Only the writer commits, so only it needs it.
    writer.execute_batch("PRAGMA synchronous = FULL;").await.ctx("set synchronous")?;
    Ok(Opened { db, writer, description, shared_reader, blocking: true })
}

/// The single value a reading `PRAGMA name` returns.
async fn pragma(conn: &Connection, name: &'static str) -> Result<libsql::Value, StoreError> {
    let what = "read pragma";
    let mut rows = conn.query(&format!("PRAGMA {name}"), ()).await.ctx(what)?;
    match rows.next().await.ctx(what)? {
        Some(row) => row.get_value(0).ctx(what),
        None => Err(StoreError::backend(DriverError::new(what, format!("PRAGMA {name} returned no row")))),
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::backend(DriverError::new("create database directory", format!("{}: {e}", parent.display())))
        }),
        _ => Ok(()),
    }
}

async fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let mut rows = conn.query("PRAGMA journal_mode = WAL", ()).await.ctx("enable WAL")?;
    let mode = match rows.next().await.ctx("enable WAL")? {
        Some(row) => match row.get_value(0).ctx("enable WAL")? {
            libsql::Value::Text(mode) => mode,
            other => format!("{other:?}"),
        },
        None => String::new(),
    };
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::backend(DriverError::new("enable WAL", format!("journal mode stayed {mode:?}"))))
    }
}

#[cfg(feature = "remote")]
async fn open_remote(url: String, auth_token: Option<String>) -> Result<libsql::Database, StoreError> {
    libsql::Builder::new_remote(url, auth_token.unwrap_or_default()).build().await.ctx("open remote database")
}

#[cfg(not(feature = "remote"))]
async fn open_remote(_url: String, _auth_token: Option<String>) -> Result<libsql::Database, StoreError> {
    Err(StoreError::Invalid(memlayer_domain::DomainError::new(
        "database.url",
        "remote libSQL URLs need memlayer-adapters-libsql built with feature `remote`",
    )))
}
