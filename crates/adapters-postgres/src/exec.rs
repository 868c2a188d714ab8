//! The SQL core's statements on Postgres: [`PgArg`] binds a
//! `memlayer_adapters_sql::SqlValue` as the type the server expects for the
//! parameter (an integer as `bigint` or `integer`, JSON as `json`, …), rows
//! come back as `SqlValue`s by column type. [`PgBackend`]'s `Transactor`
//! opens a transaction scoped to the tenant (row-level security), a write
//! one first taking a transaction-level advisory lock on its tenant, so that
//! the catalog writes of one tenant are serial, as every write is on
//! libSQL: moving the default flag or checking a name or a reference and
//! then writing cannot interleave with another such write (the unique
//! indexes and foreign keys still hold if they did). Its `Migrate` runs each
//! migration in a transaction of its own under a database-wide advisory lock,
//! without the statement timeout (Postgres DDL is transactional: a failing
//! migration leaves nothing behind). Fixed statements are prepared through
//! the connection's statement cache; listings (text built from a caller's
//! filters) are not.

use std::borrow::Cow;
use std::error::Error;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::Transaction;
use memlayer_adapters_sql::migrate::{Migrate, Migration, bookkeeping};
use memlayer_adapters_sql::{CellSource, Dialect, Executor, Row, Sql, SqlValue, Transactor, Work, corrupt};
use memlayer_domain::Reach;
use memlayer_ports::StoreError;
use tokio_postgres::Statement;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::PgBackend;
use crate::backend::{Access, begin, begin_with};
use crate::error::Context as _;

/// First key of the per-tenant catalog write lock (`pg_advisory_xact_lock(int, int)`;
/// the second is the tenant's hash). "mcfg" in ASCII.
const CONFIG_LOCK: i32 = 0x6d63_6667;

/// Advisory lock key serialising migrations of one database ("memlayer" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d65_6d6c_6179_6572;

/// A neutral value bound as the parameter's server-side type.
#[derive(Debug)]
pub(crate) struct PgArg(pub(crate) SqlValue);

impl ToSql for PgArg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                _ => i.to_sql_checked(ty, out),
            },
            SqlValue::Real(f) => f.to_sql_checked(ty, out),
            SqlValue::Text(s) => s.to_sql_checked(ty, out),
            SqlValue::Bool(b) => b.to_sql_checked(ty, out),
            SqlValue::Uuid(u) => u.to_sql_checked(ty, out),
            SqlValue::Timestamp(t) => t.to_sql_checked(ty, out),
            SqlValue::Json(j) => j.to_sql_checked(ty, out),
            SqlValue::Blob(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant checks the type itself, in `to_sql`.
        true
    }

    to_sql_checked!();
}

/// A statement's text and its values bound for Postgres.
pub(crate) fn pg_parts(sql: Sql) -> (String, Vec<PgArg>) {
    let (text, args) = sql.into_parts();
    (text, args.into_iter().map(PgArg).collect())
}

/// Borrowed views of bound arguments, as the driver takes them.
pub(crate) fn arg_refs(args: &[PgArg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

/// Column `i` of `row` as a neutral value, by its server-side type.
fn cell(row: &tokio_postgres::Row, i: usize, context: &'static str) -> Result<SqlValue, StoreError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
        f: impl FnOnce(T) -> SqlValue,
        context: &'static str,
    ) -> Result<SqlValue, StoreError> {
        Ok(row.try_get::<_, Option<T>>(i).ctx(context)?.map_or(SqlValue::Null, f))
    }
    let column = &row.columns()[i];
    match *column.type_() {
        Type::BOOL => get(row, i, SqlValue::Bool, context),
        Type::INT2 => get(row, i, |v: i16| SqlValue::Int(v.into()), context),
        Type::INT4 => get(row, i, |v: i32| SqlValue::Int(v.into()), context),
        Type::INT8 => get(row, i, SqlValue::Int, context),
        Type::FLOAT4 => get(row, i, |v: f32| SqlValue::Real(v.into()), context),
        Type::FLOAT8 => get(row, i, SqlValue::Real, context),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get(row, i, SqlValue::Text, context),
        Type::UUID => get(row, i, SqlValue::Uuid, context),
        Type::TIMESTAMPTZ => get(row, i, SqlValue::Timestamp, context),
        Type::JSON | Type::JSONB => get(row, i, SqlValue::Json, context),
        Type::BYTEA => get(row, i, SqlValue::Blob, context),
        ref other => Err(corrupt("result", "column", format!("{}: unsupported type {other}", column.name()))),
    }
}

/// A Postgres row as a [`CellSource`] for the shared `Cells` rules: a
/// column is converted by its type only when it is read, so a row may also
/// hold columns no `SqlValue` carries (pgvector's `vector`), read typed.
#[derive(Clone, Copy)]
pub(crate) struct PgRow<'a>(pub(crate) &'a tokio_postgres::Row);

