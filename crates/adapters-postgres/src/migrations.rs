//! Postgres's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own transaction
//! under an advisory lock; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first. Versions are strictly increasing; never
/// edit one that has shipped, add a new one. Same versions and names as the
/// libSQL adapter's, so `memlayer migrate status` reads alike on both (a
/// version only libSQL needs is absent here).
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
    // No version 3: libSQL's `deferred_indexing` has no Postgres counterpart
    // (jobs and full-text entries are written in the appending statement here).
    Migration {
        version: 4,
        name: "config_store",
        up: include_str!("../migrations/0004_config_store.up.sql"),
        down: include_str!("../migrations/0004_config_store.down.sql"),
        down_drops: None,
    },
    // No version 5: libSQL's `tenant_lexical` (a full-text table per tenant)
    // has no Postgres counterpart (`ts_rank` uses no corpus statistics).
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
    // Postgres only: libSQL's FTS5 has no size limit on a document.
    Migration {
        version: 8,
        name: "bounded_document",
        up: include_str!("../migrations/0008_bounded_document.up.sql"),
        down: include_str!("../migrations/0008_bounded_document.down.sql"),
        down_drops: None,
    },
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
