//! `POST /api/threads/{id}/context` over HTTP: the response's shape, an
//! agent's context options through the catalog, and the bad inputs of
//! issue 13 (a budget below the system prompt, a negative or absurd
//! budget, an unknown model, another tenant's thread), on libSQL and
//! Postgres.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error};

async fn seeded(t: &TestApp, tenant: &str, thread: Value) -> String {
    let (status, v) = t.call_as(tenant, "POST", "/api/threads", Some(thread)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let batch = json!({"messages": [
        {"role": "user", "content": "Where is my refund? Mail me at ann@example.com"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "name": "lookup_order", "arguments": {"order": "A-17"}}]},
        {"role": "tool", "tool_call_id": "call_1", "tool_name": "lookup_order", "content": "refund sent on Monday"},
        {"role": "assistant", "content": "Your refund was sent on Monday."}]});
    let uri = format!("/api/threads/{id}/messages?count_tokens=true&model=gpt-4o");
    let (status, v) = t.call_as(tenant, "POST", &uri, Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    id
}

fn no_recall(mut body: Value) -> Value {
    body["recall"] = json!({"enabled": false});
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_is_ready_to_send_and_explains_itself() {
    let t = TestApp::new().await;
    let id = seeded(&t, "acme", json!({"model": "gpt-4o"})).await;
    let body = no_recall(json!({"budget": 2000, "processors": [{"kind": "redact_pii"}]}));
    let (status, v) = t.call_as("acme", "POST", &format!("/api/threads/{id}/context"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{v}");
    assert_eq!(messages[0]["content"], "Where is my refund? Mail me at [redacted email]");
    assert_eq!(
        messages[1]["tool_calls"][0],
        json!({"id": "call_1", "type": "function",
        "function": {"name": "lookup_order", "arguments": "{\"order\":\"A-17\"}"}})
    );
    assert_eq!(messages[2]["tool_call_id"], "call_1");
    assert!(messages[0].get("name").is_none() && messages[0].get("tool_calls").is_none(), "absent, not null");
    assert_eq!(v["tokens"]["total"].as_u64().unwrap(), v["tokens"]["recent"].as_u64().unwrap() + 3);
    assert_eq!(v["exact"], false, "tool calls' framing is not documented");
    assert_eq!((v["encoding"].as_str(), v["format"].as_str()), (Some("o200k_base"), Some("openai-chat")));
    let recent = &v["sections"][0];
    assert_eq!(recent["section"], "recent");
    assert_eq!(
        recent["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(v["processors"][0], json!({"name": "redact_pii", "removed": 0, "changed": 1, "redacted": {"email": 1}}));
    assert_eq!(v["dropped"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_context_options_round_trip_and_apply() {
    let t = TestApp::new().await;
    let (status, model) = t
        .call(
            "POST",
            "/api/models",
            Some(json!({"name": "gpt-4o", "provider": "openai", "context_window": 128000, "max_output_tokens": 16384})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let context = json!({"priority": ["summary", "working_memory", "recent", "recall"], "shares": {"recall": 20},
                         "recall": {"enabled": false, "scope": "resource", "top_k": 3, "window": {"before": 1, "after": 0}, "mode": "lexical"},
                         "processors": [{"kind": "role_filter", "roles": ["tool"]}, {"kind": "truncate", "max_chars": 100}]});
    let agent = json!({"name": "support", "model_id": model["id"], "system_prompt": "Be kind.", "memory": {"last_n": 2, "context": context}});
    let (status, created) = t.call("POST", "/api/agents", Some(agent)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let stored = &created["memory"]["context"];
    assert_eq!(stored["priority"], context["priority"]);
    assert_eq!(stored["shares"], json!({"recall": 20}));
    assert_eq!(stored["recall"]["scope"], "resource");
    assert_eq!(stored["processors"], context["processors"]);
    let (_, got) = t.call("GET", &format!("/api/agents/{}", created["id"].as_str().unwrap()), None).await;
    assert_eq!(got["memory"], created["memory"]);
    // A thread of the agent: its prompt, its model's window, its processors.
    let id = seeded(&t, "default", json!({"agent_id": "support"})).await;
    let (status, v) = t.call("POST", &format!("/api/threads/{id}/context"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["budget"], 128_000 - 16_384);
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["messages"][0], json!({"role": "system", "content": "Be kind."}));
    let sent = v["messages"].as_array().unwrap();
    assert!(sent.iter().all(|m| m["role"] != "tool" && m.get("tool_calls").is_none()), "{v}");
    // The tool result went, and with it the call-only assistant message.
    assert_eq!(v["processors"][0]["removed"], 2);
    assert_eq!(sent.len(), 3, "system prompt, the user's question, the answer: {v}");
    // Bad options are a 400 naming the field.
    let bad = json!({"name": "bad", "model_id": model["id"], "memory": {"context": {"processors": [{"kind": "truncate", "max_chars": 3}]}}});
    let r = t.call("POST", "/api/agents", Some(bad)).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.1["error"]["message"].as_str().unwrap().contains("max_chars"), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_on_libsql() {
    bad_input(TestApp::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_on_postgres() {
    let Some(t) = TestApp::on(Store::Postgres, |_| {}).await else { return };
    bad_input(t).await;
}

async fn bad_input(t: TestApp) {
    let (status, model) = t
        .call(
            "POST",
            "/api/models",
            Some(json!({"name": "gpt-4o", "provider": "openai", "context_window": 128000, "max_output_tokens": 16384})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let prompt = "You are a meticulous assistant. ".repeat(30);
    let (status, v) = t
        .call("POST", "/api/agents", Some(json!({"name": "verbose", "model_id": model["id"], "system_prompt": prompt})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = seeded(&t, "default", json!({"agent_id": "verbose", "model": "gpt-4o"})).await;
    let uri = format!("/api/threads/{id}/context");

    // A budget below the system prompt: 422 with the minimum.
    let r = t.call("POST", &uri, Some(json!({"budget": 20}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "budget_too_small");
    let message = r.1["error"]["message"].as_str().unwrap().to_owned();
    let minimum: u64 = message.split("at least ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let ok = t.call("POST", &uri, Some(no_recall(json!({"budget": minimum})))).await;
    assert_eq!(ok.0, StatusCode::OK, "the minimum named is enough: {}", ok.1);
    assert_eq!(ok.1["tokens"]["total"], minimum);

    // A negative or absurd budget: 400 naming the limit.
    for budget in [json!(-5), json!(0), json!(10_000_001), json!(1e300), json!(2.5), json!("8000")] {
        let r = t.call("POST", &uri, Some(json!({"budget": budget}))).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        let m = r.1["error"]["message"].as_str().unwrap();
        assert!(m.contains("budget"), "{budget}: {m}");
        if budget.is_number() {
            assert!(m.contains("10000000"), "{budget}: names the limit: {m}");
        }
    }
    for (body, field) in [
        (json!({"bogus": 1}), "bogus"),
        (json!({"last_n": 0}), "last_n"),
        (json!({"query": "   "}), "query"),
        (json!({"priority": ["recent", "recent"]}), "priority"),
        (json!({"shares": {"recall": 101}}), "shares"),
        (json!({"recall": {"top_k": 500}}), "top_k"),
        (json!({"processors": [{"kind": "explode"}]}), "explode"),
        (json!({"model": "has space"}), "model"),
    ] {
        let r = t.call("POST", &uri, Some(body.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.1["error"]["message"].as_str().unwrap().contains(field), "{body}: {}", r.1);
    }

    // A whole number written as a float is a whole number (JSON Schema's `integer`).
    let body = no_recall(json!({"budget": 4000.0, "processors": [{"kind": "truncate", "max_chars": 4096.0}]}));
    let r = t.call("POST", &uri, Some(body)).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    // An unknown model: estimated and flagged, never exact.
    let r = t.call("POST", &uri, Some(no_recall(json!({"model": "mistral-large-2", "budget": 4000})))).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!((r.1["exact"].as_bool(), r.1["format"].as_str()), (Some(false), Some("estimate")));
    assert_eq!(r.1["encoding"], "estimate:chars/4");

    // Another tenant's thread, and a thread that does not exist: 404.
    let r = t.call_as("other", "POST", &uri, Some(json!({"budget": 4000}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert!(!r.1.to_string().contains("refund"), "{}", r.1);
    let missing = format!("/api/threads/{}/context", uuid::Uuid::now_v7());
    assert_error(&t.call("POST", &missing, Some(json!({}))).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &t.call("POST", "/api/threads/nope/context", Some(json!({}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // Nothing stored was touched: the thread still has its four messages.
    let (_, page) = t.call("GET", &format!("/api/threads/{id}/messages"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}
