//! Rate limits over HTTP: per credential, per tenant (with the operator's
//! per-tenant overrides), and embedding work; 429 with `Retry-After` and the
//! IETF `RateLimit` headers, and nothing half-written.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use memlayer_app::Rate;
use memlayer_domain::{Credential, KeyId, Principal, Scopes, SettingName, TenantId};
use serde_json::json;
use tower::ServiceExt as _;

use crate::support::{TestApp, Tokens, assert_error};

fn token(n: u8) -> String {
    format!("ml_{n:016x}_{}", "0".repeat(64))
}

fn principal(tenant: &str, n: u8) -> Principal {
    Principal {
        tenant: TenantId::parse(tenant).unwrap(),
        scopes: Scopes::ALL,
        resource: None,
        credential: Credential::ApiKey(KeyId::parse(format!("{n:016x}")).unwrap()),
    }
}

/// An app with limits on and credentials 1, 2 (tenant `a`) and 3 (tenant `b`).
async fn app(tweak: impl FnOnce(&mut memlayer_app::LimitsConfig)) -> TestApp {
    let mut t = TestApp::with(|c| {
        c.limits.enabled = Some(true);
        tweak(&mut c.limits);
    })
    .await;
    let mut tokens = Tokens::default();
    for (n, tenant) in [(1, "a"), (2, "a"), (3, "b")] {
        tokens.0.insert(token(n), principal(tenant, n));
    }
    t.authenticate_with(tokens);
    t
}

/// Status and the rate-limit headers of a GET with credential `n`.
async fn get(t: &TestApp, n: u8, uri: &str) -> (StatusCode, Option<String>, Option<String>, Option<String>) {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {}", token(n)))
        .body(Body::empty())
        .unwrap();
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), header("ratelimit"), header("ratelimit-policy"), header("retry-after"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_refused_past_its_burst_with_retry_after_and_ratelimit_headers() {
    let t = app(|l| {
        // One a minute: nothing refills while the test runs, however slow the machine.
        l.credential = Rate { per_second: 1.0 / 60.0, burst: 3 };
        l.tenant = Rate::UNLIMITED;
    })
    .await;
    for left in [2, 1, 0] {
        let (status, state, policy, _) = get(&t, 1, "/api/threads").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(state.as_deref(), Some(format!("\"credential\";r={left};t=0").as_str()));
        assert_eq!(policy.as_deref(), Some("\"credential\";q=3;w=180"));
    }
    let (status, state, policy, retry) = get(&t, 1, "/api/threads").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((30..=60).contains(&retry), "Retry-After {retry}: the next unit comes within the minute");
    assert_eq!(state.as_deref(), Some(format!("\"credential\";r=0;t={retry}").as_str()));
    assert_eq!(policy.as_deref(), Some("\"credential\";q=3;w=180"));
    let got = t.call_bearer(&token(1), "GET", "/api/threads", None).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("limit `credential`"), "{}", got.1);
    // Another credential of the same tenant has its own budget; public routes none.
    assert_eq!(get(&t, 2, "/api/threads").await.0, StatusCode::OK);
    let (status, state, _, _) = get(&t, 1, "/health").await;
    assert_eq!((status, state), (StatusCode::OK, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_override_limits_one_tenant_and_tenants_cannot_write_it() {
    let t = app(|l| {
        l.credential = Rate::UNLIMITED;
        l.tenant = Rate { per_second: 1000.0, burst: 1000 };
    })
    .await;
    let category = SettingName::category("limits").unwrap();
    let key = SettingName::key("tenant").unwrap();
    // The operator (the library, as `memlayer settings set` does) lowers tenant a's budget.
    t.services
        .catalog
        .put_setting(&TenantId::parse("a").unwrap(), &category, &key, json!({"per_second": 0.01, "burst": 2}))
        .await
        .unwrap();
    assert_eq!(get(&t, 1, "/api/threads").await.0, StatusCode::OK);
    assert_eq!(get(&t, 2, "/api/threads").await.0, StatusCode::OK);
    let (status, _, policy, _) = get(&t, 1, "/api/threads").await;
    assert_eq!((status, policy.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("\"tenant\";q=2;w=200")));
    assert_eq!(get(&t, 3, "/api/threads").await.0, StatusCode::OK, "tenant b keeps the configured budget");
    // Over HTTP a tenant's admin may not lift its own limits.
    let body = json!({"value": {"per_second": 1000000, "burst": 1000000}});
    let got = t.call_bearer(&token(3), "PUT", "/api/settings/limits/tenant", Some(body)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = t.call_bearer(&token(3), "DELETE", "/api/settings/limits/tenant", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    // A malformed override is refused where the operator writes it.
    let bad =
        t.services.catalog.put_setting(&TenantId::parse("b").unwrap(), &category, &key, json!({"per_second": 5})).await;
    assert!(bad.is_err(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_work_past_the_tenants_budget_is_refused_and_nothing_is_stored() {
    let t = app(|l| {
        l.credential = Rate::UNLIMITED;
        l.tenant = Rate::UNLIMITED;
        l.embed_tokens = Rate { per_second: 0.01, burst: 50 };
    })
    .await;
    let (status, v) = t.call_bearer(&token(1), "POST", "/api/threads", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/threads/{id}/messages");
    // 160 bytes: 40 estimated tokens, within the burst of 50.
    let (status, v) =
        t.call_bearer(&token(1), "POST", &uri, Some(json!({"role": "user", "content": "x".repeat(160)}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The next 40 do not fit: 429, and the message is not stored.
    let got = t.call_bearer(&token(2), "POST", &uri, Some(json!({"role": "user", "content": "y".repeat(160)}))).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("embed_tokens"), "{}", got.1);
    let (_, page) = t.call_bearer(&token(1), "GET", &uri, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    // A text over the whole burst can never pass, and says so.
    let got = t.call_bearer(&token(3), "POST", "/api/embed", Some(json!({"texts": ["z".repeat(400)]}))).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("alone"), "{}", got.1);
    // Lexical search embeds nothing and is not charged.
    let search = json!({"query": "x", "mode": "lexical", "scope": {"thread_id": id}});
    assert_eq!(t.call_bearer(&token(2), "POST", "/api/search", Some(search)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_limits_are_off_unless_asked_for() {
    let t = TestApp::with(|c| c.limits.credential = Rate { per_second: 1.0, burst: 1 }).await;
    for _ in 0..5 {
        assert_eq!(t.call("GET", "/api/threads", None).await.0, StatusCode::OK);
    }
    assert!(!t.services.limiter.is_enabled());
}
