//! Contract cases of [`crate::IdempotencyStore`]. Each `pub async fn` here
//! takes a fresh [`Backend`] and checks one group of "MUST" sentences from
//! the port docs. `contract_suite!` runs them for every backend; adding a
//! case means adding its name to the macro's idempotency list (the
//! completeness test fails otherwise).

use std::sync::Arc;

use memlayer_domain::{TenantId, Timestamp, from_micros, to_micros};

use super::Backend;
use crate::{Claim, Fingerprint, IdempotencyKey, StoreError, StoredResponse};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

fn fp(n: u8) -> Fingerprint {
    let mut d = [n; 32];
    d[0] = 0xfe; // not all one byte, so a truncated or reordered digest differs
    Fingerprint::new(d)
}

fn response(status: u16, body: &[u8]) -> StoredResponse {
    StoredResponse { status, body: body.to_vec() }
}

/// A fixed instant (microsecond precision, as every backend stores it).
fn t0() -> Timestamp {
    from_micros(1_764_400_000_000_000)
}

fn at(secs: i64) -> Timestamp {
    from_micros(to_micros(t0()) + secs * 1_000_000)
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, ctx: &str) {
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{ctx}: expected NotFound, got {r:?}");
}

/// Claim, in progress, complete, replay (every byte of the body), and a
/// completed record is neither completed again nor released.
pub async fn idempotency_claim_complete_then_replay(b: Backend) {
    let s = &b.idempotency;
    let (t, k) = (tenant("acme"), key("req-1"));
    assert_eq!(s.claim(&t, &k, fp(1), at(0), at(60)).await.unwrap(), Claim::New);
    assert_eq!(s.claim(&t, &k, fp(1), at(1), at(61)).await.unwrap(), Claim::InProgress, "held, not completed");
    // Not UTF-8, a NUL, and long: stored byte for byte.
    let mut body = vec![0xff, 0x00, b'{', b'}'];
    body.extend((0..200_000u32).map(|i| (i % 251) as u8));
    s.complete(&t, &k, fp(1), response(201, &body)).await.unwrap();
    for i in 0..2 {
        assert_eq!(
            s.claim(&t, &k, fp(1), at(2 + i), at(62 + i)).await.unwrap(),
            Claim::Replay(response(201, &body)),
            "replay {i}"
        );
    }
    assert_not_found(s.complete(&t, &k, fp(1), response(500, b"")).await, "complete twice");
    assert_not_found(s.release(&t, &k, fp(1)).await, "release a completed record");
    assert_eq!(s.claim(&t, &k, fp(1), at(3), at(63)).await.unwrap(), Claim::Replay(response(201, &body)));

    let empty = key("req-empty");
    assert_eq!(s.claim(&t, &empty, fp(2), at(0), at(60)).await.unwrap(), Claim::New);
    s.complete(&t, &empty, fp(2), response(204, b"")).await.unwrap();
    assert_eq!(s.claim(&t, &empty, fp(2), at(1), at(61)).await.unwrap(), Claim::Replay(response(204, b"")));
}

/// Another fingerprint under a live key is a mismatch, in progress or
/// completed, and changes nothing; it cannot complete or release the claim.
pub async fn idempotency_other_fingerprint_is_a_mismatch(b: Backend) {
    let s = &b.idempotency;
    let (t, k) = (tenant("acme"), key("k"));
    assert_eq!(s.claim(&t, &k, fp(1), at(0), at(60)).await.unwrap(), Claim::New);
    assert_eq!(s.claim(&t, &k, fp(2), at(1), at(61)).await.unwrap(), Claim::Mismatch, "while in progress");
    assert_not_found(s.complete(&t, &k, fp(2), response(201, b"x")).await, "complete with another fingerprint");
    assert_not_found(s.release(&t, &k, fp(2)).await, "release with another fingerprint");
    assert_eq!(s.claim(&t, &k, fp(1), at(2), at(62)).await.unwrap(), Claim::InProgress, "the holder's claim stays");
    s.complete(&t, &k, fp(1), response(201, b"first")).await.unwrap();
    assert_eq!(s.claim(&t, &k, fp(2), at(3), at(63)).await.unwrap(), Claim::Mismatch, "once completed");
    assert_eq!(s.claim(&t, &k, fp(1), at(4), at(64)).await.unwrap(), Claim::Replay(response(201, b"first")));
}

