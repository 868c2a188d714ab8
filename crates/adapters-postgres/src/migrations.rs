//! Versioned schema migrations, embedded in the binary, each with up and down SQL.
//!
//! Bookkeeping lives in `_memlayer_migrations`. Every migration is applied or
//! reverted in its own transaction together with its bookkeeping row, under a
//! transaction-level advisory lock, and re-checks inside that transaction
//! whether another process already did it, so two processes migrating the
//! same database cannot apply one twice. Postgres DDL is transactional: a
//! failing migration leaves nothing behind.

use memlayer_ports::{MigrationStatus, StoreError};
use time::format_description::well_known::Rfc3339;

use crate::PgBackend;
use crate::backend::{Access, begin_with};
use crate::error::{Context as _, DriverError};

/// One schema change.
#[derive(Debug)]
pub(crate) struct Migration {
    /// Increasing version number.
    pub(crate) version: i64,
    /// Short name.
    pub(crate) name: &'static str,
    /// SQL that applies it.
    pub(crate) up: &'static str,
    /// SQL that reverts it.
    pub(crate) down: &'static str,
}

/// Every migration, oldest first. Versions are strictly increasing; never
/// edit one that has shipped, add a new one. Same versions and names as the
/// libSQL adapter's, so `memlayer migrate status` reads alike on both (a
/// version only libSQL needs is absent here).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core_schema",
        up: include_str!("../migrations/0001_core_schema.up.sql"),
        down: include_str!("../migrations/0001_core_schema.down.sql"),
    },
    Migration {
        version: 2,
        name: "semantic",
        up: include_str!("../migrations/0002_semantic.up.sql"),
        down: include_str!("../migrations/0002_semantic.down.sql"),
    },
    // No version 3: libSQL's `deferred_indexing` has no Postgres counterpart
    // (jobs and full-text entries are written in the appending statement here).
    Migration {
        version: 4,
        name: "config_store",
        up: include_str!("../migrations/0004_config_store.up.sql"),
        down: include_str!("../migrations/0004_config_store.down.sql"),
    },
    // No version 5: libSQL's `tenant_lexical` (a full-text table per tenant)
    // has no Postgres counterpart (`ts_rank` uses no corpus statistics).
    Migration {
        version: 6,
        name: "idempotency",
        up: include_str!("../migrations/0006_idempotency.up.sql"),
        down: include_str!("../migrations/0006_idempotency.down.sql"),
    },
    Migration {
        version: 7,
        name: "fair_job_queue",
        up: include_str!("../migrations/0007_fair_job_queue.up.sql"),
        down: include_str!("../migrations/0007_fair_job_queue.down.sql"),
    },
    // Postgres only: libSQL's FTS5 has no size limit on a document.
    Migration {
        version: 8,
        name: "bounded_document",
        up: include_str!("../migrations/0008_bounded_document.up.sql"),
        down: include_str!("../migrations/0008_bounded_document.down.sql"),
    },
    Migration {
        version: 9,
        name: "thread_sweep",
        up: include_str!("../migrations/0009_thread_sweep.up.sql"),
        down: include_str!("../migrations/0009_thread_sweep.down.sql"),
    },
];

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS _memlayer_migrations (
    version    bigint      PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL
)";

/// Advisory lock key serialising migrations of one database ("memlayer" in ASCII).
const LOCK_KEY: i64 = 0x6d65_6d6c_6179_6572;

/// Every known migration with its applied time.
pub(crate) async fn status(backend: &PgBackend) -> Result<Vec<MigrationStatus>, StoreError> {
    let client = backend.client().await?;
    let applied = applied(&client).await?;
    Ok(MIGRATIONS
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            name: m.name.to_owned(),
            applied_at: applied.iter().find(|(v, _)| *v == m.version).map(|(_, at)| at.clone()),
        })
        .collect())
}

