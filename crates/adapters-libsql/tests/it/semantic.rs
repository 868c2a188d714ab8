//! Migrations 2 and 3: full-text index, embedding jobs and stored vectors,
//! and their deferred catch-up, checked against the raw tables behind the
//! adapter's back.

use memlayer_domain::{Embedding, MessageId, Metadata, NewMessage, NewThread, Role, ThreadId, ToolCall, now};
use memlayer_ports::{Database, EmbeddingStore, MessageStore, SearchFilter, StateStore, StoreError, ThreadStore};
use serde_json::json;

use crate::common::{db_path, msgs, open_file, raw, scalar, schema_objects, tenant};

fn text(s: &str) -> NewMessage {
    NewMessage::text(Role::User, s).unwrap()
}

fn emb(model: &str, seed: f32) -> Embedding {
    Embedding::new(model, vec![seed, 1.0 - seed, 0.5], 3).unwrap()
}

fn whole(t: &str) -> SearchFilter {
    SearchFilter::all_threads(tenant(t))
}

/// Rows of the semantic tables: (full-text entries, jobs, vectors). Full-text
/// entries are those of the single `messages_fts` (migrations 2 to 4) or of
/// the per-tenant tables (migration 5) less those queued as deleted.
async fn counts(conn: &libsql::Connection) -> (i64, i64, i64) {
    let mut fts = 0;
    for table in fts_tables(conn).await {
        fts += scalar(conn, &format!("SELECT count(*) FROM {table}")).await;
    }
    if fts_tables(conn).await.iter().all(|t| t != "messages_fts") {
        fts -= scalar(conn, "SELECT count(*) FROM lexical_stale WHERE reindex = 0").await;
    }
    (
        fts,
        scalar(conn, "SELECT count(*) FROM embedding_jobs").await,
        scalar(conn, "SELECT count(*) FROM message_vectors").await,
    )
}

/// The full-text tables: `messages_fts` or the per-tenant ones.
async fn fts_tables(conn: &libsql::Connection) -> Vec<String> {
    let mut rows = conn
        .query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%' \
             AND (name = 'messages_fts' OR name GLOB 'lexical_fts_[0-9]*') ORDER BY name",
            (),
        )
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        names.push(row.get::<String>(0).unwrap());
    }
    names
}

async fn fts_integrity(conn: &libsql::Connection) {
    for table in fts_tables(conn).await {
        conn.execute(&format!("INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 0)"), ()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_migrations_backfill_and_revert_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let call = ToolCall { id: "c1".into(), name: "lookup_order".into(), arguments: json!({"order": "A-17"}) };
    let mut batch = msgs(4);
    batch.push(NewMessage::new(Role::Assistant, "checking", None, None, vec![call], Metadata::default()).unwrap());
    let stored = db.append(&t, thread, batch).await.unwrap();
    db.catch_up().await.unwrap();
    down_to(&db, 3).await;
    let with_semantic = schema_objects(&conn).await;
    let reverted: Vec<i64> = db.migrate_down(2).await.unwrap().iter().map(|m| m.version).collect();
    assert_eq!(reverted, vec![3, 2]);
    let without = schema_objects(&conn).await;
    for gone in [
        "messages_fts",
        "message_vectors",
        "embedding_jobs",
        "messages_fts_source",
        "semantic_watermark",
        "messages_semantic_delete",
    ] {
        assert!(with_semantic.iter().any(|o| o == gone) && !without.iter().any(|o| o == gone), "{gone}");
    }

    // Messages stored before migration 2 (above, with the current schema, as
    // the adapter needs it) are indexed and queued by it.
    let applied: Vec<i64> = db.migrate_up().await.unwrap().iter().map(|m| m.version).collect();
    assert_eq!(applied[..2], [2, 3]);
    down_to(&db, 3).await;
    assert_eq!(schema_objects(&conn).await, with_semantic, "up again restores the same schema");
    assert_eq!(counts(&conn).await, (5, 5, 0), "backfilled full-text entries and jobs");
    assert_eq!(scalar(&conn, "SELECT caught_up_to FROM semantic_watermark").await, 5, "nothing left to catch up");
    fts_integrity(&conn).await;
    // The adapter itself needs the newest schema.
    db.migrate_up().await.unwrap();
    let hits = db.lexical_search(&whole("acme"), "A-17".into(), 5).await.unwrap();
    assert_eq!(hits.first().map(|h| h.id), Some(stored[4].id), "tool arguments are searchable");
    let due = db.due_jobs(now(), 10).await.unwrap();
    assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), stored.iter().map(|m| m.id).collect::<Vec<_>>());
    assert_eq!(due[4].text, "checking\nlookup_order {\"order\":\"A-17\"}");
    down_to(&db, 3).await;

    // Down to 2 with messages above the watermark: they are indexed and
    // queued on the way down, as migration 2's trigger would have.
    // (Raw SQL: the adapter's append needs the newest schema.)
    let later = raw_append(&conn, thread, 6, "the zanzibar ledger").await;
    assert_eq!(counts(&conn).await, (5, 5, 0), "appends write only their messages");
    assert_eq!(db.migrate_down(1).await.unwrap()[0].version, 3);
    assert_eq!(counts(&conn).await, (6, 6, 0));
    fts_integrity(&conn).await;
    let matching = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zanzibar'";
    assert_eq!(scalar(&conn, matching).await, 1, "(the adapter itself needs the newest schema)");
    assert_eq!(db.migrate_up().await.unwrap()[0].version, 3);
    db.migrate_up().await.unwrap();
    assert_eq!(db.lexical_search(&whole("acme"), "zanzibar".into(), 5).await.unwrap()[0].id, later);
    down_to(&db, 3).await;

    // Down with vectors stored, then down everything: nothing is left behind
    // (foreign keys are on in the adapter's connections).
    conn.execute(
        "INSERT INTO message_vectors (message_rowid, model, dim, vector, created_at) \
         SELECT rowid, 'm', 1, x'0000803f', 0 FROM messages WHERE id = ?1",
        [stored[0].id.as_uuid().as_bytes().to_vec()],
    )
    .await
    .unwrap();
    db.migrate_down(2).await.unwrap();
    assert_eq!(schema_objects(&conn).await, without);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM sqlite_sequence WHERE name = 'message_vectors'").await, 0);
    db.migrate_down(usize::MAX).await.unwrap();
    assert_eq!(schema_objects(&conn).await, vec!["_memlayer_migrations".to_owned()]);
    db.migrate_up().await.unwrap();
    down_to(&db, 3).await;
    assert_eq!(schema_objects(&conn).await, with_semantic);
    assert_eq!(counts(&conn).await, (0, 0, 0));
}

