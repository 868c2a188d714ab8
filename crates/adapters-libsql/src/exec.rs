//! The SQL core's statements on libSQL: [`LibsqlExecutor`] binds
//! `memlayer_adapters_sql::SqlValue`s as libSQL values (ids as 16-byte blobs,
//! times as microseconds, booleans as 0/1, JSON as text) and reads rows
//! back; [`LibsqlBackend`]'s `Transactor` runs reads on a reader connection
//! and writes in an immediate transaction on the one writer (so a tenant's
//! writes are serial), with the writer's prepared statements
//! ([`WriterExecutor`]), and its `Migrate` runs each migration in such a
//! write (statements prepared afresh: migrations change the schema).

use std::sync::Arc;

use async_trait::async_trait;
use libsql::{Connection, Value};
use memlayer_adapters_sql::migrate::{Migrate, Migration, bookkeeping};
use memlayer_adapters_sql::{Dialect, Executor, Row, Sql, SqlValue, Transactor, Work};
use memlayer_domain::{Reach, to_micros};
use memlayer_ports::StoreError;

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::statements::Statements;
use crate::values::json_text;

/// A neutral value as libSQL stores it.
pub(crate) fn bind(v: SqlValue) -> Result<Value, StoreError> {
    Ok(match v {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(i),
        SqlValue::Real(f) => Value::Real(f),
        SqlValue::Text(s) => Value::Text(s),
        SqlValue::Bool(b) => Value::Integer(i64::from(b)),
        SqlValue::Uuid(u) => crate::values::uuid(u),
        SqlValue::Timestamp(t) => Value::Integer(to_micros(t)),
        SqlValue::Json(j) => json_text(&j)?,
        SqlValue::Blob(b) => Value::Blob(b),
    })
}

pub(crate) fn cell(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Int(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

/// A fetched row's columns as neutral values.
pub(crate) fn values(row: &libsql::Row) -> Result<Row, StoreError> {
    (0..row.column_count()).map(|i| row.get_value(i).map(cell)).collect::<Result<Row, _>>().ctx("read column")
}

/// A statement's text and its values bound for libSQL.
pub(crate) fn params(sql: Sql) -> Result<(String, Vec<Value>), StoreError> {
    let (text, args) = sql.into_parts();
    Ok((text, args.into_iter().map(bind).collect::<Result<_, _>>()?))
}

/// Statements on one libSQL connection (inside the caller's transaction, if any).
pub(crate) struct LibsqlExecutor(pub(crate) Connection);

#[async_trait]
impl Executor for LibsqlExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn fetch(&self, context: &'static str, sql: Sql) -> Result<Vec<Row>, StoreError> {
        let (text, params) = params(sql)?;
        let mut rows = self.0.query(&text, params).await.ctx(context)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.ctx(context)? {
            out.push(values(&row)?);
        }
        Ok(out)
    }

    async fn execute(&self, context: &'static str, sql: Sql) -> Result<u64, StoreError> {
        let (text, params) = params(sql)?;
        self.0.execute(&text, params).await.ctx(context)
    }

    async fn execute_batch(&self, context: &'static str, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql).await.ctx(context)?;
        Ok(())
    }
}

/// Statements on the writer connection, inside a write, prepared once and
/// reused ([`Statements`]).
pub(crate) struct WriterExecutor {
    pub(crate) conn: Connection,
    pub(crate) statements: Arc<Statements>,
}

#[async_trait]
impl Executor for WriterExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn fetch(&self, context: &'static str, sql: Sql) -> Result<Vec<Row>, StoreError> {
        let (text, params) = params(sql)?;
        let stmt = self.statements.get(&self.conn, context, &text).await?;
        let mut rows = stmt.query(params).await.ctx(context)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.ctx(context)? {
            out.push(values(&row)?);
        }
        drop(rows);
        drop(stmt);
        Ok(out)
    }

    async fn execute(&self, context: &'static str, sql: Sql) -> Result<u64, StoreError> {
        let (text, params) = params(sql)?;
        self.statements.execute(&self.conn, context, &text, params).await
    }

    async fn execute_batch(&self, context: &'static str, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).await.ctx(context)?;
        Ok(())
    }
}

impl LibsqlBackend {
    /// [`LibsqlBackend::write`] with a [`WriterExecutor`].
    async fn write_work<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let statements = Arc::clone(self.statements());
        LibsqlBackend::write(self, move |conn| async move { work(&WriterExecutor { conn, statements }).await }).await
    }
}

#[async_trait]
impl Transactor for LibsqlBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// libSQL scopes by tenant in its statements and leaves a caller's
    /// resource to the memory services (no row-level security here).
    async fn read<T: Send + 'static>(&self, _who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        LibsqlBackend::read(self, move |conn| async move { work(&LibsqlExecutor(conn)).await }).await
    }

    async fn write<T: Send + 'static>(&self, _who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        self.write_work(work).await
    }

    async fn write_all_tenants<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        self.write_work(work).await
    }

    /// Every write is serial on libSQL's one writer.
    async fn write_serial<T: Send + 'static>(&self, who: &dyn Reach, work: Work<T>) -> Result<T, StoreError> {
        Transactor::write(self, who, work).await
    }
}

#[async_trait]
impl Migrate for LibsqlBackend {
    fn plan(&self) -> &'static [Migration] {
        crate::migrations::MIGRATIONS
    }

    async fn migration_tx<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        LibsqlBackend::write(self, move |conn| async move {
            conn.execute_batch(bookkeeping(Dialect::Sqlite)).await.ctx("create migration table")?;
            work(&LibsqlExecutor(conn)).await
        })
        .await
    }

    async fn migration_read<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        LibsqlBackend::read(self, move |conn| async move { work(&LibsqlExecutor(conn)).await }).await
    }
}
