//! Where data lives: files across reopen, `:memory:`, remote without the feature.

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, LibsqlLocation};
use memlayer_domain::{AgentName, NewThread, PageSize, Title};
use memlayer_ports::{Database, MessageStore, StateStore, StoreError, ThreadStore};
use serde_json::json;

use crate::common::{db_path, msgs, open_file, raw, tenant};

/// The writer commits with `synchronous = FULL`, set explicitly (not left to
/// the SQLite build's default), and reports it with the journal mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_syncs_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_file(&db_path(&dir)).await;
    let settings: Vec<(String, String)> =
        db.durability().await.unwrap().into_iter().map(|s| (s.name, s.value)).collect();
    assert_eq!(
        settings,
        vec![("synchronous".to_owned(), "FULL (2)".to_owned()), ("journal_mode".to_owned(), "wal".to_owned())]
    );
}

/// `synchronous: Normal` (opt-in, `database.synchronous = "normal"`) is
/// what the writer runs with and reports; the file stays in WAL mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_takes_the_configured_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let config = LibsqlConfig {
        synchronous: memlayer_adapters_libsql::Synchronous::Normal,
        ..LibsqlConfig::file(db_path(&dir))
    };
    let db = LibsqlBackend::open_migrated(config).await.unwrap();
    let settings: Vec<(String, String)> =
        db.durability().await.unwrap().into_iter().map(|s| (s.name, s.value)).collect();
    assert_eq!(
        settings,
        vec![("synchronous".to_owned(), "NORMAL (1)".to_owned()), ("journal_mode".to_owned(), "wal".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let t = tenant("acme");
    let agent = AgentName::parse("support").unwrap();
    let (thread, stored) = {
        let db = open_file(&path).await;
        assert!(db.describe().contains(&path.display().to_string()), "{}", db.describe());
        let thread = db
            .create(&t, NewThread { title: Some(Title::parse("kept").unwrap()), ..NewThread::default() })
            .await
            .unwrap();
        let stored = db.append(&t, thread.id, msgs(25)).await.unwrap();
        db.save(&t, thread.id, &agent, json!({"step": 3}), 0).await.unwrap();
        (thread.id, stored)
    };
    assert!(path.exists(), "the file and its parent directory were created");

    let db = open_file(&path).await;
    assert!(db.migrate_up().await.unwrap().is_empty(), "already migrated");
    let read = ThreadStore::get(&db, &t, thread).await.unwrap();
    assert_eq!(read.title.as_ref().map(Title::as_str), Some("kept"));
    assert_eq!(read.last_seq, 25);
    let page = db.page(&t, thread, None, None, PageSize::new(100).unwrap()).await.unwrap();
    assert_eq!(page.items, stored);
    let state = db.load(&t, thread, &agent).await.unwrap().unwrap();
    assert_eq!((state.version, state.state), (1, json!({"step": 3})));

    let conn = raw(&path).await;
    let mut rows = conn.query("PRAGMA journal_mode", ()).await.unwrap();
    let mode = rows.next().await.unwrap().unwrap().get_value(0).unwrap();
    assert_eq!(mode, libsql::Value::Text("wal".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_works_and_is_private() {
    let a = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let b = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let t = tenant("acme");
    let thread = a.create(&t, NewThread::default()).await.unwrap();
    a.append(&t, thread.id, msgs(10)).await.unwrap();
    assert_eq!(a.last(&t, thread.id, PageSize::new(3).unwrap()).await.unwrap().len(), 3);
    assert!(
        matches!(ThreadStore::get(&b, &t, thread.id).await, Err(StoreError::NotFound { .. })),
        "separate databases"
    );
    a.ping().await.unwrap();
    assert!(a.describe().contains("memory"));

    // Many concurrent operations on the single connection.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (a, t) = (a.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                a.append(&t, thread.id, msgs(3)).await.unwrap();
                a.page(&t, thread.id, None, None, PageSize::new(5).unwrap()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(ThreadStore::get(&a, &t, thread.id).await.unwrap().last_seq, 10 + 8 * 10 * 3);
}

#[cfg(not(feature = "remote"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_without_feature_says_how_to_enable_it() {
    let config = LibsqlConfig::remote("libsql://example.invalid", Some("token".into()));
    let err = LibsqlBackend::open(config).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("remote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_debug_never_shows_the_token() {
    let config = LibsqlConfig {
        location: LibsqlLocation::Remote {
            url: "libsql://h?authToken=secret1".into(),
            auth_token: Some("secret2".into()),
        },
        ..LibsqlConfig::memory()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("secret"), "{shown}");
}

/// Operations run on the blocking pool; that must work on a current-thread
/// runtime too (the default of `#[tokio::test]` and of small tools).
#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_file(&db_path(&dir)).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap();
    db.append(&t, thread.id, msgs(3)).await.unwrap();
    assert_eq!(db.last(&t, thread.id, PageSize::new(10).unwrap()).await.unwrap().len(), 3);
    db.ping().await.unwrap();
}

/// Without a server to talk to, a remote backend opens (connections are lazy)
/// and reports itself unavailable; its description carries no secret.
#[cfg(feature = "remote")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_without_server_is_unavailable() {
    let config = LibsqlConfig::remote("http://127.0.0.1:9/?authToken=secret1", Some("secret2".into()));
    let db = LibsqlBackend::open(config).await.unwrap();
    assert!(!db.describe().contains("secret"), "{}", db.describe());
    let err = db.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// Agent state's history (migration 25) keeps one row per seq, the newest
/// `HISTORY_KEEP` seqs: saves at one seq replace each other, older seqs
/// are dropped in the saving transaction, and a fork at a dropped seq gets
/// no state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_history_keeps_the_newest_seqs() {
    use memlayer_adapters_sql::state::HISTORY_KEEP;

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let id = db.create(&t, NewThread::default()).await.unwrap().id;
    let agent = AgentName::parse("a1").unwrap();
    let mut version = 0;
    let seqs = i64::from(HISTORY_KEEP) + 2;
    for seq in 1..=seqs {
        db.append(&t, id, msgs(1)).await.unwrap();
        for _ in 0..2 {
            db.save(&t, id, &agent, json!({"seq": seq, "v": version}), version).await.unwrap();
            version += 1;
        }
    }
    let kept = crate::common::scalar(&conn, "SELECT count(*) FROM agent_state_history").await;
    assert_eq!(kept, i64::from(HISTORY_KEEP), "one row per seq, the newest seqs");
    let oldest = crate::common::scalar(&conn, "SELECT min(at_seq) FROM agent_state_history").await;
    assert_eq!(oldest, 3, "seqs 1 and 2 dropped");
    db.append(&t, id, msgs(1)).await.unwrap();
    let fork = |at: i64| memlayer_domain::ForkThread::new(Some(at), None).unwrap();
    let at_two = db.fork(&t, id, fork(2)).await.unwrap().thread.id;
    assert_eq!(db.load(&t, at_two, &agent).await.unwrap(), None, "no longer kept");
    let at_three = db.fork(&t, id, fork(3)).await.unwrap().thread.id;
    let state = db.load(&t, at_three, &agent).await.unwrap().unwrap();
    assert_eq!(state.state, json!({"seq": 3, "v": 5}), "the last save at seq 3");
}
