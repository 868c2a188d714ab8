//! The errors both adapters raise at their boundary, in neither driver's
//! types: a failed step with the driver's message as text (so no driver
//! type escapes through `source()`), and a stored row that does not decode.
//! Each adapter classifies its driver's errors into `StoreError` itself.

use memlayer_ports::StoreError;

/// A backend failure with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct DriverError {
    context: &'static str,
    message: String,
}

impl DriverError {
    /// The failure of step `context`, described by `message`.
    pub fn new(context: &'static str, message: impl Into<String>) -> Self {
        Self { context, message: message.into() }
    }
}

/// A stored row that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("corrupt stored row in {table}.{column}: {reason}")]
pub struct CorruptRow {
    table: &'static str,
    column: &'static str,
    reason: String,
}

/// A `Backend` error for a column of `table` that does not decode.
pub fn corrupt(table: &'static str, column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::backend(CorruptRow { table, column, reason: reason.to_string() })
}
