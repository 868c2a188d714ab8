//! Tables described once: name, columns and their encodings, and which
//! declared listing fields they serve. Both backends derive their CRUD
//! statements from a description ([`Table::select`], [`Table::insert`],
//! [`Table::update`], …), so a column is named in exactly one place.
//!
//! Every described table has an `id` (first column) and a `tenant` (not
//! listed: it is bound by the statements, never read back); the
//! observability tables (migration 21) are keyed by trace and span ids or
//! by run and index instead, and their samples ([`OBS_METRICS`]) have no
//! tenant.

use memlayer_domain::{CatalogEntity, FieldSpec};
use memlayer_ports::StoreError;

use crate::Sql;

/// How a column is stored; the adapters' binders and [`crate::Cells`] know
/// each kind's encoding per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An id (libSQL: 16-byte blob; Postgres: `uuid`).
    Id,
    /// Text (Postgres: `COLLATE "C"` where listings compare it).
    Text,
    /// A 64-bit integer.
    Int,
    /// A 64-bit float.
    Real,
    /// A boolean (libSQL: 0/1).
    Bool,
    /// A time (libSQL: microseconds; Postgres: `timestamptz`).
    Timestamp,
    /// A JSON document (libSQL: text; Postgres: `json`).
    Json,
    /// Bytes (libSQL: BLOB; Postgres: `bytea`).
    Blob,
}

/// One stored column.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in SQL.
    pub name: &'static str,
    /// How it is stored.
    pub kind: Kind,
    /// Whether an update may change it (not `id`, not `created_at`).
    pub mutable: bool,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, mutable: true }
}

const fn fixed(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, mutable: false }
}

/// A set of rows with an id each, owned by tenants.
#[derive(Debug)]
pub struct Table {
    /// Its name in SQL.
    pub name: &'static str,
    /// What one row is, for error messages ("model").
    pub what: &'static str,
    /// Its columns but `tenant`, `id` first, in `SELECT` order.
    pub columns: &'static [Column],
    /// The declared listing fields this table answers, if it is listed.
    pub entity: Option<CatalogEntity>,
    /// A declared field kept in a link table rather than a column: its
    /// name and the `EXISTS` test for "the row links to `{}`" (the value's
    /// placeholder replaces `{}`).
    pub link: Option<(&'static str, &'static str)>,
}

/// `config_models`: a tenant's language models, one of them the default.
pub const MODELS: Table = Table {
    name: "config_models",
    what: "model",
    columns: &[
        fixed("id", Kind::Id),
        col("name", Kind::Text),
        col("provider", Kind::Text),
        col("context_window", Kind::Int),
        col("max_output_tokens", Kind::Int),
        col("input_price", Kind::Real),
        col("output_price", Kind::Real),
        col("is_default", Kind::Bool),
        fixed("created_at", Kind::Timestamp),
        col("updated_at", Kind::Timestamp),
    ],
    entity: Some(CatalogEntity::Models),
    link: None,
};

/// `config_tools`: tools an agent may call, with their JSON Schema.
pub const TOOLS: Table = Table {
    name: "config_tools",
    what: "tool",
    columns: &[
        fixed("id", Kind::Id),
        col("name", Kind::Text),
        col("description", Kind::Text),
        col("parameters", Kind::Json),
        fixed("created_at", Kind::Timestamp),
        col("updated_at", Kind::Timestamp),
    ],
    entity: Some(CatalogEntity::Tools),
    link: None,
};

/// `config_agents`: agents, their model and memory options; their tools
/// are ordered rows of `config_agent_tools` (so foreign keys guard deletes).
pub const AGENTS: Table = Table {
    name: "config_agents",
    what: "agent",
    columns: &[
        fixed("id", Kind::Id),
        col("name", Kind::Text),
        col("model_id", Kind::Id),
        col("system_prompt", Kind::Text),
        col("last_n", Kind::Int),
        col("top_k", Kind::Int),
        col("token_budget", Kind::Int),
        fixed("created_at", Kind::Timestamp),
        col("updated_at", Kind::Timestamp),
        // Migration 13: `WorkingMemoryOptions::to_value`, NULL when unset.
        col("working_memory", Kind::Json),
        // Migration 15: the agent's context options (JSON), NULL when unset.
        col("context", Kind::Json),
        // Migration 18: the agent's workflow runner (`RunnerSpec`), NULL when unset.
        col("runner", Kind::Json),
    ],
    entity: Some(CatalogEntity::Agents),
    link: Some((
        "tool_ids",
        "EXISTS (SELECT 1 FROM config_agent_tools t WHERE t.agent_id = config_agents.id AND t.tool_id = {})",
    )),
};

