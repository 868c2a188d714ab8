//! API keys: [`KeyService`] creates, lists and revokes them over a
//! [`KeyStore`], and is the [`Verifier`] of `auth.mode = api_key`;
//! [`KeysConfig`] is `auth.keys.*`.
//!
//! - A key is `ml_<id>_<secret>`: an id of 8 random bytes and a secret of
//!   32, both from the operating system's generator, in lowercase hex. Only
//!   the SHA-256 of the secret is stored; the whole key is returned once,
//!   when created.
//! - Verifying parses the key, finds its record by id through a small cache
//!   (`auth.keys.cache_ttl_secs`; a revocation through this service drops
//!   the entry at once, one made through another server is seen within the
//!   TTL), compares the hashes in constant time, then refuses a revoked or
//!   expired key. An unknown id and a wrong secret get the same answer, so
//!   the answer never says whether an id exists.
//! - A successful use is remembered in memory and written in one
//!   [`KeyStore::record_key_use`] batch by [`KeyService::flush_uses`]
//!   (every `auth.keys.flush_interval_secs` from
//!   `Services::start_background`, and at shutdown), never once per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use memlayer_domain::{
    ApiKey, Credential, DomainError, KeyId, MAX_PAGE_SIZE, Page, PageSize, PresentedKey, Principal, ResourceId, Scopes,
    TenantId, Timestamp, parse_key_name,
};
use memlayer_ports::{KeyListing, KeyStore, SecretHash, StoreError};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::auth::{AuthError, Verifier};

/// The answer to an unknown key id and to a wrong secret alike.
pub const UNKNOWN_KEY: &str = "unknown API key or wrong secret";

/// Longest lifetime a new key may be given: ten years.
pub const MAX_KEY_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 3600);

/// `auth.keys.*`: how API keys are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Seconds a looked-up key is served from this server's cache (0: no
    /// cache, every request reads the store). A key revoked through this
    /// server is refused at once; one revoked through another server (or
    /// `memlayer keys revoke`) is refused here after at most this long.
    pub cache_ttl_secs: u64,
    /// Most keys the cache holds.
    pub cache_max_entries: u64,
    /// Seconds between writes of the keys' last use (one batch for all keys
    /// used meanwhile; also written at shutdown).
    pub flush_interval_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { cache_ttl_secs: 30, cache_max_entries: 10_000, flush_interval_secs: 60 }
    }
}

impl KeysConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.cache_ttl_secs > 3600 {
            return Err(("auth.keys.cache_ttl_secs", "must be 0 to 3600".into()));
        }
        if self.cache_max_entries == 0 {
            return Err(("auth.keys.cache_max_entries", "must be at least 1".into()));
        }
        if !(1..=3600).contains(&self.flush_interval_secs) {
            return Err(("auth.keys.flush_interval_secs", "must be 1 to 3600".into()));
        }
        Ok(())
    }

    /// How often last uses are written.
    #[must_use]
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs(self.flush_interval_secs)
    }
}

/// What a new key is to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// What it allows (at least one scope).
    pub scopes: Scopes,
    /// The one resource it is bound to, if any.
    pub resource: Option<ResourceId>,
    /// A label for people (1 to 200 bytes, no control characters).
    pub name: Option<String>,
    /// When it stops working (in the future, at most [`MAX_KEY_LIFETIME`]
    /// ahead); `None`: never.
    pub expires_at: Option<Timestamp>,
}

impl NewKey {
    /// A key with `scopes`, bound to nothing, unnamed, never expiring.
    #[must_use]
    pub fn new(scopes: Scopes) -> Self {
        Self { scopes, resource: None, name: None, expires_at: None }
    }
}

/// A key just created: its record, and the key itself, to show once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored record (no secret).
    pub key: ApiKey,
    /// `ml_<id>_<secret>` ([`PresentedKey::reveal`]); never stored, never shown again.
    pub secret: PresentedKey,
}

