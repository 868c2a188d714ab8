//! Decoding rows into domain types; a row that does not decode is a
//! `Backend` error naming the table and column, never a panic.

use memlayer_domain::TenantId;
use memlayer_ports::StoreError;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::error::corrupt;

/// Reads typed columns of one row of `table`.
pub(crate) struct RowReader<'a> {
    row: &'a Row,
    table: &'static str,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(row: &'a Row, table: &'static str) -> Self {
        Self { row, table }
    }

    /// Column `column` (by name) as `T`.
    pub(crate) fn get<T: FromSql<'a>>(&self, column: &'static str) -> Result<T, StoreError> {
        self.row.try_get(column).map_err(|e| corrupt(self.table, column, e))
    }

    /// Column `column` as text parsed by `parse`.
    pub(crate) fn parse<T, E: std::fmt::Display>(
        &self,
        column: &'static str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        parse(self.get::<String>(column)?).map_err(|e| corrupt(self.table, column, e))
    }

    pub(crate) fn tenant(&self) -> Result<TenantId, StoreError> {
        self.parse("tenant", TenantId::parse)
    }
}
