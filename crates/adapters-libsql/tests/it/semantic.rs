//! Migration 2: full-text index, embedding jobs and stored vectors, checked
//! against the raw tables behind the adapter's back.

use memlayer_domain::{Embedding, Metadata, NewMessage, NewThread, Role, ThreadId, ToolCall, now};
use memlayer_ports::{Database, EmbeddingStore, MessageStore, StoreError, ThreadStore, VectorFilter};
use serde_json::json;

use crate::common::{db_path, msgs, open_file, raw, scalar, schema_objects, tenant};

fn text(s: &str) -> NewMessage {
    NewMessage::text(Role::User, s).unwrap()
}

fn emb(model: &str, seed: f32) -> Embedding {
    Embedding::new(model, vec![seed, 1.0 - seed, 0.5], 3).unwrap()
}

fn whole(t: &str) -> VectorFilter {
    VectorFilter { tenant: tenant(t), threads: None }
}

/// Rows of the semantic tables: (fts, jobs, vectors).
async fn counts(conn: &libsql::Connection) -> (i64, i64, i64) {
    (
        scalar(conn, "SELECT count(*) FROM messages_fts").await,
        scalar(conn, "SELECT count(*) FROM embedding_jobs").await,
        scalar(conn, "SELECT count(*) FROM message_vectors").await,
    )
}

async fn fts_integrity(conn: &libsql::Connection) {
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 0)", ()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_backfills_and_reverts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    down_to_2(&db).await;
    let with_2 = schema_objects(&conn).await;
    assert_eq!(db.migrate_down(1).await.unwrap()[0].version, 2);
    let without_2 = schema_objects(&conn).await;
    for gone in ["messages_fts", "message_vectors", "embedding_jobs", "messages_fts_source", "messages_semantic_insert"]
    {
        assert!(with_2.iter().any(|o| o == gone) && !without_2.iter().any(|o| o == gone), "{gone}");
    }

    // Messages stored before migration 2 are indexed and queued by it.
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let call = ToolCall { id: "c1".into(), name: "lookup_order".into(), arguments: json!({"order": "A-17"}) };
    let mut batch = msgs(4);
    batch.push(NewMessage::new(Role::Assistant, "checking", None, None, vec![call], Metadata::default()).unwrap());
    let stored = db.append(&t, thread, batch).await.unwrap();
    assert_eq!(db.migrate_up().await.unwrap()[0].version, 2);
    down_to_2(&db).await;
    assert_eq!(schema_objects(&conn).await, with_2, "up again restores the same schema");
    assert_eq!(counts(&conn).await, (5, 5, 0), "backfilled full-text entries and jobs");
    fts_integrity(&conn).await;
    let hits = db.lexical_search(&whole("acme"), "A-17".into(), 5).await.unwrap();
    assert_eq!(hits.first().map(|h| h.id), Some(stored[4].id), "tool arguments are searchable");
    let due = db.due_jobs(now(), 10).await.unwrap();
    assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), stored.iter().map(|m| m.id).collect::<Vec<_>>());
    assert_eq!(due[4].text, "checking\nlookup_order {\"order\":\"A-17\"}");

    // Down with vectors stored, then down everything: nothing is left behind
    // (foreign keys are on in the adapter's connections).
    db.complete_jobs(vec![(stored[0].id, emb("m", 0.1))]).await.unwrap();
    db.migrate_down(1).await.unwrap();
    assert_eq!(schema_objects(&conn).await, without_2);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM sqlite_sequence WHERE name = 'message_vectors'").await, 0);
    db.migrate_down(usize::MAX).await.unwrap();
    assert_eq!(schema_objects(&conn).await, vec!["_memlayer_migrations".to_owned()]);
    db.migrate_up().await.unwrap();
    down_to_2(&db).await;
    assert_eq!(schema_objects(&conn).await, with_2);
    assert_eq!(counts(&conn).await, (0, 0, 0));
}

