//! Contract cases of [`crate::KeyStore`]. Each `pub async fn` here takes a
//! fresh [`Backend`] and checks one group of "MUST" sentences from the port
//! docs. `contract_suite!` runs them for every backend; adding a case means
//! adding its name to the macro's key list (the completeness test fails
//! otherwise).

use memlayer_domain::{ApiKey, KeyId, ResourceId, Scope, Scopes, Timestamp, from_micros, to_micros};

use super::Backend;
use super::support::{assert_not_found, tenant};
use crate::{KeyListing, SecretHash, StoreError};

fn id(n: u64) -> KeyId {
    KeyId::parse(format!("{n:016x}")).unwrap()
}

fn hash(n: u8) -> SecretHash {
    let mut h = [n; 32];
    h[31] = 0xfe; // not all one byte, so a truncated or reordered hash differs
    h
}

/// A fixed instant (microsecond precision, as every backend stores it).
fn at(secs: i64) -> Timestamp {
    from_micros(1_764_400_000_000_000 + secs * 1_000_000)
}

/// A key of `tenant_name` created at `created`, with nothing else set.
fn key(n: u64, tenant_name: &str, created: i64) -> ApiKey {
    ApiKey {
        id: id(n),
        tenant: tenant(tenant_name),
        name: None,
        scopes: Scopes::only(Scope::Read),
        resource: None,
        created_at: at(created),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

/// The tenant's first 1,000 keys.
async fn keys_of(b: &Backend, t: &str) -> Result<Vec<ApiKey>, StoreError> {
    b.keys.list_keys(&tenant(t), &KeyListing { resource: None, after: None, limit: 1000 }).await
}

async fn found(b: &Backend, id: &KeyId) -> (ApiKey, SecretHash) {
    b.keys.find_key(id).await.unwrap().unwrap_or_else(|| panic!("key {id} not found"))
}

/// A stored key reads back whole, every field and the hash, byte for byte;
/// a key with nothing optional set reads back so too.
pub async fn keys_round_trip_every_field(b: Backend) {
    let full = ApiKey {
        name: Some("support bot — ünïcode".into()),
        scopes: Scopes::ALL,
        resource: Some(ResourceId::parse("user-42").unwrap()),
        // Odd microseconds: no backend may round them.
        created_at: from_micros(to_micros(at(0)) + 123_457),
        expires_at: Some(from_micros(to_micros(at(3600)) + 1)),
        ..key(1, "acme", 0)
    };
    b.keys.create_key(&full, &hash(1)).await.unwrap();
    assert_eq!(found(&b, &full.id).await, (full.clone(), hash(1)));
    let bare = ApiKey { scopes: Scopes::only(Scope::Write).with(Scope::Admin), ..key(2, "acme", 1) };
    b.keys.create_key(&bare, &hash(2)).await.unwrap();
    assert_eq!(found(&b, &bare.id).await, (bare.clone(), hash(2)));
    assert_eq!(keys_of(&b, "acme").await.unwrap(), vec![bare, full]);
}

/// `find_key` finds a key by id whatever its tenant, revoked and expired
/// keys included, and MUST return `None` for an unknown id.
pub async fn keys_are_found_by_id_across_tenants_or_not_at_all(b: Backend) {
    assert!(b.keys.find_key(&id(1)).await.unwrap().is_none(), "empty store");
    let a = key(1, "tenant-a", 0);
    let other = ApiKey { expires_at: Some(at(1)), ..key(2, "tenant-b", 0) };
    b.keys.create_key(&a, &hash(1)).await.unwrap();
    b.keys.create_key(&other, &hash(2)).await.unwrap();
    b.keys.revoke_key(&tenant("tenant-a"), &a.id, at(5)).await.unwrap();
    let (got, h) = found(&b, &a.id).await;
    assert_eq!((got.tenant.as_str(), got.revoked_at, h), ("tenant-a", Some(at(5)), hash(1)), "revoked, still found");
    assert_eq!(found(&b, &other.id).await, (other, hash(2)), "expired, still found, with its own tenant");
    for unknown in [id(3), id(u64::MAX), id(0)] {
        assert!(b.keys.find_key(&unknown).await.unwrap().is_none(), "{unknown}");
    }
}

/// `create_key` MUST return `Conflict` for an id that exists, in this
/// tenant or another, and the stored key stays as it was.
pub async fn keys_duplicate_id_conflicts_in_any_tenant(b: Backend) {
    let first = key(7, "tenant-a", 0);
    b.keys.create_key(&first, &hash(1)).await.unwrap();
    for (tenant_name, h) in [("tenant-a", hash(2)), ("tenant-b", hash(3))] {
        let again = ApiKey { scopes: Scopes::ALL, ..key(7, tenant_name, 1) };
        let r = b.keys.create_key(&again, &h).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{tenant_name}: expected Conflict, got {r:?}");
    }
    assert_eq!(found(&b, &first.id).await, (first, hash(1)));
    assert!(keys_of(&b, "tenant-b").await.unwrap().is_empty(), "nothing stored for tenant-b");
}

/// `list_keys` returns the tenant's keys newest first, revoked ones
/// included, and MUST NOT return another tenant's.
pub async fn keys_list_is_newest_first_and_tenant_scoped(b: Backend) {
    // Created out of order; two at the same instant (then the larger id first).
    for (n, t, created) in [(1, "tenant-a", 10), (2, "tenant-b", 20), (3, "tenant-a", 30), (4, "tenant-a", 10)] {
        b.keys.create_key(&key(n, t, created), &hash(1)).await.unwrap();
    }
    b.keys.revoke_key(&tenant("tenant-a"), &id(3), at(40)).await.unwrap();
    let listed = keys_of(&b, "tenant-a").await.unwrap();
    let ids: Vec<&KeyId> = listed.iter().map(|k| &k.id).collect();
    assert_eq!(ids, [&id(3), &id(4), &id(1)]);
    assert_eq!(listed[0].revoked_at, Some(at(40)), "revoked keys are listed");
    assert!(listed.iter().all(|k| k.tenant == tenant("tenant-a")));
    let other = keys_of(&b, "tenant-b").await.unwrap();
    assert_eq!(other, vec![key(2, "tenant-b", 20)]);
    assert!(keys_of(&b, "nobody").await.unwrap().is_empty());
}

/// `revoke_key` marks the key revoked and returns it; revoking again keeps
/// the first time; it MUST return `NotFound` for another tenant's key (which
/// stays usable) as for an unknown one.
pub async fn keys_revoke_keeps_the_first_time_and_is_tenant_scoped(b: Backend) {
    let k = ApiKey { name: Some("ci".into()), ..key(1, "tenant-a", 0) };
    b.keys.create_key(&k, &hash(1)).await.unwrap();
    assert_not_found(b.keys.revoke_key(&tenant("tenant-b"), &k.id, at(1)).await, "another tenant's key");
    assert_not_found(b.keys.revoke_key(&tenant("tenant-a"), &id(2), at(1)).await, "an unknown key");
    assert_eq!(found(&b, &k.id).await.0.revoked_at, None, "untouched by the refused revocations");
    let revoked = b.keys.revoke_key(&tenant("tenant-a"), &k.id, at(5)).await.unwrap();
    assert_eq!(revoked, ApiKey { revoked_at: Some(at(5)), ..k.clone() });
    let again = b.keys.revoke_key(&tenant("tenant-a"), &k.id, at(9)).await.unwrap();
    assert_eq!(again.revoked_at, Some(at(5)), "the first revocation's time stays");
    assert_eq!(found(&b, &k.id).await, (revoked, hash(1)));
}

/// `record_key_use` records many keys in one call: each key's latest time,
/// never moving back; unknown ids are ignored; a batch larger than one
/// statement's share is recorded whole.
pub async fn keys_last_use_is_recorded_in_batches_and_only_moves_forward(b: Backend) {
    let (a, other) = (key(1, "tenant-a", 0), key(2, "tenant-b", 0));
    b.keys.create_key(&a, &hash(1)).await.unwrap();
    b.keys.create_key(&other, &hash(2)).await.unwrap();
    b.keys.record_key_use(&[]).await.unwrap();
    b.keys.record_key_use(&[(id(1), at(5)), (id(2), at(3)), (id(99), at(9)), (id(1), at(4))]).await.unwrap();
    assert_eq!(found(&b, &a.id).await.0.last_used_at, Some(at(5)), "the latest of the batch");
    assert_eq!(found(&b, &other.id).await.0.last_used_at, Some(at(3)), "another tenant's key in the same batch");
    assert!(b.keys.find_key(&id(99)).await.unwrap().is_none(), "an unknown id is not created");
    b.keys.record_key_use(&[(id(1), at(2))]).await.unwrap();
    assert_eq!(found(&b, &a.id).await.0.last_used_at, Some(at(5)), "an older time is ignored");
    // Over a thousand distinct ids, the two real ones at either end.
    let mut batch = vec![(id(1), at(7))];
    batch.extend((1_000..2_100).map(|n| (id(n), at(8))));
    batch.push((id(2), at(8)));
    b.keys.record_key_use(&batch).await.unwrap();
    assert_eq!(found(&b, &a.id).await.0.last_used_at, Some(at(7)));
    assert_eq!(found(&b, &other.id).await.0.last_used_at, Some(at(8)));
    let listed = keys_of(&b, "tenant-a").await.unwrap();
    assert_eq!(listed.iter().map(|k| k.last_used_at).collect::<Vec<_>>(), [Some(at(7))]);
}

/// `list_keys` pages newest first from after a key, narrows to a resource's
/// keys, and MUST return `Invalid` on `after` when it names no key of the
/// tenant (another tenant's key included).
pub async fn keys_list_pages_by_cursor_and_resource(b: Backend) {
    // Seven keys, two at the same instant; every other one bound to `u1`.
    for n in 1..=7u64 {
        let resource = (n % 2 == 1).then(|| ResourceId::parse("u1").unwrap());
        let created = if n == 4 { 3 } else { i64::try_from(n).unwrap() };
        b.keys.create_key(&ApiKey { resource, ..key(n, "tenant-a", created) }, &hash(1)).await.unwrap();
    }
    b.keys.create_key(&key(9, "tenant-b", 0), &hash(1)).await.unwrap();
    let everything: Vec<KeyId> = keys_of(&b, "tenant-a").await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(everything, [id(7), id(6), id(5), id(4), id(3), id(2), id(1)]);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let listing = KeyListing { resource: None, after: after.clone(), limit: 3 };
        let page = b.keys.list_keys(&tenant("tenant-a"), &listing).await.unwrap();
        assert!(page.len() <= 3);
        after = page.last().map(|k| k.id.clone());
        paged.extend(page.into_iter().map(|k| k.id));
        if after.is_none() {
            break;
        }
    }
    assert_eq!(paged, everything, "pages of 3 walk the same order, nothing repeated or skipped");
    let u1 = KeyListing { resource: Some(ResourceId::parse("u1").unwrap()), after: Some(id(5)), limit: 10 };
    let bound: Vec<KeyId> =
        b.keys.list_keys(&tenant("tenant-a"), &u1).await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(bound, [id(3), id(1)], "only u1's keys, after key 5");
    for unknown in [id(8), id(9)] {
        let listing = KeyListing { resource: None, after: Some(unknown.clone()), limit: 10 };
        let r = b.keys.list_keys(&tenant("tenant-a"), &listing).await;
        assert!(matches!(&r, Err(StoreError::Invalid(e)) if e.field == "after"), "{unknown}: {r:?}");
    }
}
