//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::{NewMessage, Role, TenantId};

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub fn msgs(n: usize) -> Vec<NewMessage> {
    (0..n).map(|i| NewMessage::text(Role::User, format!("message {i}")).unwrap()).collect()
}

pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("memlayer.db")
}

pub async fn open_file(path: &Path) -> LibsqlBackend {
    LibsqlBackend::open_migrated(LibsqlConfig::file(path)).await.unwrap()
}

/// A raw driver connection to inspect or tamper with the file behind the
/// adapter's back.
pub async fn raw(path: &Path) -> libsql::Connection {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn
}

/// First column of the first row as an integer.
pub async fn scalar(conn: &libsql::Connection, sql: &str) -> i64 {
    let mut rows = conn.query(sql, ()).await.unwrap();
    let row = rows.next().await.unwrap().unwrap();
    match row.get_value(0).unwrap() {
        libsql::Value::Integer(i) => i,
        other => panic!("{sql}: expected an integer, got {other:?}"),
    }
}

/// Names of the tables, indexes and triggers in the schema, without SQLite's own.
pub async fn schema_objects(conn: &libsql::Connection) -> Vec<String> {
    let mut rows =
        conn.query("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name", ()).await.unwrap();
    let mut names = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        if let libsql::Value::Text(name) = row.get_value(0).unwrap() {
            names.push(name);
        }
    }
    names
}
