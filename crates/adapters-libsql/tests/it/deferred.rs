//! Deferred commits (`LibsqlConfig::commit_delay`): appends acknowledged
//! once in the append journal, committed together; after the process dies
//! the next open applies them again, with the ids, sequence numbers and
//! counts they were acknowledged with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, Synchronous};
use memlayer_domain::{Message, NewThread, PageSize, TenantId, ThreadId};
use memlayer_ports::{MessageStore, StoreError, ThreadStore, UsageStore};

use crate::common::{db_path, msgs, raw, scalar, tenant};

/// Long enough that the background commit never runs during a test: what
/// commits is what the test does.
const NEVER: Duration = Duration::from_secs(600);

fn deferred(path: &Path, delay: Duration) -> LibsqlConfig {
    LibsqlConfig { synchronous: Synchronous::Normal, commit_delay: delay, ..LibsqlConfig::file(path) }
}

fn journal(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push("-appends");
    path.with_file_name(name)
}

fn journal_len(path: &Path) -> u64 {
    std::fs::metadata(journal(path)).map_or(0, |m| m.len())
}

/// Messages committed in the file, as another connection sees them.
async fn committed(path: &Path) -> i64 {
    scalar(&raw(path).await, "SELECT count(*) FROM messages").await
}

/// A backend on `path` with a commit delay of `delay`, and a thread of
/// tenant `acme`.
async fn with_thread(path: &Path, delay: Duration) -> (LibsqlBackend, TenantId, ThreadId) {
    let db = LibsqlBackend::open_migrated(deferred(path, delay)).await.unwrap();
    let t = tenant("acme");
    let thread = db.create(&t, NewThread::default()).await.unwrap().id;
    (db, t, thread)
}

async fn all(db: &LibsqlBackend, t: &TenantId, thread: ThreadId) -> Vec<Message> {
    db.last(t, thread, PageSize::new(1000).unwrap()).await.unwrap()
}

/// Appends acknowledged and left uncommitted: singles to two threads, a
/// batch, and a failed append (a missing thread) between them. Returns the
/// threads and what was acknowledged, the backend dropped uncommitted.
async fn acknowledge_and_die(path: &Path) -> (TenantId, [ThreadId; 2], Vec<Message>) {
    let db = LibsqlBackend::open_migrated(deferred(path, NEVER)).await.unwrap();
    let t = tenant("acme");
    let a = db.create(&t, NewThread::default()).await.unwrap().id;
    let b = db.create(&t, NewThread::default()).await.unwrap().id;
    let mut acked = Vec::new();
    for (i, m) in msgs(10).into_iter().enumerate() {
        acked.extend(db.append(&t, if i % 3 == 0 { b } else { a }, vec![m]).await.unwrap());
    }
    let err = db.append(&t, ThreadId::new(), msgs(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    acked.extend(db.append(&t, a, msgs(5)).await.unwrap());
    assert_eq!(committed(path).await, 0, "acknowledged, not committed");
    assert!(journal_len(path) > 0, "the journal holds them");
    drop(db);
    (t, [a, b], acked)
}

/// The store holds exactly `acked`, with their ids and sequence numbers, and
/// the threads' and the tenant's counts agree.
async fn check_applied(db: &LibsqlBackend, t: &TenantId, threads: [ThreadId; 2], acked: &[Message]) {
    let mut stored = Vec::new();
    for thread in threads {
        let here = all(db, t, thread).await;
        let seqs: Vec<i64> = here.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=i64::try_from(here.len()).unwrap()).collect::<Vec<_>>(), "no gap");
        assert_eq!(ThreadStore::get(db, t, thread).await.unwrap().last_seq, i64::try_from(here.len()).unwrap());
        stored.extend(here);
    }
    let key = |m: &Message| (m.id, m.thread_id, m.seq, m.content.clone(), m.created_at);
    let (mut stored, mut acked): (Vec<_>, Vec<_>) = (stored.iter().map(key).collect(), acked.iter().map(key).collect());
    stored.sort();
    acked.sort();
    assert_eq!(stored, acked, "exactly what was acknowledged, as it was acknowledged");
    assert_eq!(db.usage(t).await.unwrap().messages, u64::try_from(acked.len()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_are_applied_again_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (t, threads, acked) = acknowledge_and_die(&path).await;
    assert_eq!(committed(&path).await, 0, "the dying process committed nothing");

    let db = LibsqlBackend::open_migrated(deferred(&path, NEVER)).await.unwrap();
    assert_eq!(committed(&path).await, 15, "applied and committed at open");
    assert_eq!(journal_len(&path), 0);
    check_applied(&db, &t, threads, &acked).await;
}

/// A process without a commit delay applies a journal left behind too (and
/// removes it): turning the delay off after a crash loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_behind_is_applied_without_a_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (t, threads, acked) = acknowledge_and_die(&path).await;

    let db = LibsqlBackend::open_migrated(LibsqlConfig::file(&path)).await.unwrap();
    assert!(!journal(&path).exists(), "applied and removed");
    check_applied(&db, &t, threads, &acked).await;
}

/// A read commits first, on any connection: it sees every acknowledged
/// append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sees_every_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (db, t, thread) = with_thread(&path, NEVER).await;
    for i in 1..=3 {
        db.append(&t, thread, msgs(1)).await.unwrap();
        assert_eq!(all(&db, &t, thread).await.len(), i);
    }
    assert_eq!(committed(&path).await, 3);
    assert_eq!(journal_len(&path), 0, "emptied by the commit");
}

