//! The migration runner, written once: versioned up/down SQL embedded in
//! each adapter (its [`Migration`] plan, the SQL per backend), bookkept in
//! `_memlayer_migrations`. Every migration is applied or reverted in its own
//! transaction together with its bookkeeping row, serial with every other
//! process migrating the same database ([`Migrate::migration_tx`]), and
//! re-checks inside that transaction whether another process already did
//! it, so two processes cannot apply one twice.
//!
//! The runner depends on neither adapter; an adapter's backend implements
//! [`Migrate`], and its `open` calls [`migrate_up`], so the backend module
//! and the migration plan do not name each other. [`database!`](crate::database) writes the
//! `Database` port over the runner and a [`DatabaseEngine`].

use async_trait::async_trait;
use memlayer_ports::{DurabilitySetting, MigrationStatus, StoreError};
use time::format_description::well_known::Rfc3339;

use crate::{Cells, Dialect, Executor, Sql, SqlValue, Transactor, Work};

/// One schema change.
#[derive(Debug)]
pub struct Migration {
    /// Increasing version number (the same number for the same change on
    /// every backend; a change one backend does not need leaves a gap).
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// SQL that applies it.
    pub up: &'static str,
    /// SQL that reverts it.
    pub down: &'static str,
    /// A query naming tables created at run time (their names are in
    /// neither script), dropped before `up` runs and before `down` runs: for
    /// a migration that creates such tables (whose `up` finds none yet) or
    /// changes how they are made (both ways, their maker makes them again).
    pub drops: Option<&'static str>,
}

/// Every schema change of either backend, by version, written once: its
/// name and the stem of its SQL files, so the two backends' plans cannot
/// disagree on a name (`memlayer migrate status` reads alike on both). Each
/// adapter keeps its own SQL (`migrations/<stem>.{up,down}.sql` in its crate,
/// found through its `CARGO_MANIFEST_DIR`) and names the versions it needs
/// with [`migrations!`](crate::migrations!); a version one backend does not need is a gap in its
/// plan.
///
/// `migration!(N)` is the [`Migration`] of version `N` in the invoking
/// crate; `migration!(N => drops)` sets its `drops`.
#[macro_export]
macro_rules! migration {
    (@drops) => { ::core::option::Option::None };
    (@drops $drops:expr) => { ::core::option::Option::Some($drops) };
    (@ $version:literal, $name:literal, $stem:literal $(, $drops:expr)?) => {
        $crate::migrate::Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $stem, ".up.sql")),
            down: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $stem, ".down.sql")),
            drops: $crate::migration!(@drops $($drops)?),
        }
    };
    (1 $(=> $drops:expr)?) => { $crate::migration!(@ 1, "core_schema", "0001_core_schema" $(, $drops)?) };
    (2 $(=> $drops:expr)?) => { $crate::migration!(@ 2, "semantic", "0002_semantic" $(, $drops)?) };
    // libSQL only: full-text entries and jobs added after the append.
    (3 $(=> $drops:expr)?) => { $crate::migration!(@ 3, "deferred_indexing", "0003_deferred_indexing" $(, $drops)?) };
    (4 $(=> $drops:expr)?) => { $crate::migration!(@ 4, "config_store", "0004_config_store" $(, $drops)?) };
    // libSQL only: a full-text table per tenant.
    (5 $(=> $drops:expr)?) => { $crate::migration!(@ 5, "tenant_lexical", "0005_tenant_lexical" $(, $drops)?) };
    (6 $(=> $drops:expr)?) => { $crate::migration!(@ 6, "idempotency", "0006_idempotency" $(, $drops)?) };
    (7 $(=> $drops:expr)?) => { $crate::migration!(@ 7, "fair_job_queue", "0007_fair_job_queue" $(, $drops)?) };
    // Postgres only: a bound on full-text documents.
    (8 $(=> $drops:expr)?) => { $crate::migration!(@ 8, "bounded_document", "0008_bounded_document" $(, $drops)?) };
    (9 $(=> $drops:expr)?) => { $crate::migration!(@ 9, "thread_sweep", "0009_thread_sweep" $(, $drops)?) };
    (10 $(=> $drops:expr)?) => { $crate::migration!(@ 10, "api_keys", "0010_api_keys" $(, $drops)?) };
    (11 $(=> $drops:expr)?) => { $crate::migration!(@ 11, "storage_quota", "0011_storage_quota" $(, $drops)?) };
    // Postgres only: row-level security on a caller's resource.
    (12 $(=> $drops:expr)?) => { $crate::migration!(@ 12, "resource_isolation", "0012_resource_isolation" $(, $drops)?) };
    (13 $(=> $drops:expr)?) => { $crate::migration!(@ 13, "working_memory", "0013_working_memory" $(, $drops)?) };
    (14 $(=> $drops:expr)?) => { $crate::migration!(@ 14, "summaries", "0014_summaries" $(, $drops)?) };
    (15 $(=> $drops:expr)?) => { $crate::migration!(@ 15, "context", "0015_context" $(, $drops)?) };
    // Postgres only: row-level security on a caller's resource for working memory and summaries.
    (16 $(=> $drops:expr)?) => { $crate::migration!(@ 16, "resource_isolation_memory", "0016_resource_isolation_memory" $(, $drops)?) };
    (17 $(=> $drops:expr)?) => { $crate::migration!(@ 17, "retention", "0017_retention" $(, $drops)?) };
    (18 $(=> $drops:expr)?) => { $crate::migration!(@ 18, "agent_runner", "0018_agent_runner" $(, $drops)?) };
    (19 $(=> $drops:expr)?) => { $crate::migration!(@ 19, "workflows", "0019_workflows" $(, $drops)?) };
    // Stemmed full text, made again on both backends.
    (20 $(=> $drops:expr)?) => { $crate::migration!(@ 20, "stemming", "0020_stemming" $(, $drops)?) };
    // Observability (issue 17): spans, events, links, traces, evaluations, system metric samples.
    (21 $(=> $drops:expr)?) => { $crate::migration!(@ 21, "observability", "0021_observability" $(, $drops)?) };
    (22 $(=> $drops:expr)?) => { $crate::migration!(@ 22, "deletion_log", "0022_deletion_log" $(, $drops)?) };
    // Agent state's history and working-memory versions' seqs: a fork as of a message (issue 14).
    (25 $(=> $drops:expr)?) => { $crate::migration!(@ 25, "fork_as_of", "0025_fork_as_of" $(, $drops)?) };
    // Observability's ingest (issue 17): span events in their span's row, fewer trace indexes.
    (26 $(=> $drops:expr)?) => { $crate::migration!(@ 26, "lean_traces", "0026_lean_traces" $(, $drops)?) };
}

