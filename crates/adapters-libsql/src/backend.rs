//! The shared handle: one writer connection, a bounded pool of readers
//! (`deadpool`), and the helpers every store operation goes through.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult};
use libsql::Connection;
use memlayer_adapters_sql::migrate::DatabaseEngine;
use memlayer_ports::{DurabilitySetting, LexicalIndex, StoreError};
use tokio::sync::{Mutex as AsyncMutex, Notify, watch};

use crate::config::{LibsqlConfig, LibsqlLocation, Synchronous, redact_url};
use crate::error::{Context as _, DriverError};
use crate::group;
use crate::journal::{self, Deferral};
use crate::statements::Statements;

/// A libSQL database implementing every storage port of memlayer.
///
/// Cloning is cheap and shares the connections. All writes go through one
/// writer connection, serialised by an async mutex, each in an `IMMEDIATE`
/// transaction; reads use separate pooled connections (WAL lets them run
/// beside the writer), at most `readers` of them: a read waits for a free
/// one at most `reader_timeout`, then fails with `Unavailable`. For
/// `:memory:` every connection would be a separate database, so the writer
/// connection serves reads too. With a commit delay
/// (`LibsqlConfig::commit_delay`), appends are answered from the append
/// journal and committed together, before any read ([`crate::journal`]).
///
/// Local databases run each operation where blocking is allowed (in
/// `block_in_place`, or on tokio's blocking pool on a current-thread
/// runtime): the driver is synchronous underneath, and a query or a wait for
/// another process's lock must not stall the async workers.
#[derive(Clone)]
pub struct LibsqlBackend {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Arc<AsyncMutex<Connection>>,
    /// Writes waiting for the writer (group commit).
    queue: std::sync::Mutex<Vec<group::Queued>>,
    /// The writer's prepared statements.
    statements: Arc<Statements>,
    /// Reader connections; `None` when reads use the writer connection
    /// (`:memory:`).
    readers: Option<ReaderPool>,
    /// The database when no pool holds it (`:memory:`), kept open with
    /// the handle.
    _db: Option<libsql::Database>,
    /// How long a read waits for a free reader.
    reader_timeout: Duration,
    /// Run operations where blocking is allowed (local databases).
    blocking: bool,
    description: String,
    indexer: Indexer,
    /// Whether this handle has claimed embedding jobs yet (see
    /// [`LibsqlBackend::first_claim`]).
    claimed: AtomicBool,
    /// The in-process full-text index that serves lexical search instead
    /// of FTS5, when one was given ([`LibsqlBackend::use_lexical_index`]).
    lexical: OnceLock<Arc<dyn LexicalIndex>>,
    /// One catch-up at a time while an in-process index is fed: a feed
    /// never re-adds what a later stale-entry round removed.
    feeding: AsyncMutex<()>,
    /// The newest entry of the deletion log (migration 22) the in-process
    /// full-text index has applied; `None` before the first catch-up.
    lexical_deletions: std::sync::Mutex<Option<i64>>,
    /// Deferred commits, when a commit delay is configured ([`crate::journal`]).
    deferral: Option<Arc<Deferral>>,
}

/// How readers and appends reach the background catch-up task.
///
/// A catch-up *looks* at the store before each of its reads of what waits
/// (numbered, [`Indexer::look`]) and, once everything it saw is indexed
/// and fed, says which look that was ([`Indexer::covered`]): everything
/// committed before that look is then searchable. A reader waits for a
/// look numbered after its call, so a round already under way covers a
/// reader that arrived before the round's last look, and only one that
/// arrived later waits for the next round.
pub(crate) struct Indexer {
    wake: Arc<Notify>,
    /// Looks taken so far.
    looks: AtomicU64,
    /// The newest look whose catch-up has finished.
    covered: watch::Sender<u64>,
    /// How long a reader waits for a round.
    wait: Duration,
}

