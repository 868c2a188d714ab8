//! The catalog over HTTP: models, agents, tools, settings,
//! typed listings, bad input (each a clear 4xx that changes nothing), and
//! threads that pick up their agent's memory options.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error};

fn model(name: &str, provider: &str, window: u64, price: f64) -> Value {
    json!({"name": name, "provider": provider, "context_window": window, "max_output_tokens": 4096.min(window),
           "input_price": price, "output_price": price * 4.0})
}

async fn create(t: &TestApp, path: &str, body: Value) -> Value {
    let (status, v) = t.call("POST", path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

fn names(v: &Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect()
}

async fn model_names(t: &TestApp) -> Vec<String> {
    let (status, v) = t.call("GET", "/api/models?sort=name", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    names(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_crud_listing_and_default() {
    let t = TestApp::new().await;
    let a = create(&t, "/api/models", model("gpt-4o", "openai", 128_000, 2.5)).await;
    for key in ["id", "name", "provider", "context_window", "max_output_tokens", "input_price", "output_price"] {
        assert!(a.get(key).is_some(), "model has {key}: {a}");
    }
    assert_eq!(a["is_default"], false);
    let id = a["id"].as_str().unwrap();
    let (status, got) = t.call("GET", &format!("/api/models/{id}"), None).await;
    assert_eq!((status, &got), (StatusCode::OK, &a));
    create(&t, "/api/models", model("o3", "openai", 200_000, 2.0)).await;
    create(&t, "/api/models", model("claude", "anthropic", 200_000, 3.0)).await;
    create(&t, "/api/models", model("llama", "meta", 8_192, 0.0)).await;

    let (_, v) = t.call("GET", "/api/models?filter=provider:eq:openai&filter=context_window:gte:150000", None).await;
    assert_eq!(names(&v), vec!["o3"]);
    let (_, v) = t.call("GET", "/api/models?filter=provider:in:meta,anthropic&sort=-name", None).await;
    assert_eq!(names(&v), vec!["llama", "claude"]);
    let (_, v) = t.call("GET", "/api/models?filter=input_price:lt:2.5&sort=input_price", None).await;
    assert_eq!(names(&v), vec!["llama", "o3"]);

    // Keyset pages over ties on context_window.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = cursor.as_ref().map_or_else(
            || "/api/models?sort=-context_window&limit=1".to_owned(),
            |c| format!("/api/models?sort=-context_window&limit=1&cursor={c}"),
        );
        let (status, page) = t.call("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(&seen[2..], ["gpt-4o", "llama"]);
    assert!(seen[..2].contains(&"o3".to_owned()) && seen[..2].contains(&"claude".to_owned()));

    // One default per tenant: the second default takes the flag.
    let mut body = model("gpt-4o", "openai", 128_000, 2.5);
    body["is_default"] = json!(true);
    let (status, v) = t.call("PUT", &format!("/api/models/{id}"), Some(body)).await;
    assert_eq!((status, &v["is_default"]), (StatusCode::OK, &json!(true)), "{v}");
    let mut other = model("mistral", "mistral", 32_000, 2.0);
    other["is_default"] = json!(true);
    create(&t, "/api/models", other).await;
    let (_, v) = t.call("GET", "/api/models?filter=is_default:eq:true", None).await;
    assert_eq!(names(&v), vec!["mistral"]);

    assert_error(
        &t.call("POST", "/api/models", Some(model("o3", "x", 1, 0.0))).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (status, _) = t.call("DELETE", &format!("/api/models/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", &format!("/api/models/{id}"), None).await, StatusCode::NOT_FOUND, "not_found");
    // Another tenant sees none of it.
    let (_, v) = t.call_as("acme", "GET", "/api/models", None).await;
    assert_eq!(v, json!({"items": [], "next_cursor": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listing_input_is_a_400_naming_it_and_changes_nothing() {
    bad_listing_input(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listing_input_is_a_400_naming_it_and_changes_nothing_on_postgres() {
    bad_listing_input(Store::Postgres).await;
}

async fn bad_listing_input(store: Store) {
    let Some(t) = TestApp::on(store, |_| {}).await else { return };
    create(&t, "/api/models", model("gpt-4o", "openai", 128_000, 2.5)).await;
    create(&t, "/api/models", model("o3", "openai", 200_000, 2.0)).await;
    let before = model_names(&t).await;
    let cases = [
        ("filter=secret:eq:x", "secret"),
        ("filter=name%3BDROP%20TABLE%20models--:eq:x", "name;DROP TABLE models--"),
        ("filter=context_window:contains:1", "contains"),
        ("filter=is_default:lt:true", "lt"),
        ("filter=context_window:gte:lots", "lots"),
        ("filter=context_window:gte:1%3BDROP%20TABLE%20config_models", "DROP TABLE"),
        ("filter=name:like:gpt%25", "like"),
        ("filter=name", "FIELD:OP:VALUE"),
        ("sort=secret", "secret"),
        ("sort=-name%3BDROP%20TABLE%20models--", "name;DROP TABLE models--"),
        ("sort=name%20DESC", "name DESC"),
        ("order=name", "order"),
        ("limit=0", "limit"),
        ("cursor=AAAA", "cursor"),
    ];
    for (query, named) in cases {
        let got = t.call("GET", &format!("/api/models?{query}"), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{query}: message {message:?} should name {named:?}");
    }
    // Injection as a value is just a value: no match, nothing dropped.
    let (status, v) = t.call("GET", "/api/models?filter=name:eq:x%27%3BDROP%20TABLE%20config_models--", None).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"items": [], "next_cursor": null})));
    let (status, v) = t.call("GET", "/api/models?filter=provider:contains:%27%20OR%20%271%27%3D%271", None).await;
    assert_eq!((status, names(&v)), (StatusCode::OK, Vec::<String>::new()));
    // A cursor of one listing is refused by another.
    let (_, page) = t.call("GET", "/api/models?sort=name&limit=1", None).await;
    let c = page["next_cursor"].as_str().unwrap();
    assert_error(
        &t.call("GET", &format!("/api/models?sort=-name&limit=1&cursor={c}"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &t.call("GET", &format!("/api/tools?sort=name&limit=1&cursor={c}"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_eq!(model_names(&t).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_4xx_and_change_nothing() {
    bad_bodies(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_4xx_and_change_nothing_on_postgres() {
    bad_bodies(Store::Postgres).await;
}

async fn bad_bodies(store: Store) {
    let Some(t) = TestApp::on(store, |_| {}).await else { return };
    let m = create(&t, "/api/models", model("gpt-4o", "openai", 128_000, 2.5)).await;
    let mid = m["id"].as_str().unwrap().to_owned();
    let tool = create(&t, "/api/tools", json!({"name": "search", "parameters": {"type": "object"}})).await;
    let tid = tool["id"].as_str().unwrap().to_owned();
    let missing = "0193e5a0-0000-7000-8000-000000000000";

    let bad: Vec<(&str, &str, Value, StatusCode, &str, &str)> = vec![
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": missing}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "model_id",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": mid, "tool_ids": [missing]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "tool_ids",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": "nope"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "model_id",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": mid, "temperature": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "temperature",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": mid, "runner": {"kind": "http", "url": "ftp://example.com/x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "runner",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a b", "model_id": mid}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "name",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": mid, "memory": {"top_k": 0}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "memory.top_k",
        ),
        (
            "POST",
            "/api/agents",
            json!({"name": "a", "model_id": mid, "memory": {"recall": 3}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "recall",
        ),
        (
            "POST",
            "/api/models",
            json!({"name": "m", "provider": "p", "context_window": 10, "max_output_tokens": 5, "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "extra",
        ),
        (
            "POST",
            "/api/models",
            json!({"name": "m", "provider": "p", "context_window": 10, "max_output_tokens": 50}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "max_output_tokens",
        ),
        (
            "POST",
            "/api/tools",
            json!({"name": "t", "parameters": {"type": "string"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "parameters",
        ),
        (
            "POST",
            "/api/tools",
            json!({"name": "t", "parameters": "{\"type\": \"object\"}"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "parameters",
        ),
        (
            "POST",
            "/api/tools",
            json!({"name": "t", "parameters": {"type": "object", "required": ["x"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "required",
        ),
        (
            "PUT",
            "/api/settings/ui/theme",
            json!({"value": 1, "note": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "note",
        ),
        (
            "PUT",
            "/api/settings/ui%3Bx/theme",
            json!({"value": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "category",
        ),
    ];
    // Deleting what an agent uses is a conflict; first, such an agent.
    create(&t, "/api/agents", json!({"name": "support", "model_id": mid, "tool_ids": [tid]})).await;
    for (method, uri, body, status, code, named) in bad {
        let got = t.call(method, uri, (!body.is_null()).then_some(body)).await;
        assert_error(&got, status, code);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{method} {uri}: {message:?} should name {named:?}");
    }
    assert_error(&t.call("DELETE", &format!("/api/tools/{tid}"), None).await, StatusCode::CONFLICT, "conflict");
    assert_error(&t.call("DELETE", &format!("/api/models/{mid}"), None).await, StatusCode::CONFLICT, "conflict");
    // A setting value that is not JSON.
    let not_json = t.call_with("PUT", "/api/settings/ui/theme", &[], Some("{\"value\": dark}".to_owned()), true).await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "malformed_json");
    assert_error(
        &t.call("GET", "/api/settings/ui/theme?default=dark", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // Nothing changed.
    let (_, agents) = t.call("GET", "/api/agents", None).await;
    assert_eq!(names(&agents), vec!["support"]);
    let (_, tools) = t.call("GET", "/api/tools", None).await;
    assert_eq!(names(&tools), vec!["search"]);
    assert_eq!(model_names(&t).await, vec!["gpt-4o"]);
    assert_error(&t.call("GET", "/api/settings/ui/theme", None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_tools_and_a_thread_that_inherits_memory_options() {
    let t = TestApp::new().await;
    let m = create(&t, "/api/models", model("gpt-4o", "openai", 128_000, 2.5)).await;
    let schema = json!({"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]});
    let lookup = create(
        &t,
        "/api/tools",
        json!({"name": "lookup_order", "description": "finds an order", "parameters": schema}),
    )
    .await;
    let refund = create(&t, "/api/tools", json!({"name": "refund", "parameters": {"type": "object"}})).await;
    let agent = create(
        &t,
        "/api/agents",
        json!({"name": "support", "model_id": m["id"], "system_prompt": "Be kind.",
               "tool_ids": [refund["id"], lookup["id"]], "memory": {"last_n": 3, "top_k": 2}}),
    )
    .await;
    assert_eq!(agent["memory"], json!({"last_n": 3, "top_k": 2, "token_budget": null, "working_memory": null}));
    let aid = agent["id"].as_str().unwrap();
    let (status, tools) = t.call("GET", &format!("/api/agents/{aid}/tools"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tools["items"], json!([refund, lookup]), "whole tools in the agent's order");
    let (_, listed) =
        t.call("GET", &format!("/api/agents?filter=tool_ids:contains:{}", lookup["id"].as_str().unwrap()), None).await;
    assert_eq!(names(&listed), vec!["support"]);

    // A thread for the agent carries its memory options, and they apply.
    let thread = t.thread(json!({"agent_id": "support", "metadata": {"lang": "en"}})).await;
    let (_, th) = t.call("GET", &format!("/api/threads/{thread}"), None).await;
    assert_eq!(th["metadata"], json!({"lang": "en", "_memory": {"last_n": 3, "top_k": 2}}));
    let batch: Vec<Value> = (0..5).map(|i| json!({"role": "user", "content": format!("refund request {i}")})).collect();
    let (status, _) =
        t.call("POST", &format!("/api/threads/{thread}/messages"), Some(json!({"messages": batch}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, page) = t.call("GET", &format!("/api/threads/{thread}/messages?direction=backward"), None).await;
    let seqs: Vec<i64> = page["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![5, 4, 3], "default page size is the agent's last_n");
    let (_, page) = t.call("GET", &format!("/api/threads/{thread}/messages?limit=4"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4, "an explicit limit wins");
    let search = json!({"query": "refund", "mode": "lexical", "scope": {"thread_id": thread}});
    let (status, hits) = t.call("POST", "/api/search", Some(search)).await;
    assert_eq!(status, StatusCode::OK, "{hits}");
    assert_eq!(hits["hits"].as_array().unwrap().len(), 2, "default top_k is the agent's");

    // An unknown (external) agent is allowed and adds nothing; the caller's key wins.
    let ext = t.thread(json!({"agent_id": "external-bot"})).await;
    let (_, th) = t.call("GET", &format!("/api/threads/{ext}"), None).await;
    assert_eq!(th["metadata"], json!({}));
    let own = t.thread(json!({"agent_id": "support", "metadata": {"_memory": {"last_n": 9}}})).await;
    let (_, th) = t.call("GET", &format!("/api/threads/{own}"), None).await;
    assert_eq!(th["metadata"], json!({"_memory": {"last_n": 9}}));

    // Update through the API is seen at once (the cache is invalidated).
    let (status, v) = t
        .call(
            "PUT",
            &format!("/api/agents/{aid}"),
            Some(json!({"name": "support", "model_id": m["id"], "memory": {"last_n": 7}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, got) = t.call("GET", &format!("/api/agents/{aid}"), None).await;
    assert_eq!(got["memory"]["last_n"], 7);
    assert_eq!(got["tool_ids"], json!([]));
    let later = t.thread(json!({"agent_id": "support"})).await;
    let (_, th) = t.call("GET", &format!("/api/threads/{later}"), None).await;
    assert_eq!(th["metadata"], json!({"_memory": {"last_n": 7}}));
    let (status, _) = t.call("DELETE", &format!("/api/agents/{aid}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", &format!("/api/agents/{aid}"), None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_round_trip_with_a_default_for_absent_ones() {
    let t = TestApp::new().await;
    let uri = "/api/settings/retrieval/top_k";
    assert_error(&t.call("GET", uri, None).await, StatusCode::NOT_FOUND, "not_found");
    let (status, v) = t.call("GET", &format!("{uri}?default=%7B%22k%22%3A5%7D"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&v["value"], &v["stored"], &v["updated_at"]), (&json!({"k": 5}), &json!(false), &Value::Null));
    let (status, v) = t.call("PUT", uri, Some(json!({"value": [1, "two", null]}))).await;
    assert_eq!((status, &v["value"], &v["stored"]), (StatusCode::OK, &json!([1, "two", null]), &json!(true)));
    let (_, got) = t.call("GET", &format!("{uri}?default=0"), None).await;
    assert_eq!(got, v, "stored value wins over the default");
    let (_, v) = t.call("PUT", uri, Some(json!({"value": 8}))).await;
    assert_eq!(v["value"], 8);
    let (_, got) = t.call("GET", uri, None).await;
    assert_eq!(got["value"], 8, "a write is seen at once");
    assert_error(&t.call_as("acme", "GET", uri, None).await, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = t.call("DELETE", uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", uri, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&t.call("DELETE", uri, None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_routes_are_in_the_openapi_document() {
    let t = TestApp::new().await;
    let (_, doc) = t.call("GET", "/api/openapi.json", None).await;
    for path in [
        "/api/models",
        "/api/models/{id}",
        "/api/agents",
        "/api/agents/{id}",
        "/api/agents/{id}/tools",
        "/api/tools",
        "/api/tools/{id}",
        "/api/settings/{category}/{key}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    assert!(doc["paths"]["/api/settings/{category}/{key}"].get("put").is_some());
    assert!(doc["paths"]["/api/models/{id}"].get("put").is_some());
}