/// A plan: the [`migration!`](crate::migration!) of each version listed, in the order listed
/// (`migrations![1, 2, 5 => DROPS]`), checked when it is compiled
/// ([`first_unusable`]).
#[macro_export]
macro_rules! migrations {
    ($($version:tt $(=> $drops:expr)?),* $(,)?) => {{
        const PLAN: &[$crate::migrate::Migration] = &[$($crate::migration!($version $(=> $drops)?)),*];
        const _: () = assert!(
            $crate::migrate::first_unusable(PLAN).is_none(),
            "a migration is not above the one before it, or lacks SQL"
        );
        PLAN
    }};
}

/// What a backend provides so the runner can migrate it.
#[async_trait]
pub trait Migrate: Transactor {
    /// Every migration, oldest first.
    fn plan(&self) -> &'static [Migration];

    /// Runs `work` in a transaction of its own, serial with every other
    /// process migrating the database, without a statement timeout, the
    /// bookkeeping table created; committed when `work` succeeds.
    async fn migration_tx<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError>;

    /// Runs `work` as a read (the bookkeeping table may be missing).
    async fn migration_read<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError>;
}

/// What [`database!`](crate::database) leaves to the engine besides migrating: how it names
/// itself, checks a connection and reports its set-up.
#[async_trait]
pub trait DatabaseEngine: Migrate + Sized {
    /// `Database::describe`: the backend and its location, without secrets.
    fn description(&self) -> &str;

