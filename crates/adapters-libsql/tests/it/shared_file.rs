//! Two backends on one file, as when a CLI migrates while the server runs.

use std::sync::Arc;

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::{AgentName, Direction, NewThread, PageSize};
use memlayer_ports::{Database, MessageStore, StateStore, ThreadStore};
use serde_json::json;

use crate::common::{db_path, msgs, raw, scalar, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backends_on_one_file_do_not_corrupt_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // The server opens without migrating; the CLI migrates.
    let server = LibsqlBackend::open(LibsqlConfig::file(&path)).await.unwrap();
    let cli = LibsqlBackend::open(LibsqlConfig::file(&path)).await.unwrap();
    assert!(!cli.migrate_up().await.unwrap().is_empty());
    assert!(server.migrate_up().await.unwrap().is_empty(), "the server sees the CLI's migrations");

    let t = tenant("acme");
    let shared = server.create(&t, NewThread::default()).await.unwrap().id;
    let stores = [Arc::new(server), Arc::new(cli)];
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        for k in 0..2 {
            let (store, t) = (Arc::clone(store), t.clone());
            tasks.push(tokio::spawn(async move {
                let own = store.create(&t, NewThread::default()).await.unwrap().id;
                let agent = AgentName::parse(format!("agent-{w}-{k}")).unwrap();
                for round in 0..20u64 {
                    store.append(&t, shared, msgs(7)).await.unwrap();
                    store.append(&t, own, msgs(3)).await.unwrap();
                    store.save(&t, own, &agent, json!({"round": round}), round).await.unwrap();
                    store.page(&t, shared, None, Some(Direction::Backward), PageSize::new(10).unwrap()).await.unwrap();
                    store.migrate_up().await.unwrap();
                    store.migration_status().await.unwrap();
                }
                own
            }));
        }
    }
    let mut own_threads = Vec::new();
    for task in tasks {
        own_threads.push(task.await.unwrap());
    }

    for store in &stores {
        assert_eq!(ThreadStore::get(&**store, &t, shared).await.unwrap().last_seq, 4 * 20 * 7);
        for own in &own_threads {
            assert_eq!(ThreadStore::get(&**store, &t, *own).await.unwrap().last_seq, 20 * 3);
        }
    }
    let all = stores[1].page(&t, shared, None, None, PageSize::new(1000).unwrap()).await.unwrap();
    assert_eq!(all.items.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=4 * 20 * 7).collect::<Vec<i64>>());
    let conn = raw(&path).await;
    assert_eq!(scalar(&conn, "SELECT count(*) FROM messages").await, 4 * 20 * 7 + 4 * 20 * 3);
    let mut rows = conn.query("PRAGMA integrity_check", ()).await.unwrap();
    let ok = rows.next().await.unwrap().unwrap().get_value(0).unwrap();
    assert_eq!(ok, libsql::Value::Text("ok".into()));
}

/// A process killed mid-batch (`memlayer reembed`, or a server) leaves its
/// lease in the file; the next process to claim takes it back at once
/// instead of leaving the jobs to wait out the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_a_dead_process_are_taken_back_by_the_next() {
    use memlayer_ports::EmbeddingStore;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let t = tenant("acme");
    let (now, lease);
    {
        let dead = crate::common::open_file(&path).await;
        let thread = dead.create(&t, NewThread::default()).await.unwrap().id;
        dead.append(&t, thread, msgs(3)).await.unwrap();
        now = memlayer_domain::now();
        lease = now + time::Duration::minutes(5);
        assert_eq!(dead.claim_jobs(now, 10, lease).await.unwrap().len(), 3);
        assert!(dead.claim_jobs(now, 10, lease).await.unwrap().is_empty(), "its own leases hold");
    }
    let next = crate::common::open_file(&path).await;
    assert_eq!(next.claim_jobs(now, 10, lease).await.unwrap().len(), 3, "taken back");
    assert!(next.claim_jobs(now, 10, lease).await.unwrap().is_empty(), "and leased again");
}
