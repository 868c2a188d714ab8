//! Contract cases of [`crate::SummaryStore`] and [`crate::SummaryQueue`]:
//! versions that advance from the version read, the bounds of a save,
//! messages never touched, the backlog after a summary's coverage, and the
//! durable job queue (one job per thread, leased claims, retries, requests
//! that are never lost). Each `pub async fn` here takes a fresh
//! [`Backend`]; adding a case means adding its name to `contract_suite!`'s
//! summary list (the completeness test fails otherwise).

use std::time::Duration;

use memlayer_domain::{NewMessage, NewSummary, Role, Summary, TenantId, ThreadId, Timestamp, TokenCount};

use super::Backend;
use super::support::{assert_invalid, assert_not_found, msgs, size, tenant, thread};
use crate::StoreError;

fn next(text: &str, covers_through: i64, newly_covered: u64) -> NewSummary {
    NewSummary { text: text.to_owned(), covers_through, newly_covered, summarizer: "test:fixed".to_owned() }
}

/// A fixed instant with microsecond precision, as every backend stores it.
fn at(secs: i64) -> Timestamp {
    memlayer_domain::from_micros(1_764_400_000_000_000 + secs * 1_000_000)
}

/// A thread of `n` messages.
async fn thread_of(b: &Backend, t: &TenantId, n: usize) -> ThreadId {
    let id = thread(b, t).await;
    if n > 0 {
        b.messages.append(t, id, msgs(0..n)).await.unwrap();
    }
    id
}

/// `save_summary` stores version `expected + 1` with the previous
/// `covered_messages` plus `newly_covered`; `current_summary` is the newest
/// (`None` before any); `summary_versions` keeps every version, newest
/// first, at most `limit`; text and names round-trip byte for byte.
pub async fn summary_versions_advance_from_the_version_read(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 10).await;
    assert_eq!(b.summaries.current_summary(&t, id).await.unwrap(), None, "none yet");
    assert!(b.summaries.summary_versions(&t, id, 10).await.unwrap().is_empty(), "no versions yet");
    let v1 = b.summaries.save_summary(&t, id, next("user: café ☕ — first\nassistant: ok", 4, 4), 0).await.unwrap();
    assert_eq!((v1.thread_id, v1.version, v1.covers_through, v1.covered_messages), (id, 1, 4, 4));
    assert_eq!((v1.text.as_str(), v1.summarizer.as_str()), ("user: café ☕ — first\nassistant: ok", "test:fixed"));
    assert_eq!(b.summaries.current_summary(&t, id).await.unwrap(), Some(v1.clone()), "read back whole");
    let v2 = b.summaries.save_summary(&t, id, next("second", 9, 5), 1).await.unwrap();
    assert_eq!((v2.version, v2.covers_through, v2.covered_messages), (2, 9, 9), "covered adds up");
    // A version covering nothing new (messages deleted meanwhile) is allowed.
    let v3 = b.summaries.save_summary(&t, id, next("third", 9, 0), 2).await.unwrap();
    assert_eq!((v3.version, v3.covered_messages), (3, 9));
    assert_eq!(b.summaries.current_summary(&t, id).await.unwrap(), Some(v3.clone()));
    let all = b.summaries.summary_versions(&t, id, 10).await.unwrap();
    assert_eq!(all, vec![v3.clone(), v2.clone(), v1], "every version kept, newest first");
    assert_eq!(b.summaries.summary_versions(&t, id, 2).await.unwrap(), vec![v3, v2], "at most limit");
    assert!(b.summaries.summary_versions(&t, id, 0).await.unwrap().is_empty(), "limit 0");
    let other = thread_of(&b, &t, 1).await;
    assert_eq!(b.summaries.current_summary(&t, other).await.unwrap(), None, "per thread");
}

