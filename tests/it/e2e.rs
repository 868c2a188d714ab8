//! The real `memlayer` binary on a temp directory, driven over HTTP and its CLI.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{BIN, Server};

fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

fn start_with(dir: &Path, env: &[(&str, &str)]) -> Server {
    let (child, base) = crate::support::spawn_server(dir, env, &[], Duration::from_secs(60));
    Server { child, base }
}

/// SIGTERM, then asserts a graceful exit with success within 10 s.
fn stop(server: &mut Server) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = server.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exited.is_some_and(|s| s.success()), "graceful exit after SIGTERM: {exited:?}");
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String) {
    cli_with(dir, args, &[])
}

fn cli_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_api_and_its_cli_works() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = cli(dir.path(), &["migrate", "status"]);
    assert!(ok && out.contains("pending"), "fresh store lists pending migrations: {out}");
    let (ok, out) = cli(dir.path(), &["migrate", "up"]);
    assert!(ok && out.contains("applied"), "{out}");
    let (ok, out) = cli(dir.path(), &["doctor"]);
    assert!(ok && out.contains("database") && !out.contains("FAIL"), "{out}");
    assert!(out.contains("[ ok ] durability: synchronous=FULL (2), journal_mode=wal"), "{out}");

    let mut server = start(dir.path());
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get(format!("{base}/health")).await.0, 200);
    assert_eq!(get(format!("{base}/ready")).await.0, 200);

    let r = http
        .post(format!("{base}/api/threads"))
        .json(&json!({"title": "e2e", "model": "gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let thread: Value = r.json().await.unwrap();
    let id = thread["id"].as_str().unwrap().to_owned();
    let batch: Vec<Value> = (0..25).map(|i| json!({"role": "user", "content": format!("hello {i}")})).collect();
    let r = http
        .post(format!("{base}/api/threads/{id}/messages?count_tokens=true"))
        .json(&json!({"messages": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (status, page) = get(format!("{base}/api/threads/{id}/messages?direction=backward&limit=10")).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["seq"], 25);
    assert!(page["next_cursor"].is_string());
    let r = http
        .put(format!("{base}/api/threads/{id}/state/planner"))
        .json(&json!({"state": {"goal": "test"}, "expected_version": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(format!("{base}/api/threads"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");
    let (status, doc) = get(format!("{base}/api/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/threads/{id}/messages"].is_object());

    // SIGTERM stops the server gracefully with success.
    stop(&mut server);

    // The data is on disk: a new server over the same directory sees it.
    let server = start(dir.path());
    let (status, again) = get(format!("{}/api/threads/{id}", server.base)).await;
    assert_eq!((status, again["message_count"].clone()), (200, json!(25)));

    drop(server);

    let (ok, out) = cli(dir.path(), &["migrate", "down", "--steps", "1"]);
    assert!(ok && out.contains("reverted"), "{out}");
    let (ok, out) = cli(dir.path(), &["migrate", "status"]);
    assert!(ok && out.contains("pending"), "{out}");
    let (ok, out) = cli(dir.path(), &["migrate", "up"]);
    assert!(ok && out.contains("applied"), "{out}");
}

/// `memlayer reembed` embeds what was stored while embedding was off, is
/// killed partway, and a second run finishes only what the first left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reembed_resumes_after_being_killed() {
    if !crate::support::model_ready("reembed_resumes_after_being_killed") {
        return;
    }
    const TOTAL: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with(dir.path(), &[("MEMLAYER_EMBEDDING__ENABLED", "false")]);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let r = http.post(format!("{base}/api/threads")).json(&json!({"title": "reembed"})).send().await.unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    for start in (0..TOTAL).step_by(500) {
        let batch: Vec<Value> = (start..start + 500)
            .map(|i| json!({"role": "user", "content": format!("note {i}: the shipment of order {i} left the warehouse on day {} and the customer asked about its tracking number", i % 31)}))
            .collect();
        let r = http.post(format!("{base}/api/threads/{id}/messages")).json(&json!({"messages": batch})).send().await;
        assert_eq!(r.unwrap().status().as_u16(), 201);
    }
    stop(&mut server);

    // First run: killed once it reports progress.
    let mut child = Command::new(BIN)
        .args(["reembed", "--data-dir"])
        .arg(dir.path())
        .env_remove("MEMLAYER_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if let Some(n) = line.strip_suffix(" messages embedded") {
            first = n.parse().unwrap();
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first > 0 && first < TOTAL, "killed partway: {first}");

    // Second run: only the rest.
    let (ok, out) = cli(dir.path(), &["reembed"]);
    assert!(ok, "{out}");
    let second: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("embedded ").and_then(|r| r.split(' ').next()))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert!(second > 0 && first + second <= TOTAL + 64, "first {first}, second {second}: the rest only");
    let (ok, out) = cli(dir.path(), &["reembed"]);
    assert!(ok && out.contains("embedded 0 messages"), "nothing left: {out}");

    let server = start(dir.path());
    let r = http.get(format!("{}/api/threads/{id}/embeddings", server.base)).send().await.unwrap();
    let status: Value = r.json().await.unwrap();
    assert_eq!((status["embedded"].as_u64(), status["pending"].as_u64()), (Some(TOTAL), Some(0)), "{status}");
    let r = http
        .post(format!("{}/api/search", server.base))
        .json(&json!({"query": "where is the parcel for order 1234", "scope": {"thread_id": id}, "mode": "vector", "top_k": 3}))
        .send()
        .await
        .unwrap();
    let found: Value = r.json().await.unwrap();
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(3), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_postgres_from_database_url() {
    let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", db.url.as_str()), ("MEMLAYER_EMBEDDING__ENABLED", "false")];
    let (ok, out) = cli_with(dir.path(), &["migrate", "down", "--steps", "2"], &env);
    assert!(ok && out.matches("reverted").count() == 2, "{out}");
    let (ok, out) = cli_with(dir.path(), &["migrate", "status"], &env);
    assert!(ok && out.starts_with("postgres://") && out.contains("pending"), "{out}");
    let (ok, out) = cli_with(dir.path(), &["migrate", "up"], &env);
    assert!(ok && out.matches("applied").count() == 2, "{out}");
    let (ok, out) = cli_with(dir.path(), &["doctor"], &env);
    assert!(ok && out.contains("postgres://") && !out.contains("FAIL"), "{out}");
    assert!(!dir.path().join("memlayer.db").exists(), "no libSQL file when DATABASE_URL is set");

    // A database that does not exist: doctor says so, serve refuses to start.
    let wrong = memlayer_adapters_postgres::testing::with_database(&db.url, "memlayer_missing_db");
    let bad = [("DATABASE_URL", wrong.as_str())];
    let (ok, out) = cli_with(dir.path(), &["doctor"], &bad);
    assert!(!ok && out.contains("[FAIL] database") && out.contains("does not exist"), "{out}");
    let (ok, out) = cli_with(dir.path(), &["serve", "--addr", "127.0.0.1:0"], &bad);
    assert!(!ok && out.contains(r#"database "memlayer_missing_db" does not exist"#), "{out}");

    let mut server = start_with(dir.path(), &env);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    assert_eq!(http.get(format!("{base}/ready")).send().await.unwrap().status().as_u16(), 200);
    let r = http.post(format!("{base}/api/threads")).json(&json!({"resource_id": "user-42"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let batch = json!({"messages": [
        {"role": "user", "content": "Where is my refund?"},
        {"role": "assistant", "content": "Your refund was sent on Monday."}]});
    let r = http.post(format!("{base}/api/threads/{id}/messages")).json(&batch).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let page: Value =
        http.get(format!("{base}/api/threads/{id}/messages?limit=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["seq"], 1);
    assert!(page["next_cursor"].is_string());
    let r = http
        .post(format!("{base}/api/search"))
        .json(&json!({"query": "monday", "mode": "lexical", "scope": {"resource_id": "user-42"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let hits: Value = r.json().await.unwrap();
    assert_eq!(hits["hits"][0]["message"]["content"], "Your refund was sent on Monday.", "{hits}");
    stop(&mut server);
}

#[test]
fn the_cli_manages_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}")) };
    let (ok, out) = cli(
        dir.path(),
        &["models", "create", "--name", "gpt-4o", "--provider", "openai", "--context-window", "128000"]
            .into_iter()
            .chain(["--max-output-tokens", "16384", "--input-price", "2.5", "--default"])
            .collect::<Vec<_>>(),
    );
    assert!(ok, "{out}");
    let model = json(&out);
    assert_eq!(model["is_default"], true);
    let model_id = model["id"].as_str().unwrap().to_owned();
    let (ok, out) = cli(dir.path(), &["models", "list", "--filter", "provider:eq:openai", "--sort", "-name"]);
    assert!(ok, "{out}");
    assert_eq!(json(&out)["items"][0]["id"], model_id.as_str());
    let (ok, out) = cli(dir.path(), &["models", "list", "--filter", "name;DROP TABLE config_models--:eq:x"]);
    assert!(!ok && out.contains("unknown field `name;DROP TABLE config_models--`"), "{out}");

    let params = r#"{"type": "object", "properties": {"q": {"type": "string"}}}"#;
    let (ok, out) = cli(dir.path(), &["tools", "create", "--name", "search", "--parameters", params]);
    assert!(ok, "{out}");
    let tool_id = json(&out)["id"].as_str().unwrap().to_owned();
    let (ok, out) = cli(
        dir.path(),
        &["agents", "create", "--name", "support", "--model-id", &model_id, "--tool-id", &tool_id, "--last-n", "10"],
    );
    assert!(ok, "{out}");
    let agent_id = json(&out)["id"].as_str().unwrap().to_owned();
    let (ok, out) = cli(dir.path(), &["agents", "tools", &agent_id]);
    assert!(ok && json(&out)[0]["name"] == "search", "{out}");
    let missing = "0193e5a0-0000-7000-8000-000000000000";
    let (ok, out) = cli(dir.path(), &["agents", "create", "--name", "other", "--model-id", missing]);
    assert!(!ok && out.contains("does not exist"), "{out}");

    let (ok, out) = cli(dir.path(), &["settings", "get", "ui", "theme", "--default", "\"light\""]);
    assert_eq!((ok, out.trim()), (true, "\"light\""));
    let (ok, out) = cli(dir.path(), &["settings", "set", "ui", "theme", "not json"]);
    assert!(!ok && out.contains("not JSON"), "{out}");
    let (ok, out) = cli(dir.path(), &["settings", "set", "ui", "theme", "\"dark\""]);
    assert!(ok, "{out}");
    let (ok, out) = cli(dir.path(), &["settings", "get", "ui", "theme", "--tenant", "acme"]);
    assert!(!ok && out.contains("not set"), "another tenant: {out}");
    let (ok, out) = cli(dir.path(), &["settings", "get", "ui", "theme"]);
    assert_eq!((ok, out.trim()), (true, "\"dark\""));
    let (ok, out) = cli(dir.path(), &["models", "delete", &model_id]);
    assert!(!ok && out.contains("used by agent"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = cli_with(dir.path(), &["serve", "--addr", "0.0.0.0:0"], &[]);
    assert!(!ok, "serve on 0.0.0.0 without authentication must not start: {out}");
    assert!(out.contains("auth.mode") && out.contains("0.0.0.0:0"), "the refusal says what to set: {out}");
    assert!(!dir.path().join("memlayer.db").exists(), "nothing is opened before the refusal");
    // `doctor` flags the same configuration.
    let (ok, out) = cli_with(dir.path(), &["doctor"], &[("MEMLAYER_SERVER__ADDR", "0.0.0.0:8080")]);
    assert!(!ok && out.contains("[FAIL] authentication"), "{out}");
}