/// `api_keys`: API keys, found by their public id (text, unique across
/// tenants), the secret kept only as its SHA-256 (`secret_hash`, last, so a
/// listing selects the columns before it and never reads a hash). Unlike
/// the catalog's, its `tenant` is read back: a lookup by id learns it.
pub const API_KEYS: Table = Table {
    name: "api_keys",
    what: "API key",
    columns: &[
        fixed("id", Kind::Text),
        fixed("name", Kind::Text),
        fixed("scopes", Kind::Text),
        fixed("resource_id", Kind::Text),
        fixed("created_at", Kind::Timestamp),
        fixed("expires_at", Kind::Timestamp),
        col("revoked_at", Kind::Timestamp),
        col("last_used_at", Kind::Timestamp),
        fixed("secret_hash", Kind::Blob),
    ],
    entity: None,
    link: None,
};

/// `obs_traces` (migration 21): one row per trace of a tenant, derived from
/// its spans as they arrive (`memlayer_domain::observability::TraceSummary`;
/// the ingest's upsert folds each batch in). Times are OTLP's nanoseconds
/// as integers on both backends, so bucketing is the same integer
/// arithmetic; span ids are their 8 bytes as a big-endian `i64`.
pub const OBS_TRACES: Table = Table {
    name: "obs_traces",
    what: "trace",
    columns: &[
        fixed("trace_id", Kind::Id),
        col("name", Kind::Text),
        col("root_span_id", Kind::Int),
        col("service", Kind::Text),
        col("root_status", Kind::Text),
        col("status", Kind::Text),
        col("start_ns", Kind::Int),
        col("end_ns", Kind::Int),
        col("duration_ns", Kind::Int),
        col("span_count", Kind::Int),
        col("error_count", Kind::Int),
        col("model", Kind::Text),
        col("agent", Kind::Text),
        col("input_tokens", Kind::Int),
        col("output_tokens", Kind::Int),
    ],
    entity: None,
    link: None,
};

/// `obs_spans` (migration 21): a tenant's spans, keyed by trace and span
/// id; the GenAI columns (`model` … `error`) are what the span says about
/// a model call (`model` set only on model calls); `events` (migration 26)
/// its events as one JSON array, `NULL` when it has none.
pub const OBS_SPANS: Table = Table {
    name: "obs_spans",
    what: "span",
    columns: &[
        fixed("trace_id", Kind::Id),
        fixed("span_id", Kind::Int),
        fixed("parent_span_id", Kind::Int),
        fixed("name", Kind::Text),
        fixed("kind", Kind::Text),
        fixed("start_ns", Kind::Int),
        fixed("end_ns", Kind::Int),
        fixed("status_code", Kind::Text),
        fixed("status_message", Kind::Text),
        fixed("trace_state", Kind::Text),
        fixed("attributes", Kind::Json),
        fixed("resource", Kind::Json),
        fixed("scope_name", Kind::Text),
        fixed("scope_version", Kind::Text),
        fixed("dropped_attributes", Kind::Int),
        fixed("dropped_events", Kind::Int),
        fixed("dropped_links", Kind::Int),
        fixed("truncated_attributes", Kind::Int),
        fixed("model", Kind::Text),
        fixed("agent", Kind::Text),
        fixed("operation", Kind::Text),
        fixed("input_tokens", Kind::Int),
        fixed("output_tokens", Kind::Int),
        fixed("ttft_ns", Kind::Int),
        fixed("error", Kind::Bool),
        fixed("events", Kind::Json),
    ],
    entity: None,
    link: None,
};

/// `obs_links` (migration 21): a span's links, by their index in the span.
pub const OBS_LINKS: Table = Table {
    name: "obs_links",
    what: "span link",
    columns: &[
        fixed("trace_id", Kind::Id),
        fixed("span_id", Kind::Int),
        fixed("idx", Kind::Int),
        fixed("linked_trace_id", Kind::Id),
        fixed("linked_span_id", Kind::Int),
        fixed("trace_state", Kind::Text),
        fixed("attributes", Kind::Json),
        fixed("dropped_attributes", Kind::Int),
    ],
    entity: None,
    link: None,
};

/// `obs_eval_runs` (migration 21): evaluation runs, their metrics one JSON
/// object.
pub const OBS_EVAL_RUNS: Table = Table {
    name: "obs_eval_runs",
    what: "evaluation run",
    columns: &[
        fixed("id", Kind::Id),
        fixed("name", Kind::Text),
        fixed("model", Kind::Text),
        fixed("agent", Kind::Text),
        fixed("dataset", Kind::Text),
        fixed("at", Kind::Timestamp),
        fixed("metrics", Kind::Json),
        fixed("example_count", Kind::Int),
        fixed("metadata", Kind::Json),
        fixed("created_at", Kind::Timestamp),
    ],
    entity: None,
    link: None,
};

