//! Working memory over HTTP, on libSQL and Postgres: a stale version is a
//! 409, a document its agent's JSON Schema refuses a 400 naming the JSON
//! path, concurrent merge patches of different fields all stay, versions
//! are bounded by the agent and can be restored, another tenant's or
//! resource's document is a 404; and the CLI, through the same service.

use std::collections::BTreeSet;
use std::process::Command;

use axum::http::StatusCode;
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scope, Scopes, TenantId};
use serde_json::{Value, json};

use crate::support::{BIN, Store, TestApp, Tokens, assert_error};

/// Creates a model and an agent with `working_memory` options; returns the
/// agent as created.
async fn agent(t: &TestApp, name: &str, working_memory: Value) -> (StatusCode, Value) {
    let model = json!({"name": format!("model-{name}"), "provider": "openai", "context_window": 8192,
                       "max_output_tokens": 1024});
    let (status, model) = t.call("POST", "/api/models", Some(model)).await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let body =
        json!({"name": name, "model_id": model["id"], "memory": {"last_n": 20, "working_memory": working_memory}});
    t.call("POST", "/api/agents", Some(body)).await
}

/// The profile schema: a name, a non-negative age, any other field.
fn profile() -> Value {
    json!({"scope": "thread", "format": "json", "versions": 5, "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                       "address": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}}
    }})
}

