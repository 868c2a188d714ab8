//! Decoding rows into domain types; a row that does not decode is a
//! `Backend` error naming the table and column, never a panic.

use memlayer_domain::{
    AgentName, Message, MessageId, Metadata, ResourceId, Role, TenantId, Thread, ThreadId, Title, TokenCount, ToolCall,
};
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
        agent_id: r.opt_parse("agent_id", AgentName::parse)?,
        title: r.opt_parse("title", Title::parse)?,
        model: r.get("model")?,
        metadata: r.metadata("metadata")?,
        last_seq: r.get("last_seq")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

/// The columns [`message`] reads.
pub(crate) const MESSAGE_COLUMNS: &str = "id, thread_id, seq, role, content, tool_call_id, tool_name, tool_calls, \
     metadata, token_count, token_model, token_encoding, token_exact, created_at";

pub(crate) fn message(row: &Row) -> Result<Message, StoreError> {
    let r = RowReader::new(row, "messages");
    let tool_calls: Vec<ToolCall> = match r.get::<Option<serde_json::Value>>("tool_calls")? {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v).map_err(|e| corrupt("messages", "tool_calls", e))?,
    };
    let token_count = match r.get::<Option<i64>>("token_count")? {
        None => None,
        Some(count) => Some(TokenCount {
            count: u32::try_from(count).map_err(|e| corrupt("messages", "token_count", e))?,
            model: r.get("token_model")?,
            encoding: r.get("token_encoding")?,
            exact: r.get("token_exact")?,
        }),
    };
    Ok(Message {
        id: MessageId::from_uuid(r.get("id")?),
        thread_id: ThreadId::from_uuid(r.get("thread_id")?),
        seq: r.get("seq")?,
        role: r.parse("role", |s| s.parse::<Role>())?,
        content: r.get("content")?,
        tool_call_id: r.get("tool_call_id")?,
        tool_name: r.get("tool_name")?,
        tool_calls,
        metadata: r.metadata("metadata")?,
        token_count,
        created_at: r.get("created_at")?,
    })
}