/// Appends one message to `thread` at sequence number `seq` by raw SQL (for
/// schemas older than the adapter's own); its id.
async fn raw_append(conn: &libsql::Connection, thread: ThreadId, seq: i64, content: &str) -> MessageId {
    let id = MessageId::new();
    conn.execute(
        "INSERT INTO messages (id, thread_id, seq, role, content, created_at) VALUES (?1, ?2, ?3, 'user', ?4, 0)",
        libsql::params![id.as_uuid().as_bytes().to_vec(), thread.as_uuid().as_bytes().to_vec(), seq, content],
    )
    .await
    .unwrap();
    conn.execute(
        "UPDATE threads SET last_seq = ?1 WHERE id = ?2",
        libsql::params![seq, thread.as_uuid().as_bytes().to_vec()],
    )
    .await
    .unwrap();
    id
}

/// Reverts the migrations newer than `version`, so that this file tests the
/// semantic migrations as the newest whatever came after them.
async fn down_to(db: &memlayer_adapters_libsql::LibsqlBackend, version: i64) {
    loop {
        let status = db.migration_status().await.unwrap();
        let newest = status.iter().filter(|m| m.applied_at.is_some()).map(|m| m.version).max().unwrap_or(0);
        if newest <= version {
            break;
        }
        db.migrate_down(1).await.unwrap();
    }
}