/// Parses a lifetime such as `90d`, `12h`, `30m` or `45s` (a whole number
/// above zero and one unit), at most [`MAX_KEY_LIFETIME`].
///
/// # Errors
/// What is expected.
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a whole number and a unit, such as 90d, 12h, 30m or 45s";
    let text = text.trim();
    let unit_at = text.len().checked_sub(1).filter(|&i| text.is_char_boundary(i)).ok_or(EXPECTED)?;
    let (number, unit) = text.split_at(unit_at);
    let per_unit: u64 = match unit {
        "d" => 24 * 3600,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(EXPECTED.into()),
    };
    let n: u64 = number.parse().ok().filter(|n| *n > 0).ok_or(EXPECTED)?;
    let secs = n.checked_mul(per_unit).filter(|s| *s <= MAX_KEY_LIFETIME.as_secs());
    secs.map(Duration::from_secs).ok_or_else(|| "must be at most 3650d (ten years)".into())
}

/// Why a credential may not create a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The new key asks for a scope the credential lacks.
    #[error("a credential may grant only scopes it holds: it has `{held}`, the new key asks for `{asked}`")]
    Scopes {
        /// The credential's scopes.
        held: Scopes,
        /// The new key's.
        asked: Scopes,
    },
    /// The credential is bound to a resource and the new key is not bound to it.
    #[error("a credential bound to resource `{0}` may create only keys bound to `{0}`: set resource_id to it")]
    Resource(ResourceId),
}

/// Whether `grantor` may create `new`: only with scopes it holds itself,
/// and, when it is bound to a resource, only a key bound to the same one.
///
/// # Errors
/// [`GrantError`], for a 403.
pub fn check_grant(grantor: &Principal, new: &NewKey) -> Result<(), GrantError> {
    if !new.scopes.iter().all(|s| grantor.may(s)) {
        return Err(GrantError::Scopes { held: grantor.scopes, asked: new.scopes });
    }
    if let Some(bound) = &grantor.resource
        && new.resource.as_ref() != Some(bound)
    {
        return Err(GrantError::Resource(bound.clone()));
    }
    Ok(())
}

/// What the cache keeps of a stored key.
#[derive(Debug)]
struct Stored {
    key: ApiKey,
    hash: SecretHash,
}