/// A save from any other version than the newest is a `Conflict` and
/// changes nothing.
pub async fn summary_stale_version_conflicts(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 5).await;
    b.summaries.save_summary(&t, id, next("one", 2, 2), 0).await.unwrap();
    b.summaries.save_summary(&t, id, next("two", 3, 1), 1).await.unwrap();
    for stale in [0, 1, 3, 99] {
        let r = b.summaries.save_summary(&t, id, next("stale", 5, 2), stale).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "expected {stale} is stale: {r:?}");
    }
    let now = b.summaries.current_summary(&t, id).await.unwrap().unwrap();
    assert_eq!((now.version, now.text.as_str(), now.covers_through), (2, "two", 3), "no lost update");
}

/// Of concurrent savers advancing from one version, exactly one wins; the
/// others get `Conflict`.
pub async fn summary_concurrent_savers_exactly_one_wins(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 5).await;
    b.summaries.save_summary(&t, id, next("base", 1, 1), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (b, t) = (b.clone(), t.clone());
        tasks
            .push(tokio::spawn(async move { b.summaries.save_summary(&t, id, next(&format!("w{i}"), 5, 4), 1).await }));
    }
    let mut wins = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(s) => wins.push(s),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one saver wins");
    let versions = b.summaries.summary_versions(&t, id, 10).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0], wins[0]);
}

/// `Invalid`: coverage below the previous version's or beyond the
/// thread's last seq, a negative one, a text over `Summary::MAX_BYTES`, an
/// empty summarizer name; nothing is stored.
pub async fn summary_rejects_bad_input(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 6).await;
    assert_invalid(b.summaries.save_summary(&t, id, next("x", 7, 7), 0).await, "beyond the last seq");
    assert_invalid(b.summaries.save_summary(&t, id, next("x", -1, 0), 0).await, "negative");
    let huge = "a".repeat(Summary::MAX_BYTES + 1);
    assert_invalid(b.summaries.save_summary(&t, id, next(&huge, 3, 3), 0).await, "too long");
    let unnamed = NewSummary { summarizer: String::new(), ..next("x", 3, 3) };
    assert_invalid(b.summaries.save_summary(&t, id, unnamed, 0).await, "no summarizer");
    assert_eq!(b.summaries.current_summary(&t, id).await.unwrap(), None, "nothing stored");
    let most = "é".repeat(Summary::MAX_BYTES / 2);
    b.summaries.save_summary(&t, id, next(&most, 4, 4), 0).await.unwrap();
    assert_invalid(b.summaries.save_summary(&t, id, next("back", 3, 0), 1).await, "below the previous");
    let current = b.summaries.current_summary(&t, id).await.unwrap().unwrap();
    assert_eq!((current.version, current.text.len()), (1, Summary::MAX_BYTES), "the largest text fits");
}

/// Every method answers `NotFound` for a thread that does not exist, of
/// another tenant, or marked deleted; the queue never queues for it and
/// never hands out its job.
pub async fn summary_of_a_missing_foreign_or_deleted_thread_is_not_found(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 3).await;
    b.summaries.save_summary(&t, id, next("mine", 3, 3), 0).await.unwrap();
    b.summary_queue.enqueue_summary(&t, id, at(0)).await.unwrap();
    let foreign = tenant("other");
    let unknown = ThreadId::new();
    for (who, thread, what) in [(&foreign, id, "another tenant's"), (&t, unknown, "unknown")] {
        assert_not_found(b.summaries.current_summary(who, thread).await, what);
        assert_not_found(b.summaries.save_summary(who, thread, next("x", 0, 0), 0).await, what);
        assert_not_found(b.summaries.summary_versions(who, thread, 5).await, what);
        assert_not_found(b.summary_queue.summary_backlog(who, thread).await, what);
        assert_not_found(b.summary_queue.enqueue_summary(who, thread, at(0)).await, what);
        assert_eq!(b.summary_queue.summary_job(who, thread).await.unwrap(), None, "{what}");
        assert!(!b.summary_queue.complete_summary_job(who, thread, 1, at(0)).await.unwrap(), "{what}");
        b.summary_queue.fail_summary_job(who, thread, "no".into(), at(9)).await.unwrap();
    }
    let job = b.summary_queue.summary_job(&t, id).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.requests, job.due_at), (0, 1, at(0)), "other tenants' calls changed nothing");
    b.threads.delete(&t, id).await.unwrap();
    assert_not_found(b.summaries.current_summary(&t, id).await, "deleted");
    assert_not_found(b.summaries.save_summary(&t, id, next("x", 3, 0), 1).await, "deleted");
    assert_not_found(b.summaries.summary_versions(&t, id, 5).await, "deleted");
    assert_not_found(b.summary_queue.summary_backlog(&t, id).await, "deleted");
    assert_not_found(b.summary_queue.enqueue_summary(&t, id, at(0)).await, "deleted");
    let claimed = b.summary_queue.claim_summary_jobs(at(100), 10, at(200)).await.unwrap();
    assert!(claimed.is_empty(), "a deleted thread's job is never handed out: {claimed:?}");
    while b.threads.sweep_deleted(100).await.unwrap().more {}
    assert_not_found(b.summaries.current_summary(&t, id).await, "swept");
    assert!(b.summary_queue.claim_summary_jobs(at(100), 10, at(200)).await.unwrap().is_empty(), "swept");
}

