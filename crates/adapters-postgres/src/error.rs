//! Driver errors become [`StoreError`] here, and nowhere else.

use deadpool_postgres::PoolError;
use memlayer_domain::DomainError;
use memlayer_ports::StoreError;
use tokio_postgres::error::SqlState;

/// A backend failure with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub(crate) struct DriverError {
    context: &'static str,
    message: String,
}

impl DriverError {
    pub(crate) fn new(context: &'static str, message: impl Into<String>) -> Self {
        Self { context, message: message.into() }
    }
}

/// A stored row that does not decode: a `Backend` error, never a panic.
#[derive(Debug, thiserror::Error)]
#[error("corrupt stored row in {table}.{column}: {reason}")]
pub(crate) struct CorruptRow {
    table: &'static str,
    column: &'static str,
    reason: String,
}

pub(crate) fn corrupt(table: &'static str, column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::backend(CorruptRow { table, column, reason: reason.to_string() })
}

/// Classifies a driver error: connection trouble, lock and serialization
/// failures and server overload are `Unavailable` (retryable); unique,
/// foreign-key and exclusion violations are `Conflict`; text the server
/// cannot store (a NUL character) is `Invalid`; the rest is `Backend`.
pub(crate) fn map_err(context: &'static str, e: &tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        // The driver's own text ("error connecting to server") hides the
        // cause (connection refused, timeout, unknown host): add the chain.
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    };
    if e.is_closed() {
        return StoreError::Unavailable(format!("{context}: connection closed: {message}"));
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: an I/O or protocol failure talking to the server.
        return StoreError::Unavailable(format!("{context}: {message}"));
    };
    classify(code, context, message)
}

fn classify(code: &SqlState, context: &'static str, message: String) -> StoreError {
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::FOREIGN_KEY_VIOLATION
        || *code == SqlState::EXCLUSION_VIOLATION
    {
        StoreError::Conflict(format!("{context}: {message}"))
    } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE || *code == SqlState::UNTRANSLATABLE_CHARACTER {
        StoreError::Invalid(DomainError::new("text", format!("cannot be stored: {message}")))
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
        // 08 connection exception, 53 insufficient resources, 57 operator
        // intervention (shutdown, crash recovery).
        || matches!(class, "08" | "53" | "57")
    {
        StoreError::Unavailable(format!("{context}: {message}"))
    } else {
        StoreError::backend(DriverError { context, message })
    }
}

/// `.ctx("step")` on driver results.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| map_err(context, &e))
    }
}

impl<T> Context<T> for Result<T, PoolError> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| match e {
            PoolError::Backend(e) => match map_err(context, &e) {
                // Failing to connect at all is always worth retrying later.
                StoreError::Backend(b) => StoreError::Unavailable(b.to_string()),
                other => other,
            },
            PoolError::Timeout(kind) => {
                StoreError::Unavailable(format!("{context}: no database connection within the timeout ({kind:?})"))
            }
            other => StoreError::Unavailable(format!("{context}: {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: SqlState, expected: &str) {
        let got = match classify(&code, "step", "m".into()) {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::Invalid(_) => "invalid",
            StoreError::Backend(_) => "backend",
            _ => "other",
        };
        assert_eq!(got, expected, "{code:?}");
    }

    #[test]
    fn sqlstates_map_to_store_errors() {
        check(SqlState::UNIQUE_VIOLATION, "conflict");
        check(SqlState::FOREIGN_KEY_VIOLATION, "conflict");
        check(SqlState::T_R_SERIALIZATION_FAILURE, "unavailable");
        check(SqlState::T_R_DEADLOCK_DETECTED, "unavailable");
        check(SqlState::TOO_MANY_CONNECTIONS, "unavailable");
        check(SqlState::ADMIN_SHUTDOWN, "unavailable");
        check(SqlState::CONNECTION_FAILURE, "unavailable");
        check(SqlState::CHARACTER_NOT_IN_REPERTOIRE, "invalid");
        check(SqlState::UNDEFINED_TABLE, "backend");
        check(SqlState::SYNTAX_ERROR, "backend");
        check(SqlState::INSUFFICIENT_PRIVILEGE, "backend");
    }
}