impl CellSource for PgRow<'_> {
    fn cell(&self, idx: usize) -> Result<Option<Cow<'_, SqlValue>>, StoreError> {
        if idx >= self.0.len() {
            return Ok(None);
        }
        cell(self.0, idx, "read column").map(|v| Some(Cow::Owned(v)))
    }
}

/// A fetched row's columns as neutral values.
pub(crate) fn row_values(row: &tokio_postgres::Row, context: &'static str) -> Result<Row, StoreError> {
    (0..row.len()).map(|i| cell(row, i, context)).collect()
}

/// Statements inside one open Postgres transaction.
pub(crate) struct PgExecutor<'a>(pub(crate) &'a Transaction<'a>);

impl PgExecutor<'_> {
    /// The prepared statement of `sql` (through the connection's cache only
    /// when its text is fixed) and its bound arguments.
    async fn prepare(&self, context: &'static str, sql: Sql) -> Result<(Statement, Vec<PgArg>), StoreError> {
        let fixed = sql.is_fixed();
        let (text, args) = pg_parts(sql);
        let stmt = if fixed { self.0.prepare_cached(&text).await } else { self.0.prepare(&text).await };
        Ok((stmt.ctx(context)?, args))
    }
}

#[async_trait]
impl Executor for PgExecutor<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn fetch(&self, context: &'static str, sql: Sql) -> Result<Vec<Row>, StoreError> {
        let (stmt, args) = self.prepare(context, sql).await?;
        let rows = self.0.query(&stmt, &arg_refs(&args)).await.ctx(context)?;
        rows.iter().map(|r| row_values(r, context)).collect()
    }

    async fn execute_batch(&self, context: &'static str, sql: &str) -> Result<(), StoreError> {
        self.0.batch_execute(sql).await.ctx(context)
    }

    async fn execute(&self, context: &'static str, sql: Sql) -> Result<u64, StoreError> {
        let (stmt, args) = self.prepare(context, sql).await?;
        self.0.execute(&stmt, &arg_refs(&args)).await.ctx(context)
    }
}

impl PgBackend {
    /// Runs `work` in one transaction scoped to `access`, first taking the
    /// tenant's catalog write lock when `serial`; committed when `work`
    /// succeeds, rolled back (dropped) when it fails.
    async fn transaction<T: Send + 'static>(
        &self,
        access: Access<'_>,
        serial: bool,
        work: Work<T>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, access).await?;
        if let (true, Access::Of(_)) = (serial, &access) {
            let stmt = tx.prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))").await.ctx("lock tenant")?;
            tx.execute(&stmt, &[&CONFIG_LOCK, &access.tenant()]).await.ctx("lock tenant")?;
        }
        let out = work(&PgExecutor(&tx)).await?;
        tx.commit().await.ctx("commit")?;
        Ok(out)
    }
}

#[async_trait]
impl Transactor for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn read<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        self.transaction(Access::Of(who), false, work).await
    }

    async fn write<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        self.transaction(Access::Of(who), false, work).await
    }

    async fn write_all_tenants<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        self.transaction(Access::All, false, work).await
    }

    async fn write_serial<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        self.transaction(Access::Of(who), true, work).await
    }
}

#[async_trait]
impl Migrate for PgBackend {
    fn plan(&self) -> &'static [Migration] {
        crate::migrations::MIGRATIONS
    }

    async fn migration_tx<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = begin_with(&mut client, Access::All, None).await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.ctx("lock migrations")?;
        tx.batch_execute(bookkeeping(Dialect::Postgres)).await.ctx("create migration table")?;
        let out = work(&PgExecutor(&tx)).await?;
        tx.commit().await.ctx("commit migration")?;
        Ok(out)
    }

    async fn migration_read<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = begin_with(&mut client, Access::All, None).await?;
        let out = work(&PgExecutor(&tx)).await?;
        tx.commit().await.ctx("read migrations")?;
        Ok(out)
    }
}