/// Any other write commits the open transaction with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_write_commits_the_deferred_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (db, t, thread) = with_thread(&path, NEVER).await;
    db.append(&t, thread, msgs(2)).await.unwrap();
    assert_eq!(committed(&path).await, 0);
    db.create(&t, NewThread::default()).await.unwrap();
    assert_eq!(committed(&path).await, 2);
    assert_eq!(journal_len(&path), 0);
}

/// Without reads or other writes, the background task commits within the
/// delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_committed_within_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (db, t, thread) = with_thread(&path, Duration::from_millis(20)).await;
    db.append(&t, thread, msgs(3)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while committed(&path).await < 3 {
        assert!(std::time::Instant::now() < deadline, "not committed by the background task");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(journal_len(&path), 0);
}

/// A journal record of an append that was committed before the journal was
/// emptied (the process died in between) is not applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_committed_appends_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (db, t, thread) = with_thread(&path, NEVER).await;
    let first = db.append(&t, thread, msgs(3)).await.unwrap();
    let kept = std::fs::read(journal(&path)).unwrap();
    db.commit_deferred().await.unwrap();
    let second = db.append(&t, thread, msgs(1)).await.unwrap();
    drop(db);
    // The committed append's record again, before the uncommitted one's.
    let mut both = kept;
    both.extend(std::fs::read(journal(&path)).unwrap());
    std::fs::write(journal(&path), both).unwrap();

    let db = LibsqlBackend::open_migrated(deferred(&path, NEVER)).await.unwrap();
    let stored = all(&db, &t, thread).await;
    let ids: Vec<_> = stored.iter().map(|m| (m.id, m.seq)).collect();
    let expected: Vec<_> = first.iter().chain(&second).map(|m| (m.id, m.seq)).collect();
    assert_eq!(ids, expected, "each once, as acknowledged");
    assert_eq!(db.usage(&t).await.unwrap().messages, 4);
}

/// A journaled append whose thread another process deleted meanwhile is
/// dropped with it; the rest is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_a_thread_deleted_meanwhile_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (t, [a, b], acked) = acknowledge_and_die(&path).await;
    // The thread goes while no process holds the file (behind the journal's back).
    let conn = raw(&path).await;
    conn.execute(
        "UPDATE threads SET deleted_at = 1 WHERE id = ?1",
        [libsql::Value::Blob(b.as_uuid().as_bytes().to_vec())],
    )
    .await
    .unwrap();
    drop(conn);

    let db = LibsqlBackend::open_migrated(deferred(&path, NEVER)).await.unwrap();
    let kept: Vec<Message> = acked.into_iter().filter(|m| m.thread_id == a).collect();
    let stored = all(&db, &t, a).await;
    assert_eq!(stored.iter().map(|m| m.id).collect::<Vec<_>>(), kept.iter().map(|m| m.id).collect::<Vec<_>>());
    assert_eq!(journal_len(&path), 0);
}

/// Concurrent appends share groups: every acknowledged one is applied again,
/// in order, without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_applied_again_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (db, t, thread) = with_thread(&path, NEVER).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (db, t) = (db.clone(), t.clone());
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for _ in 0..50 {
                acked.extend(db.append(&t, thread, msgs(1)).await.unwrap());
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(part) = tasks.join_next().await {
        acked.extend(part.unwrap());
    }
    assert_eq!(committed(&path).await, 0);
    drop(db);

    let db = LibsqlBackend::open_migrated(deferred(&path, NEVER)).await.unwrap();
    let stored = all(&db, &t, thread).await;
    let mut expected: Vec<_> = acked.iter().map(|m| (m.seq, m.id)).collect();
    expected.sort();
    assert_eq!(stored.iter().map(|m| (m.seq, m.id)).collect::<Vec<_>>(), expected);
    assert_eq!(expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=400).collect::<Vec<_>>());
}

/// One process per journal; and the setting needs a file with NORMAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_commits_are_refused_where_they_cannot_keep_their_promise() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let db = LibsqlBackend::open_migrated(deferred(&path, NEVER)).await.unwrap();
    let err = LibsqlBackend::open(deferred(&path, NEVER)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(ref m) if m.contains("another process")), "{err:?}");
    drop(db);

    let full = LibsqlConfig { synchronous: Synchronous::Full, ..deferred(&path, NEVER) };
    assert!(matches!(LibsqlBackend::open(full).await.unwrap_err(), StoreError::Invalid(_)));
    let memory = LibsqlConfig { synchronous: Synchronous::Normal, commit_delay: NEVER, ..LibsqlConfig::memory() };
    assert!(matches!(LibsqlBackend::open(memory).await.unwrap_err(), StoreError::Invalid(_)));
}
