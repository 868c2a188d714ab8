//! Forking a thread over HTTP, on libSQL and Postgres (what is copied, the
//! 400 naming `at_seq`, another tenant's or resource's thread a 404, an
//! `Idempotency-Key` retry answered with the first fork), a fork found by
//! vector and lexical search at once, and `memlayer fork` on the command line.

use axum::http::StatusCode;
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scope, Scopes, TenantId};
use serde_json::{Value, json};

use crate::support::{Store, TestApp, Tokens, assert_error, model_ready};

async fn messages(t: &TestApp, thread: &str) -> Vec<Value> {
    let (status, v) = t.call("GET", &format!("/api/threads/{thread}/messages?limit=100"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn scenario(t: TestApp) {
    let source =
        t.thread(json!({"resource_id": "u1", "agent_id": "support", "title": "Refund", "model": "gpt-4o"})).await;
    let batch = json!({"messages": [
        {"role": "user", "content": "where is my refund", "metadata": {"k": 1}},
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"order": "A-17"}}]},
        {"role": "tool", "tool_call_id": "c1", "tool_name": "lookup", "content": "sent monday"}]});
    let (status, v) = t.call("POST", &format!("/api/threads/{source}/messages?count_tokens=true"), Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // A state saved after seq 3, another after seq 4: a fork at 3 takes the
    // first, the whole thread the second.
    let state_uri = format!("/api/threads/{source}/state/support");
    let (status, v) = t.call("PUT", &state_uri, Some(json!({"state": {"step": 3}, "expected_version": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let batch = json!({"messages": [{"role": "assistant", "content": "after the fork point"}]});
    let (status, v) = t.call("POST", &format!("/api/threads/{source}/messages?count_tokens=true"), Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = t.call("PUT", &state_uri, Some(json!({"state": {"step": 4}, "expected_version": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let fork_uri = format!("/api/threads/{source}/fork");
    let (status, fork) = t.call("POST", &fork_uri, Some(json!({"at_seq": 3}))).await;
    assert_eq!(status, StatusCode::CREATED, "{fork}");
    let id = fork["id"].as_str().unwrap();
    assert_ne!(id, source);
    assert_eq!(
        (&fork["title"], &fork["resource_id"], &fork["agent_id"], &fork["message_count"]),
        (&json!("Refund (fork)"), &json!("u1"), &json!("support"), &json!(3))
    );
    assert_eq!(fork["metadata"]["forked_from"], json!({"thread_id": source, "at_seq": 3}));
    let (copies, originals) = (messages(&t, id).await, messages(&t, &source).await);
    assert_eq!(copies.len(), 3);
    for (copy, original) in copies.iter().zip(&originals) {
        assert_ne!(copy["id"], original["id"]);
        for field in ["seq", "role", "content", "tool_calls", "tool_call_id", "tool_name", "metadata", "token_count"] {
            assert_eq!(copy[field], original[field], "{field}");
        }
    }
    assert!(copies[0]["token_count"]["count"].as_u64().is_some_and(|n| n > 0), "token counts are copied");
    let (_, state) = t.call("GET", &format!("/api/threads/{id}/state/support"), None).await;
    assert_eq!((&state["state"], &state["version"]), (&json!({"step": 3}), &json!(1)), "as of seq 3: {state}");
    assert_eq!(originals.len(), 4, "the source keeps every message");

    // Default: the whole thread; a title of one's own.
    let (status, whole) = t.call("POST", &fork_uri, Some(json!({"title": "Branch B"}))).await;
    assert_eq!(
        (status, &whole["message_count"], &whole["title"]),
        (StatusCode::CREATED, &json!(4), &json!("Branch B"))
    );
    let whole_id = whole["id"].as_str().unwrap();
    let (_, state) = t.call("GET", &format!("/api/threads/{whole_id}/state/support"), None).await;
    assert_eq!((&state["state"], &state["version"]), (&json!({"step": 4}), &json!(1)), "the current one: {state}");

    // Bad input: a 400 naming the field, and no thread created.
    let (_, before) = t.call("GET", "/api/threads?limit=100", None).await;
    for (body, field) in [
        (json!({"at_seq": 5}), "at_seq"),
        (json!({"at_seq": 0}), "at_seq"),
        (json!({"title": "  "}), "title"),
        (json!({"at": 1}), "at"),
    ] {
        let r = t.call("POST", &fork_uri, Some(body.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.1["error"]["message"].as_str().unwrap().contains(field), "{body}: {}", r.1);
    }
    let r = t.call_as("other", "POST", &fork_uri, Some(json!({}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let (_, after) = t.call("GET", "/api/threads?limit=100", None).await;
    assert_eq!(before["items"].as_array().unwrap().len(), after["items"].as_array().unwrap().len());

    // An Idempotency-Key retry gets the first fork, not a second one.
    let keyed = Some(json!({"at_seq": 1}).to_string());
    let headers = [("idempotency-key", "fork-1")];
    let first = t.call_with("POST", &fork_uri, &headers, keyed.clone(), true).await;
    let second = t.call_with("POST", &fork_uri, &headers, keyed, true).await;
    assert_eq!((first.0, second.0), (StatusCode::CREATED, StatusCode::CREATED), "{}", first.1);
    assert_eq!(first.1["id"], second.1["id"]);
    let (_, listed) = t.call("GET", "/api/threads?limit=100", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), after["items"].as_array().unwrap().len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_over_http() {
    scenario(TestApp::with(|c| c.embedding.enabled = false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_over_http_on_postgres() {
    if let Some(t) = TestApp::on(Store::Postgres, |c| c.embedding.enabled = false).await {
        scenario(t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_forks_only_its_own_threads() {
    let mut t = TestApp::with(|c| c.embedding.enabled = false).await;
    let alice = "ml_00000000000000a1_".to_owned() + &"0".repeat(64);
    let bound = Principal {
        tenant: TenantId::parse("acme").unwrap(),
        scopes: Scopes::only(Scope::Read).with(Scope::Write),
        resource: Some(ResourceId::parse("alice").unwrap()),
        credential: Credential::ApiKey(KeyId::parse("00000000000000a1").unwrap()),
    };
    let (_, bobs) = t.call_as("acme", "POST", "/api/threads", Some(json!({"resource_id": "bob"}))).await;
    let (_, own) = t.call_as("acme", "POST", "/api/threads", Some(json!({"resource_id": "alice"}))).await;
    t.authenticate_with(Tokens([(alice.clone(), bound)].into_iter().collect()));
    let uri = |v: &Value| format!("/api/threads/{}/fork", v["id"].as_str().unwrap());
    let r = t.call_bearer(&alice, "POST", &uri(&bobs), Some(json!({}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let (status, fork) = t.call_bearer(&alice, "POST", &uri(&own), Some(json!({}))).await;
    assert_eq!((status, &fork["resource_id"]), (StatusCode::CREATED, &json!("alice")), "{fork}");
    let (_, listed) = t.call_bearer(&alice, "GET", "/api/threads", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "alice's thread and its fork, never bob's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_found_by_vector_and_lexical_search_at_once() {
    if !model_ready("a_fork_is_found_by_vector_and_lexical_search_at_once") {
        return;
    }
    let t = TestApp::with(|c| c.embedding.mode = memlayer_app::EmbeddingMode::Inline).await;
    let source = t.thread(json!({})).await;
    let texts = ["I adopted a small kitten from the shelter", "The quarterly tax report is due on Friday"];
    let batch: Vec<Value> = texts.iter().map(|s| json!({"role": "user", "content": s})).collect();
    let (status, v) =
        t.call("POST", &format!("/api/threads/{source}/messages"), Some(json!({"messages": batch}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, fork) = t.call("POST", &format!("/api/threads/{source}/fork"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{fork}");
    let id = fork["id"].as_str().unwrap();
    for (query, mode) in [("new pet cat", "vector"), ("quarterly", "lexical")] {
        let body = json!({"query": query, "mode": mode, "top_k": 1, "scope": {"thread_id": id}});
        let (status, v) = t.call("POST", "/api/search", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["hits"][0]["thread_id"], id, "{mode}: {v}");
        assert_eq!(v["plan"]["pending"], 0, "{mode}: the vectors were copied, none waits: {v}");
    }
    let (_, progress) = t.call("GET", &format!("/api/threads/{id}/embeddings"), None).await;
    assert_eq!((&progress["embedded"], &progress["pending"]), (&json!(2), &json!(0)), "{progress}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_forks_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let source = {
        let config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
        let mut config = config;
        config.embedding.enabled = false;
        let services = memlayer_app::build(config).await.unwrap();
        let tenant = services.memory.default_tenant().clone();
        let new = memlayer_domain::NewThread {
            title: Some(memlayer_domain::Title::parse("Plan").unwrap()),
            ..Default::default()
        };
        let thread = services.memory.create_thread(&tenant, new).await.unwrap();
        let batch = (0..3)
            .map(|i| memlayer_domain::NewMessage::text(memlayer_domain::Role::User, format!("step {i}")).unwrap())
            .collect();
        services
            .memory
            .append_messages(&tenant, thread.id, batch, memlayer_app::AppendOptions::default())
            .await
            .unwrap();
        thread.id.to_string()
    };
    let run = |args: &[&str]| crate::support::cli(dir.path()).arg("fork").args(args).output().unwrap();
    let out = run(&[&source, "--at-seq", "2", "--title", "Plan B"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fork: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&fork["title"], &fork["message_count"]), (&json!("Plan B"), &json!(2)), "{fork}");
    assert_eq!(fork["metadata"]["forked_from"]["thread_id"], source.as_str());
    let out = run(&[&source, "--at-seq", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at_seq"), "{}", String::from_utf8_lossy(&out.stderr));
}