/// `obs_eval_examples` (migration 21): a run's examples, by index.
pub const OBS_EVAL_EXAMPLES: Table = Table {
    name: "obs_eval_examples",
    what: "evaluation example",
    columns: &[
        fixed("run_id", Kind::Id),
        fixed("idx", Kind::Int),
        fixed("input", Kind::Json),
        fixed("expected", Kind::Json),
        fixed("output", Kind::Json),
        fixed("scores", Kind::Json),
    ],
    entity: None,
    link: None,
};

/// `obs_metrics` (migration 21): the server's system metric samples. The
/// one described table without a `tenant` column: samples are the
/// server's, not a tenant's, so only [`Table::column_list`] and
/// [`Table::insert_rows`] without a tenant apply.
pub const OBS_METRICS: Table = Table {
    name: "obs_metrics",
    what: "metric sample",
    columns: &[
        fixed("name", Kind::Text),
        fixed("instance", Kind::Text),
        fixed("at_ns", Kind::Int),
        fixed("value", Kind::Real),
    ],
    entity: None,
    link: None,
};

/// A declared field with no column: a domain declaration the description
/// was not updated for (the tests below keep that from shipping).
#[derive(Debug, thiserror::Error)]
#[error("{table}: no column for declared field {field}")]
pub struct UnknownField {
    table: &'static str,
    field: String,
}

