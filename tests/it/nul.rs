//! The NUL character (U+0000) in what a caller stores: every backend answers
//! alike, a 400 `invalid_request` naming the field (and, in JSON, the JSON
//! Pointer of the string or key holding it), and stores nothing. libSQL
//! would keep it in JSON (and cut text short at it), Postgres refuses it in
//! both `text` and `jsonb`: the domain refuses it first
//! (`memlayer_domain::no_nul`, `no_nul_json`).

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error};

const NUL: &str = "a\u{0}b";

/// One refused write: the request, and what the error's message must name.
struct Case {
    method: &'static str,
    uri: String,
    body: Value,
    names: &'static [&'static str],
}

fn case(method: &'static str, uri: impl Into<String>, body: Value, names: &'static [&'static str]) -> Case {
    Case { method, uri: uri.into(), body, names }
}

/// Sends every case to an app on `store` and checks each is a 400 naming
/// its field, then that nothing of any of them was stored.
async fn check(store: Store) {
    let Some(t) = TestApp::on(store, |_| {}).await else { return };
    let thread = t.thread(json!({"agent_id": "bot", "title": "kept", "metadata": {"k": "kept"}})).await;
    let model = json!({"name": "m1", "provider": "p", "context_window": 8192, "max_output_tokens": 100});
    let (status, m) = t.call("POST", "/api/models", Some(model)).await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let model = m["id"].as_str().unwrap().to_owned();
    let (status, w) =
        t.call("POST", "/api/workflows", Some(json!({"name": "w", "steps": [{"name": "s", "agent": "bot"}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let workflow = w["id"].as_str().unwrap().to_owned();
    let messages = format!("/api/threads/{thread}/messages");
    let call = |arguments: Value| json!({"role": "assistant", "content": "x", "tool_calls": [arguments]});
    let cases = [
        case("POST", "/api/threads", json!({"title": NUL}), &["title"]),
        case("POST", "/api/threads", json!({"metadata": {"k": [1, NUL]}}), &["metadata", "`/k/1`"]),
        case("POST", "/api/threads", json!({"metadata": {NUL: 1}}), &["metadata", "key", "`/a\\u0000b`"]),
        case("PATCH", format!("/api/threads/{thread}"), json!({"title": NUL}), &["title"]),
        case(
            "PATCH",
            format!("/api/threads/{thread}"),
            json!({"metadata": {"k": {"n": NUL}}}),
            &["metadata", "`/k/n`"],
        ),
        case("POST", format!("/api/threads/{thread}/fork"), json!({"title": NUL}), &["title"]),
        case("POST", &messages, json!({"role": "user", "content": NUL}), &["content"]),
        case("POST", &messages, json!({"role": "user", "content": "x", "metadata": {"k": NUL}}), &["metadata", "`/k`"]),
        case(
            "POST",
            &messages,
            call(json!({"id": "c", "name": "f", "arguments": {"q": NUL}})),
            &["tool_calls.arguments", "`/q`"],
        ),
        case("POST", &messages, call(json!({"id": NUL, "name": "f"})), &["tool_calls.id"]),
        case("POST", &messages, call(json!({"id": "c", "name": NUL})), &["tool_calls.name"]),
        // A batch is atomic: the good first message is not stored either.
        case(
            "POST",
            &messages,
            json!({"messages": [{"role": "user", "content": "fine"}, {"role": "user", "content": "x", "metadata": {"k": NUL}}]}),
            &["messages[1].metadata", "`/k`"],
        ),
        case(
            "PUT",
            format!("/api/threads/{thread}/state/bot"),
            json!({"state": {"k": NUL}, "expected_version": 0}),
            &["state", "`/k`"],
        ),
        case(
            "PUT",
            format!("/api/threads/{thread}/state/bot"),
            json!({"state": {NUL: 1}, "expected_version": 0}),
            &["state", "key"],
        ),
        case("POST", "/api/agents", json!({"name": "a1", "model_id": model, "system_prompt": NUL}), &["system_prompt"]),
        case(
            "POST",
            "/api/agents",
            json!({"name": "a2", "model_id": model, "memory": {"working_memory": {"format": "markdown", "template": NUL}}}),
            &["memory.working_memory.template"],
        ),
        case(
            "POST",
            "/api/agents",
            json!({"name": "a3", "model_id": model, "memory": {"working_memory": {"schema": {"description": NUL}}}}),
            &["memory.working_memory.schema", "`/description`"],
        ),
        case(
            "POST",
            "/api/tools",
            json!({"name": "t1", "description": NUL, "parameters": {"type": "object"}}),
            &["description"],
        ),
        case(
            "POST",
            "/api/tools",
            json!({"name": "t2", "parameters": {"type": "object", "title": NUL}}),
            &["parameters", "`/title`"],
        ),
        case("PUT", "/api/settings/c/k", json!({"value": [NUL]}), &["value", "`/0`"]),
        case(
            "PUT",
            format!("/api/threads/{thread}/working-memory"),
            json!({"content": {"k": NUL}, "expected_version": 0}),
            &["content", "`/k`"],
        ),
        case(
            "PUT",
            format!("/api/threads/{thread}/working-memory"),
            json!({"format": "markdown", "content": NUL, "expected_version": 0}),
            &["content"],
        ),
        case("PATCH", format!("/api/threads/{thread}/working-memory"), json!({"k": NUL}), &["content", "`/k`"]),
        case(
            "PUT",
            "/api/resources/r1/working-memory",
            json!({"content": {"k": NUL}, "expected_version": 0}),
            &["content", "`/k`"],
        ),
        case("POST", "/api/workflows", json!({"name": NUL}), &["name"]),
        case("POST", "/api/workflows", json!({"name": "w2", "description": NUL}), &["description"]),
        case("POST", "/api/workflows", json!({"name": "w2", "metadata": {"k": NUL}}), &["metadata", "`/k`"]),
        case(
            "POST",
            "/api/workflows",
            json!({"name": "w2", "steps": [{"name": "s", "agent": "bot", "input": {"k": NUL}}]}),
            &["input", "`/k`"],
        ),
        case(
            "POST",
            "/api/workflows",
            json!({"name": "w2", "steps": [{"name": "s", "agent": "bot", "metadata": {"k": NUL}}]}),
            &["metadata", "`/k`"],
        ),
        case("PATCH", format!("/api/workflows/{workflow}"), json!({"description": NUL}), &["description"]),
        case("PATCH", format!("/api/workflows/{workflow}"), json!({"metadata": {"k": NUL}}), &["metadata", "`/k`"]),
        case(
            "POST",
            format!("/api/workflows/{workflow}/steps"),
            json!({"steps": [{"name": "s2", "agent": "bot", "input": [NUL]}]}),
            &["input", "`/0`"],
        ),
        case(
            "POST",
            "/api/observability/evaluations",
            json!({"dataset": "d", "model": "m", "metadata": {"k": NUL}}),
            &["metadata", "`/k`"],
        ),
        case(
            "POST",
            "/api/observability/evaluations",
            json!({"dataset": "d", "model": "m", "examples": [{"input": NUL, "output": "o"}]}),
            &["examples.input"],
        ),
        case(
            "POST",
            "/api/observability/evaluations",
            json!({"dataset": "d", "model": "m", "examples": [{"input": "i", "output": {"k": NUL}}]}),
            &["examples.output", "`/k`"],
        ),
        case(
            "POST",
            "/api/observability/evaluations",
            json!({"dataset": "d", "model": "m", "examples": [{"input": "i", "output": "o", "expected": [NUL]}]}),
            &["examples.expected", "`/0`"],
        ),
    ];
    for c in cases {
        let got = t.call(c.method, &c.uri, Some(c.body.clone())).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("NUL"), "{} {} {}: {message}", c.method, c.uri, c.body);
        for name in c.names {
            assert!(message.contains(name), "{} {} {}: {message} should name {name}", c.method, c.uri, c.body);
        }
    }

    // Nothing of it was stored.
    let t = &t;
    let get = |uri: String| async move {
        let (status, v) = t.call("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {v}");
        v
    };
    let threads = get("/api/threads".into()).await;
    assert_eq!(threads["items"].as_array().unwrap().len(), 1, "{threads}");
    let kept = &threads["items"][0];
    assert_eq!((kept["title"].clone(), kept["metadata"].clone()), (json!("kept"), json!({"k": "kept"})));
    assert_eq!(kept["message_count"], 0, "no message of the batch");
    assert_eq!(get(messages).await["items"], json!([]));
    assert_eq!(get(format!("/api/threads/{thread}/state/bot")).await["version"], 0);
    assert_eq!(get("/api/agents".into()).await["items"], json!([]));
    assert_eq!(get("/api/tools".into()).await["items"], json!([]));
    assert_error(&t.call("GET", "/api/settings/c/k", None).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(get(format!("/api/threads/{thread}/working-memory")).await["version"], 0);
    assert_eq!(get("/api/resources/r1/working-memory".into()).await["version"], 0);
    let workflows = get("/api/workflows".into()).await;
    assert_eq!(workflows["items"].as_array().unwrap().len(), 1, "{workflows}");
    let w = get(format!("/api/workflows/{workflow}")).await;
    assert_eq!(
        (w["description"].clone(), w["metadata"].clone(), w["steps"].as_array().unwrap().len()),
        (json!(""), json!({}), 1)
    );
    assert_eq!(get("/api/observability/evaluations".into()).await["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_is_refused_naming_the_field_on_libsql() {
    check(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_is_refused_naming_the_field_on_postgres() {
    check(Store::Postgres).await;
}

/// The document says so, so a client generated from it never sends a NUL
/// (`tests/it/fuzz.rs` holds the server to the whole document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_forbids_nul_in_stored_strings_and_json() {
    let t = TestApp::new().await;
    let (status, doc) = t.call("GET", "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let no_nul = json!({"pattern": "^[^\\u0000]*$"});
    let any = json!({"$ref": "#/components/schemas/JsonNoNul"});
    let schema = |pointer: &str| doc.pointer(&format!("/components/schemas/{pointer}")).cloned().unwrap_or(Value::Null);
    let json_no_nul = schema("JsonNoNul");
    assert_eq!(
        (
            &json_no_nul["pattern"],
            &json_no_nul["propertyNames"],
            &json_no_nul["items"],
            &json_no_nul["additionalProperties"]
        ),
        (&no_nul["pattern"], &no_nul, &any, &any),
        "{json_no_nul}"
    );
    for object in
        ["CreateThreadDto/properties/metadata", "SaveStateDto/properties/state", "NewStepDto/properties/metadata"]
    {
        let s = schema(object);
        assert_eq!((&s["propertyNames"], &s["additionalProperties"]), (&no_nul, &any), "{object}: {s}");
    }
    for value in ["PutSettingDto/properties/value", "NewStepDto/properties/input"] {
        assert_eq!(schema(value)["$ref"], any["$ref"], "{value}: {}", schema(value));
    }
    for text in ["AgentBodyDto/properties/system_prompt", "ToolBodyDto/properties/description"] {
        assert_eq!(schema(text)["pattern"], no_nul["pattern"], "{text}: {}", schema(text));
    }
    let title = schema("CreateThreadDto/properties/title");
    assert!(title["allOf"].as_array().is_some_and(|all| all.contains(&no_nul)), "{title}");
}

/// Every query parameter of every `GET` route the document lists, and a
/// thread listing's `metadata.KEY` filter, answered with a 400 naming it
/// when it holds NUL: the same on both backends (libSQL would match
/// nothing, Postgres would refuse the text). A control without NUL shows
/// each 400 is about the character.
async fn check_queries(store: Store) {
    let Some(t) = TestApp::on(store, |_| {}).await else { return };
    let (status, doc) = t.call("GET", "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut sent = vec![("/api/threads".to_owned(), "metadata.k".to_owned())];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(params) = item.pointer("/get/parameters").and_then(Value::as_array) else { continue };
        let uri: String = path
            .split('/')
            .map(|segment| if segment.starts_with('{') { "00000000-0000-4000-8000-000000000000" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        for p in params.iter().filter(|p| p["in"] == "query") {
            sent.push((uri.clone(), p["name"].as_str().unwrap().to_owned()));
        }
    }
    assert!(sent.len() > 30, "the document lists the query parameters: {}", sent.len());
    for (uri, name) in &sent {
        let (status, body) = t.call("GET", &format!("{uri}?{name}=a%00b"), None).await;
        assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "invalid_request");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("`{name}`")) && message.contains("NUL"), "{uri}?{name}: {message}");
        let (_, control) = t.call("GET", &format!("{uri}?{name}=ab"), None).await;
        assert!(!control.to_string().contains("NUL"), "{uri}?{name}=ab: {control}");
    }
    // A NUL in the parameter's name is named as well (escaped).
    let (status, body) = t.call("GET", "/api/threads?metadata.a%00b=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("metadata.a\\\\u0000b"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_query_parameter_is_refused_naming_it_on_libsql() {
    check_queries(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_query_parameter_is_refused_naming_it_on_postgres() {
    check_queries(Store::Postgres).await;
}

/// The document refuses NUL in every string query parameter: a string
/// holding one fails its enum, its format or one of its patterns (run as
/// regular expressions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_forbids_nul_in_query_parameters() {
    let t = TestApp::new().await;
    let (_, doc) = t.call("GET", "/api/openapi.json", None).await;
    let nul = "a\u{0}b";
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
                let schema = &p["schema"];
                for s in [schema, &schema["items"]]
                    .into_iter()
                    .filter(|s| s["type"] == "string" || s["type"] == json!(["string", "null"]))
                {
                    let patterns = std::iter::once(&s["pattern"])
                        .chain(s["allOf"].as_array().into_iter().flatten().map(|a| &a["pattern"]))
                        .filter_map(Value::as_str);
                    let refused = s["enum"].as_array().is_some_and(|e| !e.contains(&json!(nul)))
                        || s.get("format").is_some()
                        || patterns.into_iter().any(|p| !regex::Regex::new(p).unwrap().is_match(nul));
                    assert!(refused, "{method} {path} ?{} admits NUL: {schema}", p["name"]);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 30, "string query parameters checked: {checked}");
}
