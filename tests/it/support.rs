//! Helpers shared by the HTTP tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_app::Config;
use serde_json::Value;
use tower::ServiceExt as _;

/// The database a [`TestApp`] runs on.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    /// The embedded default: a libSQL file in a temp directory.
    Libsql,
    /// A fresh, migrated Postgres database (`memlayer_adapters_postgres::testing`).
    Postgres,
}

/// A server's router over a fresh database: an embedded libSQL file in a temp
/// directory, or a fresh Postgres database.
pub struct TestApp {
    pub app: axum::Router,
    /// The services behind the router (background tasks are not started).
    pub services: memlayer_app::Services,
    _dir: tempfile::TempDir,
    _db: Option<memlayer_adapters_postgres::testing::TestDatabase>,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::on(Store::Libsql, tweak).await.unwrap()
    }

    /// An app on `store`, or `None` after a `SKIP:` line when Postgres cannot
    /// be reached outside CI (with `CI` set that fails the test instead).
    pub async fn on(store: Store, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let db = match store {
            Store::Libsql => None,
            Store::Postgres => {
                let db = memlayer_adapters_postgres::testing::fresh_database().await?;
                config.database.url = Some(db.url.as_str().into());
                config.database.pool_size = 4;
                Some(db)
            }
        };
        tweak(&mut config);
        let services = memlayer_app::build(config).await.unwrap();
        let described = services.database.describe();
        assert_eq!(described.starts_with("postgres://"), db.is_some(), "{store:?} runs on {described}");
        let app = memlayer_api::server::app(&services);
        Some(Self { app, services, _dir: dir, _db: db })
    }

    /// Sends a request; `body` is sent as JSON when `Some`.
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, uri, &[], body.map(|b| b.to_string()), true).await
    }

    /// Sends a request as tenant `tenant`.
    pub async fn call_as(&self, tenant: &str, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, uri, &[("x-tenant-id", tenant)], body.map(|b| b.to_string()), true).await
    }

    /// Sends a raw body, optionally without a JSON content type.
    pub async fn call_with(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        json: bool,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if json && body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// Sends a request without a body; returns status, headers and the
    /// JSON body.
    pub async fn raw(&self, method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Creates a thread and returns its id.
    pub async fn thread(&self, body: Value) -> String {
        let (status, v) = self.call("POST", "/api/threads", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }
}

/// A stand-in for the credential checks: principals by bearer token. Tests
/// of what the routes and use cases do with a principal use it; the API
/// keys and JWTs that produce principals are tested on their own.
#[derive(Debug, Default)]
pub struct Tokens(pub std::collections::HashMap<String, memlayer_domain::Principal>);

#[async_trait::async_trait]
impl memlayer_app::Verifier for Tokens {
    async fn verify(&self, token: &str) -> Result<memlayer_domain::Principal, memlayer_app::AuthError> {
        self.0.get(token).cloned().ok_or_else(|| memlayer_app::AuthError::Invalid("the API key is not valid".into()))
    }
}

impl TestApp {
    /// Serves the app with `tokens` as its only credentials (each an
    /// `ml_…` bearer token).
    pub fn authenticate_with(&mut self, tokens: Tokens) {
        self.services.auth = memlayer_app::Authenticator::new(
            Some(std::sync::Arc::new(tokens)),
            None,
            memlayer_domain::TenantId::default_tenant(),
        );
        self.app = memlayer_api::server::app(&self.services);
    }

    /// Sends a request with `Authorization: Bearer <token>`.
    pub async fn call_bearer(&self, token: &str, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let auth = format!("Bearer {token}");
        self.call_with(method, uri, &[("authorization", &auth)], body.map(|b| b.to_string()), true).await
    }
}

/// Asserts an error response: status, JSON shape and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message present: {}", got.1);
}

/// Whether the embedding model is provisioned. With `CI` set a missing model
/// fails the test; locally the test prints a visible skip and returns.
pub fn model_ready(test: &str) -> bool {
    match memlayer_app::probe_embedder(&memlayer_app::default_cache_dir()) {
        Ok(_) => true,
        Err(problem) => {
            assert!(std::env::var_os("CI").is_none(), "{test}: the embedding model is required in CI: {problem}");
            eprintln!("SKIP {test}: {problem}");
            false
        }
    }
}

/// A running `memlayer` server process, killed on drop if a test did not
/// stop it.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message of a thread through the running server's API, in order
/// (pages of 1,000, following `next_cursor`).
pub async fn all_messages(http: &reqwest::Client, base: &str, thread: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/threads/{thread}/messages?limit=1000");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        messages.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return messages,
        }
    }
}

