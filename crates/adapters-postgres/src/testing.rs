//! Test support (feature `testing`): a Postgres to test against and a fresh,
//! migrated database per test, cloned from a migrated template.
//!
//! The server is the one in `MEMLAYER_TEST_DATABASE_URL` (or `DATABASE_URL`),
//! else the project's local one, started on demand by `scripts/postgres
//! start`. When none can be reached (no URL and no start, or a URL whose
//! server refuses connections), [`server_url`] fails the test when `CI` is
//! set and otherwise prints a `SKIP:` line and returns `None`.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, reason = "test support: a failure is a failed test")]

use std::process::Command;
use std::sync::OnceLock;

use crate::{PgBackend, PgConfig};

/// The URL of a reachable server the test role can create databases on.
///
/// # Panics
/// When no server can be reached and `CI` is set.
pub fn server_url() -> Option<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(find_server) {
        Ok(url) => Some(url.clone()),
        Err(why) => {
            skip(&format!("Postgres not reachable ({why}); run scripts/postgres start"));
            None
        }
    }
}

/// Skips the running test because `what` is missing: fails it when `CI` is
/// set (non-empty), and otherwise writes `SKIP <test>: <what>` to standard
/// error directly, past the test harness's capture, so a skip is seen
/// without `--nocapture`. Every Postgres test skips through here.
///
/// # Panics
/// When `CI` is set.
pub fn skip(what: &str) {
    use std::io::Write as _;
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    assert!(!ci, "{test}: {what}, and CI is set");
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {what}");
}

fn find_server() -> Result<String, String> {
    for var in ["MEMLAYER_TEST_DATABASE_URL", "DATABASE_URL"] {
        if let Ok(url) = std::env::var(var)
            && !url.trim().is_empty()
        {
            return reachable(&url).map(|()| url).map_err(|e| format!("{var} names an unreachable server: {e}"));
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");
    let out = Command::new("bash")
        .args([script, "start"])
        .output()
        .map_err(|e| format!("scripts/postgres could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/postgres start failed: {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if url.is_empty() { Err("scripts/postgres start printed no URL".to_owned()) } else { Ok(url) }
}

/// Whether a TCP connection to one of the URL's hosts opens within 3 s (a
/// URL that does not parse, or names only Unix sockets, is left to the
/// test to fail on).
fn reachable(url: &str) -> Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs as _};
    let Ok(config) = url.parse::<tokio_postgres::Config>() else { return Ok(()) };
    let ports = config.get_ports();
    let mut tried = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let tokio_postgres::config::Host::Tcp(host) = host else { return Ok(()) };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let addrs = (host.as_str(), port).to_socket_addrs().map_err(|e| format!("{host} does not resolve: {e}"))?;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)) {
                Ok(_) => return Ok(()),
                Err(e) => tried.push(format!("{addr}: {e}")),
            }
        }
    }
    if tried.is_empty() { Ok(()) } else { Err(tried.join("; ")) }
}

/// `url` with its database name replaced by `db`.
#[must_use]
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A database that is dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    server: String,
}

