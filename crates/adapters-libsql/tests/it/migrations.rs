//! Migrations: status, up, down, and up again.

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::NewThread;
use memlayer_ports::{Database, StoreError, ThreadStore};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::{db_path, raw, schema_objects, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_down_up_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = LibsqlBackend::open(LibsqlConfig::file(&path)).await.unwrap();
    let conn = raw(&path).await;

    // Opening does not migrate.
    let pending = db.migration_status().await.unwrap();
    assert!(!pending.is_empty());
    assert!(pending.iter().all(|m| m.applied_at.is_none()), "{pending:?}");
    assert!(schema_objects(&conn).await.is_empty());
    assert!(matches!(db.create(&tenant("acme"), NewThread::default()).await, Err(StoreError::Backend(_))));

    let applied = db.migrate_up().await.unwrap();
    assert_eq!(applied.iter().map(|m| m.version).collect::<Vec<_>>(), versions(&pending));
    let status = db.migration_status().await.unwrap();
    for m in &status {
        let at = m.applied_at.as_deref().unwrap();
        OffsetDateTime::parse(at, &Rfc3339).unwrap();
    }
    let objects = schema_objects(&conn).await;
    for expected in [
        "_memlayer_migrations",
        "agent_state",
        "messages",
        "messages_thread_seq",
        "threads",
        "config_models",
        "config_models_one_default",
        "config_agents",
        "config_agent_tools",
        "config_tools",
        "config_settings",
        "idempotency_records",
        "idempotency_records_expires",
        "working_memory",
        "working_memory_versions",
    ] {
        assert!(objects.iter().any(|o| o == expected), "{expected} missing from {objects:?}");
    }
    assert!(db.migrate_up().await.unwrap().is_empty(), "idempotent");
    assert_eq!(db.migrate_down(0).await.unwrap(), vec![]);

    let thread = db.create(&tenant("acme"), NewThread::default()).await.unwrap();

    // Down everything, newest first; asking for more steps than exist is fine.
    let reverted = db.migrate_down(usize::MAX).await.unwrap();
    let mut newest_first = versions(&pending);
    newest_first.reverse();
    assert_eq!(versions(&reverted), newest_first);
    assert!(reverted.iter().all(|m| m.applied_at.is_none()));
    assert!(db.migration_status().await.unwrap().iter().all(|m| m.applied_at.is_none()));
    assert_eq!(schema_objects(&conn).await, vec!["_memlayer_migrations".to_owned()], "schema gone");
    assert!(db.migrate_down(1).await.unwrap().is_empty(), "nothing left to revert");

    // And up again: a clean schema.
    assert_eq!(versions(&db.migrate_up().await.unwrap()), versions(&pending));
    assert!(db.migration_status().await.unwrap().iter().all(|m| m.applied_at.is_some()));
    assert!(matches!(db.get(&tenant("acme"), thread.id).await, Err(StoreError::NotFound { .. })));
    db.create(&tenant("acme"), NewThread::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_one_step_reverts_only_the_newest() {
    let db = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let before = db.migration_status().await.unwrap();
    let newest = before.iter().map(|m| m.version).max().unwrap();
    let reverted = db.migrate_down(1).await.unwrap();
    assert_eq!(versions(&reverted), vec![newest]);
    let after = db.migration_status().await.unwrap();
    for m in after {
        assert_eq!(m.applied_at.is_some(), m.version != newest, "{m:?}");
    }
    assert_eq!(versions(&db.migrate_up().await.unwrap()), vec![newest]);
}

fn versions(list: &[memlayer_ports::MigrationStatus]) -> Vec<i64> {
    list.iter().map(|m| m.version).collect()
}