async fn scenario(t: TestApp) {
    let (status, created) = agent(&t, "profiler", profile()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["memory"]["working_memory"]["schema"]["properties"]["age"]["minimum"], 0, "{created}");
    assert_eq!(created["memory"]["working_memory"]["versions"], 5);
    let thread = t.thread(json!({"agent_id": "profiler", "resource_id": "user-42"})).await;
    let doc = format!("/api/threads/{thread}/working-memory");

    // Never written: version 0, an empty object, the thread's agent.
    let (status, got) = t.call("GET", &doc, None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        (&got["version"], &got["content"], &got["format"], &got["agent"], &got["updated_at"]),
        (&json!(0), &json!({}), &json!("json"), &json!("profiler"), &Value::Null)
    );
    assert_eq!((&got["scope"], &got["id"]), (&json!("thread"), &json!(thread)));

    // PUT with the version it replaces; a stale one is a 409 and changes nothing.
    let put = |content: Value, expected: u64| json!({"content": content, "expected_version": expected});
    let (status, v1) = t.call("PUT", &doc, Some(put(json!({"name": "Ada", "age": 36}), 0))).await;
    assert_eq!((status, &v1["version"]), (StatusCode::OK, &json!(1)), "{v1}");
    let stale = t.call("PUT", &doc, Some(put(json!({"name": "stale"}), 0))).await;
    assert_error(&stale, StatusCode::CONFLICT, "conflict");
    assert!(stale.1["error"]["message"].as_str().unwrap().contains("version is 1, expected 0"), "{}", stale.1);
    let (_, now) = t.call("GET", &doc, None).await;
    assert_eq!((&now["version"], &now["content"]["name"]), (&json!(1), &json!("Ada")), "no lost update");

    // The agent's schema: a 400 naming the JSON path, for PUT and PATCH alike.
    for (body, path) in [
        (put(json!({"name": "Ada", "age": -3}), 1), "/age"),
        (put(json!({"address": {"zip": "ABCDE"}}), 1), "/address/zip"),
    ] {
        let r = t.call("PUT", &doc, Some(body)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        let message = r.1["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("content: at `{path}`: ")), "{message}");
    }
    let r = t.call("PATCH", &doc, Some(json!({"age": "old"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.1["error"]["message"].as_str().unwrap().starts_with("content: at `/age`: "), "{}", r.1);
    let (_, now) = t.call("GET", &doc, None).await;
    assert_eq!(now["version"], 1, "refused writes store nothing");

    // Concurrent merge patches of different fields: every one stays.
    const PATCHERS: usize = 24;
    let mut tasks = Vec::new();
    for i in 0..PATCHERS {
        let (app, doc) = (t.app.clone(), doc.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({ format!("f{i}"): i, "address": { format!("line{i}"): "x" } }).to_string();
            let req = axum::http::Request::builder()
                .method("PATCH")
                .uri(doc)
                .header("content-type", "application/merge-patch+json")
                .body(axum::body::Body::from(body))
                .unwrap();
            let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "every patch gets through: {body}");
    }
    let (_, merged) = t.call("GET", &doc, None).await;
    assert_eq!(merged["version"], json!(1 + PATCHERS), "{merged}");
    for i in 0..PATCHERS {
        assert_eq!(merged["content"][format!("f{i}")], json!(i), "patch {i}'s top-level field: {merged}");
        assert_eq!(merged["content"]["address"][format!("line{i}")], "x", "patch {i}'s nested field: {merged}");
    }
    assert_eq!((&merged["content"]["name"], &merged["content"]["age"]), (&json!("Ada"), &json!(36)), "untouched");
    let (status, removed) = t.call("PATCH", &doc, Some(json!({"f0": null, "address": null}))).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert!(removed["content"].get("f0").is_none() && removed["content"].get("address").is_none(), "{removed}");

    // Versions: the agent keeps 5, newest first; restore makes one current again.
    let (status, kept) = t.call("GET", &format!("{doc}/versions"), None).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    let versions: Vec<u64> = kept["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    let newest = 2 + PATCHERS as u64;
    assert_eq!(versions, (newest - 4..=newest).rev().collect::<Vec<_>>(), "bounded by the agent");
    let older = &kept["items"][2];
    let (status, restored) = t.call("POST", &format!("{doc}/versions/{}/restore", older["version"]), None).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!((&restored["version"], &restored["content"]), (&json!(newest + 1), &older["content"]));
    let r = t.call("POST", &format!("{doc}/versions/1/restore"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // A restore retried with its `Idempotency-Key` writes one version.
    let keyed = format!("{doc}/versions/{}/restore", older["version"]);
    let key = [("idempotency-key", "restore-once")];
    let first = t.call_with("POST", &keyed, &key, None, true).await;
    let again = t.call_with("POST", &keyed, &key, None, true).await;
    assert_eq!((first.0, &first.1["version"]), (StatusCode::OK, &json!(newest + 2)), "{}", first.1);
    assert_eq!(first, again, "the retry gets the first answer");
    let (_, now) = t.call("GET", &doc, None).await;
    assert_eq!(now["version"], json!(newest + 2), "written once");
    let newest = newest + 2;

    // `If-Match` on PATCH and restore: the document's version, quoted; a
    // stale one is a 412 and writes nothing; absent, nothing changes.
    let patch = |tag: &str, body: &str| {
        let tag = tag.to_owned();
        let body = body.to_owned();
        let doc = doc.clone();
        let t = &t;
        async move { t.call_with("PATCH", &doc, &[("if-match", tag.as_str())], Some(body), true).await }
    };
    let stale = patch(&format!("\"{}\"", newest - 1), r#"{"name": "Grace"}"#).await;
    assert_error(&stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let (status, fresh) = patch(&format!("\"{newest}\""), r#"{"name": "Grace"}"#).await;
    assert_eq!(
        (status, &fresh["version"], &fresh["content"]["name"]),
        (StatusCode::OK, &json!(newest + 1), &json!("Grace"))
    );
    let newest = newest + 1;
    let bad = patch("\"seven\"", r#"{"name": "x"}"#).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(bad.1["error"]["message"].as_str().unwrap().contains("If-Match"), "{}", bad.1);
    let restore = format!("{doc}/versions/{}/restore", newest - 1);
    let stale = t.call_with("POST", &restore, &[("if-match", &format!("\"{}\"", newest - 1))], None, true).await;
    assert_error(&stale, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let (_, unchanged) = t.call("GET", &doc, None).await;
    assert_eq!(
        (&unchanged["version"], &unchanged["content"]["name"]),
        (&json!(newest), &json!("Grace")),
        "nothing written"
    );
    let (status, back) = t.call_with("POST", &restore, &[("if-match", &newest.to_string())], None, true).await;
    assert_eq!((status, &back["version"]), (StatusCode::OK, &json!(newest + 1)), "{back}");
    let newest = newest + 1;

    // Another tenant: the thread is missing, and its same resource id is
    // another document.
    let users = "/api/resources/user-42/working-memory";
    let (status, mine) = t.call("PUT", users, Some(put(json!({"tz": "UTC"}), 0))).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    for method in ["GET", "PUT", "PATCH"] {
        let body = (method != "GET").then(|| put(json!({}), 1));
        let r = t.call_as("other", method, &doc, body).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    let r = t.call_as("other", "GET", &format!("{doc}/versions"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call_as("other", "POST", &format!("{doc}/versions/{newest}/restore"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let (status, theirs) = t.call_as("other", "GET", users, None).await;
    assert_eq!((status, &theirs["version"], &theirs["content"]), (StatusCode::OK, &json!(0), &json!({})));
    let (_, kept) = t.call_as("other", "GET", &format!("{users}/versions"), None).await;
    assert_eq!(kept["items"], json!([]), "{kept}");

    // A deleted thread's document is gone with it.
    let (status, _) = t.call("DELETE", &format!("/api/threads/{thread}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", &doc, None).await, StatusCode::NOT_FOUND, "not_found");
    let (_, still) = t.call("GET", users, None).await;
    assert_eq!(still["content"], json!({"tz": "UTC"}), "the resource's document stays");
}

/// The concurrent patchers must all be let in and get a connection, on a
/// loaded test machine too: admission control and pool waits are not what
/// is tested here (`admission.rs` is about those).
fn roomy(c: &mut memlayer_app::Config) {
    c.embedding.enabled = false;
    c.server.max_concurrent_requests = Some(64);
    c.server.queue_timeout_ms = 60_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_memory_versions_schema_and_concurrent_patches() {
    let Some(t) = TestApp::on(Store::Libsql, roomy).await else { return };
    scenario(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_memory_versions_schema_and_concurrent_patches_on_postgres() {
    let Some(t) = TestApp::on(Store::Postgres, roomy).await else { return };
    scenario(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_templates_formats_and_bad_options() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let notes = json!({"format": "markdown", "template": "# User\n- name:\n", "versions": 2});
    let (status, created) = agent(&t, "notes", notes).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let doc = "/api/resources/user-7/working-memory?agent=notes";
    let (_, got) = t.call("GET", doc, None).await;
    assert_eq!(
        (&got["format"], &got["content"], &got["version"]),
        (&json!("markdown"), &json!("# User\n- name:\n"), &json!(0))
    );
    let (status, v1) =
        t.call("PUT", doc, Some(json!({"content": "# User\n- name: Ada\n", "expected_version": 0}))).await;
    assert_eq!((status, &v1["format"], &v1["agent"]), (StatusCode::OK, &json!("markdown"), &json!("notes")), "{v1}");
    let r = t.call("PUT", doc, Some(json!({"content": {"name": "Ada"}, "expected_version": 1}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.1["error"]["message"].as_str().unwrap().starts_with("content: "), "{}", r.1);
    let r = t.call("PUT", doc, Some(json!({"format": "json", "content": {}, "expected_version": 1}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.1["error"]["message"].as_str().unwrap().starts_with("format: "), "{}", r.1);
    assert_error(&t.call("PATCH", doc, Some(json!({"a": 1}))).await, StatusCode::CONFLICT, "conflict");
    assert_error(
        &t.call("GET", "/api/resources/user-7/working-memory?agent=nobody", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.call("GET", "/api/resources/a%20b/working-memory", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // Options an agent cannot have: each a 400 naming the field.
    for (i, (options, field)) in [
        (json!({"format": "json", "schema": {"type": "nonsense"}}), "memory.working_memory.schema"),
        (json!({"schema": {"$ref": "https://example.invalid/s.json"}}), "memory.working_memory.schema"),
        (json!({"format": "markdown", "schema": {}}), "memory.working_memory.schema"),
        (json!({"format": "json", "template": "x"}), "memory.working_memory.template"),
        (json!({"versions": 0}), "memory.working_memory.versions"),
        (json!({"versions": 101}), "memory.working_memory.versions"),
        (json!({"scope": "planet"}), "memory.working_memory.scope"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = agent(&t, &format!("bad{i}"), options.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.1["error"]["message"].as_str().unwrap().contains(field), "{options}: {}", r.1);
    }
}

/// A caller bound to a resource reaches its own resource's document and its
/// own threads' only: every other one is a 404 on every route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_reaches_only_its_own_documents() {
    let mut t = TestApp::with(|c| c.embedding.enabled = false).await;
    let tenant = TenantId::parse("acme").unwrap();
    let alice = "ml_00000000000000a1_".to_owned() + &"0".repeat(64);
    let bound = Principal {
        tenant: tenant.clone(),
        scopes: Scopes::only(Scope::Read).with(Scope::Write),
        resource: Some(ResourceId::parse("alice").unwrap()),
        credential: Credential::ApiKey(KeyId::parse("00000000000000a1").unwrap()),
    };
    let (status, bobs_thread) = t.call_as("acme", "POST", "/api/threads", Some(json!({"resource_id": "bob"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{bobs_thread}");
    let bobs_thread = bobs_thread["id"].as_str().unwrap().to_owned();
    t.authenticate_with(Tokens([(alice.clone(), bound)].into_iter().collect()));
    let (mine, _) = t.call_bearer(&alice, "POST", "/api/threads", Some(json!({}))).await;
    assert_eq!(mine, StatusCode::CREATED);
    let (_, threads) = t.call_bearer(&alice, "GET", "/api/threads", None).await;
    let own_thread = threads["items"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"content": {"k": 1}, "expected_version": 0});
    for own in ["/api/resources/alice/working-memory".to_owned(), format!("/api/threads/{own_thread}/working-memory")] {
        let (status, v) = t.call_bearer(&alice, "PUT", &own, Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{own}: {v}");
    }
    for other in ["/api/resources/bob/working-memory".to_owned(), format!("/api/threads/{bobs_thread}/working-memory")]
    {
        for (method, uri, body) in [
            ("GET", other.clone(), None),
            ("PUT", other.clone(), Some(body.clone())),
            ("PATCH", other.clone(), Some(json!({"k": 2}))),
            ("GET", format!("{other}/versions"), None),
            ("POST", format!("{other}/versions/1/restore"), None),
        ] {
            let r = t.call_bearer(&alice, method, &uri, body).await;
            assert_error(&r, StatusCode::NOT_FOUND, "not_found");
        }
    }
    let bobs = t
        .services
        .working
        .get(&tenant, &memlayer_domain::WorkingScope::Resource(ResourceId::parse("bob").unwrap()), None)
        .await
        .unwrap();
    assert_eq!(bobs.version, 0, "nothing written to bob's document");
}

fn cli(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("MEMLAYER_EMBEDDING__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return json!({"failed": stderr.trim()});
    }
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// The CLI goes through the same service: an agent's schema, merge patches,
/// versions, restore, and the same JSON as the HTTP API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_and_writes_working_memory_under_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = cli(
        d,
        &[
            "models",
            "create",
            "--name",
            "gpt-4o",
            "--provider",
            "openai",
            "--context-window",
            "8192",
            "--max-output-tokens",
            "1024",
        ],
    );
    let model = model["id"].as_str().unwrap().to_owned();
    let options = r#"{"format": "json", "versions": 3, "schema": {"type": "object", "properties": {"age": {"type": "integer"}}}}"#;
    let created =
        cli(d, &["agents", "create", "--name", "profiler", "--model-id", &model, "--working-memory", options]);
    assert_eq!(created["memory"]["working_memory"]["versions"], 3, "{created}");
    let bad =
        cli(d, &["agents", "create", "--name", "bad", "--model-id", &model, "--working-memory", r#"{"schema": 7}"#]);
    assert!(bad["failed"].as_str().unwrap().contains("memory.working_memory.schema"), "{bad}");

    let target = ["--resource", "user-42", "--agent", "profiler"];
    let wm = |args: &[&str]| {
        let mut all = vec!["working-memory"];
        all.extend_from_slice(args);
        cli(d, &all)
    };
    let got = wm(&[&["get"][..], &target].concat());
    assert_eq!((&got["version"], &got["content"], &got["agent"]), (&json!(0), &json!({}), &json!("profiler")));
    let v1 = wm(&[&["put"][..], &target, &["--content", r#"{"age": 30}"#, "--expected-version", "0"]].concat());
    assert_eq!(v1["version"], 1, "{v1}");
    let stale = wm(&[&["put"][..], &target, &["--content", "{}", "--expected-version", "0"]].concat());
    assert!(stale["failed"].as_str().unwrap().contains("version is 1, expected 0"), "{stale}");
    let refused = wm(&[&["patch"][..], &target, &["--patch", r#"{"age": "old"}"#]].concat());
    assert!(refused["failed"].as_str().unwrap().contains("content: at `/age`"), "{refused}");
    for field in ["a", "b", "c"] {
        let p = format!(r#"{{"{field}": true}}"#);
        wm(&[&["patch"][..], &target, &["--patch", &p]].concat());
    }
    let versions = wm(&["versions", "--resource", "user-42"]);
    let listed: BTreeSet<u64> =
        versions["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(listed, BTreeSet::from([2, 3, 4]), "the agent keeps 3: {versions}");
    let restored = wm(&[&["restore"][..], &target, &["2"]].concat());
    assert_eq!((&restored["version"], &restored["content"]), (&json!(5), &json!({"age": 30, "a": true})));
    let md = wm(&[
        "put",
        "--resource",
        "user-43",
        "--format",
        "markdown",
        "--content",
        "# notes",
        "--expected-version",
        "0",
    ]);
    assert_eq!((&md["format"], &md["content"]), (&json!("markdown"), &json!("# notes")), "{md}");
    let other = wm(&["get", "--resource", "user-42", "--tenant", "other"]);
    assert_eq!(other["version"], 0, "tenants never share: {other}");
}
