//! The HTTP API and the CLI apply the same use-case rules: both call the
//! app's services, which hold the rules (here: a search within one thread
//! returns the thread's `_memory.top_k` hits, from its agent, unless the
//! caller names a number).

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{BIN, spawn_server};

/// Lexical search needs no model: both frontends run without one.
const NO_MODEL: (&str, &str) = ("MEMLAYER_EMBEDDING__ENABLED", "false");

fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env(NO_MODEL.0, NO_MODEL.1)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(&url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(status < 300, "{url}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_cli_search_default_to_the_agents_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn_server(dir.path(), &[NO_MODEL], &[], Duration::from_secs(60));
    let server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| post(&http, format!("{}{path}", server.base), body);
    let model = json!({"name": "gpt-4o", "provider": "openai", "context_window": 128_000, "max_output_tokens": 4096,
                       "input_price": 2.5, "output_price": 10.0});
    let model = post("/api/models", model).await;
    post("/api/agents", json!({"name": "support", "model_id": model["id"], "memory": {"top_k": 2}})).await;
    let thread = post("/api/threads", json!({"agent_id": "support"})).await;
    let thread = thread["id"].as_str().unwrap().to_owned();
    let batch: Vec<Value> = (0..5).map(|i| json!({"role": "user", "content": format!("refund request {i}")})).collect();
    post(&format!("/api/threads/{thread}/messages"), json!({"messages": batch})).await;

    let search = |top_k: Option<u32>| {
        let mut body = json!({"query": "refund", "mode": "lexical", "scope": {"thread_id": thread}});
        if let Some(k) = top_k {
            body["top_k"] = json!(k);
        }
        post("/api/search", body)
    };
    assert_eq!(search(None).await["hits"].as_array().unwrap().len(), 2, "HTTP: the agent's top_k");
    assert_eq!(search(Some(4)).await["hits"].as_array().unwrap().len(), 4, "HTTP: an explicit top_k wins");
    drop(server);

    let (ok, out) = cli(dir.path(), &["search", "refund", "--thread", &thread, "--mode", "lexical"]);
    assert!(ok && out.starts_with("2 hits"), "CLI: the agent's top_k: {out}");
    let (ok, out) = cli(dir.path(), &["search", "refund", "--thread", &thread, "--mode", "lexical", "--top-k", "4"]);
    assert!(ok && out.starts_with("4 hits"), "CLI: an explicit top_k wins: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_cli_assemble_the_same_context() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn_server(dir.path(), &[NO_MODEL], &[], Duration::from_secs(60));
    let server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| post(&http, format!("{}{path}", server.base), body);
    let thread = post("/api/threads", json!({"model": "gpt-4o"})).await;
    let thread = thread["id"].as_str().unwrap().to_owned();
    let batch: Vec<Value> =
        (0..40).map(|i| json!({"role": "user", "content": format!("note {i} about the kettle")})).collect();
    post(&format!("/api/threads/{thread}/messages?count_tokens=true"), json!({"messages": batch})).await;
    let over_http =
        post(&format!("/api/threads/{thread}/context"), json!({"budget": 200, "recall": {"enabled": false}})).await;
    assert!(over_http["tokens"]["total"].as_u64().unwrap() <= 200, "{over_http}");
    drop(server);

    let (ok, out) = cli(dir.path(), &["context", &thread, "--budget", "200", "--no-recall"]);
    assert!(ok, "{out}");
    let over_cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(over_cli, over_http, "the same rules, the same context");
    let (ok, out) = cli(dir.path(), &["context", &thread, "--budget", "-5"]);
    assert!(!ok && out.contains("budget") && out.contains("10000000"), "names the limit: {out}");
}

/// The operator sets a tenant's quota with the CLI; the server enforces it,
/// and `GET /api/usage` and `memlayer usage` report the same figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_cli_report_the_same_usage_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let quota = r#"{"messages": 3, "bytes": 100000}"#;
    let (ok, out) = cli(dir.path(), &["settings", "set", "--tenant", "acme", "limits", "quota", quota]);
    assert!(ok, "{out}");
    let (ok, out) = cli(dir.path(), &["settings", "set", "--tenant", "acme", "limits", "quota", r#"{"message": 3}"#]);
    assert!(!ok && out.contains("`message` is not a quota"), "a misspelt quota is refused: {out}");
    let (child, base) = spawn_server(dir.path(), &[NO_MODEL], &[], Duration::from_secs(60));
    let server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    let thread = http.post(format!("{}/api/threads", server.base)).header("x-tenant-id", "acme").json(&json!({}));
    let thread: Value = thread.send().await.unwrap().json().await.unwrap();
    let uri = format!("{}/api/threads/{}/messages", server.base, thread["id"].as_str().unwrap());
    let batch = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
    let append = |body: Value| http.post(&uri).header("x-tenant-id", "acme").json(&body).send();
    assert_eq!(append(batch.clone()).await.unwrap().status().as_u16(), 201);
    let refused = append(batch).await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "the CLI's quota holds on the server");
    let usage = http.get(format!("{}/api/usage", server.base)).header("x-tenant-id", "acme");
    let usage: Value = usage.send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["messages"], json!({"used": 2, "limit": 3}), "{usage}");
    drop(server);

    let (ok, out) = cli(dir.path(), &["usage", "--tenant", "acme"]);
    assert!(ok, "{out}");
    let from_cli: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(from_cli, usage, "the CLI prints what HTTP answers");
}
