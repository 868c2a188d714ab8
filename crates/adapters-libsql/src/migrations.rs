//! libSQL's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own `IMMEDIATE`
//! transaction with its bookkeeping row; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first (names and file stems:
/// `memlayer_adapters_sql::migration!`). Versions are strictly increasing;
/// never edit one that has shipped, add a new one. Versions 8 (a bound on
/// full-text documents) and 12 (row-level security on a caller's resource)
/// are Postgres's own.
pub(crate) const MIGRATIONS: &[Migration] = memlayer_adapters_sql::migrations![1, 2, 3, 4, 5 => crate::embeddings::LEXICAL_TABLES, 6, 7, 9, 10, 11, 13, 14, 15, 17, 21];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_text_tables_made_at_run_time_go_with_version_5() {
        let drops: Vec<i64> = MIGRATIONS.iter().filter(|m| m.down_drops.is_some()).map(|m| m.version).collect();
        assert_eq!(drops, [5]);
        assert_eq!(MIGRATIONS[4].name, "tenant_lexical");
        assert!(MIGRATIONS[4].up.contains("lexical_tenants"));
    }
}