/// The real `memlayer` binary, built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_memlayer");

/// A `memlayer` CLI run over the data directory `dir`: the environment's
/// configuration and database settings removed, embeddings off (no model
/// needed), `RUST_LOG=warn`. The caller adds the subcommand first, then
/// its arguments and any `env`.
pub fn cli(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("MEMLAYER_EMBEDDING__ENABLED", "false")
        .env("RUST_LOG", "warn");
    c
}

/// Starts `memlayer serve` on a free loopback port over `dir`, with the
/// environment's database and configuration settings removed (and any
/// `unset` variable: a test's own knobs are no configuration keys, and the
/// server refuses unknown `MEMLAYER_` keys), then `env` set. Returns the
/// child and its base URL, once the server announced it (within `wait`).
pub fn spawn_server(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    unset: &[&str],
    wait: std::time::Duration,
) -> (std::process::Child, String) {
    spawn_binary(std::path::Path::new(BIN), dir, env, unset, wait)
}

/// [`spawn_server`] with another `memlayer` binary (the load harness
/// compares builds).
pub fn spawn_binary(
    bin: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    unset: &[&str],
    wait: std::time::Duration,
) -> (std::process::Child, String) {
    spawn(bin, dir, env, unset, wait, std::process::Stdio::inherit())
}

/// What a server wrote to stderr so far (its logs).
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<String>>);

impl Logs {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// [`spawn_server`], keeping the server's stderr (its logs) instead of
/// passing it through.
pub fn spawn_server_with_logs(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String, Logs) {
    use std::io::{BufRead as _, BufReader};
    let (mut child, base) = spawn(
        std::path::Path::new(BIN),
        dir,
        env,
        &[],
        std::time::Duration::from_secs(60),
        std::process::Stdio::piped(),
    );
    let logs = Logs::default();
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut text = sink.0.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (child, base, logs)
}

fn spawn(
    bin: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    unset: &[&str],
    wait: std::time::Duration,
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let mut command = Command::new(bin);
    command.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"]).arg(dir);
    for name in ["MEMLAYER_CONFIG", "LIBSQL_DATABASE_URL", "DATABASE_URL"].iter().chain(unset) {
        command.env_remove(name);
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("memlayer binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("memlayer listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    match rx.recv_timeout(wait) {
        Ok(base) => (child, base),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not announce its address within {wait:?}: {e}");
        }
    }
}

/// The URL of a reachable Redis for tests: `MEMLAYER_TEST_REDIS_URL`, else
/// the one `scripts/redis start` starts (installing Debian's redis-server
/// when missing and run as root). `None` after a `SKIP:` line when neither
/// works outside CI; with `CI` set that fails the test instead.
pub async fn redis_url() -> Option<String> {
    let found = match std::env::var("MEMLAYER_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/redis");
            match std::process::Command::new("bash").args([script, "start"]).output() {
                Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
                Ok(out) => Err(format!(
                    "scripts/redis start failed: {}",
                    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                )),
                Err(e) => Err(format!("scripts/redis could not run: {e}")),
            }
        }
    };
    let url = match found {
        Ok(url) => url,
        Err(e) => {
            memlayer_adapters_postgres::testing::skip(&format!("Redis not available ({e})"));
            return None;
        }
    };
    let config = memlayer_app::RedisConfig { url: Some(url.as_str().into()), ..memlayer_app::RedisConfig::default() };
    let coordinator = memlayer_app::Coordinator::new(&config).unwrap().unwrap();
    if let Err(e) = coordinator.ping().await {
        memlayer_adapters_postgres::testing::skip(&format!("Redis at {url} does not answer ({e})"));
        return None;
    }
    Some(url)
}