impl Table {
    /// The column of a declared field.
    pub fn column(&self, field: &FieldSpec) -> Result<&'static Column, StoreError> {
        self.columns.iter().find(|c| c.name == field.name).ok_or_else(|| self.unknown(field.name))
    }

    /// The `Backend` error for a declared field this description cannot
    /// answer.
    #[must_use]
    pub fn unknown(&self, field: &str) -> StoreError {
        StoreError::backend(UnknownField { table: self.name, field: field.to_owned() })
    }

    /// The column list, `prefix.`ed when given.
    #[must_use]
    pub fn column_list(&self, prefix: Option<&str>) -> String {
        let names = self.columns.iter().map(|c| match prefix {
            Some(p) => format!("{p}.{}", c.name),
            None => c.name.to_owned(),
        });
        names.collect::<Vec<_>>().join(", ")
    }

    /// `SELECT <columns> FROM <table> WHERE tenant = ?`.
    pub fn select(&self, sql: &mut Sql, tenant: &str) {
        sql.push(&format!("SELECT {} FROM {} WHERE tenant = ", self.column_list(None), self.name)).bind(tenant);
    }

    /// `SELECT <columns> FROM <table> WHERE tenant = ? AND id = ?`.
    pub fn select_by_id(&self, sql: &mut Sql, tenant: &str, id: uuid::Uuid) {
        self.select(sql, tenant);
        sql.push(" AND id = ").bind(id);
    }

    /// `INSERT INTO <table> (tenant, <columns>) VALUES (…)`; `values` in
    /// column order.
    pub fn insert(&self, sql: &mut Sql, tenant: &str, values: Vec<crate::SqlValue>) {
        debug_assert_eq!(values.len(), self.columns.len(), "{}: one value per column", self.name);
        sql.push(&format!("INSERT INTO {} (tenant, {}) VALUES (", self.name, self.column_list(None)));
        sql.bind(tenant).push(", ").bind_list(values).push(")");
    }

    /// `INSERT INTO <table> ([tenant, ]<columns>) VALUES (…), (…)`: one
    /// row per item of `rows`, each in column order, the tenant first when
    /// given (every described table but [`OBS_METRICS`] has one).
    pub fn insert_rows(
        &self,
        sql: &mut Sql,
        tenant: Option<&str>,
        rows: impl IntoIterator<Item = Vec<crate::SqlValue>>,
    ) {
        let tenant_column = if tenant.is_some() { "tenant, " } else { "" };
        sql.push(&format!("INSERT INTO {} ({tenant_column}{}) VALUES ", self.name, self.column_list(None)));
        for (i, values) in rows.into_iter().enumerate() {
            debug_assert_eq!(values.len(), self.columns.len(), "{}: one value per column", self.name);
            sql.push(if i == 0 { "(" } else { ", (" });
            if let Some(t) = tenant {
                sql.bind(t).push(", ");
            }
            sql.bind_list(values).push(")");
        }
    }

    /// `UPDATE <table> SET <mutable columns> WHERE tenant = ? AND id = ?
    /// RETURNING <columns>`; `values` in column order (the values of
    /// columns an update may not change are ignored).
    pub fn update(&self, sql: &mut Sql, tenant: &str, id: uuid::Uuid, values: Vec<crate::SqlValue>) {
        debug_assert_eq!(values.len(), self.columns.len(), "{}: one value per column", self.name);
        sql.push(&format!("UPDATE {} SET ", self.name));
        let mut first = true;
        for (c, v) in self.columns.iter().zip(values) {
            if c.mutable {
                sql.push(if first { "" } else { ", " }).push(c.name).push(" = ").bind(v);
                first = false;
            }
        }
        sql.push(" WHERE tenant = ").bind(tenant).push(" AND id = ").bind(id);
        sql.push(&format!(" RETURNING {}", self.column_list(None)));
    }

    /// `SELECT 1 FROM <table> WHERE tenant = ? AND id = ?`.
    pub fn exists(&self, sql: &mut Sql, tenant: &str, id: uuid::Uuid) {
        sql.push(&format!("SELECT 1 FROM {} WHERE tenant = ", self.name)).bind(tenant).push(" AND id = ").bind(id);
    }

    /// `SELECT 1 FROM <table> WHERE tenant = ? AND name = ? AND id is not
    /// <except>` (NULL: any row).
    pub fn name_taken(&self, sql: &mut Sql, tenant: &str, name: &str, except: Option<uuid::Uuid>) {
        sql.push(&format!("SELECT 1 FROM {} WHERE tenant = ", self.name)).bind(tenant);
        sql.push(" AND name = ").bind(name).push(" AND ");
        let p = sql.arg(except);
        let cond = sql.dialect().is_distinct("id", &p);
        sql.push(&cond);
    }

    /// `DELETE FROM <table> WHERE tenant = ? AND id = ?`.
    pub fn delete(&self, sql: &mut Sql, tenant: &str, id: uuid::Uuid) {
        sql.push(&format!("DELETE FROM {} WHERE tenant = ", self.name)).bind(tenant).push(" AND id = ").bind(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;
    use crate::{Dialect, SqlValue};

    #[test]
    fn every_declared_field_has_a_column_or_a_link() {
        for table in [MODELS, TOOLS, AGENTS] {
            let entity = table.entity.unwrap();
            for f in entity.fields() {
                let linked = table.link.is_some_and(|(name, _)| name == f.name);
                assert!(linked || table.column(f).is_ok(), "{}.{} has no column", table.name, f.name);
            }
        }
    }

    #[test]
    fn crud_statements_derive_from_the_description() {
        let id = uuid::Uuid::nil();
        let mut sql = Sql::new(Dialect::Postgres);
        TOOLS.update(&mut sql, "acme", id, vec![SqlValue::Null; TOOLS.columns.len()]);
        assert_eq!(
            sql.text(),
            "UPDATE config_tools SET name = $1, description = $2, parameters = $3, updated_at = $4 \
             WHERE tenant = $5 AND id = $6 RETURNING id, name, description, parameters, created_at, updated_at"
        );
        let mut sql = Sql::new(Dialect::Sqlite);
        TOOLS.insert(&mut sql, "acme", vec![SqlValue::Null; TOOLS.columns.len()]);
        assert_eq!(
            sql.text(),
            "INSERT INTO config_tools (tenant, id, name, description, parameters, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        );
        let mut sql = Sql::new(Dialect::Postgres);
        OBS_METRICS.insert_rows(&mut sql, None, [vec![SqlValue::Null; 4], vec![SqlValue::Null; 4]]);
        assert_eq!(
            sql.text(),
            "INSERT INTO obs_metrics (name, instance, at_ns, value) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"
        );
        let mut sql = Sql::new(Dialect::Sqlite);
        OBS_LINKS.insert_rows(&mut sql, Some("acme"), [vec![SqlValue::Null; 8]]);
        assert_eq!(
            sql.text(),
            "INSERT INTO obs_links (tenant, trace_id, span_id, idx, linked_trace_id, linked_span_id, trace_state, \
             attributes, dropped_attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        );
        let mut sql = Sql::new(Dialect::Sqlite);
        MODELS.name_taken(&mut sql, "acme", "gpt", None);
        assert_eq!(sql.text(), "SELECT 1 FROM config_models WHERE tenant = ?1 AND name = ?2 AND id IS NOT ?3");
        assert_eq!(sql.args()[2], SqlValue::Null);
    }
}