/// Appends leave the full-text entries and jobs to the catch-up; a reused
/// rowid (the newest message deleted, then another appended) is caught up
/// as the new message, never mistaken for the deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_follows_the_watermark_through_reused_rowids() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let watermark = || scalar(&conn, "SELECT caught_up_to FROM semantic_watermark");

    let stored =
        db.append(&t, thread, vec![text("alpha one"), text("bravo two"), text("charlie three")]).await.unwrap();
    assert_eq!((counts(&conn).await, watermark().await), ((0, 0, 0), 0));
    db.catch_up().await.unwrap();
    assert_eq!((counts(&conn).await, watermark().await), ((3, 3, 0), 3));
    db.catch_up().await.unwrap();
    assert_eq!(counts(&conn).await, (3, 3, 0), "idempotent");

    // The newest message goes; its rowid is handed out again.
    MessageStore::delete(&db, &t, stored[2].id).await.unwrap();
    assert_eq!((counts(&conn).await, watermark().await), ((2, 2, 0), 2));
    let again = db.append(&t, thread, vec![text("delta four")]).await.unwrap();
    assert_eq!(scalar(&conn, "SELECT max(rowid) FROM messages").await, 3, "rowid reused");
    let hits = db.lexical_search(&whole("acme"), "delta charlie".into(), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![again[0].id]);
    assert_eq!(counts(&conn).await, (3, 3, 0));
    fts_integrity(&conn).await;

    // A message in the middle keeps the watermark where it is.
    MessageStore::delete(&db, &t, stored[0].id).await.unwrap();
    assert_eq!((counts(&conn).await, watermark().await), ((2, 2, 0), 3));

    // Counting progress sees messages above the watermark as pending, and a
    // message embedded before its catch-up gets no job.
    let fresh = db.append(&t, thread, vec![text("echo five"), text("foxtrot six")]).await.unwrap();
    db.complete_jobs(vec![(fresh[0].id, emb("m", 0.4))]).await.unwrap();
    let progress = db.embedding_counts(&whole("acme"), "m".into()).await.unwrap();
    assert_eq!((progress.embedded, progress.pending), (1, 3));
    assert_eq!(counts(&conn).await, (4, 3, 1));
    fts_integrity(&conn).await;

    // A catch-up larger than one transaction's chunk.
    let many: Vec<NewMessage> = (0..12_000).map(|i| text(&format!("bulk message {i}"))).collect();
    for chunk in many.chunks(1_000) {
        db.append(&t, thread, chunk.to_vec()).await.unwrap();
    }
    let hits = db.lexical_search(&whole("acme"), "11999".into(), 10).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(counts(&conn).await, (12_004, 12_003, 1));
    assert_eq!(watermark().await, scalar(&conn, "SELECT max(rowid) FROM messages").await);
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
    assert_eq!(db.lexical_search(&whole("acme"), "zanzibar".into(), 10).await.unwrap()[0].id, stored[1].id);
    assert_eq!(counts(&conn).await.0, 3, "the search caught the index up first");

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
    db.catch_up().await.unwrap();
    assert_eq!(counts(&conn).await, (3, 3, 0), "a job per message");
    assert!(db.append(&t, ThreadId::new(), msgs(3)).await.is_err());
    db.catch_up().await.unwrap();
    assert_eq!(counts(&conn).await, (3, 3, 0), "a failed append leaves no job");

    // A batch failing midway (a planted row collides) rolls its jobs back too.
    conn.execute(
        "INSERT INTO messages (id, thread_id, seq, role, content, metadata, created_at) \
         VALUES (X'00000000000070008000000000000001', ?1, 50, 'user', 'planted', '{}', 0)",
        [libsql::Value::Blob(thread.as_uuid().as_bytes().to_vec())],
    )
    .await
    .unwrap();
    db.catch_up().await.unwrap();
    assert_eq!(counts(&conn).await, (4, 4, 0), "the raw insert is caught up like any message");
    assert!(matches!(db.append(&t, thread, msgs(100)).await, Err(StoreError::Conflict(_))));
    db.catch_up().await.unwrap();
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
    let only = SearchFilter::these_threads(t.clone(), vec![]);
    assert_eq!(db.embedding_counts(&only, "m1".into()).await.unwrap().embedded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_delete_removes_vectors_jobs_full_text_and_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let gone = db.create(&t, NewThread::default()).await.unwrap().id;
    let kept = db.create(&t, NewThread::default()).await.unwrap().id;
    let a = db.append(&t, gone, msgs(30)).await.unwrap();
    let b = db.append(&t, kept, msgs(10)).await.unwrap();
    db.catch_up().await.unwrap();
    let done = a.iter().chain(&b).take(35).map(|m| (m.id, emb("m", 0.5))).collect();
    db.complete_jobs(done).await.unwrap();
    assert_eq!(counts(&conn).await, (40, 5, 35));
    let state = memlayer_domain::AgentName::parse("a1").unwrap();
    StateStore::save(&db, &t, gone, &state, json!({"x": 1}), 0).await.unwrap();
    for id in [gone, kept] {
        let summary = memlayer_domain::NewSummary {
            text: "s".into(),
            covers_through: 5,
            newly_covered: 5,
            summarizer: "test".into(),
        };
        memlayer_ports::SummaryStore::save_summary(&db, &t, id, summary, 0).await.unwrap();
        memlayer_ports::SummaryQueue::enqueue_summary(&db, &t, id, memlayer_domain::now()).await.unwrap();
    }
    ThreadStore::delete(&db, &t, gone).await.unwrap();
    // The delete only marks the thread (it is missing for every caller, see
    // the contract suite); its rows go with the sweep, in chunks.
    assert_eq!(counts(&conn).await, (40, 5, 35), "nothing removed by the mark");
    let first = db.sweep_deleted(7).await.unwrap();
    assert_eq!((first.messages, first.threads, first.more), (7, 0, true));
    // A crash mid-sweep: the process dies after one chunk; the next one
    // finds the mark and finishes.
    drop(db);
    let db = open_file(&path).await;
    let mut total = first.messages;
    loop {
        let round = db.sweep_deleted(7).await.unwrap();
        total += round.messages;
        if !round.more {
            break;
        }
    }
    assert_eq!(total, 30);
    db.catch_up().await.unwrap();
    assert_eq!(counts(&conn).await, (10, 5, 5));
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_stale").await, 0, "stale entries removed");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM messages").await, 10);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM threads").await, 1);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM agent_state").await, 0);
    // Summaries and their jobs go with the thread row (foreign keys, cascade).
    for table in ["thread_summaries", "summary_jobs"] {
        assert_eq!(scalar(&conn, &format!("SELECT count(*) FROM {table}")).await, 1, "{table}: the kept thread's");
    }
    fts_integrity(&conn).await;
    let hits = db.lexical_search(&whole("acme"), "message".into(), 100).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.thread == kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_in_caller_order() {
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
}

