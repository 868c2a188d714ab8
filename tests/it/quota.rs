//! Storage quotas over HTTP: a write past a quota is 403 `quota_exceeded`
//! naming the quota, its limit and the usage, one larger than the quota
//! itself is 413, nothing of a refused write is stored, the operator's
//! per-tenant override wins over `limits.quota.*`, quotas apply without
//! authentication, and `/api/usage` reports what is stored.

use axum::http::StatusCode;
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scopes, SettingName, TenantId};
use serde_json::{Value, json};

use crate::support::{TestApp, Tokens, assert_error};

async fn app(threads: Option<u64>, messages: Option<u64>, bytes: Option<u64>) -> TestApp {
    // `auth.mode = none` (the default): a quota is about storage, not callers.
    TestApp::with(|c| {
        c.limits.quota.threads = threads;
        c.limits.quota.messages = messages;
        c.limits.quota.bytes = bytes;
    })
    .await
}

fn text(s: &str) -> Value {
    json!({"role": "user", "content": s})
}

fn batch(n: usize) -> Value {
    json!({"messages": (0..n).map(|i| text(&format!("m{i}"))).collect::<Vec<_>>()})
}

#[track_caller]
fn assert_quota(got: &(StatusCode, Value), status: StatusCode, name: &str, limit: u64, usage: u64, requested: u64) {
    assert_error(got, status, "quota_exceeded");
    let q = &got.1["error"]["quota"];
    assert_eq!(q, &json!({"name": name, "limit": limit, "usage": usage, "requested": requested}), "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{name}`")) && message.contains(&limit.to_string()), "{message}");
}

