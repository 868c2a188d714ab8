//! libSQL's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own `IMMEDIATE`
//! transaction with its bookkeeping row; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first (names and file stems:
/// `memlayer_adapters_sql::migration!`). Versions are strictly increasing;
/// never edit one that has shipped, add a new one. Version 8 is Postgres's
/// own (a bound on full-text documents).
pub(crate) const MIGRATIONS: &[Migration] =
    memlayer_adapters_sql::migrations![1, 2, 3, 4, 5 => crate::embeddings::LEXICAL_TABLES, 6, 7, 9];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_sql_is_present() {
        assert_eq!(memlayer_adapters_sql::migrate::check_plan(MIGRATIONS), Ok(()));
    }

    #[test]
    fn the_plan_names_its_versions_and_files() {
        let plan: Vec<(i64, &str)> = MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(
            plan,
            [
                (1, "core_schema"),
                (2, "semantic"),
                (3, "deferred_indexing"),
                (4, "config_store"),
                (5, "tenant_lexical"),
                (6, "idempotency"),
                (7, "fair_job_queue"),
                (9, "thread_sweep")
            ]
        );
        let drops: Vec<i64> = MIGRATIONS.iter().filter(|m| m.down_drops.is_some()).map(|m| m.version).collect();
        assert_eq!(drops, [5]);
        assert!(MIGRATIONS[4].up.contains("lexical_tenants"));
    }
}
