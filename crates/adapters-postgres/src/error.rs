//! Driver errors become [`StoreError`] here, and nowhere else.

use deadpool_postgres::PoolError;
use memlayer_domain::DomainError;
use memlayer_ports::StoreError;
use tokio_postgres::error::SqlState;

pub(crate) use memlayer_adapters_sql::{DriverError, corrupt};

/// Classifies a driver error: connection trouble, lock and serialization
/// failures and server overload are `Unavailable` (retryable); unique,
/// foreign-key and exclusion violations are `Conflict`; text the server
/// cannot store (a NUL character) and input beyond a server limit (class 54,
/// e.g. a full-text entry over 1 MiB) are `Invalid`; a statement cancelled by
/// the statement timeout is `Unavailable`; the rest is `Backend`.
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
    } else if *code == SqlState::PROGRAM_LIMIT_EXCEEDED && message.contains("tsvector") {
        // Migration 8 indexes a bounded prefix, so this needs a server whose
        // limits differ from Postgres 18's: still the input's fault, a 400.
        StoreError::Invalid(DomainError::new(
            "content",
            format!(
                "is too large for the full-text index (Postgres allows 1 MiB of distinct words and their \
                 positions per message): {message}"
            ),
        ))
    } else if class == "54" {
        // 54 program limit exceeded: the input is too large or too complex
        // for the server (statement too complex, too many columns, …).
        StoreError::Invalid(DomainError::new("input", format!("exceeds a database limit: {message}")))
    } else if *code == SqlState::QUERY_CANCELED {
        // The statement timeout of `begin` (or a cancel request): retryable.
        StoreError::Unavailable(format!(
            "{context}: the statement was cancelled after running longer than the statement timeout \
             (database.statement_timeout_ms): {message}"
        ))
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        // 08 connection exception, 53 insufficient resources, 57 operator
        // intervention (shutdown, crash recovery).
        || matches!(class, "08" | "53" | "57")
    {
        StoreError::Unavailable(format!("{context}: {message}"))
    } else {
        StoreError::backend(DriverError::new(context, message))
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
        check(SqlState::PROGRAM_LIMIT_EXCEEDED, "invalid");
        check(SqlState::STATEMENT_TOO_COMPLEX, "invalid");
        check(SqlState::QUERY_CANCELED, "unavailable");
        check(SqlState::UNDEFINED_TABLE, "backend");
        check(SqlState::SYNTAX_ERROR, "backend");
        check(SqlState::INSUFFICIENT_PRIVILEGE, "backend");
    }
}