async fn messages_of(t: &TestApp, tenant: &str, thread: &str) -> usize {
    let (status, v) = t.call_as(tenant, "GET", &format!("/api/threads/{thread}/messages?limit=1000"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_a_quota_is_403_naming_it_and_stores_nothing() {
    let t = app(Some(2), Some(3), None).await;
    let thread = t.thread(json!({})).await;
    let uri = format!("/api/threads/{thread}/messages");
    assert_eq!(t.call("POST", &uri, Some(batch(2))).await.0, StatusCode::CREATED);
    let refused = t.call("POST", &uri, Some(batch(2))).await;
    assert_quota(&refused, StatusCode::FORBIDDEN, "messages", 3, 2, 2);
    assert_eq!(messages_of(&t, "default", &thread).await, 2, "none of the refused batch is stored");
    assert_eq!(t.call("POST", &uri, Some(text("last"))).await.0, StatusCode::CREATED, "what fits is stored");
    assert_quota(&t.call("POST", &uri, Some(text("one more"))).await, StatusCode::FORBIDDEN, "messages", 3, 3, 1);
    // Threads.
    t.thread(json!({})).await;
    let refused = t.call("POST", "/api/threads", Some(json!({"title": "third"}))).await;
    assert_quota(&refused, StatusCode::FORBIDDEN, "threads", 2, 2, 1);
    let (_, listed) = t.call("GET", "/api/threads", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    // Deletes free room at once.
    let (_, page) = t.call("GET", &format!("{uri}?limit=1"), None).await;
    let first = page["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(t.call("DELETE", &format!("{uri}/{first}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.call("POST", &uri, Some(text("room again"))).await.0, StatusCode::CREATED);
    assert_eq!(t.call("DELETE", &format!("/api/threads/{thread}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.call("POST", "/api/threads", Some(json!({}))).await.0, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_larger_than_the_quota_itself_is_413() {
    let t = app(None, Some(5), Some(2_000)).await;
    let thread = t.thread(json!({})).await;
    let uri = format!("/api/threads/{thread}/messages");
    let big = "x".repeat(3_000);
    // 320 + 3000 + 2 ({} metadata), by `Message::approx_bytes`.
    assert_quota(
        &t.call("POST", &uri, Some(text(&big))).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "bytes",
        2_000,
        0,
        3_322,
    );
    assert_quota(&t.call("POST", &uri, Some(batch(6))).await, StatusCode::PAYLOAD_TOO_LARGE, "messages", 5, 0, 6);
    assert_eq!(messages_of(&t, "default", &thread).await, 0);
    // A message that fits alone but not beside what is stored is a 403.
    assert_eq!(t.call("POST", &uri, Some(text(&"y".repeat(1_000)))).await.0, StatusCode::CREATED);
    assert_quota(
        &t.call("POST", &uri, Some(text(&"z".repeat(1_000)))).await,
        StatusCode::FORBIDDEN,
        "bytes",
        2_000,
        1_322,
        1_322,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_per_tenant_quota_wins_over_the_configured_one() {
    let t = app(None, Some(2), None).await;
    let category = SettingName::category("limits").unwrap();
    let key = SettingName::key("quota").unwrap();
    let put = |tenant: &'static str, value: Value| {
        let (catalog, category, key) = (t.services.catalog.clone(), category.clone(), key.clone());
        async move { catalog.put_setting(&TenantId::parse(tenant).unwrap(), &category, &key, value).await.unwrap() }
    };
    put("big", json!({"messages": 5})).await;
    put("free", json!({"messages": null})).await;
    let fill = |tenant: &'static str, n: usize| {
        let t = &t;
        async move {
            let (_, thread) = t.call_as(tenant, "POST", "/api/threads", Some(json!({}))).await;
            let uri = format!("/api/threads/{}/messages", thread["id"].as_str().unwrap());
            let mut stored = 0;
            for i in 0..n {
                let got = t.call_as(tenant, "POST", &uri, Some(text(&format!("m{i}")))).await;
                if got.0 != StatusCode::CREATED {
                    return (stored, Some(got));
                }
                stored += 1;
            }
            (stored, None)
        }
    };
    let (stored, refused) = fill("default", 10).await;
    assert_eq!(stored, 2, "the configured quota");
    assert_quota(&refused.unwrap(), StatusCode::FORBIDDEN, "messages", 2, 2, 1);
    let (stored, refused) = fill("big", 10).await;
    assert_eq!(stored, 5, "the override raises it");
    assert_quota(&refused.unwrap(), StatusCode::FORBIDDEN, "messages", 5, 5, 1);
    let (stored, refused) = fill("free", 10).await;
    assert_eq!((stored, refused.is_none()), (10, true), "null lifts it");
    let (_, usage) = t.call_as("big", "GET", "/api/usage", None).await;
    assert_eq!(usage["messages"], json!({"used": 5, "limit": 5}));
    let (_, usage) = t.call_as("free", "GET", "/api/usage", None).await;
    assert_eq!(usage["messages"], json!({"used": 10, "limit": null}));
    // A tenant cannot lift its own quota over HTTP; a bad one is refused.
    let got =
        t.call_as("default", "PUT", "/api/settings/limits/quota", Some(json!({"value": {"messages": null}}))).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let bad =
        t.services.catalog.put_setting(&TenantId::default_tenant(), &category, &key, json!({"messages": -1})).await;
    assert!(bad.is_err(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_what_is_stored_and_only_to_the_whole_tenant() {
    let mut t = app(Some(10), None, Some(1_000_000)).await;
    let thread = t.thread(json!({})).await;
    let uri = format!("/api/threads/{thread}/messages");
    assert_eq!(
        t.call("POST", &uri, Some(json!({"messages": [text("hello"), text("world!")]}))).await.0,
        StatusCode::CREATED
    );
    let (status, usage) = t.call("GET", "/api/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(
        usage,
        json!({"tenant": "default", "threads": {"used": 1, "limit": 10}, "messages": {"used": 2, "limit": null},
               "bytes": {"used": 2 * 322 + 5 + 6, "limit": 1_000_000}})
    );
    let (_, other) = t.call_as("other", "GET", "/api/usage", None).await;
    assert_eq!(other["threads"]["used"], 0, "per tenant");
    // A credential bound to a resource sees no tenant-wide figures.
    let mut tokens = Tokens::default();
    let bound = |resource: Option<&str>| Principal {
        tenant: TenantId::default_tenant(),
        scopes: Scopes::ALL,
        resource: resource.map(|r| ResourceId::parse(r).unwrap()),
        credential: Credential::ApiKey(KeyId::parse("000000000000000a").unwrap()),
    };
    let (a, b) = (format!("ml_{:016x}_{}", 10, "0".repeat(64)), format!("ml_{:016x}_{}", 11, "0".repeat(64)));
    tokens.0.insert(a.clone(), bound(Some("user-1")));
    tokens.0.insert(b.clone(), bound(None));
    t.authenticate_with(tokens);
    assert_error(&t.call_bearer(&a, "GET", "/api/usage", None).await, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(t.call_bearer(&b, "GET", "/api/usage", None).await.1["messages"]["used"], 2);
}