/// A released claim frees the key for the next claim, with any fingerprint;
/// releasing or completing what is not held is `NotFound`.
pub async fn idempotency_release_frees_the_key(b: Backend) {
    let s = &b.idempotency;
    let (t, k) = (tenant("acme"), key("k"));
    assert_not_found(s.release(&t, &k, fp(1)).await, "release never claimed");
    assert_not_found(s.complete(&t, &k, fp(1), response(201, b"x")).await, "complete never claimed");
    assert_eq!(s.claim(&t, &k, fp(1), at(0), at(60)).await.unwrap(), Claim::New);
    s.release(&t, &k, fp(1)).await.unwrap();
    assert_not_found(s.release(&t, &k, fp(1)).await, "release twice");
    assert_not_found(s.complete(&t, &k, fp(1), response(201, b"x")).await, "complete after release");
    assert_eq!(s.claim(&t, &k, fp(2), at(1), at(61)).await.unwrap(), Claim::New, "free for another request");
    s.complete(&t, &k, fp(2), response(201, b"second")).await.unwrap();
    assert_eq!(s.claim(&t, &k, fp(2), at(2), at(62)).await.unwrap(), Claim::Replay(response(201, b"second")));
}

/// From `expires_at` on a record counts as absent: the next claim is new
/// (with any fingerprint) and the old holder can no longer complete.
pub async fn idempotency_expired_records_count_as_absent(b: Backend) {
    let s = &b.idempotency;
    let t = tenant("acme");
    let (done, held) = (key("done"), key("held"));
    assert_eq!(s.claim(&t, &done, fp(1), at(0), at(10)).await.unwrap(), Claim::New);
    s.complete(&t, &done, fp(1), response(201, b"old")).await.unwrap();
    assert_eq!(s.claim(&t, &held, fp(1), at(0), at(10)).await.unwrap(), Claim::New);

    assert_eq!(s.claim(&t, &done, fp(1), at(9), at(19)).await.unwrap(), Claim::Replay(response(201, b"old")));
    assert_eq!(s.claim(&t, &held, fp(1), at(9), at(19)).await.unwrap(), Claim::InProgress);
    assert_eq!(s.claim(&t, &done, fp(2), at(9), at(19)).await.unwrap(), Claim::Mismatch);

    assert_eq!(s.claim(&t, &done, fp(2), at(10), at(20)).await.unwrap(), Claim::New, "expired at expires_at");
    assert_eq!(s.claim(&t, &held, fp(1), at(10), at(20)).await.unwrap(), Claim::New, "an expired claim too");
    assert_eq!(s.claim(&t, &done, fp(2), at(11), at(21)).await.unwrap(), Claim::InProgress, "the new claim is live");
    assert_not_found(s.complete(&t, &done, fp(1), response(201, b"late")).await, "the replaced holder");
    s.complete(&t, &done, fp(2), response(200, b"new")).await.unwrap();
    assert_eq!(s.claim(&t, &done, fp(2), at(12), at(22)).await.unwrap(), Claim::Replay(response(200, b"new")));
}

/// Keys are per tenant: the same key of two tenants is two records.
pub async fn idempotency_keys_are_per_tenant(b: Backend) {
    let s = &b.idempotency;
    let (a, other, k) = (tenant("a"), tenant("b"), key("shared"));
    assert_eq!(s.claim(&a, &k, fp(1), at(0), at(60)).await.unwrap(), Claim::New);
    assert_eq!(s.claim(&other, &k, fp(2), at(0), at(60)).await.unwrap(), Claim::New, "not a mismatch across tenants");
    assert_not_found(s.complete(&other, &k, fp(1), response(201, b"x")).await, "another tenant's claim");
    assert_not_found(s.release(&other, &k, fp(1)).await, "another tenant's claim");
    s.complete(&a, &k, fp(1), response(201, b"of a")).await.unwrap();
    assert_eq!(s.claim(&other, &k, fp(2), at(1), at(61)).await.unwrap(), Claim::InProgress);
    s.complete(&other, &k, fp(2), response(201, b"of b")).await.unwrap();
    assert_eq!(s.claim(&a, &k, fp(1), at(2), at(62)).await.unwrap(), Claim::Replay(response(201, b"of a")));
    assert_eq!(s.claim(&other, &k, fp(2), at(2), at(62)).await.unwrap(), Claim::Replay(response(201, b"of b")));
}

