//! Versioned schema migrations, embedded in the binary, each with up and down SQL.
//!
//! Bookkeeping lives in `_memlayer_migrations`. Every migration is applied or
//! reverted in its own `IMMEDIATE` transaction together with its bookkeeping
//! row, and re-checks inside that transaction whether another process already
//! did it, so two processes migrating the same file cannot apply one twice.

use libsql::Connection;
use memlayer_ports::{MigrationStatus, StoreError};
use time::format_description::well_known::Rfc3339;

use crate::LibsqlBackend;
use crate::error::{Context as _, DriverError};
use crate::rows::{RowReader, query_row};

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
    /// A query naming tables created at run time (their names are not in
    /// `down`), dropped before `down` runs.
    pub(crate) down_drops: Option<&'static str>,
}

/// Every migration, oldest first. Versions are strictly increasing; never
/// edit one that has shipped, add a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core_schema",
        up: include_str!("../migrations/0001_core_schema.up.sql"),
        down: include_str!("../migrations/0001_core_schema.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 2,
        name: "semantic",
        up: include_str!("../migrations/0002_semantic.up.sql"),
        down: include_str!("../migrations/0002_semantic.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 3,
        name: "deferred_indexing",
        up: include_str!("../migrations/0003_deferred_indexing.up.sql"),
        down: include_str!("../migrations/0003_deferred_indexing.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 4,
        name: "config_store",
        up: include_str!("../migrations/0004_config_store.up.sql"),
        down: include_str!("../migrations/0004_config_store.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 5,
        name: "tenant_lexical",
        up: include_str!("../migrations/0005_tenant_lexical.up.sql"),
        down: include_str!("../migrations/0005_tenant_lexical.down.sql"),
        down_drops: Some(crate::embeddings::LEXICAL_TABLES),
    },
    Migration {
        version: 6,
        name: "idempotency",
        up: include_str!("../migrations/0006_idempotency.up.sql"),
        down: include_str!("../migrations/0006_idempotency.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 7,
        name: "fair_job_queue",
        up: include_str!("../migrations/0007_fair_job_queue.up.sql"),
        down: include_str!("../migrations/0007_fair_job_queue.down.sql"),
        down_drops: None,
    },
    // Version 8 is Postgres's own (a bound on full-text documents).
    Migration {
        version: 9,
        name: "thread_sweep",
        up: include_str!("../migrations/0009_thread_sweep.up.sql"),
        down: include_str!("../migrations/0009_thread_sweep.down.sql"),
        down_drops: None,
    },
];

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS _memlayer_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);";

/// Every known migration with its applied time.
pub(crate) async fn status(backend: &LibsqlBackend) -> Result<Vec<MigrationStatus>, StoreError> {
    backend
        .read(|conn| async move {
            let applied = applied(&conn).await?;
            Ok(MIGRATIONS
                .iter()
                .map(|m| MigrationStatus {
                    version: m.version,
                    name: m.name.to_owned(),
                    applied_at: applied.iter().find(|(v, _)| *v == m.version).map(|(_, at)| at.clone()),
                })
                .collect())
        })
        .await
}

/// Applies every pending migration, oldest first; returns those applied.
pub(crate) async fn migrate_up(backend: &LibsqlBackend) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        let applied = backend
            .write(move |conn| async move {
                conn.execute_batch(BOOKKEEPING).await.ctx("create migration table")?;
                let done = query_row(
                    &conn,
                    "read migrations",
                    "SELECT 1 FROM _memlayer_migrations WHERE version = ?1",
                    [migration.version],
                    |_| Ok(()),
                )
                .await?;
                if done.is_some() {
                    return Ok(None);
                }
                conn.execute_batch(migration.up).await.ctx("apply migration")?;
                let applied_at = now_rfc3339()?;
                conn.execute(
                    "INSERT INTO _memlayer_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    (migration.version, migration.name, applied_at.clone()),
                )
                .await
                .ctx("record migration")?;
                Ok(Some(MigrationStatus {
                    version: migration.version,
                    name: migration.name.to_owned(),
                    applied_at: Some(applied_at),
                }))
            })
            .await?;
        if let Some(status) = applied {
            tracing::info!(version = status.version, name = %status.name, "applied migration");
            done.push(status);
        }
    }
    Ok(done)
}

/// Reverts the newest `steps` applied migrations, newest first; returns those
/// reverted (now pending, so without an applied time).
pub(crate) async fn migrate_down(backend: &LibsqlBackend, steps: usize) -> Result<Vec<MigrationStatus>, StoreError> {
    let mut done = Vec::new();
    for _ in 0..steps {
        let reverted = backend
            .write(|conn| async move {
                conn.execute_batch(BOOKKEEPING).await.ctx("create migration table")?;
                let newest = query_row(
                    &conn,
                    "read migrations",
                    "SELECT version FROM _memlayer_migrations ORDER BY version DESC LIMIT 1",
                    (),
                    |row| RowReader::new(row, "_memlayer_migrations").int(0, "version"),
                )
                .await?;
                let Some(version) = newest else {
                    return Ok(None);
                };
                let migration = MIGRATIONS.iter().find(|m| m.version == version).ok_or_else(|| {
                    StoreError::backend(DriverError::new(
                        "revert migration",
                        format!("the database has migration {version}, which this build does not know"),
                    ))
                })?;
                if let Some(query) = migration.down_drops {
                    let mut rows = conn.query(query, ()).await.ctx("list tables to drop")?;
                    let mut names = Vec::new();
                    while let Some(row) = rows.next().await.ctx("list tables to drop")? {
                        names.push(RowReader::new(&row, "sqlite_master").text(0, "name")?);
                    }
                    drop(rows);
                    for name in names {
                        conn.execute_batch(&format!("DROP TABLE \"{}\"", name.replace('"', "\"\"")))
                            .await
                            .ctx("drop table")?;
                    }
                }
                conn.execute_batch(migration.down).await.ctx("revert migration")?;
                conn.execute("DELETE FROM _memlayer_migrations WHERE version = ?1", [version])
                    .await
                    .ctx("record migration")?;
                Ok(Some(MigrationStatus { version, name: migration.name.to_owned(), applied_at: None }))
            })
            .await?;
        match reverted {
            Some(status) => {
                tracing::info!(version = status.version, name = %status.name, "reverted migration");
                done.push(status);
            }
            None => break,
        }
    }
    Ok(done)
}

/// Applied versions with their times; empty when the bookkeeping table is missing.
async fn applied(conn: &Connection) -> Result<Vec<(i64, String)>, StoreError> {
    let table = query_row(
        conn,
        "read migrations",
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_memlayer_migrations'",
        (),
        |_| Ok(()),
    )
    .await?;
    if table.is_none() {
        return Ok(Vec::new());
    }
    let mut rows = conn
        .query("SELECT version, applied_at FROM _memlayer_migrations ORDER BY version", ())
        .await
        .ctx("read migrations")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.ctx("read migrations")? {
        let r = RowReader::new(&row, "_memlayer_migrations");
        out.push((r.int(0, "version")?, r.text(1, "applied_at")?));
    }
    Ok(out)
}

fn now_rfc3339() -> Result<String, StoreError> {
    memlayer_domain::now()
        .format(&Rfc3339)
        .map_err(|e| StoreError::backend(DriverError::new("format time", e.to_string())))
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