/// The second column of `sql`'s first row, an integer.
async fn scalar2(conn: &libsql::Connection, sql: &str) -> i64 {
    let mut rows = conn.query(sql, ()).await.unwrap();
    rows.next().await.unwrap().unwrap().get::<i64>(1).unwrap()
}

async fn scalar_blob(conn: &libsql::Connection, sql: &str) -> Vec<u8> {
    let mut rows = conn.query(sql, ()).await.unwrap();
    match rows.next().await.unwrap().unwrap().get_value(0).unwrap() {
        libsql::Value::Blob(b) => b,
        other => panic!("{sql}: {other:?}"),
    }
}

/// Migration 3's delete trigger could leave messages at or below the
/// watermark without a full-text entry or a job (lost to search for good).
/// Migration 5 re-indexes everything into the per-tenant tables and gives
/// every message without a vector its job back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_5_repairs_messages_the_old_trigger_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    // Stored with the current schema (the adapter needs it), then taken back
    // to migration 4.
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let stored = db.append(&t, thread, vec![text("alpha"), text("bravo"), text("charlie")]).await.unwrap();
    db.catch_up().await.unwrap();
    db.complete_jobs(vec![(stored[0].id, emb("m", 0.2))]).await.unwrap();
    down_to(&db, 4).await;
    // The damage: the watermark above messages that were never indexed or
    // queued (what the old trigger did after a thread delete).
    conn.execute_batch(
        "INSERT INTO messages_fts (messages_fts) VALUES ('delete-all'); DELETE FROM embedding_jobs; \
         UPDATE semantic_watermark SET caught_up_to = (SELECT max(rowid) FROM messages);",
    )
    .await
    .unwrap();
    assert_eq!(counts(&conn).await, (0, 0, 1));
    assert_eq!(db.migrate_up().await.unwrap().first().map(|m| m.version), Some(5));
    for (word, message) in ["alpha", "bravo", "charlie"].iter().zip(&stored) {
        let hits = db.lexical_search(&whole("acme"), (*word).into(), 5).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![message.id], "{word}");
    }
    let progress = db.embedding_counts(&whole("acme"), "m".into()).await.unwrap();
    assert_eq!((progress.embedded, progress.pending), (1, 2), "the embedded one needs no job");
    assert_eq!(counts(&conn).await, (3, 2, 1));
    fts_integrity(&conn).await;
    assert_eq!(fts_tables(&conn).await, vec!["lexical_fts_1".to_owned()]);

    // Down and up again: the per-tenant tables go with migration 5.
    down_to(&db, 4).await;
    assert_eq!(fts_tables(&conn).await, vec!["messages_fts".to_owned()]);
    assert_eq!(counts(&conn).await, (3, 2, 1), "one table holds everything again");
    fts_integrity(&conn).await;
    db.migrate_up().await.unwrap();
    assert_eq!(db.lexical_search(&whole("acme"), "bravo".into(), 5).await.unwrap()[0].id, stored[1].id);
}

/// Each tenant's entries live in its own table; a deleted or edited
/// message's entry is queued, left out of searches, then removed or
/// replaced by the catch-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_have_their_own_full_text_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let (acme, other) = (tenant("acme"), tenant("other"));
    let a = db.create(&acme, NewThread::default()).await.unwrap().id;
    let o = db.create(&other, NewThread::default()).await.unwrap().id;
    let mine = db.append(&acme, a, vec![text("shared word"), text("edit me")]).await.unwrap();
    db.append(&other, o, vec![text("shared word"), text("shared again")]).await.unwrap();
    db.catch_up().await.unwrap();
    assert_eq!(fts_tables(&conn).await, vec!["lexical_fts_1".to_owned(), "lexical_fts_2".to_owned()]);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_fts_1").await, 2);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_fts_2").await, 2);

    MessageStore::delete(&db, &acme, mine[0].id).await.unwrap();
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_stale").await, 1, "queued, not yet removed");
    assert!(db.lexical_search(&whole("acme"), "shared".into(), 5).await.unwrap().is_empty());
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_stale").await, 0);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_fts_1").await, 1);
    assert_eq!(db.lexical_search(&whole("other"), "shared".into(), 5).await.unwrap().len(), 2);

    // Edited behind memlayer's back: re-indexed with the new text.
    conn.execute("UPDATE messages SET content = 'rewritten text' WHERE content = 'edit me'", ()).await.unwrap();
    assert_eq!(scalar(&conn, "SELECT reindex FROM lexical_stale").await, 1);
    assert!(db.lexical_search(&whole("acme"), "edit".into(), 5).await.unwrap().is_empty());
    assert_eq!(db.lexical_search(&whole("acme"), "rewritten".into(), 5).await.unwrap()[0].id, mine[1].id);
    fts_integrity(&conn).await;
    assert!(db.lexical_search(&whole("nobody"), "shared".into(), 5).await.unwrap().is_empty());
}