impl Indexer {
    /// The number of a look about to be taken: call it before reading what
    /// waits for the catch-up.
    pub(crate) fn look(&self) -> u64 {
        self.looks.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Everything committed before look `look` is indexed and fed (or the
    /// catch-up failed and logged why: the readers then read what is
    /// indexed, as after a timeout).
    pub(crate) fn covered(&self, look: u64) {
        self.covered.send_if_modified(|newest| {
            let newer = look > *newest;
            if newer {
                *newest = look;
            }
            newer
        });
    }

    /// Wakes the task without waiting for it: a reader that read what the
    /// index has not reached yet by itself.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the task and waits until a catch-up has covered a look taken
    /// after this call, so everything committed before the call is indexed
    /// (or the catch-up failed and logged why), at most `wait`.
    pub(crate) async fn wait_for_round(&self) {
        let want = self.looks.load(Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut covered = self.covered.subscribe();
        if tokio::time::timeout(self.wait, covered.wait_for(|newest| *newest >= want)).await.is_err() {
            tracing::debug!(wait = ?self.wait, "full-text catch-up still running: reading what is indexed");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the indexer task see that the backend is gone and end.
        self.indexer.wake.notify_one();
        if let Some(d) = &self.deferral {
            d.wake.notify_one();
        }
    }
}

/// The background catch-up: one round per wake-up, ending when the backend
/// is dropped (it holds the backend weakly, so it never keeps it alive).
///
/// Woken by readers that find the index behind (`await_indexed`), never by
/// appends themselves: appends stay cheap, rounds batch many appends, and
/// right after an append the embedding worker's `claim_jobs` (woken by the
/// append) runs the catch-up anyway. A reader therefore notices appends of
/// other processes on the same file too.
async fn index_in_background(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(inner) = inner.upgrade() else { return };
        let backend = LibsqlBackend { inner };
        let round = tracing::Instrument::instrument(backend.catch_up(), tracing::info_span!("lexical.round"));
        if let Err(e) = round.await {
            tracing::warn!(error = %e, "full-text and job-queue catch-up failed; retrying on the next wake-up");
            // The readers waiting for it read what is indexed.
            let indexer = backend.indexer();
            indexer.covered(indexer.looks.load(Ordering::SeqCst));
        }
        drop(backend);
    }
}

/// Commits deferred appends `delay` after the first of them, until the
/// backend is dropped (held weakly).
async fn commit_in_background(inner: Weak<Inner>, wake: Arc<Notify>, delay: Duration) {
    loop {
        wake.notified().await;
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else { return };
        let backend = LibsqlBackend { inner };
        if let Err(e) = backend.commit_deferred().await {
            tracing::warn!(error = %e, "committing deferred appends failed; they are applied again from the journal");
        }
    }
}

type ReaderPool = managed::Pool<Readers>;

/// Opens reader connections for the pool and vets returned ones.
struct Readers {
    db: libsql::Database,
    busy_timeout: Duration,
}

impl managed::Manager for Readers {
    type Type = Connection;
    type Error = StoreError;

    async fn create(&self) -> Result<Connection, StoreError> {
        let conn = self.db.connect().ctx("connect reader")?;
        conn.busy_timeout(self.busy_timeout).ctx("set busy timeout")?;
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<StoreError> {
        if conn.is_autocommit() {
            Ok(())
        } else {
            // Never reuse a connection left inside a transaction.
            Err(RecycleError::message("reader was left inside a transaction"))
        }
    }
}

impl fmt::Debug for LibsqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibsqlBackend").field("location", &self.inner.description).finish_non_exhaustive()
    }
}

impl LibsqlBackend {
    /// Opens the database (creating the file and its parent directories when
    /// missing), switches a file to WAL, sets the busy timeout and foreign
    /// keys on every connection and `synchronous` (`FULL` unless configured
    /// otherwise) on the local writer; applies again the appends of an
    /// append journal a process left behind (before any migration).
    /// Does not migrate.
    ///
    /// # Errors
    /// `Invalid` for a remote URL when built without feature `remote`, or a
    /// commit delay without an embedded file at `synchronous = Normal`;
    /// `Unavailable` when the database is locked, or its append journal is
    /// held by another process (with a commit delay); `Backend` otherwise.
    pub async fn open(config: LibsqlConfig) -> Result<Self, StoreError> {
        let LibsqlConfig { location, busy_timeout, readers, reader_timeout, index_wait, synchronous, commit_delay } =
            config;
        let deferral = match (&location, commit_delay.is_zero()) {
            (_, true) => None,
            (LibsqlLocation::File(path), false) if synchronous == Synchronous::Normal => {
                Some(Arc::new(Deferral::open(path, commit_delay)?))
            }
            _ => {
                return Err(StoreError::Invalid(memlayer_domain::DomainError::new(
                    "commit_delay",
                    "deferred commits need an embedded file with synchronous = NORMAL",
                )));
            }
        };
        // Appends acknowledged under a commit delay by a process that died
        // are applied again even when this one runs without a delay.
        let leftover = match (&location, &deferral) {
            (LibsqlLocation::File(path), None) => journal::leftover(path)?,
            _ => None,
        };
        let opened = match location {
            LibsqlLocation::Remote { url, auth_token } => {
                let description = format!("libsql remote {}", redact_url(&url));
                let db = open_remote(url, auth_token).await?;
                let writer = db.connect().ctx("connect writer")?;
                writer.busy_timeout(busy_timeout).ctx("set busy timeout")?;
                Opened { db, writer, description, shared_reader: false, blocking: false }
            }
            LibsqlLocation::File(path) => open_local(Some(path), busy_timeout, synchronous).await?,
            LibsqlLocation::Memory => open_local(None, busy_timeout, synchronous).await?,
        };
        let Opened { db, writer, description, shared_reader, blocking } = opened;

        let (readers, kept) = if shared_reader {
            (None, Some(db))
        } else {
            let pool = managed::Pool::builder(Readers { db, busy_timeout })
                .max_size(readers.max(1))
                .wait_timeout(Some(reader_timeout))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::backend(DriverError::new("build reader pool", e.to_string())))?;
            (Some(pool), None)
        };
        let wake = Arc::new(Notify::new());
        let indexer =
            Indexer { wake: wake.clone(), looks: AtomicU64::new(0), covered: watch::Sender::new(0), wait: index_wait };
        let backend = Self {
            inner: Arc::new(Inner {
                writer: Arc::new(AsyncMutex::new(writer)),
                queue: std::sync::Mutex::new(Vec::new()),
                statements: Arc::new(Statements::default()),
                readers,
                _db: kept,
                reader_timeout,
                blocking,
                description,
                indexer,
                claimed: AtomicBool::new(false),
                lexical: OnceLock::new(),
                feeding: AsyncMutex::new(()),
                lexical_deletions: std::sync::Mutex::new(None),
                deferral,
            }),
        };
        tokio::spawn(index_in_background(Arc::downgrade(&backend.inner), wake));
        if let Some(d) = &backend.inner.deferral {
            tokio::spawn(commit_in_background(Arc::downgrade(&backend.inner), Arc::clone(&d.wake), d.delay));
            // Appends a process acknowledged and did not commit before it
            // died, before anything else (migrations included) writes.
            backend.commit_deferred().await?;
        }
        if let Some(d) = leftover {
            backend.apply_leftover(d).await?;
        }
        tracing::debug!(backend = %backend.inner.description, "opened libsql backend");
        Ok(backend)
    }

    /// [`LibsqlBackend::open`], then applies every pending migration.
    ///
    /// # Errors
    /// As [`LibsqlBackend::open`], and any migration failure.
    pub async fn open_migrated(config: LibsqlConfig) -> Result<Self, StoreError> {
        let backend = Self::open(config).await?;
        memlayer_adapters_sql::migrate::migrate_up(&backend).await?;
        Ok(backend)
    }

    /// `true` the first time it is called on this handle (and its clones).
    pub(crate) fn first_claim(&self) -> bool {
        !self.inner.claimed.swap(true, Ordering::SeqCst)
    }

    /// The writer connection's prepared statements: for use inside a write
    /// only (see [`crate::statements`]).
    pub(crate) fn statements(&self) -> &Arc<Statements> {
        &self.inner.statements
    }

    pub(crate) fn indexer(&self) -> &Indexer {
        &self.inner.indexer
    }

    /// Serves lexical search from `index` instead of the FTS5 tables, which
    /// the catch-up keeps writing (so switching back needs no rebuild): the
    /// catch-up feeds `index` from its position on, applies deleted and
    /// edited messages to it before it forgets them, and searches leave out
    /// what it has not applied yet. Call it once, before the first search;
    /// a second index is refused.
    ///
    /// # Errors
    /// `Invalid` when an index was given already.
    pub fn use_lexical_index(&self, index: Arc<dyn LexicalIndex>) -> Result<(), StoreError> {
        self.inner.lexical.set(index).map_err(|_| {
            StoreError::Invalid(memlayer_domain::DomainError::new("lexical", "an index was given already"))
        })
    }

    pub(crate) fn lexical(&self) -> Option<&Arc<dyn LexicalIndex>> {
        self.inner.lexical.get()
    }

    pub(crate) fn feeding(&self) -> &AsyncMutex<()> {
        &self.inner.feeding
    }

    /// The newest deletion-log entry the in-process full-text index has
    /// applied (`None`: none read yet).
    pub(crate) fn lexical_deletions(&self) -> Option<i64> {
        *self.inner.lexical_deletions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_lexical_deletions(&self, seq: i64) {
        *self.inner.lexical_deletions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(seq);
    }

    /// Commits the appends acknowledged and not yet committed (with a
    /// commit delay; nothing to do otherwise): after it returns, a read
    /// sees every append acknowledged before the call. The server calls it
    /// at shutdown; a process that dies without it loses nothing (its
    /// appends are applied again from the journal at the next open).
    ///
    /// # Errors
    /// The commit failing (the appends stay in the journal).
    pub async fn commit_deferred(&self) -> Result<(), StoreError> {
        let Some(d) = &self.inner.deferral else { return Ok(()) };
        if !d.is_open() && !d.is_lost() {
            return Ok(());
        }
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let (statements, d) = (Arc::clone(&self.inner.statements), Arc::clone(d));
        self.run(async move {
            let committed = group::commit_deferred(&guard, &statements, &d).await;
            drop(guard);
            committed
        })
        .await
    }

    /// Applies the appends of a journal left by a process that died, and
    /// removes it.
    async fn apply_leftover(&self, d: Deferral) -> Result<(), StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let statements = Arc::clone(&self.inner.statements);
        self.run(async move {
            let committed = group::commit_deferred(&guard, &statements, &d).await;
            drop(guard);
            committed?;
            d.remove()
        })
        .await
    }

    /// Runs `f` on a reader connection (the writer's, for `:memory:`).
    pub(crate) async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        // Every acknowledged append is visible to a read.
        self.commit_deferred().await?;
        let Some(readers) = &self.inner.readers else {
            let guard = Arc::clone(&self.inner.writer).lock_owned().await;
            return self
                .run(async move {
                    let result = f(Connection::clone(&guard)).await;
                    drop(guard);
                    result
                })
                .await;
        };
        // Waiting for a free reader happens here, on the async side, so a
        // queue of reads never holds blocking-pool threads.
        let conn = readers.get().await.map_err(|e| self.checkout_error(e))?;
        self.run(async move {
            let result = f(Connection::clone(&conn)).await;
            drop(conn);
            result
        })
        .await
    }