/// Of concurrent claims of one absent key exactly one is new.
pub async fn idempotency_concurrent_claims_exactly_one_new(b: Backend) {
    for round in 0..5 {
        let k = key(&format!("race-{round}"));
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let (s, k) = (Arc::clone(&b.idempotency), k.clone());
            let f = if i % 2 == 0 { fp(1) } else { fp(2) };
            tasks.push(tokio::spawn(async move { s.claim(&tenant("acme"), &k, f, at(0), at(60)).await.unwrap() }));
        }
        let mut claims = Vec::new();
        for task in tasks {
            claims.push(task.await.unwrap());
        }
        let new = claims.iter().filter(|c| **c == Claim::New).count();
        assert_eq!(new, 1, "round {round}: {claims:?}");
        assert!(claims.iter().all(|c| matches!(c, Claim::New | Claim::InProgress | Claim::Mismatch)), "{claims:?}");
    }
}

/// Purging deletes expired records only, of every tenant, at most `limit`
/// per call, and live ones still answer.
pub async fn idempotency_purge_deletes_only_expired_records(b: Backend) {
    let s = &b.idempotency;
    for i in 0..5 {
        let t = tenant(if i % 2 == 0 { "a" } else { "b" });
        let k = key(&format!("old-{i}"));
        assert_eq!(s.claim(&t, &k, fp(1), at(0), at(10 + i)).await.unwrap(), Claim::New);
        if i < 3 {
            s.complete(&t, &k, fp(1), response(201, b"old")).await.unwrap();
        }
    }
    let live = key("live");
    assert_eq!(s.claim(&tenant("a"), &live, fp(1), at(0), at(100)).await.unwrap(), Claim::New);
    s.complete(&tenant("a"), &live, fp(1), response(201, b"live")).await.unwrap();
    assert_eq!(s.claim(&tenant("b"), &live, fp(1), at(0), at(100)).await.unwrap(), Claim::New);

    assert_eq!(s.purge_expired(at(9), 100).await.unwrap(), 0, "nothing expired yet");
    assert_eq!(s.purge_expired(at(14), 2).await.unwrap(), 2, "bounded by limit");
    assert_eq!(s.purge_expired(at(14), 100).await.unwrap(), 3, "the rest of the expired");
    assert_eq!(s.purge_expired(at(99), 100).await.unwrap(), 0, "live records stay");
    assert_eq!(
        s.claim(&tenant("a"), &live, fp(1), at(50), at(150)).await.unwrap(),
        Claim::Replay(response(201, b"live"))
    );
    assert_eq!(s.claim(&tenant("b"), &live, fp(1), at(50), at(150)).await.unwrap(), Claim::InProgress);
    // A purged key is free again (an expired one was already).
    assert_eq!(s.claim(&tenant("a"), &key("old-0"), fp(2), at(50), at(150)).await.unwrap(), Claim::New);
    assert_eq!(s.purge_expired(at(100), 100).await.unwrap(), 2, "both live records expire at 100");
}

/// Bad input is `Invalid` and stores nothing.
pub async fn idempotency_rejects_bad_input(b: Backend) {
    let s = &b.idempotency;
    let (t, k) = (tenant("acme"), key("k"));
    for expires in [at(0), at(-1)] {
        let r = s.claim(&t, &k, fp(1), at(0), expires).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "expires_at not after now: {r:?}");
    }
    assert_eq!(s.claim(&t, &k, fp(1), at(0), at(60)).await.unwrap(), Claim::New, "nothing was stored");
    for status in [0, 99, 600, 999] {
        let r = s.complete(&t, &k, fp(1), response(status, b"x")).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "status {status}: {r:?}");
    }
    assert_eq!(s.claim(&t, &k, fp(1), at(1), at(61)).await.unwrap(), Claim::InProgress, "still in progress");
}
