//! Decoding rows into domain types; a row that does not decode is a
//! `Backend` error naming the table and column, never a panic.

use memlayer_domain::{AgentId, Metadata, ResourceId, TenantId, Thread, ThreadId, Title};
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

    /// Nullable text column parsed by `parse`.
    pub(crate) fn opt_parse<T, E: std::fmt::Display>(
        &self,
        column: &'static str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<Option<T>, StoreError> {
        self.get::<Option<String>>(column)?.map(parse).transpose().map_err(|e| corrupt(self.table, column, e))
    }

    /// A jsonb object column as [`Metadata`].
    pub(crate) fn metadata(&self, column: &'static str) -> Result<Metadata, StoreError> {
        Metadata::from_value(self.get::<serde_json::Value>(column)?).map_err(|e| corrupt(self.table, column, e))
    }

    pub(crate) fn tenant(&self) -> Result<TenantId, StoreError> {
        self.parse("tenant", TenantId::parse)
    }
}

/// The columns [`thread`] reads.
pub(crate) const THREAD_COLUMNS: &str =
    "id, tenant, resource_id, agent_id, title, model, metadata, last_seq, created_at, updated_at";

pub(crate) fn thread(row: &Row) -> Result<Thread, StoreError> {
    let r = RowReader::new(row, "threads");
    Ok(Thread {
        id: ThreadId::from_uuid(r.get("id")?),
        tenant: r.tenant()?,
        resource_id: r.opt_parse("resource_id", ResourceId::parse)?,
        agent_id: r.opt_parse("agent_id", AgentId::parse)?,
        title: r.opt_parse("title", Title::parse)?,
        model: r.get("model")?,
        metadata: r.metadata("metadata")?,
        last_seq: r.get("last_seq")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}
