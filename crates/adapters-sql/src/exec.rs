//! What an adapter implements so the SQL written here can run: an
//! [`Executor`] (run one statement inside a transaction) and a [`Transactor`]
//! (open the read or write transaction the statements run in).
//!
//! The adapters keep their own connection handling (libSQL: one writer
//! connection and a reader pool; Postgres: a pool, the tenant set
//! transaction-locally for row-level security); this crate sees only
//! statements and [`SqlValue`] rows.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use memlayer_domain::Reach;
use memlayer_ports::StoreError;

use crate::{Dialect, Sql, SqlValue};

/// One fetched row, its columns in `SELECT` order.
pub type Row = Vec<SqlValue>;

/// Runs statements inside one open transaction.
#[async_trait]
pub trait Executor: Send + Sync {
    /// The dialect the backend speaks.
    fn dialect(&self) -> Dialect;

    /// Every row `sql` returns. `context` names the step in errors.
    async fn fetch(&self, context: &'static str, sql: Sql) -> Result<Vec<Row>, StoreError>;

    /// Runs `sql`, returning how many rows it changed.
    async fn execute(&self, context: &'static str, sql: Sql) -> Result<u64, StoreError>;

    /// Runs fixed SQL text of one or more statements without parameters
    /// (migrations).
    async fn execute_batch(&self, context: &'static str, sql: &str) -> Result<(), StoreError>;

    /// The first row `sql` returns, if any.
    async fn fetch_one(&self, context: &'static str, sql: Sql) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch(context, sql).await?.into_iter().next())
    }
}

/// The future of a [`Work`] item, borrowing the executor.
pub type WorkFuture<'e, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'e>>;

/// Statements to run in one transaction: owns its inputs, borrows the
/// executor the adapter opened for it.
pub type Work<T> = Box<dyn for<'e> FnOnce(&'e dyn Executor) -> WorkFuture<'e, T> + Send + 'static>;

/// Opens transactions for [`Work`].
#[async_trait]
pub trait Transactor: Send + Sync {
    /// The dialect the backend speaks (without opening anything).
    fn dialect(&self) -> Dialect;

    /// Runs `work` in a read transaction scoped to `who`: its tenant, and,
    /// on a backend that enforces resources (Postgres, by row-level
    /// security), its resource when it is bound to one. A
    /// [`memlayer_domain::TenantId`] is the whole tenant.
    async fn read<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError>;

    /// Runs `work` in a write transaction scoped to `who` (as
    /// [`Transactor::read`]), committed when it succeeds and rolled back when
    /// it fails.
    async fn write<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError>;

    /// Runs `work` in a write transaction that sees every tenant's rows
    /// (cross-tenant maintenance: purges, queues).
    async fn write_all_tenants<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError>;

    /// As [`Transactor::write`], and serial with every other such write of
    /// the tenant (libSQL: every write is, on its one writer; Postgres: a
    /// transaction-level advisory lock on the tenant), so a check and the
    /// write it guards cannot interleave with another such write.
    async fn write_serial<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError>;
}
