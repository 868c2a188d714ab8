//! [`KeyStore`]: API keys, stored with a hash of their secret.

use async_trait::async_trait;
use memlayer_domain::{ApiKey, KeyId, ResourceId, TenantId, Timestamp};

use crate::StoreError;

/// SHA-256 of an API key's secret part. The secret itself is never stored.
pub type SecretHash = [u8; 32];

/// Which page of a tenant's keys to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    /// Only keys bound to this resource; `None`: every key.
    pub resource: Option<ResourceId>,
    /// Start after this key (the last one of the previous page).
    pub after: Option<KeyId>,
    /// At most this many keys (at least 1).
    pub limit: u32,
}

/// API keys. Keys are found by their id alone (the id is how a request's
/// tenant is learnt), every other call is scoped by the tenant.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Stores a new key with the hash of its secret.
    ///
    /// MUST return `Conflict` when a key with this id exists (in any tenant).
    async fn create_key(&self, key: &ApiKey, secret_hash: &SecretHash) -> Result<(), StoreError>;

    /// The key with this id and its secret's hash, whatever its tenant,
    /// revoked and expired keys included (the caller decides).
    ///
    /// MUST return `None` for an unknown id.
    async fn find_key(&self, id: &KeyId) -> Result<Option<(ApiKey, SecretHash)>, StoreError>;

    /// A page of the tenant's keys, newest first (by creation time, then
    /// id, descending), revoked ones included, narrowed to one resource's
    /// keys when the listing says so. Never the hashes.
    ///
    /// MUST NOT return another tenant's keys, and MUST return `Invalid` on
    /// `after` when it names no key of the tenant.
    async fn list_keys(&self, tenant: &TenantId, listing: &KeyListing) -> Result<Vec<ApiKey>, StoreError>;

    /// Marks the key revoked at `at` and returns it; revoking a revoked key
    /// keeps the first time.
    ///
    /// MUST return `NotFound` for a key of another tenant, as for an unknown one.
    async fn revoke_key(&self, tenant: &TenantId, id: &KeyId, at: Timestamp) -> Result<ApiKey, StoreError>;

    /// Records when keys were last used, in one write for many keys. A time
    /// older than the one stored is ignored; unknown ids are ignored.
    async fn record_key_use(&self, uses: &[(KeyId, Timestamp)]) -> Result<(), StoreError>;
}