/// Reverts the migrations newer than 2, so that this file tests migration 2
/// as the newest whatever came after it.
async fn down_to_2(db: &memlayer_adapters_libsql::LibsqlBackend) {
    loop {
        let status = db.migration_status().await.unwrap();
        let newest = status.iter().filter(|m| m.applied_at.is_some()).map(|m| m.version).max().unwrap_or(0);
        if newest <= 2 {
            break;
        }
        db.migrate_down(1).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_text_index_follows_inserts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let stored =
        db.append(&t, thread, vec![text("foo bar"), text("the zanzibar ledger"), text("bar baz")]).await.unwrap();
    assert_eq!(counts(&conn).await.0, 3);
    assert_eq!(db.lexical_search(&whole("acme"), "zanzibar".into(), 10).await.unwrap()[0].id, stored[1].id);

    MessageStore::delete(&db, &t, stored[1].id).await.unwrap();
    assert_eq!(counts(&conn).await.0, 2);
    assert!(db.lexical_search(&whole("acme"), "zanzibar".into(), 10).await.unwrap().is_empty());
    fts_integrity(&conn).await;

    // FTS5 syntax and punctuation are plain words, never operators.
    for nasty in [
        "\"foo\" OR bar*  NEAR(",
        "\"foo\" AND \"bar",
        "content:foo",
        "tools : (foo) ) (",
        "foo\"\"bar",
        "NOT foo",
        "foo + bar - baz ^ * ''",
        "{tools content}: foo",
    ] {
        let hits = db.lexical_search(&whole("acme"), nasty.into(), 10).await;
        assert!(hits.is_ok(), "{nasty:?}: {hits:?}");
    }
    // `NEAR(` and `OR` were words: the messages containing foo/bar still match.
    let hits = db.lexical_search(&whole("acme"), "\"foo\" OR bar*  NEAR(".into(), 10).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(db.lexical_search(&whole("acme"), "*** ((( \"\"".into(), 10).await.unwrap().is_empty());
    assert!(db.lexical_search(&whole("acme"), "foo".into(), 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rare_word_ranks_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_file(&db_path(&dir)).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let mut batch: Vec<NewMessage> =
        (0..40).map(|i| text(&format!("we discussed the meeting agenda and the meeting notes, item {i}"))).collect();
    batch.insert(23, text("the meeting about the Zanzibar shipment"));
    let stored = db.append(&t, thread, batch).await.unwrap();
    let hits = db.lexical_search(&whole("acme"), "meeting zanzibar".into(), 5).await.unwrap();
    assert_eq!(hits[0].id, stored[23].id, "{hits:?}");
    assert!(hits.windows(2).all(|p| p[0].score >= p[1].score));
    assert!(hits.iter().all(|h| h.score > 0.0), "higher is better and positive: {hits:?}");
    // Diacritics fold: `zànzíbar` finds it too.
    assert_eq!(db.lexical_search(&whole("acme"), "ZÀNZÍBAR".into(), 5).await.unwrap()[0].id, stored[23].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_live_and_die_with_their_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;

    let stored = db.append(&t, thread, msgs(3)).await.unwrap();
    assert_eq!(counts(&conn).await, (3, 3, 0), "a job per message, in the append's transaction");
    assert!(db.append(&t, ThreadId::new(), msgs(3)).await.is_err());
    assert_eq!(counts(&conn).await, (3, 3, 0), "a failed append leaves no job");

    // A batch failing midway (a planted row collides) rolls its jobs back too.
    conn.execute(
        "INSERT INTO messages (id, thread_id, seq, role, content, metadata, created_at) \
         VALUES (X'00000000000070008000000000000001', ?1, 50, 'user', 'planted', '{}', 0)",
        [libsql::Value::Blob(thread.as_uuid().as_bytes().to_vec())],
    )
    .await
    .unwrap();
    assert_eq!(counts(&conn).await, (4, 4, 0), "the raw insert got its job through the trigger");
    assert!(matches!(db.append(&t, thread, msgs(100)).await, Err(StoreError::Conflict(_))));
    assert_eq!(counts(&conn).await, (4, 4, 0));
    conn.execute("DELETE FROM messages WHERE seq = 50", ()).await.unwrap();
    assert_eq!(counts(&conn).await, (3, 3, 0), "a raw delete drops the job and entry too");

    // Completing skips a message deleted in between.
    MessageStore::delete(&db, &t, stored[1].id).await.unwrap();
    assert_eq!(counts(&conn).await, (2, 2, 0));
    let done = db
        .complete_jobs(vec![
            (stored[0].id, emb("m", 0.1)),
            (stored[1].id, emb("m", 0.2)),
            (stored[2].id, emb("m", 0.3)),
        ])
        .await
        .unwrap();
    assert_eq!(done.iter().map(|e| e.id).collect::<Vec<_>>(), vec![stored[0].id, stored[2].id]);
    assert_eq!(counts(&conn).await, (2, 0, 2));
    let blob = scalar_blob(&conn, "SELECT vector FROM message_vectors ORDER BY rowid LIMIT 1").await;
    assert_eq!(blob, [0.1f32, 0.9, 0.5].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(), "LE f32");

    // Deleting a message with a vector (foreign keys on) drops the vector.
    MessageStore::delete(&db, &t, stored[0].id).await.unwrap();
    assert_eq!(counts(&conn).await, (1, 0, 1));
    assert!(matches!(MessageStore::delete(&db, &t, stored[0].id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(
        MessageStore::delete(&db, &tenant("other"), stored[2].id).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_and_errors_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let stored = db.append(&t, thread, msgs(1)).await.unwrap();
    let retry = now() + time::Duration::minutes(5);
    db.fail_jobs(vec![stored[0].id, memlayer_domain::MessageId::new()], "é".repeat(5000), retry).await.unwrap();
    db.fail_jobs(vec![stored[0].id], "x".repeat(5000), retry).await.unwrap();
    assert_eq!(scalar(&conn, "SELECT attempts FROM embedding_jobs").await, 2);
    let len = scalar(&conn, "SELECT length(CAST(last_error AS BLOB)) FROM embedding_jobs").await;
    assert!(len <= 1024 && len > 1000, "{len}");
    assert!(db.due_jobs(now(), 10).await.unwrap().is_empty());
    assert_eq!(db.due_jobs(retry, 10).await.unwrap()[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_missing_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let stored = db.append(&t, thread, msgs(5)).await.unwrap();
    assert_eq!(db.enqueue_missing("m1".into()).await.unwrap(), 0, "all already queued");
    let done: Vec<_> = stored.iter().enumerate().map(|(i, m)| (m.id, emb("m1", i as f32 / 10.0))).collect();
    db.complete_jobs(done).await.unwrap();
    assert_eq!(db.enqueue_missing("m1".into()).await.unwrap(), 0);
    assert_eq!(db.enqueue_missing("m2".into()).await.unwrap(), 5);
    assert_eq!(db.enqueue_missing("m2".into()).await.unwrap(), 0, "idempotent");
    assert_eq!(counts(&conn).await, (5, 5, 5));

    // Scanning in storage order, page by page, sees each vector once; a
    // replaced vector moves to the end.
    db.complete_jobs(vec![(stored[0].id, emb("m1", 0.9))]).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = db.scan_vectors("m1".into(), after, 2).await.unwrap();
        seen.extend(page.iter().map(|e| e.id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut expected: Vec<_> = stored[1..].iter().map(|m| m.id).collect();
    expected.push(stored[0].id);
    assert_eq!(seen, expected);
    let counts = db.embedding_counts(&whole("acme"), "m1".into()).await.unwrap();
    // A job means "embed with the current model": any completion ends it.
    assert_eq!((counts.embedded, counts.pending, counts.failing, counts.other_model), (5, 4, 0, 0));
    let only = VectorFilter { tenant: t.clone(), threads: Some(vec![]) };
    assert_eq!(db.embedding_counts(&only, "m1".into()).await.unwrap().embedded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_delete_removes_vectors_jobs_and_full_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let gone = db.create(&t, NewThread::default()).await.unwrap().id;
    let kept = db.create(&t, NewThread::default()).await.unwrap().id;
    let a = db.append(&t, gone, msgs(30)).await.unwrap();
    let b = db.append(&t, kept, msgs(10)).await.unwrap();
    let done = a.iter().chain(&b).take(35).map(|m| (m.id, emb("m", 0.5))).collect();
    db.complete_jobs(done).await.unwrap();
    assert_eq!(counts(&conn).await, (40, 5, 35));
    ThreadStore::delete(&db, &t, gone).await.unwrap();
    assert_eq!(counts(&conn).await, (10, 5, 5));
    fts_integrity(&conn).await;
    let hits = db.lexical_search(&whole("acme"), "message".into(), 100).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.thread == kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_file(&db_path(&dir)).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let mut stored = db.append(&t, thread, msgs(1000)).await.unwrap();
    stored.extend(db.append(&t, thread, msgs(200)).await.unwrap());
    // More ids than one IN list holds, in caller order, with duplicates.
    let ids: Vec<_> = stored.iter().rev().map(|m| m.id).chain([stored[0].id]).collect();
    let got = db.get_many(&t, ids.clone()).await.unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(db.get_many(&t, vec![]).await.unwrap().is_empty());
    assert_eq!(db.range(&t, thread, 1199, 5000).await.unwrap().len(), 2);
    assert!(db.range(&t, thread, 5, 4).await.unwrap().is_empty());
    assert!(matches!(db.range(&tenant("other"), thread, 1, 2).await, Err(StoreError::NotFound { .. })));
}

async fn scalar_blob(conn: &libsql::Connection, sql: &str) -> Vec<u8> {
    let mut rows = conn.query(sql, ()).await.unwrap();
    match rows.next().await.unwrap().unwrap().get_value(0).unwrap() {
        libsql::Value::Blob(b) => b,
        other => panic!("{sql}: {other:?}"),
    }
}