/// With the in-process index (`use_lexical_index`), the catch-up applies
/// deletes, edits behind memlayer's back and reused rowids to it, and an
/// index reopened from its snapshot resumes from the snapshot's position:
/// nothing is found twice and what was appended meanwhile is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_index_follows_deletes_edits_reused_rowids_and_reopens() {
    use std::sync::Arc;

    use memlayer_adapters_embed::TantivyLexicalIndex;
    use memlayer_ports::LexicalIndex as _;

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let lexical = dir.path().join("lexical");
    let db = open_file(&path).await;
    let index = Arc::new(TantivyLexicalIndex::open(&lexical).unwrap());
    db.use_lexical_index(index.clone()).unwrap();
    let conn = raw(&path).await;
    let acme = tenant("acme");
    let a = db.create(&acme, NewThread::default()).await.unwrap().id;
    let mine = db.append(&acme, a, vec![text("shared word"), text("edit me"), text("newest kettle")]).await.unwrap();
    let ids = |hits: Vec<memlayer_ports::ScoredHit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(db.lexical_search(&whole("acme"), "shared".into(), 5).await.unwrap()), vec![mine[0].id]);

    MessageStore::delete(&db, &acme, mine[0].id).await.unwrap();
    assert!(db.lexical_search(&whole("acme"), "shared".into(), 5).await.unwrap().is_empty());

    conn.execute("UPDATE messages SET content = 'rewritten text' WHERE content = 'edit me'", ()).await.unwrap();
    assert!(db.lexical_search(&whole("acme"), "edit".into(), 5).await.unwrap().is_empty());
    assert_eq!(ids(db.lexical_search(&whole("acme"), "rewritten".into(), 5).await.unwrap()), vec![mine[1].id]);

    // The newest message deleted: SQLite hands its rowid out again.
    MessageStore::delete(&db, &acme, mine[2].id).await.unwrap();
    let again = db.append(&acme, a, vec![text("reused kettle slot")]).await.unwrap();
    assert_eq!(ids(db.lexical_search(&whole("acme"), "kettle".into(), 5).await.unwrap()), vec![again[0].id]);

    // Searches no longer wait for the feed: a round feeds the index before
    // it is closed, so the snapshot holds a position to resume from.
    db.catch_up().await.unwrap();
    index.close().await.unwrap();
    drop((db, index));
    let db = open_file(&path).await;
    let later = db.append(&acme, a, vec![text("appended while the index was closed")]).await.unwrap();
    let index = Arc::new(TantivyLexicalIndex::open(&lexical).unwrap());
    assert!(index.position() > 0, "resumes from the snapshot");
    db.use_lexical_index(index).unwrap();
    assert_eq!(ids(db.lexical_search(&whole("acme"), "kettle".into(), 5).await.unwrap()), vec![again[0].id]);
    assert_eq!(ids(db.lexical_search(&whole("acme"), "closed".into(), 5).await.unwrap()), vec![later[0].id]);
    assert_eq!(db.lexical_search(&whole("acme"), "text kettle closed".into(), 10).await.unwrap().len(), 3);
}

