//! Idempotency records: the first outcome of a request sent with an
//! idempotency key, so that a retry returns that outcome instead of writing
//! again.

use async_trait::async_trait;
use memlayer_domain::{DomainError, TenantId, Timestamp};

use crate::StoreError;

/// A caller's idempotency key: 1 to [`IdempotencyKey::MAX_LEN`] visible
/// ASCII characters (`!` to `~`; no spaces, no control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key accepted, in characters.
    pub const MAX_LEN: usize = 255;

    /// Parses a key.
    ///
    /// # Errors
    /// A [`DomainError`] on `Idempotency-Key` when `s` is empty, longer than
    /// [`IdempotencyKey::MAX_LEN`] or has a character outside `!`..=`~`.
    pub fn parse(s: impl Into<String>) -> Result<Self, DomainError> {
        let s = s.into();
        if s.is_empty() {
            return Err(DomainError::new("Idempotency-Key", "must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(DomainError::new(
                "Idempotency-Key",
                format!("is {} characters long; at most {} are accepted", s.len(), Self::MAX_LEN),
            ));
        }
        if let Some(at) = s.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(DomainError::new(
                "Idempotency-Key",
                format!("character {} is not visible ASCII; use only `!` to `~` (no spaces)", at + 1),
            ));
        }
        Ok(Self(s))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A digest (SHA-256) of what makes two requests the same request: method,
/// path with query, and body. Computed by the frontend; stores compare it
/// byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Wraps a 32-byte digest.
    #[must_use]
    pub fn new(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a stored digest back.
    ///
    /// # Errors
    /// A [`DomainError`] when `bytes` is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DomainError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| DomainError::new("fingerprint", format!("is {} bytes long, not 32", bytes.len())))
    }
}

/// The recorded outcome of a completed request: its HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code (100 to 599).
    pub status: u16,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No live record existed: one is now in progress and the caller holds
    /// it; it must [`complete`](IdempotencyStore::complete) or
    /// [`release`](IdempotencyStore::release) it.
    New,
    /// The same request completed before: here is its response.
    Replay(StoredResponse),
    /// The key was used with another request (another fingerprint).
    Mismatch,
    /// The same request is in progress (or its holder stopped before
    /// recording an outcome, which stays unknown until the record expires).
    InProgress,
}

/// Durable idempotency records, one per tenant and key.
///
/// A record is live until its `expires_at`; from that instant on it counts
/// as absent (and may be purged). Keys are per tenant: the same key of two
/// tenants is two records that never meet.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `key` for a request with `fingerprint`.
    ///
    /// MUST, when the tenant has no live record of `key` (none, or one whose
    /// `expires_at <= now`), store an in-progress record with `fingerprint`
    /// and `expires_at` (replacing an expired one) and return [`Claim::New`];
    /// MUST otherwise return [`Claim::Mismatch`] when the live record's
    /// fingerprint differs, [`Claim::Replay`] with the recorded response when
    /// it was completed, and [`Claim::InProgress`] when it was neither
    /// completed nor released, changing nothing in these three cases;
    /// MUST be atomic: of concurrent claims of one absent key exactly one
    /// gets `New`; MUST return `Invalid` when `expires_at` is not after `now`.
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim, StoreError>;

    /// Records the outcome of the in-progress claim of `key` with
    /// `fingerprint`, so that later claims replay it.
    ///
    /// MUST return `NotFound` and change nothing when the tenant holds no
    /// in-progress record of `key` with `fingerprint` (released, completed,
    /// replaced after expiry, or never claimed); MUST return `Invalid` for a
    /// status outside 100 to 599.
    async fn complete(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), StoreError>;

    /// Drops the in-progress claim of `key` with `fingerprint`, for a request
    /// that certainly wrote nothing, so that the next claim gets `New`.
    ///
    /// MUST return `NotFound` and change nothing when the tenant holds no
    /// in-progress record of `key` with `fingerprint` (a completed record is
    /// never released).
    async fn release(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<(), StoreError>;

    /// Deletes up to `limit` records of any tenant whose `expires_at <= now`,
    /// completed or not, and returns how many it deleted.
    ///
    /// MUST never delete a live record.
    async fn purge_expired(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// Checks what every adapter must refuse before touching storage.
///
/// # Errors
/// `Invalid` when `expires_at` is not after `now`.
pub fn check_claim(now: Timestamp, expires_at: Timestamp) -> Result<(), StoreError> {
    if expires_at <= now {
        return Err(StoreError::Invalid(DomainError::new("expires_at", "must be after now")));
    }
    Ok(())
}

/// Checks a response before it is recorded.
///
/// # Errors
/// `Invalid` for a status outside 100 to 599.
pub fn check_response(response: &StoredResponse) -> Result<(), StoreError> {
    if !(100..=599).contains(&response.status) {
        return Err(StoreError::Invalid(DomainError::new(
            "status",
            format!("{} is not an HTTP status (100 to 599)", response.status),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let check = |s: &str, ok: bool| assert_eq!(IdempotencyKey::parse(s).is_ok(), ok, "{s:?}");
        check("a", true);
        check("550e8400-e29b-41d4-a716-446655440000", true);
        check("!~{}\"'", true);
        check(&"k".repeat(255), true);
        check(&"k".repeat(256), false);
        check("", false);
        check("a b", false);
        check("tab\there", false);
        check("é", false);
        check("nul\0", false);
    }
}
