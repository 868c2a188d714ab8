//! Reading stored rows back into domain values without trusting their types:
//! a corrupt row is a `Backend` error, never a panic.

use std::borrow::Cow;

use libsql::Row;
use memlayer_adapters_sql::{CellSource, Cells, SqlValue};
use memlayer_ports::StoreError;

use crate::error::{Context as _, corrupt};
use crate::exec::cell;

/// A libSQL row as a [`CellSource`]: each column converted to a neutral
/// value as it is read (the driver hands out owned values, which are moved
/// on), never the whole row first.
#[derive(Clone, Copy)]
pub(crate) struct LibsqlRow<'a>(&'a Row);

impl CellSource for LibsqlRow<'_> {
    fn cell(&self, idx: usize) -> Result<Option<Cow<'_, SqlValue>>, StoreError> {
        let idx = i32::try_from(idx).map_err(|e| corrupt("row", "column", e))?;
        Ok(Some(Cow::Owned(cell(self.0.get_value(idx).ctx("read column")?))))
    }
}

/// Typed reads of `row`, a row of `table` (the shared [`Cells`] rules).
pub(crate) fn cells<'a>(row: &'a Row, table: &'static str) -> Cells<LibsqlRow<'a>> {
    Cells::of(LibsqlRow(row), table)
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
                vec![crate::values::uuid(id.as_uuid()), libsql::Value::Text(id.to_string())],
            )
            .await
            .unwrap();
        let row = rows.next().await.unwrap().unwrap();
        let r = cells(&row, "threads");
        assert_eq!(ThreadId::from_uuid(r.uuid(0, "id").unwrap()), id);
        for idx in 1..5 {
            let err = r.uuid(idx, "id").unwrap_err();
            assert!(err.to_string().contains("corrupt stored row in threads.id"), "{err}");
        }
    }
}
