//! Thread listing, written once: the keyset query over a tenant's threads
//! with optional resource, agent and metadata filters, newest first. The
//! one part that differs is how a metadata pair is compared (libSQL:
//! `json_type`/`json_extract` on JSON text; Postgres: `jsonb` equality);
//! both compare the same JSON type and value (`true` never matches 1, a
//! missing key never matches `null`). Every caller value is bound.

use memlayer_domain::{TenantId, ThreadFilter, ThreadId};

use crate::{Dialect, Sql, SqlValue};

/// `SELECT <columns> FROM threads WHERE tenant = ? AND … ORDER BY id DESC
/// LIMIT limit + 1` (one more than the page, to know whether another
/// follows). `columns` is the adapter's thread column list. The text varies
/// with the filter, so the statement is marked dynamic.
#[must_use]
pub fn list_sql(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    filter: &ThreadFilter,
    after: Option<ThreadId>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::new(dialect).dynamic();
    sql.push(&format!("SELECT {columns} FROM threads WHERE tenant = ")).bind(tenant.as_str());
    if let Some(after) = after {
        sql.push(" AND id < ").bind(after.as_uuid());
    }
    if let Some(resource) = &filter.resource_id {
        sql.push(" AND resource_id = ").bind(resource.as_str());
    }
    if let Some(agent) = &filter.agent_id {
        sql.push(" AND agent_id = ").bind(agent.as_str());
    }
    for m in &filter.metadata {
        match dialect {
            Dialect::Sqlite => {
                // The key is validated by the domain (letters, digits, `_`,
                // `-`), so quoting it in a JSON path is safe; the path is
                // still a parameter.
                let path = sql.arg(format!("$.\"{}\"", m.key()));
                let value = sql.arg(SqlValue::Json(m.value().clone()));
                sql.push(&format!(
                    " AND json_type(metadata, {path}) = json_type({value}) \
                     AND json_extract(metadata, {path}) IS json_extract({value}, '$')"
                ));
            }
            Dialect::Postgres => {
                let key = sql.arg(m.key());
                let value = sql.arg(SqlValue::Json(m.value().clone()));
                sql.push(&format!(" AND metadata -> {key}::text = {value}::jsonb"));
            }
        }
    }
    sql.push(" ORDER BY id DESC LIMIT ").bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
    sql
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_domain::{MetadataFilter, ResourceId};

    use super::*;

    #[test]
    fn filters_render_per_dialect_with_every_value_bound() {
        let tenant = TenantId::parse("acme").unwrap();
        let evil = "x' OR 1=1 --";
        let filter = ThreadFilter {
            resource_id: Some(ResourceId::parse("user-42").unwrap()),
            metadata: vec![MetadataFilter::new("lang", serde_json::json!(evil)).unwrap()],
            ..ThreadFilter::default()
        };
        let after = ThreadId::new();
        let sql = list_sql(Dialect::Postgres, "id", &tenant, &filter, Some(after), 10);
        assert_eq!(
            sql.text(),
            "SELECT id FROM threads WHERE tenant = $1 AND id < $2 AND resource_id = $3 \
             AND metadata -> $4::text = $5::jsonb ORDER BY id DESC LIMIT $6"
        );
        assert_eq!(sql.args()[2], SqlValue::from("user-42"));
        assert_eq!(sql.args()[4], SqlValue::Json(serde_json::json!(evil)));
        assert_eq!(sql.args()[5], SqlValue::Int(11));
        let sql = list_sql(Dialect::Sqlite, "id", &tenant, &filter, None, 10);
        assert!(sql.text().contains(
            "AND json_type(metadata, ?3) = json_type(?4) AND json_extract(metadata, ?3) IS json_extract(?4, '$')"
        ));
        assert_eq!(sql.args()[2], SqlValue::from("$.\"lang\""));
        assert!(!sql.text().contains(evil) && !sql.is_fixed());
    }
}
