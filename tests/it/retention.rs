//! Retention over HTTP on libSQL and Postgres: policies (400 naming the
//! field, CRUD, an unknown agent allowed), a prune (dry run, then for
//! real) with its receipts, and the erasure of a resource after which
//! nothing of it comes back from any route; a caller bound to another
//! resource gets 404; vector search after a prune and an erasure (with the
//! model); the two schedulers sharing one lease; and the CLI.

use axum::http::StatusCode;
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scope, Scopes, TenantId};
use serde_json::{Value, json};

use crate::support::{Store, TestApp, Tokens, assert_error, model_ready};

async fn append(t: &TestApp, thread: &str, texts: &[&str]) {
    let batch: Vec<Value> = texts.iter().map(|s| json!({"role": "user", "content": s})).collect();
    let (status, v) =
        t.call("POST", &format!("/api/threads/{thread}/messages"), Some(json!({"messages": batch}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// The tenant's whole export (`GET /api/export`), as text.
async fn exported(t: &TestApp) -> String {
    let (status, body) = t.call_with("GET", "/api/export", &[], None, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_str().map_or_else(|| body.to_string(), str::to_owned)
}

async fn lexical(t: &TestApp, word: &str) -> Vec<Value> {
    let body = json!({"query": word, "mode": "lexical", "top_k": 50});
    let (status, v) = t.call("POST", "/api/search", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["hits"].as_array().unwrap().clone()
}

async fn policies(t: &TestApp) {
    let uri = "/api/retention/policies";
    for (body, field) in [
        (json!({"max_thread_age_secs": 0}), "max_thread_age_secs"),
        (json!({"max_message_age_secs": -5}), "max_message_age_secs"),
        (json!({"max_messages_per_thread": 0}), "max_messages_per_thread"),
        (json!({"max_threads_per_resource": -1}), "max_threads_per_resource"),
        (json!({}), "rules"),
        (json!({"only_summarized": true, "max_thread_age_secs": 5}), "only_summarized"),
        (json!({"agent_id": "a b", "max_thread_age_secs": 5}), "agent_id"),
        (json!({"max_age": 5}), "max_age"),
    ] {
        let r = t.call("POST", uri, Some(body.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.1["error"]["message"].as_str().unwrap().contains(field), "{body}: {}", r.1);
    }
    let (_, listed) = t.call("GET", uri, None).await;
    assert_eq!(listed["items"], json!([]), "nothing stored by a refused policy");
    let (status, p) = t.call("POST", uri, Some(json!({"agent_id": "nobody-yet", "max_thread_age_secs": 86400}))).await;
    assert_eq!((status, &p["agent_id"]), (StatusCode::CREATED, &json!("nobody-yet")), "{p}");
    let one = format!("{uri}/{}", p["id"].as_str().unwrap());
    let (status, got) = t.call("GET", &one, None).await;
    assert_eq!((status, &got["max_thread_age_secs"]), (StatusCode::OK, &json!(86400)));
    let (status, put) = t.call("PUT", &one, Some(json!({"max_messages_per_thread": 3}))).await;
    assert_eq!((status, &put["max_messages_per_thread"], &put["agent_id"]), (StatusCode::OK, &json!(3), &Value::Null));
    let r = t.call("PUT", &one, Some(json!({"max_messages_per_thread": 0}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_error(&t.call_as("other", "GET", &one, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&t.call("GET", &format!("{uri}/nope"), None).await, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(t.call("DELETE", &one, None).await.0, StatusCode::NO_CONTENT);
    assert_error(&t.call("GET", &one, None).await, StatusCode::NOT_FOUND, "not_found");
}

async fn prune(t: &TestApp) {
    let th = t.thread(json!({"resource_id": "u2"})).await;
    append(t, &th, &["walnut one", "walnut two", "walnut three", "walnut four", "walnut five"]).await;
    // Pinned with the PATCH shortcut: exempt, its other metadata kept.
    let pinned = t.thread(json!({"resource_id": "u2", "metadata": {"lang": "en"}})).await;
    append(t, &pinned, &["pecan one", "pecan two", "pecan three"]).await;
    let (status, v) = t.call("PATCH", &format!("/api/threads/{pinned}"), Some(json!({"pinned": true}))).await;
    assert_eq!((status, &v["metadata"]), (StatusCode::OK, &json!({"lang": "en", "pinned": true})), "{v}");
    let r = t.call("PATCH", &format!("/api/threads/{pinned}"), Some(json!({"pinned": "yes"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, p) = t.call("POST", "/api/retention/policies", Some(json!({"max_messages_per_thread": 2}))).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let (status, dry) = t.call("POST", "/api/retention/prune?dry_run=true", None).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((&dry["items"][0]["dry_run"], &dry["items"][0]["counts"]["messages"]), (&json!(true), &json!(3)));
    assert_eq!(lexical(t, "walnut").await.len(), 5, "a dry run deletes nothing");
    // Every run writes a receipt: the dry run's too, marked so.
    let (_, runs) = t.call("GET", "/api/retention/runs", None).await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
    let receipt = &runs["items"][0];
    assert_eq!((&receipt["id"], &receipt["dry_run"]), (&dry["items"][0]["id"], &json!(true)), "{runs}");
    assert_eq!((&receipt["counts"]["messages"], &receipt["policy_id"]), (&json!(3), &p["id"]), "{runs}");
    assert!(receipt["message_ids"]["first"].is_string() && receipt["finished_at"].is_string(), "{receipt}");
    let (status, done) = t.call("POST", "/api/retention/prune", None).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let receipt = &done["items"][0];
    assert_eq!((&receipt["counts"]["messages"], &receipt["policy_id"]), (&json!(3), &p["id"]), "{done}");
    assert!(receipt["message_ids"]["first"].is_string(), "{receipt}");
    let (_, page) = t.call("GET", &format!("/api/threads/{th}/messages"), None).await;
    let seqs: Vec<_> = page["items"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(seqs, vec![json!(4), json!(5)]);
    let (_, page) = t.call("GET", &format!("/api/threads/{pinned}/messages"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "the pinned thread keeps everything");
    let hits = lexical(t, "walnut").await;
    assert_eq!(hits.len(), 2, "lexical search: {hits:?}");
    let (status, ctx) = t.call("POST", &format!("/api/threads/{th}/context"), Some(json!({"budget": 4000}))).await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    let texts: Vec<_> = ctx["messages"].as_array().unwrap().iter().map(|m| m["content"].clone()).collect();
    assert_eq!(texts, vec![json!("walnut four"), json!("walnut five")], "context holds only what is left");
    let (_, usage) = t.call("GET", "/api/usage", None).await;
    assert_eq!(usage["messages"]["used"], 2 + 3, "{usage}");
    let export = exported(t).await;
    assert!(export.contains("walnut four") && export.contains("pecan three"), "{export}");
    for gone in ["walnut one", "walnut two", "walnut three"] {
        assert!(!export.contains(gone), "the export holds a pruned message: {gone}");
    }
    // The receipt is listed; paging by cursor.
    let (status, runs) = t.call("GET", "/api/retention/runs?limit=1", None).await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs["items"][0]["id"], receipt["id"]);
    assert_eq!(runs["items"][0]["dry_run"], json!(false));
    // A run that deletes nothing writes one too.
    let (status, again) = t.call("POST", "/api/retention/prune", None).await;
    assert_eq!((status, &again["items"][0]["counts"]["messages"]), (StatusCode::OK, &json!(0)), "{again}");
    let (_, runs) = t.call("GET", "/api/retention/runs", None).await;
    let listed: Vec<_> = runs["items"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(listed, vec![again["items"][0]["id"].clone(), receipt["id"].clone(), dry["items"][0]["id"].clone()]);
    assert_eq!(runs["items"][0]["thread_ids"], Value::Null, "nothing deleted, no id range: {runs}");
    let r = t.call("GET", "/api/retention/runs?limit=0", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let uri = format!("/api/retention/policies/{}", p["id"].as_str().unwrap());
    assert_eq!(t.call("DELETE", &uri, None).await.0, StatusCode::NO_CONTENT);
}

async fn erase(t: &TestApp) {
    let a = t.thread(json!({"resource_id": "u1", "agent_id": "bot"})).await;
    let pinned = t.thread(json!({"resource_id": "u1", "metadata": {"pinned": true}})).await;
    let kept = t.thread(json!({"resource_id": "u3"})).await;
    append(t, &a, &["marmalade alpha", "marmalade beta"]).await;
    append(t, &pinned, &["marmalade gamma"]).await;
    append(t, &kept, &["marmalade delta"]).await;
    let state = json!({"state": {"step": 1}, "expected_version": 0});
    assert_eq!(t.call("PUT", &format!("/api/threads/{a}/state/bot"), Some(state)).await.0, StatusCode::OK);
    let doc = json!({"content": {"likes": "tea"}, "expected_version": 0});
    let (status, v) = t.call("PUT", "/api/resources/u1/working-memory", Some(doc.clone())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(t.call("PUT", &format!("/api/threads/{a}/working-memory"), Some(doc.clone())).await.0, StatusCode::OK);
    assert_eq!(t.call("PUT", "/api/resources/u3/working-memory", Some(doc)).await.0, StatusCode::OK);
    assert_eq!(lexical(t, "marmalade").await.len(), 4);

    // Another tenant erasing "u1" erases its own u1: nothing here.
    let (status, other) = t.call_as("other", "DELETE", "/api/resources/u1", None).await;
    assert_eq!((status, &other["counts"]["threads"]), (StatusCode::OK, &json!(0)), "{other}");
    assert_eq!(lexical(t, "marmalade").await.len(), 4, "another tenant's erasure touched nothing");
    assert_error(&t.call("DELETE", "/api/resources/a%20b", None).await, StatusCode::BAD_REQUEST, "invalid_request");

    let (status, receipt) = t.call("DELETE", "/api/resources/u1", None).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(
        (&receipt["kind"], &receipt["resource_id"], &receipt["counts"]["threads"], &receipt["counts"]["messages"]),
        (&json!("erase"), &json!("u1"), &json!(2), &json!(3)),
        "{receipt}"
    );
    assert_eq!(receipt["counts"]["working_memory"], 1);
    assert!(receipt["finished_at"].is_string());
    // Nothing of u1 comes back from any route.
    for th in [&a, &pinned] {
        for uri in [
            format!("/api/threads/{th}"),
            format!("/api/threads/{th}/messages"),
            format!("/api/threads/{th}/state/bot"),
            format!("/api/threads/{th}/working-memory"),
            format!("/api/threads/{th}/embeddings"),
            format!("/api/threads/{th}/summary"),
        ] {
            assert_error(&t.call("GET", &uri, None).await, StatusCode::NOT_FOUND, "not_found");
        }
        let ctx = t.call("POST", &format!("/api/threads/{th}/context"), Some(json!({"budget": 1000}))).await;
        assert_eq!(ctx.0, StatusCode::NOT_FOUND, "{}", ctx.1);
    }
    let (_, listed) = t.call("GET", "/api/threads?resource_id=u1", None).await;
    assert_eq!(listed["items"], json!([]));
    let (_, all) = t.call("GET", "/api/threads?limit=100", None).await;
    assert!(all["items"].as_array().unwrap().iter().all(|th| th["resource_id"] != "u1"), "{all}");
    let hits = lexical(t, "marmalade").await;
    assert_eq!((hits.len(), &hits[0]["thread_id"]), (1, &json!(kept)), "{hits:?}");
    let body = json!({"query": "marmalade", "mode": "lexical", "scope": {"resource_id": "u1"}});
    let (_, scoped) = t.call("POST", "/api/search", Some(body)).await;
    assert_eq!(scoped["hits"], json!([]), "{scoped}");
    let (status, wm) = t.call("GET", "/api/resources/u1/working-memory", None).await;
    assert_eq!((status, &wm["version"]), (StatusCode::OK, &json!(0)), "never written again: {wm}");
    let (_, versions) = t.call("GET", "/api/resources/u1/working-memory/versions", None).await;
    assert_eq!(versions["items"], json!([]), "{versions}");
    let (_, wm) = t.call("GET", "/api/resources/u3/working-memory", None).await;
    assert_eq!(wm["version"], 1, "another resource keeps its document");
    let export = exported(t).await;
    assert!(export.contains("marmalade delta"), "{export}");
    for gone in [a.as_str(), pinned.as_str(), "marmalade alpha", "marmalade gamma", "\"u1\""] {
        assert!(!export.contains(gone), "the export holds something of the erased resource: {gone}");
    }
    let (status, narrowed) = t.call_with("GET", "/api/export?resource_id=u1", &[], None, false).await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    let narrowed = narrowed.as_str().map_or_else(|| narrowed.to_string(), str::to_owned);
    assert!(!narrowed.contains("\"thread\"") && !narrowed.contains("marmalade"), "{narrowed}");
    let (_, runs) = t.call("GET", "/api/retention/runs", None).await;
    assert_eq!(runs["items"][0]["id"], receipt["id"], "the receipt is listed");
    // The rows go with the sweep; still nothing comes back.
    t.services.sweeper.drain().await.unwrap();
    assert_eq!(lexical(t, "marmalade").await.len(), 1);
}

async fn scenario(t: TestApp) {
    policies(&t).await;
    prune(&t).await;
    erase(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_over_http() {
    scenario(TestApp::with(|c| c.embedding.enabled = false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_over_http_on_postgres() {
    if let Some(t) = TestApp::on(Store::Postgres, |c| c.embedding.enabled = false).await {
        scenario(t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_erases_only_its_own_resource() {
    let mut t = TestApp::with(|c| c.embedding.enabled = false).await;
    let alice = "ml_00000000000000a1_".to_owned() + &"0".repeat(64);
    let bound = Principal {
        tenant: TenantId::parse("acme").unwrap(),
        scopes: Scopes::only(Scope::Read).with(Scope::Write).with(Scope::Admin),
        resource: Some(ResourceId::parse("alice").unwrap()),
        credential: Credential::ApiKey(KeyId::parse("00000000000000a1").unwrap()),
    };
    let bob = t.call_as("acme", "POST", "/api/threads", Some(json!({"resource_id": "bob"}))).await.1;
    t.call_as("acme", "POST", "/api/threads", Some(json!({"resource_id": "alice"}))).await;
    t.authenticate_with(Tokens([(alice.clone(), bound)].into_iter().collect()));
    let r = t.call_bearer(&alice, "DELETE", "/api/resources/bob", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call_bearer(&alice, "GET", "/api/retention/policies", None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "resource_bound");
    let (status, receipt) = t.call_bearer(&alice, "DELETE", "/api/resources/alice", None).await;
    assert_eq!((status, &receipt["counts"]["threads"]), (StatusCode::OK, &json!(1)), "{receipt}");
    let tenant = TenantId::parse("acme").unwrap();
    let id = bob["id"].as_str().unwrap().parse().unwrap();
    t.services.memory.get_thread(&tenant, id).await.expect("bob's thread is untouched");
}

/// With the model: what a prune and an erasure delete is gone from vector
/// search at once (the vector index forgot it), not only from storage, with
/// the vector index of each kind on each backend.
async fn vector_search_after_prune_and_erasure(store: Store, index: memlayer_app::IndexKind) {
    let tweak = |c: &mut memlayer_app::Config| {
        c.embedding.mode = memlayer_app::EmbeddingMode::Inline;
        c.search.index = Some(index);
    };
    let Some(t) = TestApp::on(store, tweak).await else { return };
    assert_eq!(t.services.index.kind(), index);
    let pets = t.thread(json!({"resource_id": "u1"})).await;
    let taxes = t.thread(json!({"resource_id": "u2"})).await;
    append(&t, &pets, &["I adopted a small kitten from the shelter", "we went hiking in the alps"]).await;
    append(&t, &taxes, &["The quarterly tax report is due on Friday", "my cat sleeps all day"]).await;
    let vector = |q: &'static str| {
        let t = &t;
        async move {
            let body = json!({"query": q, "mode": "vector", "top_k": 10});
            let (status, v) = t.call("POST", "/api/search", Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["message"]["content"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(vector("new pet cat").await.len(), 4, "{index}");
    let (status, _) = t.call("DELETE", "/api/resources/u1", None).await;
    assert_eq!(status, StatusCode::OK);
    let hits = vector("new pet cat").await;
    assert_eq!(hits.len(), 2, "{index}: {hits:?}");
    assert!(hits.iter().all(|h| !h.contains("kitten")), "{index}: {hits:?}");
    // Vector index entries of pruned messages go too (checked on the index itself).
    let before = t.services.index.len().await.unwrap();
    let (status, _) = t.call("POST", "/api/retention/policies", Some(json!({"max_messages_per_thread": 1}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(t.call("POST", "/api/retention/prune", None).await.0, StatusCode::OK);
    assert_eq!(t.services.index.len().await.unwrap(), before - 1, "{index}: the index forgot the pruned message");
    assert_eq!(vector("tax report").await.len(), 1, "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_and_erased_messages_leave_vector_search() {
    if !model_ready("pruned_and_erased_messages_leave_vector_search") {
        return;
    }
    use memlayer_app::IndexKind::{Exact, Hnsw, Libsql, Pgvector};
    for index in [Hnsw, Exact, Libsql] {
        vector_search_after_prune_and_erasure(Store::Libsql, index).await;
    }
    for index in [Pgvector, Exact] {
        vector_search_after_prune_and_erasure(Store::Postgres, index).await;
    }
}

/// Two servers' schedulers on one database: while one holds the lease the
/// other's run does nothing; once it is given back, the other runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_share_one_lease() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
        c.embedding.enabled = false;
        c
    };
    let one = memlayer_app::build(config()).await.unwrap();
    let two = memlayer_app::build(config()).await.unwrap();
    let tenant = one.memory.default_tenant().clone();
    let thread = one.memory.create_thread(&tenant, memlayer_domain::NewThread::default()).await.unwrap();
    let batch =
        (0..4).map(|i| memlayer_domain::NewMessage::text(memlayer_domain::Role::User, format!("m{i}")).unwrap());
    one.memory
        .append_messages(&tenant, thread.id, batch.collect(), memlayer_app::AppendOptions::default())
        .await
        .unwrap();
    let rules = memlayer_domain::RetentionRules { max_messages_per_thread: Some(1), ..Default::default() };
    let new = memlayer_domain::NewRetentionPolicy { rules, ..Default::default() };
    one.retention.create_policy(&tenant, new).await.unwrap();
    // Server one's run is under way: it holds the lease (taken as its run does).
    let store = memlayer_adapters_libsql_store(&one);
    let now = memlayer_domain::now();
    assert!(store.try_lease("retention", "server-one", now, now + std::time::Duration::from_secs(300)).await.unwrap());
    assert_eq!(two.retention.run_scheduled().await.unwrap(), None, "server two skips while the lease is held");
    let page = one.memory.last_messages(&tenant, thread.id, None).await.unwrap();
    assert_eq!(page.len(), 4, "nothing pruned by the skipped run");
    store.release_lease("retention", "server-one").await.unwrap();
    let report = two.retention.run_scheduled().await.unwrap().expect("server two runs once the lease is free");
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].counts.messages, 3);
    assert_eq!(one.memory.last_messages(&tenant, thread.id, None).await.unwrap().len(), 1);
    assert_eq!(one.retention.list_runs(&tenant, None, 10).await.unwrap().len(), 1, "one receipt");
}

/// The retention store behind a server's services (the same database), to
/// hold the lease as another server would.
fn memlayer_adapters_libsql_store(s: &memlayer_app::Services) -> std::sync::Arc<dyn memlayer_ports::RetentionStore> {
    s.retention.store()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_policies_prunes_and_erases() {
    let dir = tempfile::tempdir().unwrap();
    let thread = {
        let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
        config.embedding.enabled = false;
        let services = memlayer_app::build(config).await.unwrap();
        let tenant = services.memory.default_tenant().clone();
        let new =
            memlayer_domain::NewThread { resource_id: Some(ResourceId::parse("u9").unwrap()), ..Default::default() };
        let thread = services.memory.create_thread(&tenant, new).await.unwrap();
        let batch = (0..5)
            .map(|i| memlayer_domain::NewMessage::text(memlayer_domain::Role::User, format!("step {i}")).unwrap())
            .collect();
        services
            .memory
            .append_messages(&tenant, thread.id, batch, memlayer_app::AppendOptions::default())
            .await
            .unwrap();
        thread.id.to_string()
    };
    let run = |args: &[&str]| crate::support::cli(dir.path()).args(args).output().unwrap();
    let out = run(&["retention", "policies", "create", "--max-messages-per-thread", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_messages_per_thread"));
    let out = run(&["retention", "policies", "create", "--max-messages-per-thread", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(policy["max_messages_per_thread"], 2);
    let out = run(&["retention", "policies", "list"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!run(&["prune"]).status.success(), "--dry-run or --apply is required");
    let out = run(&["prune", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would delete 0 threads, 3 messages"));
    let out = run(&["prune", "--apply"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleted 0 threads, 3 messages"));
    let out = run(&["retention", "runs"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs["items"][0]["counts"]["messages"], 3, "{runs}");
    assert_eq!((&runs["items"][1]["dry_run"], &runs["items"][1]["counts"]["messages"]), (&json!(true), &json!(3)));
    let out = run(&["erase-resource", "u9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&receipt["counts"]["threads"], &receipt["counts"]["messages"]), (&json!(1), &json!(2)), "{receipt}");
    let out = run(&["summary", &thread]);
    assert!(!out.status.success(), "the erased thread is gone");
}

/// `memlayer retention policies get|update|delete`: get prints the stored
/// policy, update replaces scope and rules (a bad rule refused naming it,
/// nothing changed), delete removes it; an unknown id fails each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_updates_and_deletes_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| crate::support::cli(dir.path()).args(args).output().unwrap();
    let json_of = |out: &std::process::Output| -> Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let created = json_of(&run(&["retention", "policies", "create", "--max-messages-per-thread", "5"]));
    let id = created["id"].as_str().unwrap().to_owned();
    let got = json_of(&run(&["retention", "policies", "get", &id]));
    assert_eq!(got, created, "get prints the stored policy");

    let updated =
        json_of(&run(&["retention", "policies", "update", &id, "--resource", "u1", "--max-thread-age-secs", "60"]));
    assert_eq!(updated["id"], json!(id));
    assert_eq!(
        (&updated["resource_id"], &updated["max_thread_age_secs"], &updated["max_messages_per_thread"]),
        (&json!("u1"), &json!(60), &Value::Null),
        "the rules are replaced, not merged: {updated}"
    );
    assert_eq!(json_of(&run(&["retention", "policies", "get", &id])), updated, "stored");

    let out = run(&["retention", "policies", "update", &id, "--max-thread-age-secs", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_thread_age_secs"), "names the rule");
    assert_eq!(json_of(&run(&["retention", "policies", "get", &id])), updated, "a refused update changes nothing");
    let unknown = "0190f5c8-0000-7000-8000-000000000000";
    let out = run(&["retention", "policies", "update", unknown, "--max-thread-age-secs", "60"]);
    assert!(!out.status.success(), "no such policy");
    assert!(!run(&["retention", "policies", "get", "not-an-id"]).status.success());

    let out = run(&["retention", "policies", "delete", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("deleted {id}")));
    assert!(!run(&["retention", "policies", "get", &id]).status.success(), "gone");
    assert!(!run(&["retention", "policies", "delete", &id]).status.success(), "deleting twice fails");
    let listed = json_of(&run(&["retention", "policies", "list"]));
    assert_eq!(listed["items"], json!([]), "{listed}");
}

/// An erasure a crash cut short (its receipt stored, some steps done) is
/// finished by the next scheduled run, and its receipt is finished and
/// whole: it counts the steps before the crash too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_cut_short_is_resumed() {
    let t = TestApp::with(|c| {
        c.embedding.enabled = false;
        c.retention.batch = 1;
    })
    .await;
    let mut threads = Vec::new();
    for _ in 0..3 {
        let th = t.thread(json!({"resource_id": "u7"})).await;
        append(&t, &th, &["quince"]).await;
        threads.push(uuid::Uuid::parse_str(&th).unwrap());
    }
    let (status, _) = t
        .call("PUT", "/api/resources/u7/working-memory", Some(json!({"content": {"a": 1}, "expected_version": 0})))
        .await;
    assert_eq!(status, StatusCode::OK);
    // What `erase_resource` does until the crash: the receipt, one step.
    let store = t.services.retention.store();
    let tenant = t.services.memory.default_tenant().clone();
    let resource = ResourceId::parse("u7").unwrap();
    let mut run =
        memlayer_domain::RetentionRun::start(tenant.clone(), memlayer_domain::RunKind::Erase, memlayer_domain::now());
    run.resource_id = Some(resource.clone());
    store.save_run(&run).await.unwrap();
    assert_eq!(store.erase_step(&tenant, &resource, Some(run.id), 1).await.unwrap().threads.len(), 1);
    assert_eq!(lexical(&t, "quince").await.len(), 2, "two threads left when the process died");
    // The next start's scheduled run finishes it.
    let report = t.services.retention.run_scheduled().await.unwrap().expect("the lease is free");
    assert_eq!(report.runs.len(), 1);
    let resumed = &report.runs[0];
    assert_eq!(resumed.id, run.id);
    assert_eq!(
        (resumed.counts.threads, resumed.counts.messages, resumed.counts.working_memory),
        (3, 3, 1),
        "the steps before the crash count too: {resumed:?}"
    );
    let range = resumed.thread_ids.expect("a thread id range");
    threads.sort();
    assert_eq!((range.first, range.last), (threads[0], threads[2]), "the range spans the threads of both runs");
    assert!(lexical(&t, "quince").await.is_empty());
    let (_, wm) = t.call("GET", "/api/resources/u7/working-memory", None).await;
    assert_eq!(wm["version"], 0, "{wm}");
    let (_, runs) = t.call("GET", "/api/retention/runs", None).await;
    assert!(runs["items"][0]["finished_at"].is_string(), "{runs}");
    assert_eq!(runs["items"][0]["counts"]["threads"], 3, "the stored receipt too: {runs}");
    assert!(store.unfinished_erasures().await.unwrap().is_empty());
}

/// `memlayer prune`'s bar moves with every step: the messages deleted so
/// far (a deleted thread's included) and the threads as its message; its
/// total, `RetentionService::estimate`, is what the run then deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_bar_follows_every_step() {
    let t = TestApp::with(|c| {
        c.embedding.enabled = false;
        c.retention.batch = 2;
        c.retention.pause_ms = 0;
    })
    .await;
    let long = t.thread(json!({"resource_id": "a"})).await;
    append(&t, &long, &["one", "two", "three", "four", "five", "six", "seven"]).await;
    for _ in 0..2 {
        let th = t.thread(json!({"resource_id": "r"})).await;
        append(&t, &th, &["alone"]).await;
    }
    let policy = |body: Value| t.call("POST", "/api/retention/policies", Some(body));
    assert_eq!(policy(json!({"max_messages_per_thread": 1})).await.0, StatusCode::CREATED);
    assert_eq!(policy(json!({"resource_id": "r", "max_threads_per_resource": 1})).await.0, StatusCode::CREATED);
    let estimate = t.services.retention.estimate(None).await.unwrap();
    assert_eq!((estimate.messages, estimate.threads), (7, 1), "{estimate:?}");
    // Longer than the run, so the position is the steps' doing, not a
    // finished bar's.
    let bar = indicatif_hidden(100);
    let runs = memlayer_api::cli_retention::prune_with(&t.services, None, false, &bar).await.unwrap();
    let deleted: u64 = runs.iter().map(|r| r.counts.messages).sum();
    assert_eq!((deleted, bar.position(), bar.message()), (7, 7, "1 threads".into()));
}

/// A progress bar drawn nowhere, of `len`.
fn indicatif_hidden(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_length(len);
    bar
}

/// What the running server at `base` finds for "walnut" in `mode`, top 3:
/// the hits' contents.
async fn walnut_hits(http: &reqwest::Client, base: &str, mode: &str) -> Vec<String> {
    let body = json!({"query": "walnut", "mode": mode, "top_k": 3});
    let r = http.post(format!("{base}/api/search")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    v["hits"].as_array().unwrap().iter().map(|h| h["message"]["content"].as_str().unwrap().to_owned()).collect()
}

/// A `memlayer prune --apply` and a `memlayer erase-resource` run by the CLI
/// beside a running server: the server's in-process vector index and (on
/// libSQL) its tantivy full-text index forget what the other process
/// deleted, so a search still fills its top k with what is left. The
/// deleted messages are the best matches of the query (the query itself,
/// as a message), so an index that kept them would give them the first
/// slots and return fewer hits. On libSQL a lexical search from the CLI
/// also runs its process's catch-up, which empties the store's full-text
/// queue before the server reads it.
async fn cli_prune_beside_a_running_server(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut server_env = vec![("MEMLAYER_EMBEDDING__MODE", "inline"), ("MEMLAYER_RETENTION__ENABLED", "false")];
    server_env.extend_from_slice(env);
    let (child, base) = crate::support::spawn_server(dir.path(), &server_env, &[], std::time::Duration::from_secs(60));
    let _server = crate::support::Server { child, base: base.clone() };
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.unwrap()
        }
    };
    let thread = |resource: &'static str| {
        let post = &post;
        async move { post("/api/threads", json!({"resource_id": resource})).await["id"].as_str().unwrap().to_owned() }
    };
    let (pruned, erased, kept) = (thread("pruned").await, thread("erased").await, thread("kept").await);
    let texts =
        |t: &[&str]| json!({"messages": t.iter().map(|s| json!({"role": "user", "content": s})).collect::<Vec<_>>()});
    post(&format!("/api/threads/{pruned}/messages"), texts(&["walnut", "walnut", "walnut", "a last word"])).await;
    post(&format!("/api/threads/{erased}/messages"), texts(&["walnut", "walnut"])).await;
    let left =
        ["we cracked a walnut by the old stone wall", "the walnut tree in the garden is tall", "walnut oil and bread"];
    post(&format!("/api/threads/{kept}/messages"), texts(&left)).await;
    post("/api/retention/policies", json!({"resource_id": "pruned", "max_messages_per_thread": 1})).await;
    for mode in ["vector", "lexical"] {
        let hits = walnut_hits(&http, &base, mode).await;
        assert!(hits.iter().all(|h| h == "walnut"), "{mode}: the messages to delete rank first: {hits:?}");
    }

    let run = |args: &[&str]| {
        let out = crate::support::cli(dir.path()).args(args).envs(env.iter().copied()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["prune", "--apply"]);
    run(&["erase-resource", "erased"]);
    run(&["search", "walnut", "--mode", "lexical"]);
    for mode in ["lexical", "vector"] {
        let mut hits = walnut_hits(&http, &base, mode).await;
        hits.sort();
        let mut want = left.map(str::to_owned).to_vec();
        want.sort();
        assert_eq!(hits, want, "{mode}: the top 3 is what is left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_prune_beside_a_running_server_leaves_its_indexes_clean() {
    if model_ready("a_cli_prune_beside_a_running_server_leaves_its_indexes_clean") {
        cli_prune_beside_a_running_server(&[]).await;
    }
}

/// The same on Postgres with the server's in-process `exact` index (the
/// full text lives in the database there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_prune_beside_a_running_server_leaves_its_index_clean_on_postgres() {
    if !model_ready("a_cli_prune_beside_a_running_server_leaves_its_index_clean_on_postgres") {
        return;
    }
    let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else { return };
    cli_prune_beside_a_running_server(&[("DATABASE_URL", db.url.as_str()), ("MEMLAYER_SEARCH__INDEX", "exact")]).await;
}
