//! The HTTP API in process: behaviour, bad input, OpenAPI, error shapes.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_lifecycle() {
    let t = TestApp::new().await;
    let (status, created) = t
        .call(
            "POST",
            "/api/threads",
            Some(json!({"resource_id": "user-1", "agent_id": "support", "title": "Refund", "model": "gpt-4o", "metadata": {"lang": "en"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    for key in [
        "id",
        "tenant",
        "resource_id",
        "agent_id",
        "title",
        "model",
        "metadata",
        "message_count",
        "created_at",
        "updated_at",
    ] {
        assert!(created.get(key).is_some(), "created thread has {key}: {created}");
    }
    assert_eq!(created["tenant"], "default");
    let (status, got) = t.call("GET", &format!("/api/threads/{id}"), None).await;
    assert_eq!((status, &got), (StatusCode::OK, &created));

    let (status, patched) =
        t.call("PATCH", &format!("/api/threads/{id}"), Some(json!({"title": "Refund #2", "model": null}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["title"], "Refund #2");
    assert_eq!(patched["model"], Value::Null);
    assert_eq!(patched["agent_id"], "support", "absent fields stay");

    let (status, _) = t.call("DELETE", &format!("/api/threads/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", &format!("/api/threads/{id}"), None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_listing_filters_and_pages() {
    let t = TestApp::new().await;
    let a = t.thread(json!({"resource_id": "u1", "metadata": {"lang": "en", "n": 2}})).await;
    let b = t.thread(json!({"resource_id": "u1", "agent_id": "bot"})).await;
    let c = t.thread(json!({"resource_id": "u2", "metadata": {"lang": "en"}})).await;
    let ids = |v: &Value| {
        v["items"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (_, all) = t.call("GET", "/api/threads", None).await;
    assert_eq!(ids(&all), vec![c.clone(), b.clone(), a.clone()]);
    assert_eq!(all["next_cursor"], Value::Null);
    let (_, u1) = t.call("GET", "/api/threads?resource_id=u1", None).await;
    assert_eq!(ids(&u1), vec![b.clone(), a.clone()]);
    let (_, en) = t.call("GET", "/api/threads?metadata.lang=en", None).await;
    assert_eq!(ids(&en), vec![c.clone(), a.clone()]);
    let (_, n2) = t.call("GET", "/api/threads?metadata.n=2", None).await;
    assert_eq!(ids(&n2), vec![a.clone()]);
    let (_, bot) = t.call("GET", "/api/threads?agent_id=bot", None).await;
    assert_eq!(ids(&bot), vec![b.clone()]);

    let (_, p1) = t.call("GET", "/api/threads?limit=2", None).await;
    assert_eq!(ids(&p1), vec![c, b]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = t.call("GET", &format!("/api/threads?limit=2&cursor={cursor}"), None).await;
    assert_eq!(ids(&p2), vec![a]);
    assert_eq!(p2["next_cursor"], Value::Null);
    assert_error(
        &t.call("GET", &format!("/api/threads?limit=2&resource_id=u1&cursor={cursor}"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_append_and_page_both_ways() {
    let t = TestApp::new().await;
    let id = t.thread(json!({"model": "gpt-4o"})).await;
    let uri = format!("/api/threads/{id}/messages");
    let (status, one) = t.call("POST", &uri, Some(json!({"role": "system", "content": "be brief"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{one}");
    assert_eq!(one["seq"], 1);
    assert_eq!(one["token_count"], Value::Null, "not counted unless asked");
    let batch: Vec<Value> = (0..9).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
    let (status, many) = t.call("POST", &format!("{uri}?count_tokens=true"), Some(json!({"messages": batch}))).await;
    assert_eq!(status, StatusCode::CREATED, "{many}");
    let items = many["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(), (2..=10).collect::<Vec<_>>());
    assert_eq!(items[0]["token_count"]["encoding"], "o200k_base");
    assert_eq!(items[0]["token_count"]["exact"], true);

    let (status, est) = t
        .call(
            "POST",
            &format!("{uri}?count_tokens=true&model=claude-3-5-sonnet"),
            Some(json!({"role": "user", "content": "abcdefgh"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(est["token_count"]["exact"], false, "unknown model is an estimate: {est}");

    let tool = json!({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "weather", "arguments": {"city": "Oslo"}}]},
        {"role": "tool", "tool_call_id": "c1", "tool_name": "weather", "content": "3°C", "metadata": {"ms": 40}}
    ]});
    let (status, v) = t.call("POST", &uri, Some(tool)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    for (dir, expect) in [("forward", (1..=13).collect::<Vec<i64>>()), ("backward", (1..=13).rev().collect())] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q =
                cursor.as_ref().map_or_else(|| format!("?limit=4&direction={dir}"), |c| format!("?limit=4&cursor={c}"));
            let (status, page) = t.call("GET", &format!("{uri}{q}"), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(page["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, expect, "{dir}");
    }
    let (_, th) = t.call("GET", &format!("/api/threads/{id}"), None).await;
    assert_eq!(th["message_count"], 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_optimistic_concurrency() {
    let t = TestApp::new().await;
    let id = t.thread(json!({})).await;
    let uri = format!("/api/threads/{id}/state/planner");
    let (status, empty) = t.call("GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((empty["version"].clone(), empty["state"].clone()), (json!(0), Value::Null));
    let (status, v1) = t.call("PUT", &uri, Some(json!({"state": {"step": 1}, "expected_version": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_error(
        &t.call("PUT", &uri, Some(json!({"state": {"step": "stale"}, "expected_version": 0}))).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (status, v2) = t.call("PUT", &uri, Some(json!({"state": {"step": 2}, "expected_version": 1}))).await;
    assert_eq!((status, v2["version"].clone()), (StatusCode::OK, json!(2)));
    let (_, now) = t.call("GET", &uri, None).await;
    assert_eq!(now["state"], json!({"step": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    bad_input(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing_on_postgres() {
    bad_input(Store::Postgres).await;
}

async fn bad_input(store: Store) {
    let Some(t) = TestApp::on(store, |c| c.server.body_limit_bytes = 64 * 1024).await else { return };
    let id = t.thread(json!({"title": "keep"})).await;
    let other = t.thread(json!({})).await;
    let foreign = {
        let (s, v) = t.call_as("tenant-b", "POST", "/api/threads", Some(json!({}))).await;
        assert_eq!(s, StatusCode::CREATED);
        v["id"].as_str().unwrap().to_owned()
    };
    let msgs = format!("/api/threads/{id}/messages");
    let (_, seeded) = t.call("POST", &msgs, Some(json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]}))).await;
    assert_eq!(seeded["items"].as_array().map(Vec::len), Some(3));
    let (_, page) = t.call("GET", &format!("{msgs}?limit=1"), None).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let state = format!("/api/threads/{id}/state/planner");
    t.call("PUT", &state, Some(json!({"state": {"v": 1}, "expected_version": 0}))).await;
    let (_, before_thread) = t.call("GET", &format!("/api/threads/{id}"), None).await;

    let mut tampered = cursor.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (_, other_page) = {
        t.call(
            "POST",
            &format!("/api/threads/{other}/messages"),
            Some(json!({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]})),
        )
        .await;
        t.call("GET", &format!("/api/threads/{other}/messages?limit=1"), None).await
    };
    let other_cursor = other_page["next_cursor"].as_str().unwrap().to_owned();
    let many: Vec<Value> = (0..1001).map(|i| json!({"role": "user", "content": format!("{i}")})).collect();
    let huge = json!({"role": "user", "content": "x".repeat(70 * 1024)});

    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<(&str, String, Option<String>, StatusCode, &str)> = vec![
        ("POST", msgs.clone(), Some("{not json".into()), bad, "malformed_json"),
        ("POST", msgs.clone(), Some(r#"{"role":"user","content":"x","colour":"red"}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"{"role":"user","content":42}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"{"messages":[]}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(json!({"messages": many}).to_string()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"{"role":"wizard","content":"x"}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"{"role":"tool","content":"42"}"#.into()), bad, "invalid_request"),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"messages":[{"role":"user","content":"ok"},{"role":"tool","content":"no id"}]}"#.into()),
            bad,
            "invalid_request",
        ),
        ("POST", msgs.clone(), Some(r#"{"role":"user","content":"x","metadata":[1]}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"[1,2]"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(r#"{"role":"user","content":""}"#.into()), bad, "invalid_request"),
        // Neither database stores U+0000 in text: refused on both, naming `content`.
        ("POST", msgs.clone(), Some(r#"{"role":"user","content":"before\u0000after"}"#.into()), bad, "invalid_request"),
        (
            "POST",
            format!("{msgs}?count_tokens=true"),
            Some(r#"{"role":"user","content":"no model"}"#.into()),
            bad,
            "invalid_request",
        ),
        ("POST", format!("{msgs}?colour=red"), Some(r#"{"role":"user","content":"x"}"#.into()), bad, "invalid_request"),
        ("POST", msgs.clone(), Some(huge.to_string()), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (
            "POST",
            "/api/threads/not-a-uuid/messages".into(),
            Some(r#"{"role":"user","content":"x"}"#.into()),
            bad,
            "invalid_request",
        ),
        (
            "POST",
            format!("/api/threads/{foreign}/messages"),
            Some(r#"{"role":"user","content":"x"}"#.into()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("GET", format!("/api/threads/{foreign}"), None, StatusCode::NOT_FOUND, "not_found"),
        ("GET", format!("{msgs}?cursor={tampered}"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?cursor={other_cursor}"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?cursor={cursor}&direction=backward"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?limit=0"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?limit=1001"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?limit=-1"), None, bad, "invalid_request"),
        ("GET", format!("{msgs}?direction=sideways"), None, bad, "invalid_request"),
        ("GET", "/api/threads?limit=0".into(), None, bad, "invalid_request"),
        ("GET", "/api/threads?sort=name".into(), None, bad, "invalid_request"),
        ("GET", "/api/threads?metadata.$bad=1".into(), None, bad, "invalid_request"),
        ("POST", "/api/threads".into(), Some(r#"{"metadata":"nope"}"#.into()), bad, "invalid_request"),
        ("POST", "/api/threads".into(), Some(r#"{"title":"x","owner":"me"}"#.into()), bad, "invalid_request"),
        ("POST", "/api/threads".into(), Some(r#"{"resource_id":"has space"}"#.into()), bad, "invalid_request"),
        ("PATCH", format!("/api/threads/{id}"), Some(r#"{"metadata":5}"#.into()), bad, "invalid_request"),
        ("PATCH", format!("/api/threads/{id}"), Some(r#"{"title":""}"#.into()), bad, "invalid_request"),
        (
            "PUT",
            state.clone(),
            Some(r#"{"state":{"v":"stale"},"expected_version":0}"#.into()),
            StatusCode::CONFLICT,
            "conflict",
        ),
        ("PUT", state.clone(), Some(r#"{"state":[1],"expected_version":1}"#.into()), bad, "invalid_request"),
        ("PUT", state.clone(), Some(r#"{"state":{"v":2}}"#.into()), bad, "invalid_request"),
        ("PUT", state.clone(), Some(r#"{"state":{"v":2},"expected_version":-1}"#.into()), bad, "invalid_request"),
        (
            "PUT",
            state.clone(),
            Some(r#"{"state":{"v":2},"expected_version":18446744073709551615}"#.into()),
            bad,
            "invalid_request",
        ),
        (
            "PUT",
            format!("/api/threads/{id}/state/bad%20agent"),
            Some(r#"{"state":{},"expected_version":0}"#.into()),
            bad,
            "invalid_request",
        ),
        ("DELETE", "/api/threads/123".into(), None, bad, "invalid_request"),
        ("GET", "/api/nothing-here".into(), None, StatusCode::NOT_FOUND, "not_found"),
        ("PUT", "/api/threads".into(), None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, uri, body, status, code) in cases {
        let got = t.call_with(method, &uri, &[], body.clone(), true).await;
        assert_eq!(got.0, status, "{method} {uri} {:?}: {}", body.as_deref().map(|b| &b[..b.len().min(80)]), got.1);
        assert_eq!(got.1["error"]["code"], code, "{method} {uri}: {}", got.1);
    }
    let (status, refused) = t.call("POST", &msgs, Some(json!({"role": "user", "content": "a\u{0}b"}))).await;
    assert_eq!(status, bad);
    assert!(refused.to_string().contains("content") && refused.to_string().contains("NUL"), "{refused}");
    assert_error(
        &t.call_with("POST", &msgs, &[], Some(r#"{"role":"user","content":"x"}"#.into()), false).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        &t.call_with("GET", "/api/threads", &[("x-tenant-id", "bad tenant!")], None, true).await,
        bad,
        "invalid_request",
    );

    let (_, after_thread) = t.call("GET", &format!("/api/threads/{id}"), None).await;
    assert_eq!(after_thread, before_thread, "no bad request changed the thread");
    let (_, all) = t.call("GET", &format!("{msgs}?limit=100"), None).await;
    let contents: Vec<_> =
        all["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect();
    assert_eq!(contents, vec!["a", "b", "c"], "no bad request stored a message");
    let (_, st) = t.call("GET", &state, None).await;
    assert_eq!((st["version"].clone(), st["state"].clone()), (json!(1), json!({"v": 1})), "state untouched");
    let (_, foreign_view) = t.call_as("tenant-b", "GET", &format!("/api/threads/{foreign}"), None).await;
    assert_eq!(foreign_view["message_count"], 0, "foreign thread untouched");
}

/// A message whose full-text entry would pass Postgres's 1 MiB tsvector
/// limit (distinct words) is stored whole; its first part is searchable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_full_text_limit_is_stored_on_postgres() {
    let Some(t) = TestApp::on(Store::Postgres, |c| c.embedding.enabled = false).await else { return };
    let id = t.thread(json!({})).await;
    let mut content = String::new();
    for i in 0u64.. {
        let word = format!("w{:031x} ", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if content.len() + word.len() > memlayer_domain::MAX_CONTENT_BYTES {
            break;
        }
        content.push_str(&word);
    }
    let uri = format!("/api/threads/{id}/messages");
    let (status, body) = t.call("POST", &uri, Some(json!({"role": "user", "content": content}))).await;
    assert_eq!(status, StatusCode::CREATED, "{}", &body.to_string()[..200.min(body.to_string().len())]);
    let (status, page) = t.call("GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["content"].as_str().map(str::len), Some(content.len()), "stored whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    tenants_isolated(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_postgres() {
    tenants_isolated(Store::Postgres).await;
}

async fn tenants_isolated(store: Store) {
    let Some(t) = TestApp::on(store, |_| {}).await else { return };
    let (_, a) = t.call_as("tenant-a", "POST", "/api/threads", Some(json!({"title": "a"}))).await;
    let id = a["id"].as_str().unwrap();
    assert_eq!(a["tenant"], "tenant-a");
    let (_, listed) = t.call_as("tenant-b", "GET", "/api/threads", None).await;
    assert_eq!(listed["items"], json!([]));
    assert_error(
        &t.call_as("tenant-b", "DELETE", &format!("/api/threads/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.call_as("tenant-b", "GET", &format!("/api/threads/{id}/state/x"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, _) = t.call_as("tenant-a", "GET", &format!("/api/threads/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_request_ids() {
    let t = TestApp::new().await;
    assert_eq!(t.call("GET", "/health", None).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(t.call("GET", "/ready", None).await, (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route() {
    let t = TestApp::new().await;
    let (status, doc) = t.call("GET", "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            described.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    described.sort();
    let mut expected = vec![
        "POST /api/threads",
        "GET /api/threads",
        "GET /api/threads/{id}",
        "PATCH /api/threads/{id}",
        "DELETE /api/threads/{id}",
        "POST /api/threads/{id}/fork",
        "POST /api/threads/{id}/context",
        "POST /api/threads/{id}/messages",
        "GET /api/threads/{id}/messages",
        "GET /api/threads/{id}/state/{agent_id}",
        "PUT /api/threads/{id}/state/{agent_id}",
        "GET /health",
        "GET /ready",
        "GET /api/openapi.json",
        "DELETE /api/threads/{id}/messages/{message_id}",
        "GET /api/threads/{id}/embeddings",
        "POST /api/search",
        "POST /api/embed",
        "POST /api/models",
        "GET /api/models",
        "GET /api/models/{id}",
        "PUT /api/models/{id}",
        "DELETE /api/models/{id}",
        "POST /api/agents",
        "GET /api/agents",
        "GET /api/agents/{id}",
        "PUT /api/agents/{id}",
        "DELETE /api/agents/{id}",
        "GET /api/agents/{id}/tools",
        "POST /api/tools",
        "GET /api/tools",
        "GET /api/tools/{id}",
        "GET /api/usage",
        "PUT /api/tools/{id}",
        "DELETE /api/tools/{id}",
        "GET /api/settings/{category}/{key}",
        "PUT /api/settings/{category}/{key}",
        "DELETE /api/settings/{category}/{key}",
        "POST /api/keys",
        "GET /api/keys",
        "DELETE /api/keys/{id}",
        "GET /api/resources/{id}/working-memory",
        "PUT /api/resources/{id}/working-memory",
        "PATCH /api/resources/{id}/working-memory",
        "GET /api/resources/{id}/working-memory/versions",
        "POST /api/resources/{id}/working-memory/versions/{version}/restore",
        "GET /api/threads/{id}/working-memory",
        "PUT /api/threads/{id}/working-memory",
        "PATCH /api/threads/{id}/working-memory",
        "GET /api/threads/{id}/working-memory/versions",
        "POST /api/threads/{id}/working-memory/versions/{version}/restore",
        "GET /api/threads/{id}/summary",
        "POST /api/threads/{id}/summary",
        "GET /api/threads/{id}/summary/versions",
        "POST /api/retention/policies",
        "GET /api/retention/policies",
        "GET /api/retention/policies/{id}",
        "PUT /api/retention/policies/{id}",
        "DELETE /api/retention/policies/{id}",
        "POST /api/retention/prune",
        "GET /api/retention/runs",
        "DELETE /api/resources/{id}",
        "GET /api/export",
        "POST /api/import",
        "POST /api/workflows",
        "GET /api/workflows",
        "GET /api/workflows/{id}",
        "PATCH /api/workflows/{id}",
        "DELETE /api/workflows/{id}",
        "POST /api/workflows/{id}/steps",
        "DELETE /api/workflows/{id}/steps/{step}",
        "POST /api/workflows/{id}/execute",
        "POST /api/workflows/{id}/pause",
        "POST /api/workflows/{id}/resume",
        "POST /api/workflows/{id}/cancel",
        "POST /api/workflows/{id}/steps/{step}/retry",
        "GET /api/workflows/{id}/events",
        "POST /v1/traces",
        "GET /api/observability/traces",
        "GET /api/observability/traces/{id}",
        "GET /api/observability/performance",
        "GET /api/observability/costs",
        "POST /api/observability/evaluations",
        "GET /api/observability/evaluations",
        "GET /api/observability/evaluations/compare",
        "GET /api/observability/evaluations/{id}",
        "GET /api/observability/evaluations/{id}/examples",
        "GET /api/observability/metrics",
    ];
    expected.sort_unstable();
    assert_eq!(described, expected);
    // Every described route is served (not the router's fallback).
    let id = uuid::Uuid::now_v7().to_string();
    for route in &described {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", &id)
            .replace("{agent_id}", "a")
            .replace("{message_id}", &id)
            .replace("{category}", "c")
            .replace("{key}", "k")
            .replace("{version}", "1")
            .replace("{step}", "s");
        let (status, body) = t.call_with(method, &path, &[], Some("{}".into()), true).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && body["error"]["message"] != "no such route",
            "{route} is described but not served: {status} {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_reveal_nothing() {
    use memlayer_ports::{
        MockDatabase, MockEmbedder, MockEmbeddingStore, MockMessageStore, MockStateStore, MockThreadStore,
        MockTokenCounter, MockVectorIndex, StoreError,
    };
    let mut threads = MockThreadStore::new();
    threads.expect_get().returning(|_, _| Err(StoreError::backend("SQLITE_CORRUPT at /secret/path/memlayer.db")));
    threads
        .expect_create_within()
        .returning(|_, _, _| Err(StoreError::Unavailable("pool timed out at 10.0.0.7".into())));
    let memory = memlayer_app::MemoryService::new(
        Arc::new(threads),
        Arc::new(MockMessageStore::new()),
        Arc::new(MockStateStore::new()),
        Arc::new(MockTokenCounter::new()),
        memlayer_domain::TenantId::default_tenant(),
        false,
    );
    let mut database = MockDatabase::new();
    database.expect_ping().returning(|| Err(StoreError::Unavailable("connection refused".into())));
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(|| memlayer_ports::EmbedderInfo { model: "m".into(), dim: 3, max_tokens: 8 });
    embedder.expect_embed().returning(|_| Err(StoreError::backend("onnx runtime crashed in /secret/lib.so")));
    let search = memlayer_app::SearchService::new(
        Arc::new(embedder),
        Arc::new(MockVectorIndex::new()),
        Arc::new(MockEmbeddingStore::new()),
        Arc::new(MockMessageStore::new()),
        Arc::new(MockThreadStore::new()),
    );
    let catalog = memlayer_app::CatalogService::new(
        Arc::new(memlayer_ports::MockCatalogStore::new()),
        memlayer_app::CacheSettings::default(),
    );
    let context = memlayer_app::ContextService::new(
        Arc::new(MockThreadStore::new()),
        Arc::new(MockMessageStore::new()),
        Arc::new(MockTokenCounter::new()),
        catalog.clone(),
    );
    let app = memlayer_api::router(memlayer_api::AppState {
        context,
        workflows: no_workflows(&memory),
        memory,
        search,
        catalog,
        keys: no_keys(),
        database: Arc::new(database),
        auth: memlayer_api::auth::Auth::anonymous(memlayer_domain::TenantId::default_tenant()),
        limiter: memlayer_app::Limiter::unlimited(),
        coordinator: None,
        idempotency: None,
        working: no_working(),
        summaries: no_summaries(),
        retention: no_retention(),
        transfer: no_transfer(),
        observability: no_observability(),
    });
    let call = |method: &'static str, uri: String, body: Option<&'static str>| {
        let app = app.clone();
        async move {
            use http_body_util::BodyExt as _;
            use tower::ServiceExt as _;
            let mut req = axum::http::Request::builder().method(method).uri(uri);
            if body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let resp = app.oneshot(req.body(axum::body::Body::from(body.unwrap_or(""))).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let got = call("GET", format!("/api/threads/{}", uuid::Uuid::now_v7()), None).await;
    assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!got.1.to_string().contains("secret") && !got.1.to_string().contains("SQLITE"), "{}", got.1);
    let got = call("POST", "/api/threads".into(), Some("{}")).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(!got.1.to_string().contains("10.0.0.7"), "{}", got.1);
    let got = call("GET", "/ready".into(), None).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let got = call("POST", "/api/embed".into(), Some(r#"{"texts":["x"]}"#)).await;
    assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!got.1.to_string().contains("secret"), "{}", got.1);
}

/// Sends `req` to `app`; returns status, headers and the JSON body.
async fn send(
    app: &axum::Router,
    req: axum::http::Request<axum::body::Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn request(method: &str, uri: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).unwrap()
}

/// The default limits with a 1 MiB body limit and `timeout`.
fn limits(timeout: std::time::Duration) -> memlayer_api::server::Limits {
    memlayer_api::server::Limits { body_limit_bytes: 1 << 20, request_timeout: timeout, ..Default::default() }
}

/// A router with a panicking route and a well-behaved one, served with the
/// real middleware.
fn panicking_app() -> axum::Router {
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if std::hint::black_box(true) {
                    panic!("secret detail in /var/lib/memlayer");
                }
                "unreachable"
            }),
        )
        .route("/ok", axum::routing::get(|| async { "fine" }));
    memlayer_api::server::with_middleware(router, &limits(std::time::Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gets_the_json_500_and_the_server_keeps_serving() {
    let app = panicking_app();
    let (status, headers, body) = send(&app, request("GET", "/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": {"code": "internal", "message": "internal error"}}), "nothing of the panic leaks");
    assert!(headers.get("x-request-id").is_some(), "the 500 still carries its request id");
    let (status, _, _) = send(&app, request("GET", "/ok")).await;
    assert_eq!(status, StatusCode::OK, "the server keeps serving");

    // A panic deep in the real app (a port that panics) is the same JSON 500.
    let t = TestApp::new().await;
    let state_panics = {
        use memlayer_ports::{MockDatabase, MockMessageStore, MockStateStore, MockThreadStore, MockTokenCounter};
        let mut threads = MockThreadStore::new();
        threads.expect_list().returning(|_, _, _, _| panic!("driver bug at /secret/path"));
        let memory = memlayer_app::MemoryService::new(
            Arc::new(threads),
            Arc::new(MockMessageStore::new()),
            Arc::new(MockStateStore::new()),
            Arc::new(MockTokenCounter::new()),
            memlayer_domain::TenantId::default_tenant(),
            false,
        );
        let search = memlayer_app::SearchService::new(
            Arc::new(memlayer_ports::MockEmbedder::new()),
            Arc::new(memlayer_ports::MockVectorIndex::new()),
            Arc::new(memlayer_ports::MockEmbeddingStore::new()),
            Arc::new(MockMessageStore::new()),
            Arc::new(MockThreadStore::new()),
        );
        let catalog = memlayer_app::CatalogService::new(
            Arc::new(memlayer_ports::MockCatalogStore::new()),
            memlayer_app::CacheSettings::default(),
        );
        let context = memlayer_app::ContextService::new(
            Arc::new(MockThreadStore::new()),
            Arc::new(MockMessageStore::new()),
            Arc::new(memlayer_ports::MockTokenCounter::new()),
            catalog.clone(),
        );
        let state = memlayer_api::AppState {
            context,
            workflows: no_workflows(&memory),
            memory,
            search,
            catalog,
            keys: no_keys(),
            database: Arc::new(MockDatabase::new()),
            auth: memlayer_api::auth::Auth::anonymous(memlayer_domain::TenantId::default_tenant()),
            limiter: memlayer_app::Limiter::unlimited(),
            coordinator: None,
            idempotency: None,
            working: no_working(),
            summaries: no_summaries(),
            retention: no_retention(),
            transfer: no_transfer(),
            observability: no_observability(),
        };
        memlayer_api::server::with_middleware(memlayer_api::router(state), &limits(std::time::Duration::from_secs(30)))
    };
    let (status, _, body) = send(&state_panics, request("GET", "/api/threads")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("secret"), "{body}");
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(send(&state_panics, request("GET", "/health")).await.0, StatusCode::OK, "still serving");
    assert_eq!(t.call("GET", "/health", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_only_when_safe() {
    let t = TestApp::new().await;
    let with_id = |id: &[u8]| {
        axum::http::Request::builder()
            .uri("/health")
            .header("x-request-id", axum::http::HeaderValue::from_bytes(id).unwrap())
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let good = "req-42.a_b:C".to_owned();
    let longest = "a".repeat(memlayer_api::server::MAX_REQUEST_ID_LEN);
    for id in [good.as_str(), longest.as_str()] {
        let (_, headers, _) = send(&t.app, with_id(id.as_bytes())).await;
        assert_eq!(headers["x-request-id"], id, "a safe id is echoed");
    }
    let too_long = "a".repeat(memlayer_api::server::MAX_REQUEST_ID_LEN + 1);
    for bad in [too_long.as_bytes(), b"evil\" injected=1".as_slice(), b"a b", b"<script>", b"caf\xc3\xa9", b"%0d%0a"] {
        let (_, headers, _) = send(&t.app, with_id(bad)).await;
        let got = headers["x-request-id"].to_str().unwrap();
        assert!(
            uuid::Uuid::parse_str(got).is_ok(),
            "{:?} is replaced by a fresh UUID, got {got}",
            String::from_utf8_lossy(bad)
        );
    }
    let (_, headers, _) = send(&t.app, request("GET", "/health")).await;
    assert!(uuid::Uuid::parse_str(headers["x-request-id"].to_str().unwrap()).is_ok(), "none given: a fresh UUID");
}

/// The request span names the tenant and only a safe request id. Checked
/// on the real binary's logs: a thread-local tracing subscriber in this
/// process raced with other tests over tracing's global callsite interest
/// cache and missed events now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_span_names_the_tenant_and_only_a_safe_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RUST_LOG", "warn,memlayer_api=info,tower_http=debug"), ("MEMLAYER_EMBEDDING__ENABLED", "false")];
    let (mut child, base, logs) = crate::support::spawn_server_with_logs(dir.path(), &env);
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{base}/api/threads"))
        .header("x-tenant-id", "acme-eu")
        .header("x-request-id", "evil\"injected=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let resp = http.get(format!("{base}/api/threads")).header("x-request-id", "plain-id-7").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The line that ends a request's span, once the tenant is recorded in it.
    let finished = |text: &str, needle: &str| {
        text.lines().find(|l| l.contains(needle) && l.contains("finished processing request")).map(str::to_owned)
    };
    // The response may be sent before its log line is written: wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let text = logs.text();
        if finished(&text, "request_id=plain-id-7").is_some() && finished(&text, &format!("request_id={id}")).is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = logs.text();
    let line = |needle: &str| finished(&text, needle).unwrap_or_default();
    let first = line(&format!("request_id={id}"));
    assert!(first.contains("tenant=acme-eu"), "the span names the tenant and the replacement id: {text}");
    assert!(!text.contains("injected"), "the unsafe id never reaches the log: {text}");
    assert!(line("request_id=plain-id-7").contains("tenant=default"), "no header: the default tenant: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_write_says_its_outcome_is_unknown_and_how_to_retry() {
    let never = || async { std::future::pending::<&'static str>().await };
    let router = axum::Router::new().route("/slow", axum::routing::get(never).post(never).delete(never));
    let app = memlayer_api::server::with_middleware(router, &limits(std::time::Duration::from_millis(50)));
    for method in ["POST", "DELETE"] {
        let (status, headers, body) = send(&app, request(method, "/slow")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("timeout")));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("may or may not have been applied") && message.contains("Idempotency-Key"),
            "{message}"
        );
        assert!(headers.get("retry-after").is_some(), "{method}: Retry-After is set");
    }
    let (status, headers, body) = send(&app, request("GET", "/slow")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("timeout")));
    assert!(body["error"]["message"].as_str().unwrap().contains("retry later"), "{body}");
    assert!(headers.get("retry-after").is_some());
}

/// The document states what the server does (schemathesis checks the rest
/// against the running binary in `fuzz`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_states_the_real_shapes_bounds_and_errors() {
    let t = TestApp::new().await;
    let (_, doc) = t.call("GET", "/api/openapi.json", None).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    // The append body: a message object or {"messages": [...]}, untagged.
    let append = schema("AppendBody");
    let shapes: Vec<String> =
        append["oneOf"].as_array().unwrap().iter().map(|s| s["$ref"].as_str().unwrap().to_owned()).collect();
    assert_eq!(shapes, ["#/components/schemas/NewMessageDto", "#/components/schemas/MessageBatchDto"], "{append}");
    assert!(!append.to_string().contains("\"One\"") && !append.to_string().contains("\"Batch\""), "{append}");
    assert_eq!(schema("MessageBatchDto")["properties"]["messages"]["minItems"], 1);
    assert_eq!(schema("MessageBatchDto")["properties"]["messages"]["maxItems"], 1000);
    // Both shapes the document describes are accepted as such.
    let id = t.thread(json!({})).await;
    let uri = format!("/api/threads/{id}/messages");
    assert_eq!(t.call("POST", &uri, Some(json!({"role": "user", "content": "a"}))).await.0, StatusCode::CREATED);
    let batch = json!({"messages": [{"role": "user", "content": "b"}]});
    assert_eq!(t.call("POST", &uri, Some(batch)).await.0, StatusCode::CREATED);
    // A setting's value is any JSON, as stored.
    for value in
        [schema("PutSettingDto")["properties"]["value"].clone(), schema("SettingDto")["properties"]["value"].clone()]
    {
        assert!(value.get("type").is_none(), "any JSON, not an object: {value}");
    }
    let (status, stored) = t.call("PUT", "/api/settings/ui/n", Some(json!({"value": 3}))).await;
    assert_eq!((status, &stored["value"]), (StatusCode::OK, &json!(3)));
    // Bounds as enforced.
    let search = schema("SearchRequestDto");
    assert_eq!(
        (search["properties"]["top_k"]["minimum"].clone(), search["properties"]["top_k"]["maximum"].clone()),
        (json!(1), json!(100))
    );
    assert_eq!(schema("WindowDto")["properties"]["before"]["maximum"], 20);
    // Closed sets of values are enumerated, by the same type that parses them.
    assert_eq!(schema("SearchModeDto")["enum"], json!(["vector", "lexical", "hybrid"]));
    for (dto, property) in [("SearchRequestDto", "mode"), ("SearchResponseDto", "mode"), ("HitDto", "mode")] {
        let mode = schema(dto)["properties"][property].to_string();
        assert!(mode.contains("#/components/schemas/SearchModeDto"), "{dto}.{property}: {mode}");
    }
    let limits = doc["paths"]["/api/threads"]["get"]["parameters"].as_array().unwrap().clone();
    let limit = limits.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!((limit["schema"]["minimum"].clone(), limit["schema"]["maximum"].clone()), (json!(1), json!(1000)));
    // Every route with a JSON body documents 413 and 415; every API route 503.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(responses.get(status).is_some(), "{method} {path} documents {status}");
                }
            }
            if path.starts_with("/api/threads") || path.starts_with("/api/search") {
                assert!(responses.get("503").is_some(), "{method} {path} documents 503");
            }
        }
    }
    // And the 415 is what the server answers without the content type.
    let got = t.call_with("POST", "/api/threads", &[], Some("{}".into()), false).await;
    assert_error(&got, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

/// A key service over a store that expects no call.
fn no_keys() -> memlayer_app::KeyService {
    memlayer_app::KeyService::new(Arc::new(memlayer_ports::MockKeyStore::new()), &memlayer_app::KeysConfig::default())
}

/// A summary service over mocks that expect no call.
fn no_summaries() -> memlayer_app::SummaryService {
    memlayer_app::SummaryService::new(
        Arc::new(memlayer_ports::MockSummaryStore::new()),
        Arc::new(memlayer_ports::MockSummaryQueue::new()),
        Arc::new(memlayer_ports::MockMessageStore::new()),
        Arc::new(memlayer_ports::MockThreadStore::new()),
        Arc::new(memlayer_ports::MockSummarizer::new()),
        memlayer_app::SummaryConfig::default(),
    )
}

/// An export and import service whose ports are never called.
fn no_transfer() -> memlayer_app::TransferService {
    memlayer_app::TransferService::new(
        Arc::new(memlayer_ports::MockTransferStore::new()),
        Arc::new(memlayer_ports::MockThreadStore::new()),
        Arc::new(memlayer_ports::MockEmbeddingStore::new()),
        Arc::new(memlayer_ports::MockVectorIndex::new()),
        memlayer_app::ExportModel { model: "none".into(), dim: 1 },
    )
}

/// An observability service whose port is never called.
fn no_observability() -> memlayer_app::ObservabilityService {
    memlayer_app::ObservabilityService::new(
        Arc::new(memlayer_ports::MockObservabilityStore::new()),
        memlayer_app::ObservabilityConfig::default(),
        memlayer_app::Limiter::unlimited(),
    )
}

/// A working-memory service whose ports are never called.
fn no_working() -> memlayer_app::WorkingMemoryService {
    memlayer_app::WorkingMemoryService::new(
        Arc::new(memlayer_ports::MockWorkingMemoryStore::new()),
        Arc::new(memlayer_ports::MockThreadStore::new()),
    )
}

/// A retention service whose store is never called.
fn no_retention() -> memlayer_app::RetentionService {
    memlayer_app::RetentionService::new(
        Arc::new(memlayer_ports::MockRetentionStore::new()),
        memlayer_app::RetentionConfig::default(),
    )
}

/// A workflow service whose store no test reaches.
fn no_workflows(memory: &memlayer_app::MemoryService) -> memlayer_app::WorkflowService {
    let noop: Arc<dyn memlayer_ports::StepRunner> = Arc::new(memlayer_app::NoopRunner);
    let runners = memlayer_app::Runners { http: noop.clone(), openai: noop.clone(), noop };
    memlayer_app::WorkflowService::new(
        Arc::new(memlayer_ports::MockWorkflowStore::new()),
        memory.clone(),
        runners,
        memlayer_app::WorkflowConfig::default(),
    )
}