/// Saving summaries never changes, adds or removes a message.
pub async fn summary_never_touches_a_message(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 8).await;
    let before = b.messages.page(&t, id, None, None, size(100)).await.unwrap().items;
    b.summaries.save_summary(&t, id, next("one", 5, 5), 0).await.unwrap();
    b.summaries.save_summary(&t, id, next("two", 8, 3), 1).await.unwrap();
    b.summary_queue.enqueue_summary(&t, id, at(0)).await.unwrap();
    let job = b.summary_queue.claim_summary_jobs(at(1), 1, at(2)).await.unwrap().remove(0);
    b.summary_queue.complete_summary_job(&t, id, job.requests, at(1)).await.unwrap();
    let after = b.messages.page(&t, id, None, None, size(100)).await.unwrap().items;
    assert_eq!(after, before, "every message as it was");
    assert_eq!(b.threads.get(&t, id).await.unwrap().last_seq, 8);
}

/// The backlog counts the messages after the newest summary's
/// `covers_through` and their tokens (stored counts, else content bytes /
/// 4 rounded up), deleted messages left out.
pub async fn summary_backlog_counts_what_follows_the_coverage(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let empty = b.summary_queue.summary_backlog(&t, id).await.unwrap();
    assert_eq!(empty, crate::SummaryBacklog::default(), "an empty thread");
    let counted = |n: u32| TokenCount { count: n, model: "gpt-4o".into(), encoding: "o200k_base".into(), exact: true };
    let batch = vec![
        NewMessage::text(Role::User, "abcdefgh").unwrap(),       // 8 bytes: 2
        NewMessage::text(Role::Assistant, "abcdefghi").unwrap(), // 9 bytes: 3
        NewMessage::text(Role::User, "whatever").unwrap().with_token_count(counted(40)), // counted: 40
        NewMessage::text(Role::User, "ü").unwrap(),              // 2 bytes: 1
        NewMessage::text(Role::User, "x".repeat(400)).unwrap(),  // 100
    ];
    let stored = b.messages.append(&t, id, batch).await.unwrap();
    let all = b.summary_queue.summary_backlog(&t, id).await.unwrap();
    assert_eq!((all.version, all.covers_through, all.messages, all.tokens), (0, 0, 5, 146));
    b.summaries.save_summary(&t, id, next("s", 2, 2), 0).await.unwrap();
    let rest = b.summary_queue.summary_backlog(&t, id).await.unwrap();
    assert_eq!((rest.version, rest.covers_through, rest.messages, rest.tokens), (1, 2, 3, 141));
    b.messages.delete(&t, stored[2].id).await.unwrap();
    let rest = b.summary_queue.summary_backlog(&t, id).await.unwrap();
    assert_eq!((rest.messages, rest.tokens), (2, 101), "deleted messages are not pending");
    b.summaries.save_summary(&t, id, next("s", 5, 2), 1).await.unwrap();
    let none = b.summary_queue.summary_backlog(&t, id).await.unwrap();
    assert_eq!((none.version, none.covers_through, none.messages, none.tokens), (2, 5, 0, 0));
}