    fn checkout_error(&self, e: PoolError<StoreError>) -> StoreError {
        match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no reader connection free within {} ms (database.readers = {})",
                self.inner.reader_timeout.as_millis(),
                self.inner.readers.as_ref().map_or(0, |p| p.status().max_size),
            )),
            other => StoreError::backend(DriverError::new("check out reader", other.to_string())),
        }
    }

    /// Reader connections open now and the most there may be (`(0, 0)` when
    /// reads use the writer connection).
    #[must_use]
    pub fn reader_connections(&self) -> (usize, usize) {
        self.inner.readers.as_ref().map_or((0, 0), |p| {
            let status = p.status();
            (status.size, status.max_size)
        })
    }

    /// Runs `f` in an `IMMEDIATE` transaction on the writer connection,
    /// shared with the writes that queued while the writer was busy (group
    /// commit, see [`crate::group`]): its changes are committed when `f`
    /// succeeds (the answer comes after the commit) and undone when it fails.
    pub(crate) async fn write<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.enqueue(group::Job::new(f, None)).await
    }

    /// [`LibsqlBackend::write`] of an append whose `record` lets the journal
    /// apply it again: with a commit delay it is acknowledged once in the
    /// journal, before its commit ([`crate::journal`]). Without a record
    /// (make one only when [`LibsqlBackend::journaling`]), or with one above
    /// [`journal::MAX_RECORD_BYTES`], as `write`.
    pub(crate) async fn write_journaled<T, F, Fut>(&self, record: Option<Vec<u8>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let record = record.filter(|r| r.len() <= journal::MAX_RECORD_BYTES);
        self.enqueue(group::Job::new(f, record)).await
    }

    /// Whether appends are journaled (a commit delay is configured): the
    /// record for [`LibsqlBackend::write_journaled`] is worth making.
    pub(crate) fn journaling(&self) -> bool {
        self.inner.deferral.is_some()
    }

    async fn enqueue<T, F, Fut>(
        &self,
        (job, mut answer): (group::Job<F, T>, tokio::sync::oneshot::Receiver<Result<T, StoreError>>),
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.queue().push(Box::new(job));
        // Every queued write's caller waits for the writer after queueing
        // until its write is answered, so taking the whole queue never
        // strands a write. A caller whose write ran in another caller's
        // group has its answer before it gets the writer: it leaves the line
        // at once instead of taking the writer for nothing, which would make
        // the writes queued meanwhile commit in groups of one, each with its
        // own fsync.
        let writer = Arc::clone(&self.inner.writer).lock_owned();
        let guard = tokio::select! {
            biased;
            answered = &mut answer => return Self::answered(answered),
            guard = writer => guard,
        };
        let writes = std::mem::take(&mut *self.queue());
        if writes.is_empty() {
            drop(guard);
        } else {
            let statements = Arc::clone(&self.inner.statements);
            let deferral = self.inner.deferral.clone();
            let group = async move {
                group::run(&guard, &statements, writes, deferral.as_deref()).await;
                drop(guard);
                Ok(())
            };
            if self.inner.blocking {
                self.run(group).await?;
            } else {
                // A remote group runs on the async side: as its own task, so
                // the caller that leads it giving up never cuts the others'
                // transaction short.
                tokio::spawn(group).await.map_err(|e| StoreError::backend(format!("write task failed: {e}")))??;
            }
        }
        Self::answered(answer.await)
    }

    fn answered<T>(
        answer: Result<Result<T, StoreError>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<T, StoreError> {
        answer.map_err(|_| StoreError::backend("the write ended without an answer (its task failed)"))?
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<group::Queued>> {
        // A panic never happens while the lock is held (push and take).
        self.inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drives `fut` to completion: for local databases, in
    /// `block_in_place` on a multi-threaded runtime (the calling worker's
    /// other tasks move to another thread while the driver blocks this one),
    /// else on the blocking pool; inline for remote ones (their I/O is truly
    /// asynchronous). A local operation always runs to its end, even when
    /// the caller stops waiting (`block_in_place` finishes within one poll,
    /// a pool task runs on its own), so a transaction is never cut in half.
    async fn run<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if !self.inner.blocking {
            return fut.await;
        }
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // On the calling thread, which hands its other tasks to another
            // worker first: no hop to a pool thread and back, which cost
            // more than a small append or read itself (on two cores, about
            // 40% of the CPU of a run of single appends, and 30% of a
            // last-10 read: docs/BENCHMARKS.md, "The race against the peer").
            return tokio::task::block_in_place(move || handle.block_on(fut));
        }
        tokio::task::spawn_blocking(move || handle.block_on(fut))
            .await
            .map_err(|e| StoreError::backend(format!("storage task failed: {e}")))?
    }
}

