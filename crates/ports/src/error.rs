//! [`StoreError`]: the one backend-neutral error of every storage port; each
//! variant says whether it is retryable.

use memlayer_domain::{DomainError, QuotaKind};

/// The one error every port returns. Adapters translate driver errors at
/// their boundary; no driver type escapes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing does not exist, or belongs to another tenant (the two are
    /// deliberately indistinguishable). Not retryable; HTTP 404.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing (`thread`, `message`…).
        what: &'static str,
        /// Its id as given.
        id: String,
    },
    /// The write lost a race or contradicts stored data (stale version,
    /// duplicate). Not retryable as is: re-read, then decide; HTTP 409.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's precondition (an `If-Match` version) no longer holds:
    /// the document is at another version and nothing was written. Not
    /// retryable as is: re-read, then decide; HTTP 412.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The input is unacceptable. Not retryable; HTTP 400.
    #[error("invalid input: {0}")]
    Invalid(#[from] DomainError),
    /// The caller may not do this, though the input is well formed: a
    /// credential bound to one resource creating or moving a thread out of
    /// it. Not retryable; HTTP 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A rate limit ran out (`limit` names it); retry after `retry_after`.
    /// HTTP 429 with `Retry-After`.
    #[error("rate limited: {message}")]
    RateLimited {
        /// The limit's name (`embed_tokens`…).
        limit: &'static str,
        /// When the same call would be allowed.
        retry_after: std::time::Duration,
        /// What ran out and its rate; safe to show.
        message: String,
    },
    /// Storing this would take the tenant past a storage quota (`quota`):
    /// it stores `usage` and may store `limit`, and the write adds
    /// `requested`. Nothing of the write was stored. Not retryable as is
    /// (delete something first, or ask the operator for more); HTTP 403, or
    /// 413 when `requested` alone is above `limit` ([`StoreError::is_too_large`]).
    #[error(
        "quota `{quota}` exceeded: the tenant stores {usage} of at most {limit} {quota} and this write adds {requested}"
    )]
    QuotaExceeded {
        /// Which quota.
        quota: QuotaKind,
        /// Its limit for the tenant.
        limit: u64,
        /// What the tenant stores (before this write).
        usage: u64,
        /// What this write would add.
        requested: u64,
    },
    /// The backend cannot be reached or is overloaded (pool exhausted, locked,
    /// connection refused). Retryable after a delay; HTTP 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local resource this call needs (the embedding model, its runtime)
    /// is missing, disabled or corrupt. The message says how to fix it and is
    /// safe to show; retryable once fixed; HTTP 503.
    #[error("not provisioned: {0}")]
    Unprovisioned(String),
    /// Anything else the backend reported. Not retryable; HTTP 500 with no
    /// details in the body.
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Shorthand for [`StoreError::NotFound`].
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound { what, id: id.to_string() }
    }

    /// Wraps a backend error.
    pub fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(e.into())
    }

    /// Whether this is a [`StoreError::QuotaExceeded`] by a write larger than
    /// the quota itself, which no delete can make room for.
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::QuotaExceeded { limit, requested, .. } if requested > limit)
    }

    /// Whether retrying the same call later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Unprovisioned(_) | Self::RateLimited { .. })
    }
}