/// One job per thread: enqueueing again counts a request and keeps its due
/// time; a claim leases due jobs of any tenant, earliest due first, and no
/// second claim takes them before the lease ends; a failure records the
/// attempt and delays the job; completing removes the job only if no
/// request came after it was read, else makes it due again.
pub async fn summary_jobs_are_queued_leased_retried_and_completed(b: Backend) {
    let (t, u) = (tenant("acme"), tenant("umbrella"));
    let (a, c) = (thread_of(&b, &t, 1).await, thread_of(&b, &u, 1).await);
    assert!(b.summary_queue.claim_summary_jobs(at(0), 10, at(5)).await.unwrap().is_empty(), "empty queue");
    assert_eq!(b.summary_queue.summary_job(&t, a).await.unwrap(), None);
    let job = b.summary_queue.enqueue_summary(&t, a, at(10)).await.unwrap();
    assert_eq!((&job.tenant, job.thread, job.due_at, job.attempts), (&t, a, at(10), 0));
    assert_eq!((job.last_error.as_deref(), job.leased_until, job.requests), (None, None, 1));
    assert_eq!(b.summary_queue.summary_job(&t, a).await.unwrap(), Some(job.clone()), "read back");
    let again = b.summary_queue.enqueue_summary(&t, a, at(1)).await.unwrap();
    assert_eq!((again.due_at, again.requests), (at(10), 2), "one job; its due time kept");
    b.summary_queue.enqueue_summary(&u, c, at(5)).await.unwrap();
    assert!(b.summary_queue.claim_summary_jobs(at(4), 10, at(50)).await.unwrap().is_empty(), "none due yet");
    let first = b.summary_queue.claim_summary_jobs(at(20), 10, at(50)).await.unwrap();
    let got: Vec<_> = first.iter().map(|j| (j.tenant.as_str(), j.thread, j.leased_until)).collect();
    assert_eq!(got, vec![("umbrella", c, Some(at(50))), ("acme", a, Some(at(50)))], "earliest due first, any tenant");
    assert!(b.summary_queue.claim_summary_jobs(at(30), 10, at(60)).await.unwrap().is_empty(), "leased");
    let expired = b.summary_queue.claim_summary_jobs(at(50), 1, at(90)).await.unwrap();
    assert_eq!(expired.len(), 1, "a lease that ran out is handed out again, `limit` at a time");
    // Failure: one attempt more, the error kept (bounded), due at the retry.
    let long = format!("summariser unreachable: {}", "x".repeat(5_000));
    b.summary_queue.fail_summary_job(&t, a, long, at(100)).await.unwrap();
    let failed = b.summary_queue.summary_job(&t, a).await.unwrap().unwrap();
    assert_eq!((failed.attempts, failed.due_at, failed.leased_until), (1, at(100), None));
    let error = failed.last_error.unwrap();
    assert!(error.starts_with("summariser unreachable") && error.len() <= crate::MAX_SUMMARY_ERROR_BYTES);
    let due: Vec<_> = b.summary_queue.claim_summary_jobs(at(99), 10, at(200)).await.unwrap();
    assert!(due.iter().all(|j| j.thread != a), "not before its retry: {due:?}");
    let retried = b.summary_queue.claim_summary_jobs(at(100), 10, at(200)).await.unwrap();
    let retried = retried.into_iter().find(|j| j.thread == a).expect("due at its retry");
    assert_eq!((retried.attempts, retried.requests), (1, 2));
    // A request while it runs: completing with the old count keeps the job.
    b.summary_queue.enqueue_summary(&t, a, at(0)).await.unwrap();
    assert!(!b.summary_queue.complete_summary_job(&t, a, retried.requests, at(150)).await.unwrap());
    let kept = b.summary_queue.summary_job(&t, a).await.unwrap().unwrap();
    assert_eq!((kept.due_at, kept.leased_until, kept.attempts, kept.requests), (at(150), None, 0, 3));
    let last = b.summary_queue.claim_summary_jobs(at(150), 10, at(300)).await.unwrap();
    assert_eq!(last.iter().filter(|j| j.thread == a).count(), 1, "due again at once");
    assert!(b.summary_queue.complete_summary_job(&t, a, 3, at(160)).await.unwrap(), "no new request: removed");
    assert_eq!(b.summary_queue.summary_job(&t, a).await.unwrap(), None);
    assert!(!b.summary_queue.complete_summary_job(&t, a, 3, at(160)).await.unwrap(), "gone");
    assert!(b.summary_queue.summary_job(&u, c).await.unwrap().is_some(), "the other tenant's job stays");
}