/// `Database` (expanded in `lib.rs` by `memlayer_adapters_sql::database!`)
/// on libSQL, besides the migrations.
#[async_trait]
impl DatabaseEngine for LibsqlBackend {
    fn description(&self) -> &str {
        &self.inner.description
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| async move {
            let mut rows =
                conn.query("SELECT 1", ()).await.map_err(|e| StoreError::Unavailable(format!("ping: {e}")))?;
            rows.next().await.map_err(|e| StoreError::Unavailable(format!("ping: {e}")))?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(_) => e,
            other => StoreError::Unavailable(format!("ping: {other}")),
        })
    }

    /// `PRAGMA synchronous` and `journal_mode` as the writer connection
    /// reports them (none for a remote database: its server decides): for a
    /// local file the configured `synchronous`, `FULL (2)` by default, set
    /// explicitly when the writer opens, and `wal`; with deferred commits,
    /// `commit_delay` too.
    async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError> {
        if !self.inner.blocking {
            return Ok(Vec::new());
        }
        let delay = self.inner.deferral.as_ref().map(|d| DurabilitySetting {
            name: "commit_delay".to_owned(),
            value: format!("{} ms (append journal)", d.delay.as_millis()),
        });
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
            let mut settings = vec![
                DurabilitySetting { name: "synchronous".to_owned(), value: synchronous },
                DurabilitySetting { name: "journal_mode".to_owned(), value: journal },
            ];
            settings.extend(delay);
            Ok(settings)
        })
        .await
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
async fn open_local(
    path: Option<PathBuf>,
    busy_timeout: Duration,
    synchronous: Synchronous,
) -> Result<Opened, StoreError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(open_local_blocking(path, busy_timeout, synchronous)))
        .await
        .map_err(|e| StoreError::backend(format!("open task failed: {e}")))?
}