/// Migration 20: rows indexed unstemmed before it (in a table as the
/// catch-up before it made them) are indexed again, stemmed, and still
/// found; a deleted message queued for removal before it stays gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stemming_migration_indexes_old_rows_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = open_file(&path).await;
    let conn = raw(&path).await;
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    let batch = vec![text("She runs every morning"), text("the dogs walked home"), text("a note on running shoes")];
    let stored = db.append(&t, thread, batch).await.unwrap();
    db.catch_up().await.unwrap();
    let found = |q: &'static str| {
        let db = db.clone();
        async move {
            let hits = db.lexical_search(&whole("acme"), q.into(), 5).await.unwrap();
            let mut ids: Vec<MessageId> = hits.iter().map(|h| h.id).collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<MessageId>| {
        ids.sort();
        ids
    };
    assert_eq!(found("running").await, sorted(vec![stored[0].id, stored[2].id]));

    // Revert the newer migrations too, down to and including 20.
    while db.migrate_down(1).await.unwrap()[0].version != 20 {}
    assert!(fts_tables(&conn).await.is_empty(), "the stemmed tables are dropped");
    assert_eq!(scalar(&conn, "SELECT caught_up_to FROM semantic_watermark").await, 0, "to be indexed again");
    // What the catch-up before migration 20 made of the same rows.
    let id = scalar(&conn, "SELECT id FROM lexical_tenants WHERE tenant = 'acme'").await;
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE lexical_fts_{id} USING fts5(content, tools, content = '', contentless_delete = 1, \
         tokenize = 'unicode61 remove_diacritics 2'); \
         INSERT INTO lexical_fts_{id} (rowid, content, tools) SELECT message_rowid, content, tools FROM messages_fts_source; \
         UPDATE semantic_watermark SET caught_up_to = (SELECT max(rowid) FROM messages);"
    ))
    .await
    .unwrap();
    // Asked of the table itself: the store's own search needs the newer
    // migrations reverted above (the deletion log).
    let matched =
        |q: &str| format!("SELECT count(*), min(rowid) FROM lexical_fts_{id} WHERE lexical_fts_{id} MATCH '{q}'");
    let rowid = |m: &memlayer_domain::Message| format!("SELECT rowid FROM messages WHERE content = '{}'", m.content);
    assert_eq!(scalar(&conn, &matched("runs")).await, 1, "unstemmed: the word as written");
    assert_eq!(scalar2(&conn, &matched("runs")).await, scalar(&conn, &rowid(&stored[0])).await);
    assert_eq!(scalar(&conn, &matched("running")).await, 1);
    assert_eq!(scalar2(&conn, &matched("running")).await, scalar(&conn, &rowid(&stored[2])).await);
    // Deleted while indexed: queued for removal.
    conn.execute("DELETE FROM messages WHERE id = ?1", [stored[2].id.as_uuid().as_bytes().to_vec()]).await.unwrap();
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_stale WHERE reindex = 0").await, 1);

    assert_eq!(db.migrate_up().await.unwrap()[0].version, 20);
    db.catch_up().await.unwrap();
    let porter = format!("SELECT count(*) FROM sqlite_master WHERE name = 'lexical_fts_{id}' AND sql LIKE '%porter%'");
    assert_eq!(scalar(&conn, &porter).await, 1, "made again with the porter tokenizer");
    for q in ["running", "runs", "RUN"] {
        assert_eq!(found(q).await, vec![stored[0].id], "{q}");
    }
    assert_eq!(found("walking dog").await, vec![stored[1].id]);
    assert_eq!(counts(&conn).await.0, 2, "every live message indexed once, the deleted one not");
    fts_integrity(&conn).await;
}