/// One tenant's backlog does not hold back another's jobs: a claim takes
/// every tenant's earliest due job before any tenant's second.
pub async fn summary_jobs_are_claimed_fairly_across_tenants(b: Backend) {
    let (busy, quiet) = (tenant("busy"), tenant("quiet"));
    let mut backlog = Vec::new();
    for i in 0..8 {
        let id = thread_of(&b, &busy, 1).await;
        b.summary_queue.enqueue_summary(&busy, id, at(i)).await.unwrap();
        backlog.push(id);
    }
    let late = thread_of(&b, &quiet, 1).await;
    b.summary_queue.enqueue_summary(&quiet, late, at(50)).await.unwrap();
    let claimed = b.summary_queue.claim_summary_jobs(at(100), 3, at(1000)).await.unwrap();
    let mut got: Vec<_> = claimed.iter().map(|j| (j.tenant.as_str(), j.thread)).collect();
    got.sort();
    let mut expected = vec![("busy", backlog[0]), ("busy", backlog[1]), ("quiet", late)];
    expected.sort();
    assert_eq!(got, expected, "the quiet tenant's job, due last, is in the first batch");
    let rest = b.summary_queue.claim_summary_jobs(at(100), 10, at(1000)).await.unwrap();
    assert_eq!(rest.len(), 6, "the busy tenant's other jobs follow");
}

/// Concurrent claimers never receive the same job.
pub async fn summary_jobs_concurrent_claims_never_share_a_job(b: Backend) {
    let t = tenant("acme");
    let mut threads = Vec::new();
    for _ in 0..12 {
        let id = thread_of(&b, &t, 1).await;
        b.summary_queue.enqueue_summary(&t, id, at(0)).await.unwrap();
        threads.push(id);
    }
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..4 {
                mine.extend(b.summary_queue.claim_summary_jobs(at(1), 2, at(1000)).await.unwrap());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap().into_iter().map(|j| j.thread));
    }
    claimed.sort();
    let mut unique = claimed.clone();
    unique.dedup();
    assert_eq!(claimed, unique, "a job went to two claimers");
    threads.sort();
    assert_eq!(unique, threads, "every job claimed once");
}

/// `summary_versions_before` pages the kept versions newest first below a
/// version, never skipping or repeating one; `NotFound` for a missing thread.
pub async fn summary_versions_page_by_version(b: Backend) {
    let t = tenant("acme");
    let id = thread_of(&b, &t, 10).await;
    let mut saved = Vec::new();
    for v in 0..5u64 {
        saved.push(b.summaries.save_summary(&t, id, next(&format!("version {}", v + 1), 1, 1), v).await.unwrap());
    }
    saved.reverse();
    let first = b.summaries.summary_versions_before(&t, id, None, 2).await.unwrap();
    assert_eq!(first, saved[..2].to_vec(), "the newest two");
    let second = b.summaries.summary_versions_before(&t, id, Some(first[1].version), 2).await.unwrap();
    assert_eq!(second, saved[2..4].to_vec(), "the next two, below the last seen");
    let last = b.summaries.summary_versions_before(&t, id, Some(second[1].version), 2).await.unwrap();
    assert_eq!(last, saved[4..].to_vec(), "the rest");
    assert!(b.summaries.summary_versions_before(&t, id, Some(1), 2).await.unwrap().is_empty(), "nothing below 1");
    let missing = memlayer_domain::ThreadId::new();
    assert_not_found(b.summaries.summary_versions_before(&t, missing, None, 2).await, "missing");
}
