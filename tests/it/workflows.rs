//! Workflows over HTTP (issue 16): the routes in process (400 naming the
//! field, 409 naming the state, integers sent as floats, events, delete),
//! and the real binary: `kill -9` while a step runs, restart, the workflow
//! completes with the step run again under the same idempotency key and no
//! output lost or duplicated in a thread; two servers on one Postgres
//! sharing the steps without ever running one twice at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{Server, Store, TestApp, all_messages, assert_error};

async fn noop_app(store: Store) -> Option<TestApp> {
    TestApp::on(store, |c| c.workflows.default_runner = Some("noop".into())).await
}

fn steps(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"name": format!("s{i}"), "agent": "writer", "input": {"i": i}})).collect())
}

async fn routes_on(store: Store) {
    let Some(app) = noop_app(store).await else { return };
    // 400s name the field; nothing is stored.
    let cyclic = json!({"name": "w", "steps": [
        {"name": "a", "agent": "x", "depends_on": ["b"]}, {"name": "b", "agent": "x"}]});
    let got = app.call("POST", "/api/workflows", Some(cyclic)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(got.1["error"]["message"].as_str().unwrap().starts_with("depends_on:"), "{got:?}");
    let bad_ref = json!({"name": "w", "steps": [{"name": "a", "agent": "x", "input": {"$ref": "steps/zz/output"}}]});
    let got = app.call("POST", "/api/workflows", Some(bad_ref)).await;
    assert!(got.1["error"]["message"].as_str().unwrap().starts_with("input:"), "{got:?}");
    let got = app
        .call(
            "POST",
            "/api/workflows",
            Some(json!({"name": "w", "steps": [{"name": "a", "agent": "x", "max_attempts": 0}]})),
        )
        .await;
    assert!(got.1["error"]["message"].as_str().unwrap().starts_with("max_attempts:"), "{got:?}");
    assert_eq!(app.call("GET", "/api/workflows", None).await.1["items"], json!([]));

    // Integers may come as floats (`3.0`), as JSON Schema allows.
    let body = json!({"name": "digest", "steps": [
        {"name": "a", "agent": "writer", "max_attempts": 3.0, "timeout_ms": 5000.0, "input": "hello"},
        {"name": "b", "agent": "writer", "input": {"prev": {"$ref": "steps/a/output/step"}}}]});
    let (status, w) = app.call("POST", "/api/workflows", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!((w["status"].as_str(), w["steps"][1]["depends_on"].clone()), (Some("draft"), json!(["a"])));

    // An illegal transition is a 409 naming the current state.
    let got = app.call("POST", &format!("/api/workflows/{id}/pause"), None).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("workflow is draft"), "{got:?}");

    let (status, w) = app.call("POST", &format!("/api/workflows/{id}/execute"), None).await;
    assert_eq!((status, w["status"].as_str()), (StatusCode::OK, Some("running")), "{w}");
    let got = app.call("POST", &format!("/api/workflows/{id}/steps"), Some(json!({"steps": steps(1)}))).await;
    assert!(got.1["error"]["message"].as_str().unwrap().contains("workflow is running"), "{got:?}");
    let got = app.call("DELETE", &format!("/api/workflows/{id}"), None).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict");

    app.services.workflows.drain().await.unwrap();
    let (_, w) = app.call("GET", &format!("/api/workflows/{id}"), None).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    assert_eq!(w["steps"][1]["resolved_input"], json!({"prev": "a"}));
    let thread = w["steps"][0]["thread_id"].as_str().unwrap().to_owned();
    let (_, msgs) = app.call("GET", &format!("/api/threads/{thread}/messages"), None).await;
    let roles: Vec<&str> = msgs["items"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["user", "assistant"]);

    let (_, page) = app.call("GET", &format!("/api/workflows/{id}/events?limit=3"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let after = page["next_after"].as_u64().unwrap();
    let (_, rest) = app.call("GET", &format!("/api/workflows/{id}/events?after={after}&limit=1000"), None).await;
    assert_eq!(rest["items"][0]["seq"].as_u64(), Some(after + 1), "keyset by seq");
    assert_eq!(rest["items"].as_array().unwrap().last().unwrap()["to"], "succeeded");

    let (_, listed) = app.call("GET", "/api/workflows?status=succeeded&limit=1", None).await;
    assert_eq!(listed["items"][0]["id"].as_str(), Some(id.as_str()));
    let got = app.call("GET", "/api/workflows?status=done", None).await;
    assert!(got.1["error"]["message"].as_str().unwrap().starts_with("status:"), "{got:?}");
    assert_error(
        &app.call_as("other", "GET", &format!("/api/workflows/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let (status, _) = app.call("DELETE", &format!("/api/workflows/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&app.call("GET", &format!("/api/workflows/{id}"), None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.call("GET", &format!("/api/threads/{thread}"), None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_routes_on_libsql() {
    routes_on(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_routes_on_postgres() {
    routes_on(Store::Postgres).await;
}

// ---- the real binary ----

/// The fake agent endpoint: records each call (step, idempotency key,
/// which server's attempt), can hang the first call of one step, and
/// notices two calls of one step at once.
#[derive(Default)]
struct Agent {
    calls: Mutex<Vec<(String, String)>>,
    in_flight: Mutex<HashSet<String>>,
    overlaps: Mutex<Vec<String>>,
    hang_first: Mutex<Option<String>>,
    hanging: tokio::sync::Notify,
    delay_ms: u64,
    /// Hold the first call until a second one runs beside it (or a minute
    /// passes): with one step at a time per server, the second call can
    /// only come from the other server, so both servers run steps however
    /// the claims happen to be scheduled.
    pair_first: bool,
    paired: tokio::sync::Notify,
    first_taken: std::sync::atomic::AtomicBool,
}

async fn agent_hook(State(agent): State<Arc<Agent>>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    let step = body["step_id"].as_str().unwrap_or_default().to_owned();
    let name = body["step"].as_str().unwrap_or_default().to_owned();
    agent.calls.lock().unwrap().push((name.clone(), body["idempotency_key"].as_str().unwrap_or_default().to_owned()));
    let concurrent = {
        let mut in_flight = agent.in_flight.lock().unwrap();
        if !in_flight.insert(step.clone()) {
            agent.overlaps.lock().unwrap().push(step.clone());
        }
        in_flight.len()
    };
    if agent.pair_first {
        if concurrent >= 2 {
            agent.paired.notify_one();
        } else if !agent.first_taken.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = tokio::time::timeout(Duration::from_secs(60), agent.paired.notified()).await;
        }
    }
    let hang = {
        let mut h = agent.hang_first.lock().unwrap();
        if h.as_deref() == Some(name.as_str()) { h.take().is_some() } else { false }
    };
    if hang {
        agent.hanging.notify_one();
        // Until the server that sent it is killed (the connection drops).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(Duration::from_millis(agent.delay_ms)).await;
    agent.in_flight.lock().unwrap().remove(&step);
    axum::Json(json!({"text": format!("{name} done"), "input": body["input"]}))
}

async fn serve_agent(agent: Arc<Agent>) -> String {
    let app = axum::Router::new().route("/hook", post(agent_hook)).with_state(agent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn start(dir: &std::path::Path, env: &[(String, String)]) -> Server {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend([
        ("MEMLAYER_EMBEDDING__ENABLED", "false"),
        ("MEMLAYER_WORKFLOWS__LEASE_SECS", "2"),
        ("MEMLAYER_WORKFLOWS__POLL_INTERVAL_MS", "50"),
        ("MEMLAYER_WORKFLOWS__BASE_BACKOFF_MS", "50"),
        ("RUST_LOG", "error"),
    ]);
    let (child, base) = crate::support::spawn_server(dir, &all, &[], Duration::from_secs(120));
    Server { child, base }
}

async fn create(http: &reqwest::Client, base: &str, hook: &str, names: &[&str]) -> String {
    let steps: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "agent": "writer", "input": {"task": n}, "runner": {"kind": "http", "url": hook}}))
        .collect();
    let w: Value = http
        .post(format!("{base}/api/workflows"))
        .json(&json!({"name": "w", "steps": steps}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = w["id"].as_str().unwrap_or_else(|| panic!("{w}")).to_owned();
    let r = http.post(format!("{base}/api/workflows/{id}/execute")).send().await.unwrap();
    assert!(r.status().is_success());
    id
}

/// Polls until the workflow finishes (a guard against hanging, not a
/// timing assertion).
async fn finished(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w: Value = http.get(format!("{base}/api/workflows/{id}")).send().await.unwrap().json().await.unwrap();
        if matches!(w["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return w;
        }
        assert!(Instant::now() < deadline, "workflow {id} unfinished: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_on(store: Store) {
    let (dir, env, _db) = match store {
        Store::Libsql => (tempfile::tempdir().unwrap(), Vec::new(), None),
        Store::Postgres => {
            let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else { return };
            (tempfile::tempdir().unwrap(), vec![("DATABASE_URL".to_owned(), db.url.clone())], Some(db))
        }
    };
    let agent = Arc::new(Agent { hang_first: Mutex::new(Some("b".into())), ..Agent::default() });
    let hook = serve_agent(agent.clone()).await;
    let http = reqwest::Client::new();
    let mut server = start(dir.path(), &env);
    let id = create(&http, &server.base, &hook, &["a", "b", "c"]).await;
    // Step b is running: kill the server in the middle of it.
    tokio::time::timeout(Duration::from_secs(120), agent.hanging.notified()).await.expect("step b never started");
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);

    let server = start(dir.path(), &env);
    let w = finished(&http, &server.base, &id).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    let calls = agent.calls.lock().unwrap().clone();
    let b: Vec<&(String, String)> = calls.iter().filter(|(n, _)| n == "b").collect();
    assert_eq!(b.len(), 2, "b ran again after the crash: {calls:?}");
    assert_eq!(b[0].1, b[1].1, "with the same idempotency key");
    assert_eq!(calls.iter().filter(|(n, _)| n != "b").count(), 2, "a and c ran once: {calls:?}");
    for step in w["steps"].as_array().unwrap() {
        let thread = step["thread_id"].as_str().unwrap();
        let msgs = all_messages(&http, &server.base, thread).await;
        let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, vec!["user", "assistant"], "input once, output once: {msgs:?}");
        let output: Value = serde_json::from_str(msgs[1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(output, step["output"], "the thread's output is the step's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_step_then_restart_completes_the_workflow_on_libsql() {
    crash_on(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_step_then_restart_completes_the_workflow_on_postgres() {
    crash_on(Store::Postgres).await;
}

/// Two servers on one Postgres database, each running one step at a time,
/// share the steps of 12 workflows: both run some (the agent holds the
/// first call until the other server calls too), no step is ever called
/// twice at once (the agent notices an overlap), each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_execution_without_running_a_step_twice() {
    let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else { return };
    let env = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("MEMLAYER_WORKFLOWS__CONCURRENCY".to_owned(), "1".to_owned()),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let agent = Arc::new(Agent { delay_ms: 30, pair_first: true, ..Agent::default() });
    let hook = serve_agent(agent.clone()).await;
    let http = reqwest::Client::new();
    let one = start(d1.path(), &env);
    let two = start(d2.path(), &env);
    let mut ids = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 { &one.base } else { &two.base };
        ids.push(create(&http, base, &hook, &["a", "b", "c"]).await);
    }
    let mut holders = HashMap::<String, usize>::new();
    for id in &ids {
        let w = finished(&http, &one.base, id).await;
        assert_eq!(w["status"], "succeeded", "{w}");
        let events: Value = http
            .get(format!("{}/api/workflows/{id}/events?limit=1000", two.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in events["items"].as_array().unwrap() {
            if let Some(holder) = e["cause"].as_str().and_then(|c| c.strip_prefix("claim by ")) {
                *holders.entry(holder.split(' ').next().unwrap().to_owned()).or_default() += 1;
            }
        }
    }
    assert!(
        agent.overlaps.lock().unwrap().is_empty(),
        "a step ran twice at once: {:?}",
        agent.overlaps.lock().unwrap()
    );
    let calls = agent.calls.lock().unwrap();
    let keys: HashSet<&String> = calls.iter().map(|(_, k)| k).collect();
    assert_eq!((calls.len(), keys.len()), (36, 36), "each step once");
    assert_eq!(holders.len(), 2, "both servers ran steps: {holders:?}");
}

/// `memlayer workflows`: create from a file, `execute --wait` runs the
/// steps in the CLI's process and prints each transition, then the
/// finished workflow as the API's JSON; a refused transition exits 1
/// naming the state.
#[test]
fn the_cli_creates_and_runs_a_workflow_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.json");
    let body = json!({"name": "cli", "steps": [
        {"name": "a", "agent": "writer", "input": "hi"}, {"name": "b", "agent": "writer"}]});
    std::fs::write(&file, body.to_string()).unwrap();
    let run = |args: &[&str]| {
        crate::support::cli(dir.path())
            .arg("workflows")
            .args(args)
            .env("MEMLAYER_WORKFLOWS__DEFAULT_RUNNER", "noop")
            .output()
            .unwrap()
    };
    let out = run(&["create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    let out = run(&["execute", id, "--wait"]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert!(progress.contains("step a: ready → running"), "{progress}");
    assert!(progress.contains("workflow: running → succeeded"), "{progress}");
    let out = run(&["pause", id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workflow is succeeded"));
}