fn sha256(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// `n` random bytes from the operating system, in lowercase hex.
fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("the operating system's random generator failed: {e}")))?;
    Ok(bytes.iter().fold(String::with_capacity(2 * n), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// API keys: create, list, revoke, and check them (see the module doc).
#[derive(Clone)]
pub struct KeyService {
    store: Arc<dyn KeyStore>,
    cache: Option<Cache<KeyId, Option<Arc<Stored>>>>,
    /// Bumped by every revocation, so a lookup that raced one never caches
    /// what it read before it (as the catalog's cache does for writes).
    revocations: Arc<AtomicU64>,
    /// Last use per key since the last flush.
    uses: Arc<Mutex<HashMap<KeyId, Timestamp>>>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("store", &self.store)
            .field("cached", &self.cache.as_ref().map(Cache::entry_count))
            .finish_non_exhaustive()
    }
}

impl KeyService {
    /// A service over `store`, caching lookups as `config` says.
    #[must_use]
    pub fn new(store: Arc<dyn KeyStore>, config: &KeysConfig) -> Self {
        let cache = (config.cache_ttl_secs > 0).then(|| {
            Cache::builder()
                .max_capacity(config.cache_max_entries)
                .time_to_live(Duration::from_secs(config.cache_ttl_secs))
                .build()
        });
        Self { store, cache, revocations: Arc::new(AtomicU64::new(0)), uses: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Creates a key for `tenant`: fresh id and secret, the secret's hash
    /// stored. Returns the record and the key to show once.
    ///
    /// # Errors
    /// `Invalid` (naming the field) for no scope, a bad name or an expiry
    /// not in the future or too far; the store's errors otherwise.
    pub async fn create(&self, tenant: &TenantId, new: NewKey) -> Result<CreatedKey, StoreError> {
        let now = memlayer_domain::now();
        if new.scopes.is_empty() {
            return Err(DomainError::new("scopes", "at least one of read, write, admin is required").into());
        }
        let name = new.name.as_deref().map(parse_key_name).transpose()?;
        if let Some(at) = new.expires_at
            && (at <= now || at > now + MAX_KEY_LIFETIME)
        {
            return Err(DomainError::new("expires", "must be in the future, at most ten years ahead").into());
        }
        // 64 random bits of id: a collision is a retry, not an error.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let id = KeyId::parse(random_hex(8)?)?;
            let secret = PresentedKey::new(id.clone(), random_hex(32)?)?;
            let key = ApiKey {
                id: id.clone(),
                tenant: tenant.clone(),
                name: name.clone(),
                scopes: new.scopes,
                resource: new.resource.clone(),
                created_at: now,
                expires_at: new.expires_at,
                revoked_at: None,
                last_used_at: None,
            };
            match self.store.create_key(&key, &sha256(secret.secret())).await {
                Ok(()) => {
                    if let Some(cache) = &self.cache {
                        // A lookup of the id before it existed may be cached as unknown.
                        cache.invalidate(&id).await;
                    }
                    return Ok(CreatedKey { key, secret });
                }
                Err(StoreError::Conflict(_)) if attempts < 3 => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A page of the tenant's keys, newest first, revoked ones included,
    /// from after the key `cursor` (the previous page's `next_cursor`);
    /// `resource` narrows it to the keys bound to that resource. With
    /// `bound`, only keys bound to that resource are listed: asking for
    /// another resource's gives an empty page.
    ///
    /// # Errors
    /// `Invalid` on `cursor` when it names no key of the tenant; the store's.
    pub async fn list(
        &self,
        tenant: &TenantId,
        bound: Option<&ResourceId>,
        resource: Option<&ResourceId>,
        cursor: Option<KeyId>,
        limit: PageSize,
    ) -> Result<Page<ApiKey, KeyId>, StoreError> {
        if let (Some(b), Some(r)) = (bound, resource)
            && b != r
        {
            return Ok(Page { items: Vec::new(), next_cursor: None });
        }
        let listing = KeyListing { resource: bound.or(resource).cloned(), after: cursor, limit: limit.get() };
        let items = self.store.list_keys(tenant, &listing).await.map_err(|e| match e {
            StoreError::Invalid(e) if e.field == "after" => StoreError::Invalid(DomainError::new("cursor", e.reason)),
            e => e,
        })?;
        let full = items.len() == usize::try_from(limit.get()).unwrap_or(usize::MAX);
        let next_cursor = if full { items.last().map(|k| k.id.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Every key of the tenant (all pages), newest first: the CLI's listing.
    ///
    /// # Errors
    /// The store's.
    pub async fn list_all(&self, tenant: &TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(tenant, None, None, cursor, PageSize::new(MAX_PAGE_SIZE)?).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// Revokes the tenant's key `id` (with `bound`, only a key bound to that
    /// resource); it is refused by this server from now on, by others within
    /// `auth.keys.cache_ttl_secs`. Revoking a revoked key keeps its first time.
    ///
    /// # Errors
    /// `NotFound` for a key of another tenant or resource, as for an unknown one.
    pub async fn revoke(
        &self,
        tenant: &TenantId,
        bound: Option<&ResourceId>,
        id: &KeyId,
    ) -> Result<ApiKey, StoreError> {
        if let Some(r) = bound {
            let visible = self
                .store
                .find_key(id)
                .await?
                .is_some_and(|(k, _)| k.tenant == *tenant && k.resource.as_ref() == Some(r));
            if !visible {
                return Err(StoreError::not_found("API key", id));
            }
        }
        let revoked = self.store.revoke_key(tenant, id, memlayer_domain::now()).await;
        self.revocations.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate(id).await;
        }
        revoked
    }

    /// Writes the last use of every key used since the previous flush, in
    /// one batch; returns how many keys it recorded. On failure the uses
    /// are kept for the next flush.
    ///
    /// # Errors
    /// The store's.
    pub async fn flush_uses(&self) -> Result<usize, StoreError> {
        let uses: Vec<(KeyId, Timestamp)> = {
            let mut pending = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *pending).into_iter().collect()
        };
        if uses.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.record_key_use(&uses).await {
            let mut pending = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, at) in uses {
                let t = pending.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
            return Err(e);
        }
        Ok(uses.len())
    }

    /// The stored key `id`, through the cache.
    async fn lookup(&self, id: &KeyId) -> Result<Option<Arc<Stored>>, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(self.store.find_key(id).await?.map(|(key, hash)| Arc::new(Stored { key, hash })));
        };
        if let Some(hit) = cache.get(id).await {
            return Ok(hit);
        }
        let generation = self.revocations.load(Ordering::Acquire);
        let found = self.store.find_key(id).await?.map(|(key, hash)| Arc::new(Stored { key, hash }));
        if self.revocations.load(Ordering::Acquire) == generation {
            cache.insert(id.clone(), found.clone()).await;
        }
        Ok(found)
    }

    fn used(&self, id: &KeyId, at: Timestamp) {
        let mut pending = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        let t = pending.entry(id.clone()).or_insert(at);
        *t = (*t).max(at);
    }
}

#[async_trait]
impl Verifier for KeyService {
    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let presented = PresentedKey::parse(token).map_err(|e| AuthError::Invalid(format!("malformed {e}")))?;
        // Hashed before the lookup, so an unknown id costs what a wrong secret does.
        let hash = sha256(presented.secret());
        let stored = self.lookup(presented.id()).await?;
        let Some(stored) = stored.filter(|s| bool::from(s.hash.ct_eq(&hash))) else {
            return Err(AuthError::Invalid(UNKNOWN_KEY.into()));
        };
        let now = memlayer_domain::now();
        if let Some(why) = stored.key.refusal(now) {
            return Err(AuthError::Invalid(why.into()));
        }
        self.used(&stored.key.id, now);
        Ok(Principal {
            tenant: stored.key.tenant.clone(),
            scopes: stored.key.scopes,
            resource: stored.key.resource.clone(),
            credential: Credential::ApiKey(stored.key.id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
    use memlayer_domain::Scope;
    use memlayer_ports::MockKeyStore;

    use super::*;

    async fn store() -> Arc<LibsqlBackend> {
        Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap())
    }

    fn service(store: Arc<dyn KeyStore>, cache_ttl_secs: u64) -> KeyService {
        KeyService::new(store, &KeysConfig { cache_ttl_secs, ..KeysConfig::default() })
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn invalid(r: Result<Principal, AuthError>) -> String {
        match r {
            Err(AuthError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn read_write() -> Scopes {
        Scopes::only(Scope::Read).with(Scope::Write)
    }

    #[tokio::test]
    async fn a_created_key_verifies_into_its_principal_and_only_its_hash_is_stored() {
        let store = store().await;
        let keys = service(store.clone(), 30);
        let new = NewKey {
            resource: Some(ResourceId::parse("user-42").unwrap()),
            name: Some("  ci  ".into()),
            ..NewKey::new(read_write())
        };
        let created = keys.create(&tenant("acme"), new).await.unwrap();
        let token = created.secret.reveal();
        assert_eq!(token.len(), 3 + 16 + 1 + 64, "{token}");
        assert_eq!(created.key.name.as_deref(), Some("ci"));
        let (stored, hash) = store.find_key(&created.key.id).await.unwrap().unwrap();
        assert_eq!(stored, created.key);
        assert_eq!(hash, sha256(created.secret.secret()), "the SHA-256 of the secret");
        assert_ne!(hash[..], created.secret.secret().as_bytes()[..32], "not the secret itself");
        let principal = keys.verify(&token).await.unwrap();
        assert_eq!(
            principal,
            Principal {
                tenant: tenant("acme"),
                scopes: read_write(),
                resource: Some(ResourceId::parse("user-42").unwrap()),
                credential: Credential::ApiKey(created.key.id.clone()),
            }
        );
        let other = keys.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap();
        assert_ne!(other.key.id, created.key.id);
        assert_ne!(other.secret.secret(), created.secret.secret());
    }

    #[tokio::test]
    async fn an_unknown_id_and_a_wrong_secret_get_the_same_answer() {
        let keys = service(store().await, 30);
        let created = keys.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap();
        let wrong_secret = format!("ml_{}_{}", created.key.id, "0".repeat(64));
        let unknown_id = format!("ml_{}_{}", "f".repeat(16), created.secret.secret());
        assert_eq!(invalid(keys.verify(&wrong_secret).await), UNKNOWN_KEY);
        assert_eq!(invalid(keys.verify(&unknown_id).await), UNKNOWN_KEY);
        // Again from the cache: the same.
        assert_eq!(invalid(keys.verify(&wrong_secret).await), UNKNOWN_KEY);
        assert_eq!(invalid(keys.verify(&unknown_id).await), UNKNOWN_KEY);
        let malformed = invalid(keys.verify("ml_nothex_x").await);
        assert!(malformed.starts_with("malformed api_key: expected `ml_<16"), "{malformed}");
        keys.verify(&created.secret.reveal()).await.unwrap();
    }

    #[tokio::test]
    async fn a_key_revoked_here_is_refused_at_once_even_when_cached() {
        let keys = service(store().await, 3600);
        let created = keys.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap();
        let token = created.secret.reveal();
        keys.verify(&token).await.unwrap();
        let revoked = keys.revoke(&tenant("acme"), None, &created.key.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(invalid(keys.verify(&token).await), "the API key is revoked");
        let r = keys.revoke(&tenant("other"), None, &created.key.id).await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "another tenant's key: {r:?}");
    }

    #[tokio::test]
    async fn a_revocation_elsewhere_is_seen_within_the_cache_ttl() {
        let store = store().await;
        let (cached, elsewhere) = (service(store.clone(), 3600), service(store.clone(), 30));
        let uncached = service(store.clone(), 0);
        let created = cached.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap();
        let token = created.secret.reveal();
        cached.verify(&token).await.unwrap();
        uncached.verify(&token).await.unwrap();
        elsewhere.revoke(&tenant("acme"), None, &created.key.id).await.unwrap();
        assert_eq!(invalid(uncached.verify(&token).await), "the API key is revoked", "no cache: at once");
        // The documented bound: another server's cache serves the key until its TTL.
        cached.verify(&token).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_key_is_refused_after_its_secret_matches() {
        let store = store().await;
        let keys = service(store.clone(), 30);
        let now = memlayer_domain::now();
        let soon = NewKey { expires_at: Some(now + Duration::from_millis(50)), ..NewKey::new(read_write()) };
        let created = keys.create(&tenant("acme"), soon).await.unwrap();
        let token = created.secret.reveal();
        // Wait until the expiry has passed (no timing is measured).
        while memlayer_domain::now() <= now + Duration::from_millis(50) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(invalid(keys.verify(&token).await), "the API key has expired");
        let wrong = format!("ml_{}_{}", created.key.id, "1".repeat(64));
        assert_eq!(invalid(keys.verify(&wrong).await), UNKNOWN_KEY, "a wrong secret learns nothing of the key");
    }

    #[tokio::test]
    async fn uses_are_written_in_one_batch_per_flush_not_per_request() {
        let store = store().await;
        let keys = service(store.clone(), 30);
        let (a, b) = (
            keys.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap(),
            keys.create(&tenant("other"), NewKey::new(read_write())).await.unwrap(),
        );
        for _ in 0..3 {
            keys.verify(&a.secret.reveal()).await.unwrap();
        }
        keys.verify(&b.secret.reveal()).await.unwrap();
        assert_eq!(store.find_key(&a.key.id).await.unwrap().unwrap().0.last_used_at, None, "nothing written yet");
        assert_eq!(keys.flush_uses().await.unwrap(), 2, "one entry per key");
        for k in [&a, &b] {
            assert!(store.find_key(&k.key.id).await.unwrap().unwrap().0.last_used_at.is_some());
        }
        assert_eq!(keys.flush_uses().await.unwrap(), 0, "nothing new");
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_uses_for_the_next() {
        let id = KeyId::parse("0123456789abcdef").unwrap();
        let key = ApiKey {
            id: id.clone(),
            tenant: tenant("acme"),
            name: None,
            scopes: read_write(),
            resource: None,
            created_at: memlayer_domain::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let secret = "ab".repeat(32);
        let mut store = MockKeyStore::new();
        let (found, hash) = (key.clone(), sha256(&secret));
        store.expect_find_key().returning(move |_| Ok(Some((found.clone(), hash))));
        let mut calls = 0;
        store.expect_record_key_use().times(2).returning(move |uses| {
            calls += 1;
            assert_eq!(uses.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["0123456789abcdef"]);
            if calls == 1 { Err(StoreError::Unavailable("down".into())) } else { Ok(()) }
        });
        let keys = service(Arc::new(store), 30);
        keys.verify(&format!("ml_{id}_{secret}")).await.unwrap();
        assert!(keys.flush_uses().await.is_err());
        assert_eq!(keys.flush_uses().await.unwrap(), 1, "retried with the same use");
        assert_eq!(keys.flush_uses().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_is_unavailable_not_a_refusal() {
        let mut store = MockKeyStore::new();
        store.expect_find_key().returning(|_| Err(StoreError::Unavailable("down".into())));
        let keys = service(Arc::new(store), 30);
        let r = keys.verify(&format!("ml_{}_{}", "a".repeat(16), "b".repeat(64))).await;
        assert!(matches!(r, Err(AuthError::Unavailable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn bad_new_keys_are_refused_naming_the_field() {
        let keys = service(store().await, 30);
        let now = memlayer_domain::now();
        for (new, field) in [
            (NewKey::new(Scopes::NONE), "scopes"),
            (NewKey { name: Some(" ".into()), ..NewKey::new(read_write()) }, "name"),
            (NewKey { expires_at: Some(now), ..NewKey::new(read_write()) }, "expires"),
            (
                NewKey {
                    expires_at: Some(now + MAX_KEY_LIFETIME + Duration::from_secs(60)),
                    ..NewKey::new(read_write())
                },
                "expires",
            ),
        ] {
            match keys.create(&tenant("acme"), new.clone()).await {
                Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "{new:?}"),
                other => panic!("{new:?}: expected Invalid, got {other:?}"),
            }
        }
        assert!(keys.list_all(&tenant("acme")).await.unwrap().is_empty(), "nothing stored");
    }

    #[tokio::test]
    async fn a_key_bound_to_a_resource_sees_and_revokes_only_that_resource_s_keys() {
        let keys = service(store().await, 30);
        let r = |s: &str| ResourceId::parse(s).unwrap();
        let bound = |s: &str| NewKey { resource: Some(r(s)), ..NewKey::new(read_write()) };
        let mine = keys.create(&tenant("acme"), bound("u1")).await.unwrap();
        let theirs = keys.create(&tenant("acme"), bound("u2")).await.unwrap();
        let unbound = keys.create(&tenant("acme"), NewKey::new(read_write())).await.unwrap();
        let listed = keys.list(&tenant("acme"), Some(&r("u1")), None, None, PageSize::default()).await.unwrap().items;
        assert_eq!(listed.iter().map(|k| &k.id).collect::<Vec<_>>(), [&mine.key.id]);
        assert_eq!(keys.list_all(&tenant("acme")).await.unwrap().len(), 3);
        let (acme, u1, u2) = (tenant("acme"), r("u1"), r("u2"));
        let theirs_asked = keys.list(&acme, Some(&u1), Some(&u2), None, PageSize::default()).await.unwrap();
        assert!(theirs_asked.items.is_empty(), "another resource's keys are not listed to a bound key");
        for other in [&theirs, &unbound] {
            let r = keys.revoke(&tenant("acme"), Some(&r("u1")), &other.key.id).await;
            assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
        }
        keys.revoke(&tenant("acme"), Some(&r("u1")), &mine.key.id).await.unwrap();
        keys.verify(&theirs.secret.reveal()).await.unwrap();
        keys.verify(&unbound.secret.reveal()).await.unwrap();
    }

    #[test]
    fn a_grant_never_exceeds_the_grantor() {
        let principal = |scopes: Scopes, resource: Option<&str>| Principal {
            tenant: tenant("acme"),
            scopes,
            resource: resource.map(|r| ResourceId::parse(r).unwrap()),
            credential: Credential::Anonymous,
        };
        let new = |scopes: Scopes, resource: Option<&str>| NewKey {
            resource: resource.map(|r| ResourceId::parse(r).unwrap()),
            ..NewKey::new(scopes)
        };
        let admin_read = Scopes::only(Scope::Admin).with(Scope::Read);
        for (grantor, wanted, ok) in [
            (principal(Scopes::ALL, None), new(Scopes::ALL, None), true),
            (principal(Scopes::ALL, None), new(Scopes::only(Scope::Read), Some("u1")), true),
            (principal(admin_read, None), new(Scopes::only(Scope::Read), None), true),
            (principal(admin_read, None), new(admin_read, None), true),
            (principal(admin_read, None), new(Scopes::only(Scope::Write), None), false),
            (principal(admin_read, None), new(Scopes::ALL, None), false),
            (principal(Scopes::ALL, Some("u1")), new(Scopes::ALL, Some("u1")), true),
            (principal(Scopes::ALL, Some("u1")), new(Scopes::ALL, Some("u2")), false),
            (principal(Scopes::ALL, Some("u1")), new(Scopes::ALL, None), false),
        ] {
            assert_eq!(check_grant(&grantor, &wanted).is_ok(), ok, "{grantor:?} granting {wanted:?}");
        }
    }

    #[test]
    fn lifetimes_take_one_unit() {
        for (text, secs) in [("90d", 90 * 86_400), ("12h", 43_200), ("30m", 1_800), ("45s", 45), (" 1d ", 86_400)] {
            assert_eq!(parse_lifetime(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_lifetime("3650d"), Ok(MAX_KEY_LIFETIME));
        for bad in ["", "d", "0d", "-1d", "1.5h", "1w", "90", "1dd", "3651d", "99999999999999999999d", "é", "1é"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_and_flush_settings_are_bounded() {
        assert!(KeysConfig::default().validate().is_ok());
        for (bad, key) in [
            (KeysConfig { cache_ttl_secs: 3601, ..KeysConfig::default() }, "auth.keys.cache_ttl_secs"),
            (KeysConfig { cache_max_entries: 0, ..KeysConfig::default() }, "auth.keys.cache_max_entries"),
            (KeysConfig { flush_interval_secs: 0, ..KeysConfig::default() }, "auth.keys.flush_interval_secs"),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, key);
        }
        assert!(KeysConfig { cache_ttl_secs: 0, ..KeysConfig::default() }.validate().is_ok(), "0: no cache");
    }
}