/// Deletions by another process on the same file (a `memlayer prune` beside
/// the server) reach this process's in-process index through the deletion
/// log, even when that process's catch-up has emptied the full-text queue
/// (`lexical_stale`) that this process would otherwise have applied: a
/// message deleted one by one, a thread marked deleted and then swept, and
/// a newest message whose rowid is then handed out again to a new one. An
/// index reopened from its snapshot replays the log it has not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_index_follows_deletions_of_another_process() {
    use std::sync::Arc;

    use memlayer_adapters_embed::TantivyLexicalIndex;
    use memlayer_ports::LexicalIndex as _;

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let lexical = dir.path().join("lexical");
    let server = open_file(&path).await;
    let index = Arc::new(TantivyLexicalIndex::open(&lexical).unwrap());
    server.use_lexical_index(index.clone()).unwrap();
    let cli = open_file(&path).await;
    let acme = tenant("acme");
    let ids = |hits: Vec<memlayer_ports::ScoredHit>| {
        let mut ids: Vec<_> = hits.into_iter().map(|h| h.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<MessageId>| {
        v.sort();
        v
    };
    let a = server.create(&acme, NewThread::default()).await.unwrap().id;
    let gone = server.create(&acme, NewThread::default()).await.unwrap().id;
    // The messages to delete are the best matches (shortest, the word twice).
    let mine = server
        .append(&acme, a, vec![text("walnut walnut"), text("walnut walnut"), text("a walnut on the old stone wall")])
        .await
        .unwrap();
    let kept = server.append(&acme, a, vec![text("the walnut tree in the garden is tall")]).await.unwrap();
    server.append(&acme, gone, vec![text("walnut walnut")]).await.unwrap();
    assert_eq!(server.lexical_search(&whole("acme"), "walnut".into(), 10).await.unwrap().len(), 5);

    MessageStore::delete(&cli, &acme, mine[0].id).await.unwrap();
    MessageStore::delete(&cli, &acme, mine[1].id).await.unwrap();
    ThreadStore::delete(&cli, &acme, gone).await.unwrap();
    while cli.sweep_deleted(100).await.unwrap().more {}
    // The other process's catch-up takes the queued full-text entries.
    cli.catch_up().await.unwrap();
    let conn = raw(&path).await;
    assert_eq!(scalar(&conn, "SELECT count(*) FROM lexical_stale").await, 0, "the queue is empty");
    let left = sorted(vec![mine[2].id, kept[0].id]);
    assert_eq!(ids(server.lexical_search(&whole("acme"), "walnut".into(), 2).await.unwrap()), left, "top 2");

    // The newest message left deleted by the other process; this process
    // hands its rowid out again before it reads the log.
    MessageStore::delete(&cli, &acme, kept[0].id).await.unwrap();
    cli.catch_up().await.unwrap();
    let reused = server.append(&acme, a, vec![text("walnut cake in the new slot")]).await.unwrap();
    let rowid = |id: MessageId| {
        let conn = &conn;
        async move {
            let mut rows = conn
                .query("SELECT rowid FROM messages WHERE id = ?1", [id.as_uuid().as_bytes().to_vec()])
                .await
                .unwrap();
            rows.next().await.unwrap().map(|r| r.get::<i64>(0).unwrap())
        }
    };
    assert_eq!(rowid(reused[0].id).await, Some(4), "the deleted message's rowid, handed out again");
    let left = sorted(vec![mine[2].id, reused[0].id]);
    assert_eq!(ids(server.lexical_search(&whole("acme"), "walnut".into(), 2).await.unwrap()), left, "reused rowid");

    // Closed with a snapshot; the other process deletes meanwhile. The
    // reopened index replays the log: the deletion made while it was
    // closed goes, and the older deletion at the reused rowid takes nothing
    // of the message that lives there now.
    server.catch_up().await.unwrap();
    index.close().await.unwrap();
    drop((server, index));
    MessageStore::delete(&cli, &acme, mine[2].id).await.unwrap();
    cli.catch_up().await.unwrap();
    let server = open_file(&path).await;
    let index = Arc::new(TantivyLexicalIndex::open(&lexical).unwrap());
    assert!(index.position() > 0, "resumes from the snapshot");
    server.use_lexical_index(index).unwrap();
    assert_eq!(ids(server.lexical_search(&whole("acme"), "walnut".into(), 2).await.unwrap()), vec![reused[0].id]);
}

/// A search finds every message appended before it, while another writer
/// keeps the catch-up busy (a round is nearly always under way): whether a
/// round already under way covers the search or the next one does, the
/// wait ends only once the search's messages are indexed. The wait is long
/// (60 s) so that only a wrong answer, never a slow machine, fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_during_busy_catch_up_rounds_finds_what_came_before_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use memlayer_adapters_embed::TantivyLexicalIndex;
    use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};

    let dir = tempfile::tempdir().unwrap();
    let config = LibsqlConfig { index_wait: std::time::Duration::from_secs(60), ..LibsqlConfig::file(db_path(&dir)) };
    let db = LibsqlBackend::open_migrated(config).await.unwrap();
    db.use_lexical_index(Arc::new(TantivyLexicalIndex::open(dir.path().join("lexical")).unwrap())).unwrap();
    let acme = tenant("acme");
    let busy = db.create(&acme, NewThread::default()).await.unwrap().id;
    let probed = db.create(&acme, NewThread::default()).await.unwrap().id;

    let stop = Arc::new(AtomicBool::new(false));
    let filler = tokio::spawn({
        let (db, acme, stop) = (db.clone(), acme.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                db.append(&acme, busy, vec![text("filler words about nothing")]).await.unwrap();
                // Wakes rounds the way searches do.
                db.lexical_search(&whole("acme"), "filler".into(), 1).await.unwrap();
            }
        }
    });
    for i in 0..60 {
        let word = format!("probe{i:03}q");
        let stored = db.append(&acme, probed, vec![text(&word)]).await.unwrap();
        let hits = db.lexical_search(&whole("acme"), word.clone(), 5).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![stored[0].id], "search {i} for {word}");
    }
    stop.store(true, Ordering::Relaxed);
    filler.await.unwrap();
}

/// A file database at `path` searched through an in-memory tantivy index,
/// whose searches wait at most `wait` for the catch-up.
async fn with_tantivy(path: &std::path::Path, wait: std::time::Duration) -> memlayer_adapters_libsql::LibsqlBackend {
    use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};

    let config = LibsqlConfig { index_wait: wait, ..LibsqlConfig::file(path.to_path_buf()) };
    let db = LibsqlBackend::open_migrated(config).await.unwrap();
    let index = memlayer_adapters_embed::TantivyLexicalIndex::in_memory();
    db.use_lexical_index(std::sync::Arc::new(index)).unwrap();
    db
}

