//! Translation of driver errors into [`StoreError`], at the boundary.

use memlayer_ports::StoreError;

/// SQLite primary result codes we tell apart (the low byte of an extended code).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_CONSTRAINT: i32 = 19;

pub(crate) use memlayer_adapters_sql::{DriverError, corrupt};

/// Maps a driver error: busy/locked → `Unavailable`, constraint violation →
/// `Conflict`, connection failures → `Unavailable`, anything else → `Backend`.
pub(crate) fn map_err(context: &'static str, e: libsql::Error) -> StoreError {
    let message = e.to_string();
    match &e {
        libsql::Error::SqliteFailure(code, _) => classify(*code & 0xff, context, message),
        libsql::Error::RemoteSqliteFailure(code, extended, _) => {
            let primary = if *extended != 0 { *extended & 0xff } else { *code & 0xff };
            classify(primary, context, message)
        }
        libsql::Error::ConnectionFailed(_) => StoreError::Unavailable(format!("{context}: {message}")),
        libsql::Error::Hrana(_) => {
            if message.contains("SQLITE_CONSTRAINT") {
                StoreError::Conflict(format!("{context}: {message}"))
            } else if message.contains("SQLITE_BUSY") || message.contains("SQLITE_LOCKED") {
                StoreError::Unavailable(format!("{context}: {message}"))
            } else {
                StoreError::backend(DriverError::new(context, message))
            }
        }
        _ => StoreError::backend(DriverError::new(context, message)),
    }
}

fn classify(primary: i32, context: &'static str, message: String) -> StoreError {
    match primary {
        SQLITE_BUSY | SQLITE_LOCKED => StoreError::Unavailable(format!("{context}: {message}")),
        SQLITE_CONSTRAINT => StoreError::Conflict(format!("{context}: {message}")),
        _ => StoreError::backend(DriverError::new(context, message)),
    }
}

/// Extension to attach a context to driver results.
pub(crate) trait Context<T> {
    /// Maps the error with [`map_err`], naming the step.
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, libsql::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| map_err(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: libsql::Error, expected: &str) {
        let got = match map_err("step", e) {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::Backend(_) => "backend",
            _ => "other",
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn driver_errors_map_to_store_errors() {
        check(libsql::Error::SqliteFailure(5, "database is locked".into()), "unavailable");
        check(libsql::Error::SqliteFailure(517, "busy snapshot".into()), "unavailable");
        check(libsql::Error::SqliteFailure(6, "table is locked".into()), "unavailable");
        check(libsql::Error::SqliteFailure(2067, "UNIQUE constraint failed".into()), "conflict");
        check(libsql::Error::SqliteFailure(787, "FOREIGN KEY constraint failed".into()), "conflict");
        check(libsql::Error::SqliteFailure(1, "no such table".into()), "backend");
        check(libsql::Error::ConnectionFailed("refused".into()), "unavailable");
        check(libsql::Error::InvalidColumnType, "backend");
    }
}
