//! A batch append is all or nothing.

use memlayer_domain::{NewThread, PageSize, ThreadId};
use memlayer_ports::{MessageStore, StoreError, ThreadStore};

use crate::common::{db_path, msgs, open_file, raw, scalar, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_to_missing_thread_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let err = db.append(&tenant("acme"), ThreadId::new(), msgs(1000)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(scalar(&raw(&path).await, "SELECT count(*) FROM messages").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_failing_midway_rolls_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap();
    db.append(&t, thread.id, msgs(10)).await.unwrap();

    // Plant a row at seq 510 behind the adapter's back: message 500 of the next
    // batch of 1000 collides with it, after 499 rows were already inserted.
    let conn = raw(&path).await;
    conn.execute(
        "INSERT INTO messages (id, thread_id, seq, role, content, metadata, created_at) \
         VALUES (X'00000000000070008000000000000001', ?1, 510, 'user', 'planted', '{}', 0)",
        [libsql::Value::Blob(thread.id.as_uuid().as_bytes().to_vec())],
    )
    .await
    .unwrap();

    let err = db.append(&t, thread.id, msgs(1000)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(ThreadStore::get(&db, &t, thread.id).await.unwrap().last_seq, 10, "last_seq rolled back");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM messages").await, 11, "only the earlier batch and the plant");

    // The writer is healthy afterwards.
    conn.execute("DELETE FROM messages WHERE seq = 510", ()).await.unwrap();
    let stored = db.append(&t, thread.id, msgs(1000)).await.unwrap();
    assert_eq!((stored[0].seq, stored[999].seq), (11, 1010));
    let last = db.last(&t, thread.id, PageSize::new(2).unwrap()).await.unwrap();
    assert_eq!(last.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1009, 1010]);
}