    /// `Database::ping`: `Unavailable` unless a query round-trips.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `Database::warnings`. Default: none.
    async fn warnings(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// `Database::durability`, read from the connection that writes.
    async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError>;
}

/// Implements `memlayer_ports::Database` for a backend type that implements
/// [`DatabaseEngine`]: the migrations by this module's runner (a macro: the
/// orphan rule forbids a blanket impl of a foreign trait).
#[macro_export]
macro_rules! database {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::Database for $backend {
            fn describe(&self) -> String {
                $crate::migrate::DatabaseEngine::description(self).to_owned()
            }

            async fn ping(&self) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::migrate::DatabaseEngine::ping(self).await
            }

            async fn migration_status(
                &self,
            ) -> Result<Vec<::memlayer_ports::MigrationStatus>, ::memlayer_ports::StoreError> {
                $crate::migrate::status(self).await
            }

            async fn migrate_up(&self) -> Result<Vec<::memlayer_ports::MigrationStatus>, ::memlayer_ports::StoreError> {
                $crate::migrate::migrate_up(self).await
            }

            async fn migrate_down(
                &self,
                steps: usize,
            ) -> Result<Vec<::memlayer_ports::MigrationStatus>, ::memlayer_ports::StoreError> {
                $crate::migrate::migrate_down(self, steps).await
            }

            async fn warnings(&self) -> Result<Vec<String>, ::memlayer_ports::StoreError> {
                $crate::migrate::DatabaseEngine::warnings(self).await
            }

            async fn durability(
                &self,
            ) -> Result<Vec<::memlayer_ports::DurabilitySetting>, ::memlayer_ports::StoreError> {
                $crate::migrate::DatabaseEngine::durability(self).await
            }
        }
    };
}

/// A migration the runner cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrationError(String);

/// The bookkeeping table, created if missing.
#[must_use]
pub fn bookkeeping(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS _memlayer_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS _memlayer_migrations (
    version    bigint      PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL
)"
        }
    }
}

/// A query returning a row when the bookkeeping table exists.
fn bookkeeping_exists(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_memlayer_migrations'",
        Dialect::Postgres => "SELECT 1 WHERE to_regclass('_memlayer_migrations') IS NOT NULL",
    }
}

fn rfc3339(t: memlayer_domain::Timestamp) -> Result<String, StoreError> {
    t.format(&Rfc3339).map_err(|e| StoreError::backend(MigrationError(format!("format time: {e}"))))
}

/// An applied time as stored (libSQL: RFC 3339 text; Postgres: timestamptz).
fn applied_at_text(cells: &Cells<&[SqlValue]>, idx: usize) -> Result<String, StoreError> {
    match cells.text(idx, "applied_at") {
        Ok(text) => Ok(text),
        Err(_) => rfc3339(cells.timestamp(idx, "applied_at")?),
    }
}

/// Applied versions with their times; empty when the bookkeeping table is missing.
async fn applied(ex: &dyn Executor) -> Result<Vec<(i64, String)>, StoreError> {
    let mut exists = Sql::new(ex.dialect());
    exists.push(bookkeeping_exists(ex.dialect()));
    if ex.fetch_one("read migrations", exists).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(ex.dialect());
    sql.push("SELECT version, applied_at FROM _memlayer_migrations ORDER BY version");
    let rows = ex.fetch("read migrations", sql).await?;
    rows.iter()
        .map(|row| {
            let r = Cells::new(row, "_memlayer_migrations");
            Ok((r.int(0, "version")?, applied_at_text(&r, 1)?))
        })
        .collect()
}

/// Every known migration with its applied time.
///
/// # Errors
/// As the backend's reads.
pub async fn status<M: Migrate>(backend: &M) -> Result<Vec<MigrationStatus>, StoreError> {
    let applied = backend.migration_read(Box::new(|ex| Box::pin(applied(ex)))).await?;
    Ok(backend
        .plan()
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            name: m.name.to_owned(),
            applied_at: applied.iter().find(|(v, _)| *v == m.version).map(|(_, at)| at.clone()),
        })
        .collect())
}

/// Applies `migration` unless it is already applied; its applied time.
async fn apply(ex: &dyn Executor, migration: &'static Migration) -> Result<Option<String>, StoreError> {
    let d = ex.dialect();
    let mut done = Sql::new(d);
    done.push("SELECT 1 FROM _memlayer_migrations WHERE version = ").bind(migration.version);
    if ex.fetch_one("read migrations", done).await?.is_some() {
        return Ok(None);
    }
    drop_tables(ex, migration).await?;
    ex.execute_batch("apply migration", migration.up).await?;
    let at = memlayer_domain::now();
    let text = rfc3339(at)?;
    let stored = match d {
        Dialect::Sqlite => SqlValue::Text(text.clone()),
        Dialect::Postgres => SqlValue::Timestamp(at),
    };
    let mut record = Sql::new(d);
    record.push("INSERT INTO _memlayer_migrations (version, name, applied_at) VALUES (");
    record.bind(migration.version).push(", ").bind(migration.name).push(", ").bind(stored).push(")");
    ex.execute("record migration", record).await?;
    Ok(Some(text))
}