async fn open_local_blocking(
    path: Option<PathBuf>,
    busy_timeout: Duration,
    synchronous: Synchronous,
) -> Result<Opened, StoreError> {
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
    // Explicit, not the build's default: with FULL (the default) every
    // commit is on disk before the append is acknowledged, also across power
    // loss; NORMAL, when configured, can lose the last commits to a power
    // loss (see `Synchronous`). Only the writer commits, so only it needs it.
    writer.execute_batch(&format!("PRAGMA synchronous = {};", synchronous.as_sql())).await.ctx("set synchronous")?;
    if !shared_reader {
        writer
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"))
            .await
            .ctx("set wal_autocheckpoint")?;
    }
    Ok(Opened { db, writer, description, shared_reader, blocking: true })
}

/// WAL pages after which a commit of the writer checkpoints (SQLite's
/// default is 1,000, 4 MiB). A checkpoint runs on the writer, inside the
/// commit every queued write waits for, and costs two `fsync`s besides its
/// copying (with `synchronous = FULL`); a write that dirties thousands of
/// pages (an OTLP batch: random leaf pages of every trace and span index)
/// crossed the default at nearly every commit. At 16,384 pages (64 MiB)
/// checkpoints come about 16 times less often, and each copies a page
/// rewritten by many commits once (docs/BENCHMARKS.md, "Observability").
/// The WAL file grows to about this size and is then reused.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn file_backend(dir: &tempfile::TempDir, readers: usize, reader_timeout: Duration) -> LibsqlBackend {
        let config = LibsqlConfig { readers, reader_timeout, ..LibsqlConfig::file(dir.path().join("db.sqlite")) };
        LibsqlBackend::open_migrated(config).await.unwrap()
    }

    /// A search while a long write holds the writer: it neither takes nor
    /// waits for the writer beyond the index wait; it searches what is
    /// indexed and counts the rest as pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_never_wait_for_the_writer() {
        use memlayer_domain::{NewMessage, NewThread, Role, TenantId};
        use memlayer_ports::{EmbeddingStore, MessageStore, SearchFilter, ThreadStore};

        let dir = tempfile::tempdir().unwrap();
        let config =
            LibsqlConfig { index_wait: Duration::from_millis(50), ..LibsqlConfig::file(dir.path().join("db")) };
        let backend = LibsqlBackend::open_migrated(config).await.unwrap();
        let t = TenantId::parse("acme").unwrap();
        let thread = backend.create(&t, NewThread::default()).await.unwrap().id;
        let text = |s: &str| NewMessage::text(Role::User, s).unwrap();
        backend.append(&t, thread, vec![text("kettle refund"), text("kettle again")]).await.unwrap();

        let (release, writer) = hold_writer(&backend).await;
        let all = SearchFilter::all_threads(t.clone());
        let search = backend.lexical_search(&all, "kettle".into(), 5);
        let hits = tokio::time::timeout(Duration::from_secs(30), search).await.expect("search waited for the writer");
        assert!(hits.unwrap().is_empty(), "nothing is indexed while the writer is busy");
        let coverage = tokio::time::timeout(Duration::from_secs(30), backend.coverage(&all, "m".into())).await;
        assert_eq!(coverage.expect("coverage waited for the writer").unwrap().pending, 2, "the rest is pending");
        release.notify_one();
        writer.await.unwrap().unwrap();
        backend.catch_up().await.unwrap();
        assert_eq!(backend.lexical_search(&all, "kettle".into(), 5).await.unwrap().len(), 2);
    }

    /// Holds the writer inside a write until `release` is notified.
    async fn hold_writer(backend: &LibsqlBackend) -> (Arc<Notify>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (release, held) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let writer = {
            let (backend, release, held) = (backend.clone(), release.clone(), held.clone());
            tokio::spawn(async move {
                backend
                    .write(move |_conn| async move {
                        held.notify_one();
                        release.notified().await;
                        Ok(())
                    })
                    .await
            })
        };
        held.notified().await;
        (release, writer)
    }

    /// A file backend with an empty table `scratch (x INTEGER PRIMARY KEY)`.
    async fn scratch_backend(dir: &tempfile::TempDir) -> LibsqlBackend {
        let backend = file_backend(dir, 2, Duration::from_secs(30)).await;
        create_scratch(&backend).await;
        backend
    }

    async fn create_scratch(backend: &LibsqlBackend) {
        backend
            .write(|conn| async move {
                conn.execute("CREATE TABLE scratch (x INTEGER PRIMARY KEY)", ()).await.ctx("create")?;
                Ok(())
            })
            .await
            .unwrap();
    }

    /// A write that dies part-way (a panic) while deferred appends wait: none
    /// of its work is ever committed, and the appends acknowledged before it
    /// are kept (applied again from the journal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_dying_part_way_under_a_commit_delay_commits_nothing_of_it() {
        use memlayer_domain::{NewMessage, NewThread, PageSize, Role, TenantId};
        use memlayer_ports::{MessageStore, ThreadStore};

        let dir = tempfile::tempdir().unwrap();
        let config = LibsqlConfig {
            synchronous: Synchronous::Normal,
            commit_delay: Duration::from_secs(600),
            ..LibsqlConfig::file(dir.path().join("db"))
        };
        let backend = LibsqlBackend::open_migrated(config).await.unwrap();
        create_scratch(&backend).await;
        let t = TenantId::parse("acme").unwrap();
        let thread = backend.create(&t, NewThread::default()).await.unwrap().id;
        let text = |s: &str| vec![NewMessage::text(Role::User, s).unwrap()];
        let before = backend.append(&t, thread, text("before")).await.unwrap();

        let dying = backend.clone();
        let died = tokio::spawn(async move {
            dying
                .write(|conn| async move {
                    conn.execute("INSERT INTO scratch VALUES (1)", ()).await.ctx("insert")?;
                    std::hint::black_box(None::<()>).unwrap();
                    Ok(())
                })
                .await
        })
        .await;
        assert!(died.unwrap_err().is_panic());

        let after = backend.append(&t, thread, text("after")).await.unwrap();
        let stored = backend.last(&t, thread, PageSize::new(10).unwrap()).await.unwrap();
        let got: Vec<_> = stored.iter().map(|m| (m.id, m.seq)).collect();
        let want: Vec<_> = before.iter().chain(&after).map(|m| (m.id, m.seq)).collect();
        assert_eq!(got, want, "the appends acknowledged around the dead write, as acknowledged");
        let scratch = backend
            .read(|conn| async move {
                let mut rows = conn.query("SELECT count(*) FROM scratch", ()).await.ctx("count")?;
                let row = rows.next().await.ctx("count")?.ok_or_else(|| StoreError::backend("no row"))?;
                row.get::<i64>(0).ctx("count")
            })
            .await
            .unwrap();
        assert_eq!(scratch, 0, "nothing of the dead write is committed");
    }

    /// Waits until `n` writes wait in the queue (at most 30 s).
    async fn queued(backend: &LibsqlBackend, n: usize) {
        let wait = async {
            while backend.queue().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the writes queue behind the held writer");
    }

    async fn stored(backend: &LibsqlBackend) -> Vec<i64> {
        backend
            .read(|conn| async move {
                let mut rows = conn.query("SELECT x FROM scratch ORDER BY x", ()).await.ctx("read")?;
                let mut xs = Vec::new();
                while let Some(row) = rows.next().await.ctx("read")? {
                    xs.push(row.get::<i64>(0).unwrap());
                }
                Ok(xs)
            })
            .await
            .unwrap()
    }

    /// Writes that queue behind a busy writer commit together, and one that
    /// fails is undone alone: its caller hears its own error, the others
    /// are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let backend = scratch_backend(&dir).await;
        let (release, writer) = hold_writer(&backend).await;
        let insert = |x: i64, fail: bool| {
            let backend = backend.clone();
            tokio::spawn(async move {
                backend
                    .write(move |conn| async move {
                        conn.execute("INSERT INTO scratch (x) VALUES (?1)", [x]).await.ctx("insert")?;
                        if fail {
                            return Err(StoreError::Conflict(format!("write {x} refuses")));
                        }
                        Ok(x)
                    })
                    .await
            })
        };
        let writes = vec![insert(1, false), insert(2, true), insert(3, false)];
        // Let all three queue behind the held writer.
        queued(&backend, 3).await;
        release.notify_one();
        writer.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for w in writes {
            answers.push(w.await.unwrap());
        }
        assert_eq!(answers[0].as_ref().unwrap(), &1);
        assert!(matches!(&answers[1], Err(StoreError::Conflict(m)) if m == "write 2 refuses"), "{:?}", answers[1]);
        assert_eq!(answers[2].as_ref().unwrap(), &3);
        assert_eq!(stored(&backend).await, vec![1, 3], "the failed write's insert is undone, the others stay");
        // A constraint error inside a grouped write is that write's alone.
        let (release, writer) = hold_writer(&backend).await;
        let (dup, fresh) = (insert(3, false), insert(4, false));
        queued(&backend, 2).await;
        release.notify_one();
        writer.await.unwrap().unwrap();
        let (dup, fresh) = (dup.await.unwrap(), fresh.await.unwrap());
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(fresh.unwrap(), 4);
        assert_eq!(stored(&backend).await, vec![1, 3, 4]);
    }

    /// A caller whose write ran in another caller's group is answered as
    /// soon as its write is done, without waiting for the writer: otherwise
    /// every answered caller takes the writer in turn and the writes queued
    /// meanwhile commit in groups of one. Here the group's last write holds
    /// the writer while the failed write's caller must already be answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_write_does_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let backend = scratch_backend(&dir).await;
        let (release, writer) = hold_writer(&backend).await;
        let (go_on, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let spawn = |x: i64| {
            let (backend, go_on, started) = (backend.clone(), go_on.clone(), started.clone());
            tokio::spawn(async move {
                backend
                    .write(move |conn| async move {
                        conn.execute("INSERT INTO scratch (x) VALUES (?1)", [x]).await.ctx("insert")?;
                        match x {
                            2 => Err(StoreError::Conflict("write 2 refuses".to_owned())),
                            3 => {
                                started.notify_one();
                                go_on.notified().await;
                                Ok(x)
                            }
                            _ => Ok(x),
                        }
                    })
                    .await
            })
        };
        // Queued one by one, so they wait for the writer in this order.
        let mut writes = Vec::new();
        for x in 1..=3 {
            writes.push(spawn(x));
            queued(&backend, usize::try_from(x).unwrap()).await;
        }
        release.notify_one();
        writer.await.unwrap().unwrap();
        started.notified().await;
        // Write 3 holds the writer now; write 2 already failed and was undone.
        let failed = writes.remove(1);
        let failed = tokio::time::timeout(Duration::from_secs(30), failed).await;
        // Let write 3 finish either way: the runtime waits for it at the end.
        go_on.notify_one();
        let failed = failed.expect("the failed write's caller waited for the writer");
        assert!(matches!(failed.unwrap(), Err(StoreError::Conflict(_))));
        for (w, x) in writes.into_iter().zip([1, 3]) {
            assert_eq!(w.await.unwrap().unwrap(), x);
        }
        assert_eq!(stored(&backend).await, vec![1, 3]);
    }

    /// Appends queued behind a busy writer commit together: one that fails
    /// (a missing thread, a quota it does not fit in) is undone alone,
    /// including its bump of the thread's sequence and stored counts, and the
    /// tenant's usage counts exactly what the others stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_appends_fail_alone() {
        use memlayer_domain::{NewMessage, NewThread, Quota, QuotaKind, Role, TenantId, ThreadId, Usage};
        use memlayer_ports::{MessageStore, ThreadStore, UsageStore};

        let dir = tempfile::tempdir().unwrap();
        let backend = file_backend(&dir, 2, Duration::from_secs(30)).await;
        let t = TenantId::parse("acme").unwrap();
        let (a, b) = (
            backend.create(&t, NewThread::default()).await.unwrap().id,
            backend.create(&t, NewThread::default()).await.unwrap().id,
        );
        let text = |i: usize| NewMessage::text(Role::User, format!("message {i}")).unwrap();
        backend.append(&t, a, (0..10).map(text).collect()).await.unwrap();
        // Room for 8 more messages: the batch of 11 never fits, the others always do.
        let quota = Quota { messages: Some(18), ..Quota::UNLIMITED };
        let (release, writer) = hold_writer(&backend).await;
        let plan: Vec<(ThreadId, std::ops::Range<usize>)> =
            vec![(a, 10..11), (ThreadId::new(), 11..12), (a, 12..23), (b, 23..24), (a, 24..25)];
        let mut appends = Vec::new();
        for (i, (thread, range)) in plan.into_iter().enumerate() {
            let (db, t) = (backend.clone(), t.clone());
            let batch = range.map(text).collect();
            appends.push(tokio::spawn(async move { db.append_within(&t, thread, batch, &quota).await }));
            queued(&backend, i + 1).await;
        }
        release.notify_one();
        writer.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for append in appends {
            answers.push(append.await.unwrap());
        }
        let seqs = |i: usize| answers[i].as_ref().unwrap().iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(0), vec![11]);
        assert!(matches!(&answers[1], Err(StoreError::NotFound { .. })), "{:?}", answers[1]);
        assert!(
            matches!(&answers[2], Err(StoreError::QuotaExceeded { quota: QuotaKind::Messages, requested: 11, .. })),
            "{:?}",
            answers[2]
        );
        assert_eq!(seqs(3), vec![1]);
        assert_eq!(seqs(4), vec![12], "the refused batch left no gap in the thread's sequence");
        let stored_in = |thread| {
            let backend = backend.clone();
            let t = t.clone();
            async move { backend.last(&t, thread, memlayer_domain::PageSize::new(100).unwrap()).await.unwrap() }
        };
        let in_a: Vec<i64> = stored_in(a).await.iter().map(|m| m.seq).collect();
        assert_eq!(in_a, (1..=12).collect::<Vec<_>>());
        assert_eq!(stored_in(b).await.len(), 1);
        let bytes: u64 =
            [stored_in(a).await, stored_in(b).await].iter().flatten().map(|m| m.approx_bytes() as u64).sum();
        assert_eq!(backend.usage(&t).await.unwrap(), Usage { threads: 2, messages: 13, bytes });
        let next = backend.append(&t, a, vec![text(99)]).await.unwrap();
        assert_eq!(next[0].seq, 13);
    }

    /// A write whose caller gave up before the write ran is not run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_queued_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let backend = scratch_backend(&dir).await;
        let (release, writer) = hold_writer(&backend).await;
        let abandoned = {
            let backend = backend.clone();
            tokio::spawn(async move {
                backend
                    .write(|conn| async move {
                        conn.execute("INSERT INTO scratch (x) VALUES (1)", ()).await.ctx("insert")?;
                        Ok(())
                    })
                    .await
            })
        };
        queued(&backend, 1).await;
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        release.notify_one();
        writer.await.unwrap().unwrap();
        backend
            .write(|conn| async move {
                conn.execute("INSERT INTO scratch (x) VALUES (2)", ()).await.ctx("insert")?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(stored(&backend).await, vec![2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_share_a_bounded_pool() {
        let dir = tempfile::tempdir().unwrap();
        let backend = file_backend(&dir, 2, Duration::from_secs(30)).await;
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let reads = (0..10).map(|_| {
            let (backend, inside, most) = (backend.clone(), inside.clone(), most.clone());
            tokio::spawn(async move {
                backend
                    .read(move |conn| async move {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Hold the connection long enough for the reads to overlap.
                        std::thread::sleep(Duration::from_millis(20));
                        let mut rows = conn.query("SELECT count(*) FROM threads", ()).await.unwrap();
                        rows.next().await.unwrap();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        });
        for read in reads.collect::<Vec<_>>() {
            read.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "{} reads held connections at once", most.load(Ordering::SeqCst));
        let (open, max) = backend.reader_connections();
        assert_eq!(max, 2);
        assert!((1..=2).contains(&open), "{open} reader connections open");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_finds_no_free_reader_in_time_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let backend = file_backend(&dir, 1, Duration::from_millis(50)).await;
        let release = Arc::new(tokio::sync::Notify::new());
        let (held, started) = (release.clone(), Arc::new(tokio::sync::Notify::new()));
        let signal = started.clone();
        let holder = {
            let backend = backend.clone();
            tokio::spawn(async move {
                backend
                    .read(move |_conn| async move {
                        signal.notify_one();
                        held.notified().await;
                        Ok(())
                    })
                    .await
            })
        };
        started.notified().await;
        let err = backend.read(|_conn| async move { Ok(()) }).await.unwrap_err();
        assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("database.readers = 1")), "{err:?}");
        release.notify_one();
        holder.await.unwrap().unwrap();
        backend.read(|_conn| async move { Ok(()) }).await.unwrap();
    }
}
