//! [`Database`]: reachability, migrations up and down, set-up warnings and
//! the durability settings `doctor` prints.

use async_trait::async_trait;

use crate::StoreError;

/// One schema migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Version number, increasing.
    pub version: i64,
    /// Short name.
    pub name: String,
    /// When it was applied (RFC 3339), `None` when pending.
    pub applied_at: Option<String>,
}

/// One storage setting that decides what survives a crash or power loss
/// (`synchronous`, `fsync`, …), as the backend reads it back from the
/// connection that writes. `memlayer doctor` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilitySetting {
    /// The backend's own name for it (`synchronous`, `fsync`).
    pub name: String,
    /// Its value as the backend reports it, e.g. `FULL (2)` or `on`.
    pub value: String,
}

/// The database as a whole: reachability and schema migrations.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Database: Send + Sync + std::fmt::Debug {
    /// A human description of the backend and its location, without secrets.
    fn describe(&self) -> String;

    /// MUST return `Ok` only when a query round-trips; `Unavailable` otherwise.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Every known migration, oldest first, with its applied time.
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError>;

    /// Applies every pending migration, each in its own transaction; returns
    /// those applied. MUST be idempotent.
    async fn migrate_up(&self) -> Result<Vec<MigrationStatus>, StoreError>;

    /// Reverts the last `steps` applied migrations, newest first, each in its
    /// own transaction; returns those reverted.
    async fn migrate_down(&self, steps: usize) -> Result<Vec<MigrationStatus>, StoreError>;

    /// Set-up problems that leave the store working but weaken one of its
    /// guarantees (for example a role that row-level security does not
    /// apply to), each saying what to change. Default: none.
    async fn warnings(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// The durability settings in force, read from the connection that
    /// writes (not from configuration), so a report shows what the server
    /// really does. Default: none known.
    async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError> {
        Ok(Vec::new())
    }
}
