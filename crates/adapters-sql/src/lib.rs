//! The SQL core of memlayer, shared by the two SQL adapters
//! (`memlayer-adapters-libsql` and `memlayer-adapters-postgres`).
//!
//! It knows SQL and the domain types, and neither driver: a [`Dialect`]
//! says how the two backends differ (placeholders and the few functions and
//! clauses that are spelled differently); the rest of a statement is written
//! once here and bound by the adapter.
//!
//! Invariants:
//! - no driver crate (`libsql`, `tokio-postgres`, `sqlx`) is a dependency;
//! - caller input reaches SQL only as bound parameters, never as SQL text;
//! - business rules live in the application's services, not here: this crate
//!   only describes how to store and fetch.

mod op;

pub use op::SqlOp;

/// The SQL dialects memlayer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite as embedded by libSQL: `?N` placeholders.
    Sqlite,
    /// Postgres: `$N` placeholders.
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`-th bound parameter (1-based).
    #[must_use]
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("?{n}"),
            Self::Postgres => format!("${n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn placeholders_are_numbered_per_dialect() {
        assert_eq!(Dialect::Sqlite.placeholder(3), "?3");
        assert_eq!(Dialect::Postgres.placeholder(3), "$3");
    }
}
