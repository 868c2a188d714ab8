//! Prepared statements of the writer connection, kept by their text and
//! reused: preparing the five statements of a single append (begin, bump the
//! thread, count usage, insert, commit) took about a quarter of its CPU
//! (docs/BENCHMARKS.md, "The race against the peer").
//!
//! Invariants:
//! - used only on the writer connection, inside a write (which holds the
//!   writer), so one statement is never in use twice at once;
//! - every use ends with the statement reset ([`Cached`]'s drop), also on an
//!   error: a statement left mid-step would keep the transaction from
//!   committing and block DDL on the connection;
//! - at most [`Statements::MAX`] kept: statements whose text varies (a
//!   multi-row insert per row count) never grow the cache without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libsql::{Connection, Statement, Value};
use memlayer_ports::StoreError;

use crate::error::Context as _;

/// The writer's prepared statements, by text.
#[derive(Default)]
pub(crate) struct Statements {
    map: Mutex<HashMap<String, Arc<Statement>>>,
}

impl Statements {
    /// Most statements kept; past it the cache starts over.
    pub(crate) const MAX: usize = 128;

    /// The statement for `sql` on `conn` (the writer), prepared on first use.
    pub(crate) async fn get(&self, conn: &Connection, context: &'static str, sql: &str) -> Result<Cached, StoreError> {
        if let Some(stmt) = self.lock().get(sql) {
            return Ok(Cached(Arc::clone(stmt)));
        }
        let stmt = Arc::new(conn.prepare(sql).await.ctx(context)?);
        let mut map = self.lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(sql.to_owned(), Arc::clone(&stmt));
        Ok(Cached(stmt))
    }

    /// Runs `sql` (one statement) with `params`; rows it changed.
    pub(crate) async fn execute(
        &self,
        conn: &Connection,
        context: &'static str,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<u64, StoreError> {
        let stmt = self.get(conn, context, sql).await?;
        let n = stmt.0.execute(params).await.ctx(context)?;
        u64::try_from(n).map_err(|e| StoreError::backend(format!("{context}: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Statement>>> {
        // Nothing panics while the lock is held (a lookup or an insert).
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A statement in use; reset when dropped.
pub(crate) struct Cached(Arc<Statement>);

impl std::ops::Deref for Cached {
    type Target = Statement;

    fn deref(&self) -> &Statement {
        &self.0
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    async fn conn() -> (libsql::Database, Connection) {
        let db = libsql::Builder::new_local(":memory:").build().await.unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)").await.unwrap();
        (db, conn)
    }

    /// A statement is prepared once per text and reset after each use, even
    /// one whose rows were not all read: the transaction still commits and
    /// the table can still be dropped.
    #[tokio::test]
    async fn statements_are_reused_and_reset_after_each_use() {
        let (_db, conn) = conn().await;
        let statements = Statements::default();
        conn.execute_batch("BEGIN IMMEDIATE").await.unwrap();
        for x in 1..=3 {
            statements
                .execute(&conn, "insert", "INSERT INTO t (x) VALUES (?1)", vec![Value::Integer(x)])
                .await
                .unwrap();
        }
        assert_eq!(statements.len(), 1, "one text, one statement");
        {
            let stmt = statements.get(&conn, "read", "SELECT x FROM t ORDER BY x").await.unwrap();
            let mut rows = stmt.query(()).await.unwrap();
            assert_eq!(rows.next().await.unwrap().unwrap().get::<i64>(0).unwrap(), 1);
            // Two rows left unread.
        }
        statements.execute(&conn, "commit", "COMMIT", Vec::new()).await.unwrap();
        let stmt = statements.get(&conn, "read", "SELECT x FROM t ORDER BY x").await.unwrap();
        let mut rows = stmt.query(()).await.unwrap();
        let mut xs = Vec::new();
        while let Some(row) = rows.next().await.unwrap() {
            xs.push(row.get::<i64>(0).unwrap());
        }
        assert_eq!(xs, vec![1, 2, 3], "the reused statement reads from the start");
        drop(rows);
        drop(stmt);
        conn.execute_batch("DROP TABLE t").await.unwrap();
    }

    /// Texts beyond the bound start the cache over instead of growing it.
    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (_db, conn) = conn().await;
        let statements = Statements::default();
        for i in 0..Statements::MAX * 2 + 1 {
            statements
                .execute(&conn, "update", &format!("UPDATE t SET x = x WHERE x = {i}"), Vec::new())
                .await
                .unwrap();
            assert!(statements.len() <= Statements::MAX);
        }
    }
}
