//! Postgres's migration plan: versioned schema migrations, embedded in the
//! binary, each with up and down SQL. The runner is
//! `memlayer_adapters_sql::migrate` (each migration in its own transaction
//! under an advisory lock; see [`crate::exec`]).

use memlayer_adapters_sql::migrate::Migration;

/// Every migration, oldest first (names and file stems:
/// `memlayer_adapters_sql::migration!`, so versions and names are the
/// libSQL adapter's). Versions are strictly increasing; never edit one that
/// has shipped, add a new one. No version 3: libSQL's `deferred_indexing`
/// has no Postgres counterpart (jobs and full-text entries are written in
/// the appending statement here); no version 5: libSQL's `tenant_lexical`
/// (a full-text table per tenant) has none either (`ts_rank` uses no corpus
/// statistics). Versions 8, 12 and 16 are Postgres only: libSQL's FTS5 has no
/// size limit on a document, and libSQL has no row-level security to hold a
/// caller's resource (the memory services hold it on both backends).
pub(crate) const MIGRATIONS: &[Migration] =
    memlayer_adapters_sql::migrations![1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 25, 26];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_3_and_5_are_libsql_s_own_and_8_is_postgres_s() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 25, 26]);
        assert_eq!(MIGRATIONS[5].name, "bounded_document");
        assert!(MIGRATIONS[5].up.contains("tsvector"));
    }
}
