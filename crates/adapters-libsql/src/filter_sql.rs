//! SQL for a [`SearchFilter`]: a tenant and, optionally, a list of threads.

use libsql::Value;
use memlayer_ports::SearchFilter;

use crate::values::text;

/// The condition ` AND {tenant_col} = ?{first} [AND {thread_col} IN (…)]` and
/// its parameters, numbered from `first`; `None` when the filter admits no
/// thread at all (an empty list).
///
/// The thread list is one parameter, a JSON array of hex ids unpacked with
/// `json_each` and `unhex`, so a resource with thousands of threads never
/// meets SQLite's parameter limit; the planner still drives an index by it.
pub(crate) fn filter_sql(filter: &SearchFilter, tenant_col: &str, thread_col: &str, first: usize) -> Option<FilterSql> {
    let mut sql = format!(" AND {tenant_col} = ?{first}");
    let mut params = vec![text(filter.tenant.as_str())];
    if let Some(threads) = filter.threads.listed() {
        if threads.is_empty() {
            return None;
        }
        let hex: Vec<String> = threads.iter().map(|t| t.as_uuid().simple().to_string()).collect();
        let json = serde_json::Value::from(hex).to_string();
        sql.push_str(&format!(" AND {thread_col} IN (SELECT unhex(value) FROM json_each(?{}))", first + 1));
        params.push(Value::Text(json));
    }
    Some(FilterSql { sql, params })
}

/// A filter's SQL condition and parameters.
#[derive(Debug)]
pub(crate) struct FilterSql {
    /// Starts with ` AND `.
    pub(crate) sql: String,
    /// Numbered from the `first` given to [`filter_sql`].
    pub(crate) params: Vec<Value>,
}
