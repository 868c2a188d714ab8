//! Reading stored rows back into domain values without trusting their types:
//! a corrupt row is a `Backend` error, never a panic.

use libsql::{Row, Value};
use memlayer_ports::StoreError;
use uuid::Uuid;

use crate::error::{Context as _, corrupt};

/// Typed access to one row's columns, naming the table in errors.
pub(crate) struct RowReader<'a> {
    row: &'a Row,
    table: &'static str,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(row: &'a Row, table: &'static str) -> Self {
        Self { row, table }
    }

    fn value(&self, idx: i32) -> Result<Value, StoreError> {
        self.row.get_value(idx).ctx("read column")
    }

    pub(crate) fn opt_text(&self, idx: i32, column: &'static str) -> Result<Option<String>, StoreError> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(corrupt(self.table, column, format!("expected text, found {}", kind(&other)))),
        }
    }

    pub(crate) fn text(&self, idx: i32, column: &'static str) -> Result<String, StoreError> {
        self.opt_text(idx, column)?.ok_or_else(|| corrupt(self.table, column, "unexpected NULL"))
    }

    /// An id stored as the UUID's 16 big-endian bytes.
    pub(crate) fn uuid(&self, idx: i32, column: &'static str) -> Result<Uuid, StoreError> {
        match self.value(idx)? {
            Value::Blob(bytes) => <[u8; 16]>::try_from(bytes.as_slice())
                .map(Uuid::from_bytes)
                .map_err(|_| corrupt(self.table, column, format!("expected 16 bytes, found {}", bytes.len()))),
            other => Err(corrupt(self.table, column, format!("expected a blob, found {}", kind(&other)))),
        }
    }

    pub(crate) fn blob(&self, idx: i32, column: &'static str) -> Result<Vec<u8>, StoreError> {
        match self.value(idx)? {
            Value::Blob(bytes) => Ok(bytes),
            other => Err(corrupt(self.table, column, format!("expected a blob, found {}", kind(&other)))),
        }
    }

    pub(crate) fn opt_int(&self, idx: i32, column: &'static str) -> Result<Option<i64>, StoreError> {
        match self.value(idx)? {
            Value::Null => Ok(None),
            Value::Integer(i) => Ok(Some(i)),
            other => Err(corrupt(self.table, column, format!("expected an integer, found {}", kind(&other)))),
        }
    }

    pub(crate) fn int(&self, idx: i32, column: &'static str) -> Result<i64, StoreError> {
        self.opt_int(idx, column)?.ok_or_else(|| corrupt(self.table, column, "unexpected NULL"))
    }

    pub(crate) fn parse<T, E: std::fmt::Display>(
        &self,
        idx: i32,
        column: &'static str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        parse(self.text(idx, column)?).map_err(|e| corrupt(self.table, column, e))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

/// Runs `sql` and decodes its first row with `decode`, if there is one. The
/// statement is finished before returning: a live statement would block DDL
/// on the same connection ("database table is locked").
pub(crate) async fn query_row<T>(
    conn: &libsql::Connection,
    context: &'static str,
    sql: &str,
    params: impl libsql::params::IntoParams,
    decode: impl FnOnce(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut rows = conn.query(sql, params).await.ctx(context)?;
    let row = rows.next().await.ctx(context)?;
    row.as_ref().map(decode).transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_domain::ThreadId;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_decode_from_16_byte_blobs_only() {
        let db = libsql::Builder::new_local(":memory:").build().await.unwrap();
        let conn = db.connect().unwrap();
        let id = ThreadId::new();
        let mut rows = conn
            .query(
                "SELECT ?1, X'0102', ?2, NULL, 7",
                vec![crate::values::uuid(id.as_uuid()), Value::Text(id.to_string())],
            )
            .await
            .unwrap();
        let row = rows.next().await.unwrap().unwrap();
        let r = RowReader::new(&row, "threads");
        assert_eq!(ThreadId::from_uuid(r.uuid(0, "id").unwrap()), id);
        for idx in 1..5 {
            let err = r.uuid(idx, "id").unwrap_err();
            assert!(err.to_string().contains("corrupt stored row in threads.id"), "{err}");
        }
    }
}