/// A search of the in-process index does not wait for the catch-up: with
/// no wait allowed at all (`index_wait` 0) and no round run since, it finds
/// what was appended, edited and deleted just before it, and ranks the
/// appended messages exactly as it does once they are fed (the same hits,
/// the same scores), over the tenant and over some of its threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_ranks_what_the_index_has_not_reached_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = with_tantivy(&path, std::time::Duration::ZERO).await;
    let conn = raw(&path).await;
    let acme = tenant("acme");
    let (a, b) = (
        db.create(&acme, NewThread::default()).await.unwrap().id,
        db.create(&acme, NewThread::default()).await.unwrap().id,
    );
    let fed = db
        .append(&acme, a, vec![text("kettle on the stove"), text("edit me later"), text("a kettle and a toaster")])
        .await
        .unwrap();
    db.catch_up().await.unwrap();

    let tail = db
        .append(&acme, b, vec![text("toaster toaster"), text("the kettle in the other thread"), text("garden")])
        .await
        .unwrap();
    let ids = |hits: &[memlayer_ports::ScoredHit]| hits.iter().map(|h| h.id).collect::<Vec<_>>();
    let searches = [
        (whole("acme"), "kettle toaster"),
        (SearchFilter::these_threads(acme.clone(), vec![b]), "kettle toaster garden"),
        (SearchFilter::these_threads(acme.clone(), vec![a, b]), "toaster"),
    ];
    let mut before = Vec::new();
    for (filter, query) in &searches {
        before.push(db.lexical_search(filter, (*query).into(), 10).await.unwrap());
    }
    assert!(ids(&before[0]).contains(&tail[0].id) && ids(&before[0]).contains(&tail[1].id), "{:?}", before[0]);
    assert_eq!(before[1].len(), 3, "{:?}", before[1]);
    db.catch_up().await.unwrap();
    for ((filter, query), before) in searches.iter().zip(&before) {
        let after = db.lexical_search(filter, (*query).into(), 10).await.unwrap();
        assert_eq!(ids(&after), ids(before), "{query}");
        for (x, y) in after.iter().zip(before) {
            assert!((x.score - y.score).abs() < 1e-4, "{query}: {x:?} fed, {y:?} pending");
        }
    }

    // An edit behind the adapter's back and a delete, then at once a
    // search: the new text is found, the old one and the deleted message
    // are not.
    conn.execute("UPDATE messages SET content = 'a walnut now' WHERE content = 'edit me later'", ()).await.unwrap();
    MessageStore::delete(&db, &acme, fed[0].id).await.unwrap();
    assert_eq!(ids(&db.lexical_search(&whole("acme"), "walnut".into(), 5).await.unwrap()), vec![fed[1].id]);
    assert!(db.lexical_search(&whole("acme"), "edit later".into(), 5).await.unwrap().is_empty());
    let stove = db.lexical_search(&whole("acme"), "stove kettle".into(), 5).await.unwrap();
    assert!(!ids(&stove).contains(&fed[0].id), "{stove:?}");
    assert_eq!(stove.len(), 2, "{stove:?}");
}

/// More messages waiting than a search ranks from the store (1,000): the
/// search waits for the catch-up instead, and still finds the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_behind_a_bulk_import_waits_for_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_tantivy(&db_path(&dir), std::time::Duration::from_secs(60)).await;
    let acme = tenant("acme");
    let a = db.create(&acme, NewThread::default()).await.unwrap().id;
    for part in 0..2 {
        let batch: Vec<NewMessage> = (0..750).map(|i| text(&format!("imported line {part} {i}"))).collect();
        db.append(&acme, a, batch).await.unwrap();
    }
    let last = db.append(&acme, a, vec![text("the zebra comes last")]).await.unwrap();
    let hits = db.lexical_search(&whole("acme"), "zebra".into(), 5).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![last[0].id]);
    assert_eq!(db.lexical_search(&whole("acme"), "imported".into(), 2_000).await.unwrap().len(), 1_500);
}

/// Another tenant's bulk import the index has not reached (more rowids
/// above its position than a search looks through, 20,000): a search waits
/// for the catch-up instead, and finds what its own tenant appended after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_behind_another_tenants_bulk_import_waits_for_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_tantivy(&db_path(&dir), std::time::Duration::from_secs(60)).await;
    let (acme, other) = (tenant("acme"), tenant("other"));
    let theirs = db.create(&other, NewThread::default()).await.unwrap().id;
    for part in 0..21 {
        let batch: Vec<NewMessage> = (0..1_000).map(|i| text(&format!("imported {part} {i}"))).collect();
        db.append(&other, theirs, batch).await.unwrap();
    }
    let mine = db.create(&acme, NewThread::default()).await.unwrap().id;
    let last = db.append(&acme, mine, vec![text("the zebra comes last")]).await.unwrap();
    let hits = db.lexical_search(&whole("acme"), "zebra".into(), 5).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![last[0].id]);
}