impl TestDatabase {
    /// The migrated backend on it, with a small pool.
    pub async fn backend(&self) -> PgBackend {
        PgBackend::open(PgConfig { pool_size: 4, ..PgConfig::new(self.url.clone()) }).await.unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// FNV-1a of the migrations: the template's name changes with them.
fn schema_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in crate::migrations::MIGRATIONS {
        for b in m.up.bytes().chain(m.down.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

async fn admin(server: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A fresh database migrated to the latest version, or `None` after a
/// `SKIP:` line when no server is reachable (outside CI).
pub async fn fresh_database() -> Option<TestDatabase> {
    let server = server_url()?;
    let template = format!("memlayer_tmpl_{}", schema_hash());
    let client = admin(&server).await;
    ensure_template(&client, &server, &template).await;
    let name = format!("memlayer_test_{}", uuid::Uuid::now_v7().simple());
    client.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await.unwrap();
    Some(TestDatabase { url: with_database(&server, &name), name, server })
}

async fn database_exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some()
}

/// Creates and migrates the template once per schema, under an advisory lock
/// so concurrent test processes build it once.
async fn ensure_template(client: &tokio_postgres::Client, server: &str, template: &str) {
    if database_exists(client, template).await {
        return;
    }
    client.execute("SELECT pg_advisory_lock(hashtext('memlayer test template'))", &[]).await.unwrap();
    if !database_exists(client, template).await {
        let building = format!("{template}_building");
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).await.unwrap();
        client.batch_execute(&format!("CREATE DATABASE {building}")).await.unwrap();
        {
            let backend =
                PgBackend::open_migrated(PgConfig { pool_size: 1, ..PgConfig::new(with_database(server, &building)) })
                    .await
                    .unwrap();
            drop(backend);
        }
        client.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}")).await.unwrap();
    }
    client.execute("SELECT pg_advisory_unlock(hashtext('memlayer test template'))", &[]).await.unwrap();
}

/// The value of a setting on the next connection the backend's pool hands
/// out (with a pool of one: the connection every earlier call used).
pub async fn pooled_setting(backend: &PgBackend, name: &str) -> Option<String> {
    let client = backend.client().await.unwrap();
    client.query_one("SELECT current_setting($1, true)", &[&name]).await.unwrap().get(0)
}

/// How many prepared statements the next pooled connection caches (with a
/// pool of one: the connection every earlier call used).
pub async fn statement_cache_size(backend: &PgBackend) -> usize {
    backend.client().await.unwrap().statement_cache.size()
}

/// Whether the next pooled connection is encrypted (`pg_stat_ssl`).
pub async fn connection_encrypted(backend: &PgBackend) -> bool {
    let client = backend.client().await.unwrap();
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// Runs `sql` in a transaction the backend opens as for any call (scoped to
/// every tenant, with the configured statement timeout): for tests of what
/// every transaction gets.
///
/// # Errors
/// As any call, through the adapter's error mapping.
pub async fn run_in_transaction(backend: &PgBackend, sql: &str) -> Result<(), memlayer_ports::StoreError> {
    use crate::error::Context as _;
    let mut client = backend.client().await?;
    let tx = crate::backend::begin(&mut client, crate::backend::Access::All).await?;
    tx.batch_execute(sql).await.ctx("test statement")?;
    tx.commit().await.ctx("test statement")
}

/// The URL of a superuser on the test server: `MEMLAYER_TEST_SUPERUSER_URL`,
/// else the server URL with the user `postgres` (what `scripts/postgres`
/// creates); `None` (after a `SKIP:` line, or failing under `CI`) when
/// it cannot log in.
pub async fn superuser_url() -> Option<String> {
    let server = server_url()?;
    let url = match std::env::var("MEMLAYER_TEST_SUPERUSER_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => with_user(&server, "postgres"),
    };
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            drop(client);
            drop(conn);
            Some(url)
        }
        Err(e) => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            assert!(!ci, "a superuser is needed and CI is set, but {} cannot log in: {e}", crate::describe_url(&url));
            eprintln!("SKIP: no superuser login ({e}); set MEMLAYER_TEST_SUPERUSER_URL");
            None
        }
    }
}

/// `url` (a `postgres://` URL) with its user replaced by `user` and no password.
#[must_use]
pub fn with_user(url: &str, user: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let host_start = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => at + 1,
        (Some(at), None) => at + 1,
        _ => 0,
    };
    format!("{}{user}@{}", &url[..after_scheme], &rest[host_start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(with_database("postgres://u@h:1/memlayer", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u@h:1/db?sslmode=disable", "x"), "postgres://u@h:1/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(with_user("postgres://u:pw@h:1/db", "postgres"), "postgres://postgres@h:1/db");
        assert_eq!(with_user("postgres://h:1/db", "postgres"), "postgres://postgres@h:1/db");
    }
}
