//! libSQL's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own `IMMEDIATE`
//! transaction with its bookkeeping row; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first (names and file stems:
/// `memlayer_adapters_sql::migration!`). Versions are strictly increasing;
/// never edit one that has shipped, add a new one. Versions 8 (a bound on
/// full-text documents) and 12 (row-level security on a caller's resource)
/// are Postgres's own. Versions 5 and 20 drop the per-tenant full-text
/// tables made at run time, both ways (5 creates them, 20 changes their
/// tokenizer).
pub(crate) const MIGRATIONS: &[Migration] = memlayer_adapters_sql::migrations![
    1, 2, 3, 4, 5 => crate::embeddings::LEXICAL_TABLES, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19,
    20 => crate::embeddings::LEXICAL_TABLES,
    21, 22, 25, 26,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_text_tables_made_at_run_time_go_with_versions_5_and_20() {
        let drops: Vec<i64> = MIGRATIONS.iter().filter(|m| m.drops.is_some()).map(|m| m.version).collect();
        assert_eq!(drops, [5, 20]);
        assert_eq!(MIGRATIONS[4].name, "tenant_lexical");
        assert!(MIGRATIONS[4].up.contains("lexical_tenants"));
        let stemming = MIGRATIONS.iter().find(|m| m.version == 20).unwrap();
        assert!(stemming.up.contains("caught_up_to = 0") && stemming.down.contains("caught_up_to = 0"));
    }
}
