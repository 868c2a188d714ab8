//! [`DomainError`]: a value refused by a constructor, naming the field and
//! the reason.

/// A value from outside failed validation. The message names the field and
/// says what is expected; it is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DomainError {
    /// The offending field, in the caller's vocabulary (`role`, `limit`, `cursor`…).
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl DomainError {
    /// Builds an error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}