/// Applies every pending migration, oldest first; returns those applied.
pub(crate) async fn migrate_up(backend: &PgBackend) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    let mut client = backend.client().await?;
    for migration in MIGRATIONS {
        let tx = begin_with(&mut client, Access::All, None).await?;
        lock(&tx).await?;
        let exists = tx
            .query_opt("SELECT 1 FROM _memlayer_migrations WHERE version = $1", &[&migration.version])
            .await
            .ctx("read migrations")?;
        if exists.is_some() {
            tx.rollback().await.ctx("read migrations")?;
            continue;
        }
        tx.batch_execute(migration.up).await.ctx("apply migration")?;
        let row = tx
            .query_one(
                "INSERT INTO _memlayer_migrations (version, name, applied_at) VALUES ($1, $2, now()) \
                 RETURNING applied_at",
                &[&migration.version, &migration.name],
            )
            .await
            .ctx("record migration")?;
        tx.commit().await.ctx("apply migration")?;
        let status = MigrationStatus {
            version: migration.version,
            name: migration.name.to_owned(),
            applied_at: Some(rfc3339(row.try_get(0).ctx("read migrations")?)?),
        };
        tracing::info!(version = status.version, name = %status.name, "applied migration");
        done.push(status);
    }
    Ok(done)
}

/// Reverts the newest `steps` applied migrations, newest first; returns those
/// reverted (now pending, so without an applied time).
pub(crate) async fn migrate_down(backend: &PgBackend, steps: usize) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    let mut client = backend.client().await?;
    for _ in 0..steps {
        let tx = begin_with(&mut client, Access::All, None).await?;
        lock(&tx).await?;
        let newest = tx
            .query_opt("SELECT version FROM _memlayer_migrations ORDER BY version DESC LIMIT 1", &[])
            .await
            .ctx("read migrations")?;
        let Some(row) = newest else {
            break;
        };
        let version: i64 = row.try_get(0).ctx("read migrations")?;
        let migration = MIGRATIONS.iter().find(|m| m.version == version).ok_or_else(|| {
            StoreError::backend(DriverError::new(
                "revert migration",
                format!("the database has migration {version}, which this build does not know"),
            ))
        })?;
        tx.batch_execute(migration.down).await.ctx("revert migration")?;
        tx.execute("DELETE FROM _memlayer_migrations WHERE version = $1", &[&version]).await.ctx("record migration")?;
        tx.commit().await.ctx("revert migration")?;
        tracing::info!(version, name = %migration.name, "reverted migration");
        done.push(MigrationStatus { version, name: migration.name.to_owned(), applied_at: None });
    }
    Ok(done)
}

/// Creates the bookkeeping table (idempotent) and takes the migration lock
/// until the end of the transaction.
async fn lock(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await.ctx("lock migrations")?;
    tx.batch_execute(BOOKKEEPING).await.ctx("create migration table")?;
    Ok(())
}

/// Applied versions with their times; empty when the bookkeeping table is missing.
async fn applied(client: &tokio_postgres::Client) -> Result<Vec<(i64, String)>, StoreError> {
    let exists =
        client.query_one("SELECT to_regclass('_memlayer_migrations') IS NOT NULL", &[]).await.ctx("read migrations")?;
    if !exists.try_get::<_, bool>(0).ctx("read migrations")? {
        return Ok(Vec::new());
    }
    let rows = client
        .query("SELECT version, applied_at FROM _memlayer_migrations ORDER BY version", &[])
        .await
        .ctx("read migrations")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).ctx("read migrations")?, rfc3339(r.try_get(1).ctx("read migrations")?)?)))
        .collect()
}

fn rfc3339(t: time::OffsetDateTime) -> Result<String, StoreError> {
    t.format(&Rfc3339).map_err(|e| StoreError::backend(DriverError::new("format time", e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_sql_is_present() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.version);
            assert!(!m.up.trim().is_empty() && !m.down.trim().is_empty(), "migration {} lacks SQL", m.version);
            last = m.version;
        }
    }
}