/// Applies every pending migration, oldest first; returns those applied.
///
/// # Errors
/// As the backend's writes; a failing migration leaves its transaction
/// rolled back.
pub async fn migrate_up<M: Migrate>(backend: &M) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    for migration in backend.plan() {
        let applied = backend.migration_tx(Box::new(move |ex| Box::pin(apply(ex, migration)))).await?;
        if let Some(at) = applied {
            tracing::info!(version = migration.version, name = %migration.name, "applied migration");
            done.push(MigrationStatus {
                version: migration.version,
                name: migration.name.to_owned(),
                applied_at: Some(at),
            });
        }
    }
    Ok(done)
}

/// Drops the tables made at run time that `migration.drops` names.
async fn drop_tables(ex: &dyn Executor, migration: &Migration) -> Result<(), StoreError> {
    let Some(query) = migration.drops else { return Ok(()) };
    let mut names = Sql::new(ex.dialect());
    names.push(query);
    for row in ex.fetch("list tables to drop", names).await? {
        let name = Cells::new(&row, "sqlite_master").text(0, "name")?;
        ex.execute_batch("drop table", &format!("DROP TABLE \"{}\"", name.replace('"', "\"\""))).await?;
    }
    Ok(())
}

/// Reverts the newest applied migration of `plan`, if any; its version.
async fn revert_newest(
    ex: &dyn Executor,
    plan: &'static [Migration],
) -> Result<Option<&'static Migration>, StoreError> {
    let mut newest = Sql::new(ex.dialect());
    newest.push("SELECT version FROM _memlayer_migrations ORDER BY version DESC LIMIT 1");
    let Some(row) = ex.fetch_one("read migrations", newest).await? else {
        return Ok(None);
    };
    let version = Cells::new(&row, "_memlayer_migrations").int(0, "version")?;
    let migration = plan.iter().find(|m| m.version == version).ok_or_else(|| {
        StoreError::backend(MigrationError(format!(
            "revert migration: the database has migration {version}, which this build does not know"
        )))
    })?;
    drop_tables(ex, migration).await?;
    ex.execute_batch("revert migration", migration.down).await?;
    let mut record = Sql::new(ex.dialect());
    record.push("DELETE FROM _memlayer_migrations WHERE version = ").bind(version);
    ex.execute("record migration", record).await?;
    Ok(Some(migration))
}

/// Reverts the newest `steps` applied migrations, newest first; returns those
/// reverted (now pending, so without an applied time).
///
/// # Errors
/// As the backend's writes; `Backend` when the database has a migration this
/// build does not know.
pub async fn migrate_down<M: Migrate>(backend: &M, steps: usize) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    let plan = backend.plan();
    for _ in 0..steps {
        let reverted = backend.migration_tx(Box::new(move |ex| Box::pin(revert_newest(ex, plan)))).await?;
        let Some(migration) = reverted else { break };
        tracing::info!(version = migration.version, name = %migration.name, "reverted migration");
        done.push(MigrationStatus { version: migration.version, name: migration.name.to_owned(), applied_at: None });
    }
    Ok(done)
}

/// The version of the first migration in `plan` the runner cannot use
/// (not above the one before it, or without up or down SQL), if any.
/// `const`: [`migrations!`](crate::migrations!) checks every plan when it is compiled.
#[must_use]
pub const fn first_unusable(plan: &[Migration]) -> Option<i64> {
    let mut last = 0;
    let mut i = 0;
    while i < plan.len() {
        let m = &plan[i];
        if m.version <= last || m.up.trim_ascii().is_empty() || m.down.trim_ascii().is_empty() {
            return Some(m.version);
        }
        last = m.version;
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(version: i64, up: &'static str) -> Migration {
        Migration { version, name: "m", up, down: "x", drops: None }
    }

    #[test]
    fn a_plan_must_increase_and_carry_sql() {
        assert_eq!(first_unusable(&[m(1, "a"), m(3, "b")]), None);
        assert_eq!(first_unusable(&[m(2, "a"), m(2, "b")]), Some(2));
        assert_eq!(first_unusable(&[m(1, "a"), m(3, " \n")]), Some(3));
        assert_eq!(first_unusable(&[m(0, "a")]), Some(0));
    }
}
