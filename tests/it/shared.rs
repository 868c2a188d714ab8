//! Two servers and one Redis: one rate limit for both, and a catalog change
//! through one seen by the other at once; and a Redis that is down costs
//! nothing but the sharing.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use memlayer_app::{Config, Rate};
use memlayer_domain::{Credential, KeyId, Principal, Scopes, SettingName, TenantId};
use serde_json::json;

use crate::support::{Store, TestApp, Tokens, redis_url};

const TOKEN: &str = "ml_00000000000000aa_0000000000000000000000000000000000000000000000000000000000000000";

fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    let principal = Principal {
        tenant: TenantId::parse("acme").unwrap(),
        scopes: Scopes::ALL,
        resource: None,
        credential: Credential::ApiKey(KeyId::parse("00000000000000aa").unwrap()),
    };
    tokens.0.insert(TOKEN.to_owned(), principal);
    tokens
}

/// A server with limits on: the tenant may make 10 requests at once, then one
/// every 100 s (so nothing refills while a test runs, however slow the machine).
async fn server(redis: Option<&str>, prefix: &str) -> TestApp {
    let redis = redis.map(str::to_owned);
    let prefix = prefix.to_owned();
    let mut t = TestApp::with(move |c: &mut Config| {
        c.limits.enabled = Some(true);
        c.limits.credential = Rate::UNLIMITED;
        c.limits.tenant = Rate { per_second: 0.01, burst: 10 };
        c.redis.url = redis.map(Into::into);
        c.redis.prefix = prefix;
        // A loaded test machine must not make Redis look down (which would
        // fall back to per-server budgets and let more in).
        c.redis.timeout_ms = 5_000;
    })
    .await;
    t.authenticate_with(tokens());
    t
}

/// Requests alternating between `a` and `b`: how many were let in, and how long it took.
async fn alternate(a: &TestApp, b: &TestApp, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..n {
        let t = if i % 2 == 0 { a } else { b };
        let (status, v) = t.call_bearer(TOKEN, "GET", "/api/threads", None).await;
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}: {v}"),
        }
    }
    (allowed, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_redis_enforce_one_limit() {
    let Some(url) = redis_url().await else { return };
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let (a, b) = (server(Some(&url), &prefix).await, server(Some(&url), &prefix).await);
    let (allowed, took) = alternate(&a, &b, 30).await;
    assert_eq!(allowed, 10, "of 30 requests over both servers in {took:?}, the shared burst of 10 is let in");
    assert!(a.services.coordinator.as_ref().unwrap().status().is_ok());
    // The same two servers without Redis each let the whole burst in.
    let (a, b) = (server(None, &prefix).await, server(None, &prefix).await);
    let (alone, _) = alternate(&a, &b, 30).await;
    assert_eq!(alone, 20, "without Redis each server keeps its own budget of 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_change_through_one_server_is_seen_by_the_other_at_once() {
    let Some(url) = redis_url().await else { return };
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let url2 = url.clone();
    let prefix2 = prefix.clone();
    // Server A on a fresh Postgres database, server B on the same one; the
    // cache would keep a read for an hour.
    let Some(a) = TestApp::on(Store::Postgres, move |c| {
        c.redis.url = Some(url2.as_str().into());
        c.redis.prefix = prefix2;
        c.redis.timeout_ms = 5_000;
        c.cache.ttl_secs = 3600;
    })
    .await
    else {
        return;
    };
    let mut config = (*a.services.config).clone();
    config.redis.prefix = prefix;
    let b = memlayer_app::build(config).await.unwrap();
    let background = b.start_background();
    let tenant = TenantId::parse("acme").unwrap();
    let (category, key) = (SettingName::category("ui").unwrap(), SettingName::key("theme").unwrap());
    let value_on_b = || async { b.catalog.get_setting(&tenant, &category, &key).await.unwrap().map(|s| s.value) };
    // Until B's subscription is up, a change may be missed: write until B sees one.
    let mut latencies = Vec::new();
    for round in 0..40 {
        let value = json!(format!("v{round}"));
        assert_ne!(value_on_b().await, Some(value.clone()), "B has the value cached before it is written");
        a.services.catalog.put_setting(&tenant, &category, &key, value.clone()).await.unwrap();
        let written = Instant::now();
        let seen = loop {
            if value_on_b().await == Some(value.clone()) {
                break Some(written.elapsed());
            }
            if written.elapsed() > Duration::from_secs(2) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match seen {
            Some(latency) => latencies.push(latency),
            None => assert!(latencies.is_empty() && round < 5, "round {round}: B never saw the change"),
        }
    }
    background.stop().await;
    assert!(latencies.len() >= 35, "B saw only {} of 40 changes", latencies.len());
    latencies.sort();
    eprintln!(
        "catalog change seen by the other server after: p50 {:?}, max {:?} ({} changes; cache TTL 3600 s)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_limits_hold_per_server_and_ready_says_so() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/");
    let t = server(Some(&url), "down").await;
    let (allowed, _) = alternate(&t, &t, 15).await;
    assert_eq!(allowed, 10, "the in-process budget applies");
    let (status, v) = t.call("GET", "/ready", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["redis"].as_str().unwrap().starts_with("unreachable"), "{v}");
    assert!(t.services.coordinator.as_ref().unwrap().status().is_err());
}
