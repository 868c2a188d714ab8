//! libSQL's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own `IMMEDIATE`
//! transaction with its bookkeeping row; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first. Versions are strictly increasing; never
/// edit one that has shipped, add a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core_schema",
        up: include_str!("../migrations/0001_core_schema.up.sql"),
        down: include_str!("../migrations/0001_core_schema.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 2,
        name: "semantic",
        up: include_str!("../migrations/0002_semantic.up.sql"),
        down: include_str!("../migrations/0002_semantic.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 3,
        name: "deferred_indexing",
        up: include_str!("../migrations/0003_deferred_indexing.up.sql"),
        down: include_str!("../migrations/0003_deferred_indexing.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 4,
        name: "config_store",
        up: include_str!("../migrations/0004_config_store.up.sql"),
        down: include_str!("../migrations/0004_config_store.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 5,
        name: "tenant_lexical",
        up: include_str!("../migrations/0005_tenant_lexical.up.sql"),
        down: include_str!("../migrations/0005_tenant_lexical.down.sql"),
        down_drops: Some(crate::embeddings::LEXICAL_TABLES),
    },
    Migration {
        version: 6,
        name: "idempotency",
        up: include_str!("../migrations/0006_idempotency.up.sql"),
        down: include_str!("../migrations/0006_idempotency.down.sql"),
        down_drops: None,
    },
    Migration {
        version: 7,
        name: "fair_job_queue",
        up: include_str!("../migrations/0007_fair_job_queue.up.sql"),
        down: include_str!("../migrations/0007_fair_job_queue.down.sql"),
        down_drops: None,
    },
    // Version 8 is Postgres's own (a bound on full-text documents).
    Migration {
        version: 9,
        name: "thread_sweep",
        up: include_str!("../migrations/0009_thread_sweep.up.sql"),
        down: include_str!("../migrations/0009_thread_sweep.down.sql"),
        down_drops: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_sql_is_present() {
        assert_eq!(memlayer_adapters_sql::migrate::check_plan(MIGRATIONS), Ok(()));
    }
}
