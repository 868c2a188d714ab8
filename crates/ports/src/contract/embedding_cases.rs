//! Contract cases of [`crate::EmbeddingStore`]: the embedding job queue
//! (atomic with appends, fair, leased, backing off), stored vectors, coverage
//! counts, lexical search and the invariant that no stored message is lost
//! from the semantic tables. Each `pub async fn` here takes a fresh
//! [`Backend`]; adding a case means adding its name to `contract_suite!` too
//! (the completeness test fails otherwise).

use std::collections::BTreeSet;

use memlayer_domain::{Metadata, NewMessage, NewThread, ResourceId, Role, TenantId, ThreadId, ToolCall};
use proptest::prelude::*;
use serde_json::json;

use super::Backend;
use super::support::{msg, msgs, run_prop, tenant, thread};

fn unit(seed: usize, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|i| (((i + 1) * (seed + 3)) % 17) as f32 - 8.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / n).collect()
}

pub(super) fn embedding(model: &str, seed: usize) -> memlayer_domain::Embedding {
    memlayer_domain::Embedding::new(model, unit(seed, 8), 8).unwrap()
}

pub(super) fn whole_tenant(t: &TenantId) -> crate::SearchFilter {
    crate::SearchFilter::all_threads(t.clone())
}

/// `embedding_counts`, checked against `coverage` on the same scope.
pub(super) async fn progress(
    b: &Backend,
    filter: &crate::SearchFilter,
    model: &str,
) -> memlayer_domain::EmbeddingCounts {
    let counts = b.embeddings.embedding_counts(filter, model.into()).await.unwrap();
    let coverage = b.embeddings.coverage(filter, model.into()).await.unwrap();
    assert_eq!(coverage, counts.into(), "coverage agrees with the counts of {filter:?}");
    counts
}

pub(super) fn far_future() -> memlayer_domain::Timestamp {
    memlayer_domain::now() + time::Duration::days(3650)
}

pub async fn append_creates_embedding_jobs_atomically(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let call = ToolCall { id: "c1".into(), name: "lookup".into(), arguments: json!({"order": "A-17"}) };
    let with_call = NewMessage::new(Role::Assistant, "checking", None, None, vec![call], Metadata::default()).unwrap();
    let stored = b.messages.append(&t, id, vec![msg(0), with_call]).await.unwrap();
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    let mine: Vec<_> = due.iter().filter(|j| j.thread == id).collect();
    assert_eq!(mine.len(), 2, "one job per appended message");
    assert_eq!(mine[0].id, stored[0].id, "oldest first");
    assert_eq!(mine[0].text, "message 0");
    assert!(mine[1].text.contains("checking") && mine[1].text.contains("lookup") && mine[1].text.contains("A-17"));
    assert!(mine.iter().all(|j| j.attempts == 0 && j.tenant == t));
    let _ = b.messages.append(&t, ThreadId::new(), msgs(0..3)).await;
    let after = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert_eq!(after.len(), due.len(), "a failed append creates no job");
    let counts = progress(&b, &whole_tenant(&t), "m1").await;
    assert_eq!((counts.embedded, counts.pending), (0, 2));
}

pub async fn completed_jobs_store_vectors(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..3)).await.unwrap();
    let done: Vec<_> = stored.iter().enumerate().map(|(i, m)| (m.id, embedding("m1", i))).collect();
    let entries = b.embeddings.complete_jobs(done).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.tenant == t && e.thread == id && e.embedding.model() == "m1"));
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert!(due.iter().all(|j| j.thread != id), "completed jobs are gone");
    let (scanned, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    let mine: Vec<_> = scanned.iter().filter(|e| e.thread == id).collect();
    assert_eq!(mine.len(), 3);
    let stored_v1 = mine.iter().find(|e| e.id == stored[1].id).unwrap();
    assert_eq!(stored_v1.embedding.vector(), unit(1, 8).as_slice(), "vector round-trips exactly");
    let (page, next) = b.embeddings.scan_vectors("m1".into(), None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let (rest, _) = b.embeddings.scan_vectors("m1".into(), next, 100).await.unwrap();
    assert_eq!(page.len() + rest.len(), scanned.len(), "scan resumes where it stopped");
    let counts = progress(&b, &whole_tenant(&t), "m1").await;
    assert_eq!((counts.embedded, counts.pending, counts.other_model), (3, 0, 0));
    let again = b.embeddings.complete_jobs(vec![(stored[0].id, embedding("m1", 9))]).await.unwrap();
    assert_eq!(again.len(), 1, "re-embedding replaces");
    let (scanned, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert_eq!(scanned.iter().filter(|e| e.id == stored[0].id).count(), 1);
}

pub async fn deleted_messages_lose_vectors_and_jobs(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let other = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..3)).await.unwrap();
    let kept = b.messages.append(&t, other, msgs(0..1)).await.unwrap();
    b.embeddings
        .complete_jobs(vec![(stored[0].id, embedding("m1", 0)), (kept[0].id, embedding("m1", 1))])
        .await
        .unwrap();
    b.messages.delete(&t, stored[1].id).await.unwrap();
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert!(due.iter().all(|j| j.id != stored[1].id), "a deleted message's job is gone");
    let skipped = b.embeddings.complete_jobs(vec![(stored[1].id, embedding("m1", 2))]).await.unwrap();
    assert!(skipped.is_empty(), "completing a deleted message's job stores nothing");
    b.threads.delete(&t, id).await.unwrap();
    let (scanned, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert!(scanned.iter().all(|e| e.thread != id), "a deleted thread's vectors are gone");
    assert!(scanned.iter().any(|e| e.id == kept[0].id), "other threads keep theirs");
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert!(due.iter().all(|j| j.thread != id));
    let hits = b.embeddings.lexical_search(&whole_tenant(&t), "message".into(), 10).await.unwrap();
    assert!(hits.iter().all(|h| h.thread != id), "no full-text hit from a deleted thread");
}

pub async fn failed_jobs_back_off(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..2)).await.unwrap();
    let retry_at = far_future();
    b.embeddings.fail_jobs(vec![stored[0].id], "model missing".into(), retry_at).await.unwrap();
    let due_now = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert!(due_now.iter().all(|j| j.id != stored[0].id), "not due before its retry time");
    assert!(due_now.iter().any(|j| j.id == stored[1].id));
    let later = b.embeddings.due_jobs(retry_at, 100).await.unwrap();
    let job = later.iter().find(|j| j.id == stored[0].id).expect("due at its retry time");
    assert_eq!(job.attempts, 1);
    let counts = progress(&b, &whole_tenant(&t), "m1").await;
    assert_eq!((counts.pending, counts.failing), (2, 1), "a failing message is still pending, never lost");
}

pub async fn coverage_counts_pending_and_other_model_per_scope(b: Backend) {
    let t = tenant("acme");
    let (one, two) = (thread(&b, &t).await, thread(&b, &t).await);
    let a = b.messages.append(&t, one, msgs(0..4)).await.unwrap();
    let c = b.messages.append(&t, two, msgs(0..3)).await.unwrap();
    let other = thread(&b, &tenant("other")).await;
    b.messages.append(&tenant("other"), other, msgs(0..5)).await.unwrap();
    let only = |id| crate::SearchFilter::these_threads(t.clone(), vec![id]);
    assert_eq!(progress(&b, &only(one), "m1").await.pending, 4, "pending before the worker ever ran");
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await.pending, 7, "another tenant's jobs are not counted");
    // Thread one: two on m1, one on m0 only (another model), one pending.
    b.embeddings
        .complete_jobs(vec![
            (a[0].id, embedding("m1", 0)),
            (a[1].id, embedding("m1", 1)),
            (a[2].id, embedding("m0", 2)),
            (c[0].id, embedding("m1", 3)),
        ])
        .await
        .unwrap();
    let one_counts = progress(&b, &only(one), "m1").await;
    assert_eq!((one_counts.embedded, one_counts.pending, one_counts.other_model), (2, 1, 1));
    let two_counts = progress(&b, &only(two), "m1").await;
    assert_eq!((two_counts.embedded, two_counts.pending, two_counts.other_model), (1, 2, 0));
    let all = progress(&b, &whole_tenant(&t), "m1").await;
    assert_eq!((all.embedded, all.pending, all.other_model), (3, 3, 1));
    // Seen from m0, the m1 vectors are the other model's.
    assert_eq!(progress(&b, &whole_tenant(&t), "m0").await.other_model, 3);
    assert_eq!(progress(&b, &whole_tenant(&t), "m2").await.other_model, 4, "a model sorting after both");
    let none = crate::SearchFilter::these_threads(t.clone(), vec![]);
    assert_eq!(progress(&b, &none, "m1").await, memlayer_domain::EmbeddingCounts::default());
}

/// A search's coverage counts stop at `COVERAGE_COUNT_LIMIT`, so a search
/// costs no more behind a long embedding backlog; the progress counts stay
/// exact.
pub async fn coverage_counts_stop_at_the_limit(b: Backend) {
    use memlayer_domain::{COVERAGE_COUNT_LIMIT as LIMIT, Coverage};
    let t = tenant("acme");
    let (big, small) = (thread(&b, &t).await, thread(&b, &t).await);
    let n = usize::try_from(LIMIT).unwrap() + 5;
    let mut stored = b.messages.append(&t, big, msgs(0..1000)).await.unwrap();
    stored.extend(b.messages.append(&t, big, msgs(1000..n)).await.unwrap());
    b.messages.append(&t, small, msgs(0..3)).await.unwrap();
    let only = |id| crate::SearchFilter::these_threads(t.clone(), vec![id]);
    for (filter, exact) in [(only(big), n), (whole_tenant(&t), n + 3)] {
        let counts = b.embeddings.embedding_counts(&filter, "m1".into()).await.unwrap();
        assert_eq!(counts.pending, exact as u64, "the progress counts are exact for {filter:?}");
        let coverage = b.embeddings.coverage(&filter, "m1".into()).await.unwrap();
        assert_eq!(coverage, Coverage { pending: LIMIT, other_model: 0 }, "{filter:?}");
        assert!(coverage.capped());
    }
    let below = b.embeddings.coverage(&only(small), "m1".into()).await.unwrap();
    assert_eq!((below.pending, below.capped()), (3, false), "exact below the limit");
    // Embedded by another model only: counted up to the limit as well.
    let done = stored.iter().enumerate().map(|(i, m)| (m.id, embedding("m0", i))).collect();
    b.embeddings.complete_jobs(done).await.unwrap();
    let counts = b.embeddings.embedding_counts(&only(big), "m1".into()).await.unwrap();
    assert_eq!((counts.pending, counts.other_model), (0, n as u64));
    let coverage = b.embeddings.coverage(&only(big), "m1".into()).await.unwrap();
    assert_eq!(coverage, Coverage { pending: 0, other_model: LIMIT });
}

pub async fn enqueue_missing_is_idempotent_per_model(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..3)).await.unwrap();
    let done: Vec<_> = stored.iter().enumerate().map(|(i, m)| (m.id, embedding("m1", i))).collect();
    b.embeddings.complete_jobs(done).await.unwrap();
    assert_eq!(b.embeddings.enqueue_missing("m1".into()).await.unwrap(), 0, "nothing missing for m1");
    assert_eq!(b.embeddings.enqueue_missing("m2".into()).await.unwrap(), 3);
    assert_eq!(b.embeddings.enqueue_missing("m2".into()).await.unwrap(), 0, "idempotent");
    let counts = progress(&b, &whole_tenant(&t), "m2").await;
    assert_eq!((counts.embedded, counts.pending, counts.other_model), (0, 3, 3));
    // A job backing off after a failure is due again at once after a re-enqueue.
    b.embeddings.fail_jobs(vec![stored[0].id], "boom".into(), far_future()).await.unwrap();
    assert!(b.embeddings.due_jobs(memlayer_domain::now(), 10).await.unwrap().iter().all(|j| j.id != stored[0].id));
    assert_eq!(b.embeddings.enqueue_missing("m2".into()).await.unwrap(), 0);
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 10).await.unwrap();
    assert!(due.iter().any(|j| j.id == stored[0].id && j.attempts == 1), "due again, attempts kept");
    let done: Vec<_> = stored.iter().enumerate().map(|(i, m)| (m.id, embedding("m2", i))).collect();
    b.embeddings.complete_jobs(done).await.unwrap();
    let counts = progress(&b, &whole_tenant(&t), "m2").await;
    assert_eq!((counts.embedded, counts.pending, counts.other_model), (3, 0, 0));
    assert_eq!(b.embeddings.prune_vectors("m2".into()).await.unwrap(), 3, "old model's vectors pruned");
    let (old, _) = b.embeddings.scan_vectors("m1".into(), None, 10).await.unwrap();
    assert!(old.is_empty());
}

pub async fn lexical_search_ranks_and_escapes(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let other = thread(&b, &t).await;
    let texts = [
        "the invoice for march is attached",
        "please send the shipping address again",
        "my refund for the broken kettle never arrived",
        "weather tomorrow looks sunny",
    ];
    let batch = texts.iter().map(|s| NewMessage::text(Role::User, *s).unwrap()).collect();
    let stored = b.messages.append(&t, id, batch).await.unwrap();
    b.messages.append(&t, other, vec![NewMessage::text(Role::User, "kettle kettle kettle").unwrap()]).await.unwrap();
    let foreign = thread(&b, &tenant("other")).await;
    b.messages
        .append(&tenant("other"), foreign, vec![NewMessage::text(Role::User, "kettle refund").unwrap()])
        .await
        .unwrap();
    let only_id = crate::SearchFilter::these_threads(t.clone(), vec![id]);
    let hits = b.embeddings.lexical_search(&only_id, "refund kettle".into(), 10).await.unwrap();
    assert_eq!(hits[0].id, stored[2].id, "the message with both words ranks first");
    assert!(hits.iter().all(|h| h.thread == id), "thread filter holds");
    assert!(hits.windows(2).all(|p| p[0].score >= p[1].score), "higher score is better");
    let all = b.embeddings.lexical_search(&whole_tenant(&t), "kettle".into(), 10).await.unwrap();
    assert_eq!(all.len(), 2, "both of this tenant's kettle messages, never the other tenant's");
    for nasty in ["\"unbalanced", "refund OR", "NEAR(kettle", "kettle*", "a:b", "(", "-refund", "' OR 1=1 --", "^col"] {
        let r = b.embeddings.lexical_search(&whole_tenant(&t), nasty.into(), 10).await;
        assert!(r.is_ok(), "query {nasty:?} must not reach the engine unescaped: {r:?}");
    }
    assert!(b.embeddings.lexical_search(&whole_tenant(&t), "...".into(), 10).await.unwrap().is_empty());
}

pub async fn resource_threads_are_tenant_scoped(b: Backend) {
    let t = tenant("acme");
    let u1 = ResourceId::parse("user-1").unwrap();
    let mk = |r: Option<ResourceId>| NewThread { resource_id: r, ..Default::default() };
    let a = b.threads.create(&t, mk(Some(u1.clone()))).await.unwrap().id;
    let c = b.threads.create(&t, mk(Some(u1.clone()))).await.unwrap().id;
    b.threads.create(&t, mk(None)).await.unwrap();
    b.threads.create(&tenant("other"), mk(Some(u1.clone()))).await.unwrap();
    let mut got = b.threads.resource_threads(&t, &u1).await.unwrap();
    got.sort();
    assert_eq!(got, vec![a, c]);
    assert!(b.threads.resource_threads(&t, &ResourceId::parse("nobody").unwrap()).await.unwrap().is_empty());
}

/// A word no other message of a case holds: letters only, so every
/// backend's tokenizer keeps it whole, and consonants other than `s` and
/// `y` only, so no English stemmer changes it (without a vowel, Porter's
/// and Snowball's suffix rules find nothing to remove but a final `s`, and
/// `y` becomes `i`).
pub(super) fn unique_word(n: usize) -> String {
    const LETTERS: &[u8] = b"bcdfghjklmnpqrtvwxz";
    let mut word = String::from("zq");
    let mut n = n;
    loop {
        word.push(char::from(LETTERS[n % LETTERS.len()]));
        n /= LETTERS.len();
        if n == 0 {
            break word;
        }
    }
}

/// Checks the semantic invariant over `live` (every stored message with its
/// unique word) and `gone` (deleted ones): each live message has a vector of
/// `m1` or a pending job and is found by its word, alone; no deleted one is.
async fn assert_nothing_lost(
    b: &Backend,
    t: &TenantId,
    live: &[(memlayer_domain::MessageId, String)],
    gone: &[(memlayer_domain::MessageId, String)],
) -> Result<(), TestCaseError> {
    let jobs = b.embeddings.due_jobs(far_future(), 100_000).await.unwrap();
    let (vectors, _) = b.embeddings.scan_vectors("m1".into(), None, 100_000).await.unwrap();
    let covered: BTreeSet<_> = jobs.iter().map(|j| j.id).chain(vectors.iter().map(|v| v.id)).collect();
    for (id, word) in live {
        prop_assert!(covered.contains(id), "message {word} has neither a vector nor a pending job");
        let hits = b.embeddings.lexical_search(&whole_tenant(t), word.clone(), 5).await.unwrap();
        prop_assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![*id], "searching {}", word);
    }
    for (id, word) in gone {
        prop_assert!(!covered.contains(id), "deleted message {word} still has a vector or job");
        let hits = b.embeddings.lexical_search(&whole_tenant(t), word.clone(), 5).await.unwrap();
        prop_assert!(hits.is_empty(), "deleted message {word} is still found: {hits:?}");
    }
    let counts = progress(b, &whole_tenant(t), "m1").await;
    prop_assert!(counts.embedded + counts.pending >= live.len() as u64, "counts {counts:?} miss messages");
    Ok(())
}

/// The reproduction of the lost-messages defect: the newest messages of the
/// store deleted together (a whole thread), then new ones appended.
pub async fn deleting_the_newest_messages_loses_nothing(b: Backend) {
    let t = tenant("acme");
    let a = thread(&b, &t).await;
    let first = b.messages.append(&t, a, vec![NewMessage::text(Role::User, unique_word(0)).unwrap()]).await.unwrap();
    // Everything so far is indexed and queued before the delete.
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await.pending, 1);
    let doomed = thread(&b, &t).await;
    let texts: Vec<_> = (1..4).map(unique_word).collect();
    let batch = texts.iter().map(|w| NewMessage::text(Role::User, w.clone()).unwrap()).collect();
    let deleted = b.messages.append(&t, doomed, batch).await.unwrap();
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await.pending, 4);
    b.threads.delete(&t, doomed).await.unwrap();
    let words: Vec<_> = (4..7).map(unique_word).collect();
    let batch = words.iter().map(|w| NewMessage::text(Role::User, w.clone()).unwrap()).collect();
    let later = b.messages.append(&t, a, batch).await.unwrap();
    let live: Vec<_> = std::iter::once((first[0].id, unique_word(0)))
        .chain(later.iter().map(|m| m.id).zip(words.iter().cloned()))
        .collect();
    let gone: Vec<_> = deleted.iter().map(|m| m.id).zip(texts.iter().cloned()).collect();
    assert_nothing_lost(&b, &t, &live, &gone).await.unwrap();
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await.pending, 4, "four messages, four pending");
}

/// One step of [`appends_and_deletes_never_lose_a_message`].
#[derive(Debug, Clone)]
enum Step {
    Create,
    Append { thread: usize, n: usize },
    DeleteThread(usize),
    DeleteNewest(usize),
    DeleteOne { thread: usize, pick: usize },
    Embed { pick: usize },
    Check,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::Create),
        4 => (0usize..4, 1usize..4).prop_map(|(thread, n)| Step::Append { thread, n }),
        1 => (0usize..4).prop_map(Step::DeleteThread),
        2 => (0usize..4).prop_map(Step::DeleteNewest),
        1 => (0usize..4, 0usize..8).prop_map(|(thread, pick)| Step::DeleteOne { thread, pick }),
        1 => (0usize..16).prop_map(|pick| Step::Embed { pick }),
        1 => Just(Step::Check),
    ]
}

/// The invariant of the semantic tables under any sequence of appends,
/// deletes of whole threads, of single messages (the newest included) and
/// embeddings: a stored message always has a vector or a pending job and is
/// found by lexical search; a deleted one is neither.
pub async fn appends_and_deletes_never_lose_a_message(b: Backend) {
    let handle = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicUsize::new(0);
    run_prop(24, proptest::collection::vec(step(), 1..32), |steps| {
        handle.block_on(async {
            // Each case in its own tenant: cases share the store.
            let t = tenant(&format!("prop-{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
            let mut threads: Vec<(ThreadId, Vec<(memlayer_domain::MessageId, String)>)> = Vec::new();
            let mut gone = Vec::new();
            let mut words = 0;
            for s in steps {
                match s {
                    Step::Create => threads.push((thread(&b, &t).await, Vec::new())),
                    Step::Append { thread: i, n } => {
                        if threads.is_empty() {
                            threads.push((thread(&b, &t).await, Vec::new()));
                        }
                        let i = i % threads.len();
                        let new: Vec<String> = (words..words + n).map(unique_word).collect();
                        words += n;
                        let batch = new.iter().map(|w| NewMessage::text(Role::User, w.clone()).unwrap()).collect();
                        let stored = b.messages.append(&t, threads[i].0, batch).await.unwrap();
                        threads[i].1.extend(stored.iter().map(|m| m.id).zip(new));
                    }
                    Step::DeleteThread(i) if !threads.is_empty() => {
                        let (id, messages) = threads.remove(i % threads.len());
                        b.threads.delete(&t, id).await.unwrap();
                        gone.extend(messages);
                    }
                    Step::DeleteNewest(i) | Step::DeleteOne { thread: i, .. } if !threads.is_empty() => {
                        let i = i % threads.len();
                        let messages = &mut threads[i].1;
                        if messages.is_empty() {
                            continue;
                        }
                        let at = match s {
                            Step::DeleteOne { pick, .. } => pick % messages.len(),
                            _ => messages.len() - 1,
                        };
                        let (id, word) = messages.remove(at);
                        b.messages.delete(&t, id).await.unwrap();
                        gone.push((id, word));
                    }
                    Step::Embed { pick } => {
                        let all: Vec<_> = threads.iter().flat_map(|(_, m)| m.iter()).collect();
                        if let Some((id, _)) = all.get(pick % all.len().max(1)) {
                            b.embeddings.complete_jobs(vec![(*id, embedding("m1", pick))]).await.unwrap();
                        }
                    }
                    Step::Check => {
                        let live: Vec<_> = threads.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
                        assert_nothing_lost(&b, &t, &live, &gone).await?;
                    }
                    _ => {}
                }
            }
            let live: Vec<_> = threads.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
            assert_nothing_lost(&b, &t, &live, &gone).await
        })
    });
}

/// Lexical scores and rankings of one tenant depend on its own data alone:
/// another tenant storing the same words, often, changes nothing.
pub async fn lexical_scores_ignore_other_tenants(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let texts = [
        "the project code name is bluefalcon",
        "lunch at noon with the bluefalcon team and the weather team",
        "weather looks sunny tomorrow",
        "a much longer message about lunch, the weather, travel plans and many other things",
    ];
    let batch = texts.iter().map(|s| NewMessage::text(Role::User, *s).unwrap()).collect();
    b.messages.append(&t, id, batch).await.unwrap();
    let queries = ["bluefalcon", "lunch weather", "the team", "sunny travel bluefalcon"];
    let mut before = Vec::new();
    for q in queries {
        let hits = b.embeddings.lexical_search(&whole_tenant(&t), q.into(), 10).await.unwrap();
        assert!(!hits.is_empty(), "{q} finds something");
        before.push(hits.iter().map(|h| (h.id, h.score.to_bits())).collect::<Vec<_>>());
    }
    let other = tenant("other");
    let theirs = thread(&b, &other).await;
    let mut batch: Vec<_> = (0..20).map(|i| NewMessage::text(Role::User, format!("bluefalcon {i}")).unwrap()).collect();
    batch.extend((0..40).map(|i| {
        NewMessage::text(Role::User, format!("the team had lunch {}", "and talked about the weather ".repeat(i % 7)))
            .unwrap()
    }));
    b.messages.append(&other, theirs, batch).await.unwrap();
    for (q, was) in queries.iter().zip(&before) {
        let hits = b.embeddings.lexical_search(&whole_tenant(&t), (*q).into(), 10).await.unwrap();
        let now: Vec<_> = hits.iter().map(|h| (h.id, h.score.to_bits())).collect();
        assert_eq!(&now, was, "{q}: ranking and scores must not move when another tenant writes");
    }
}

/// Lexical search stems English words alike in messages and queries, on
/// every backend (migration 20): a word finds its other forms, and an
/// unrelated word still finds nothing.
pub async fn lexical_search_finds_other_forms_of_a_word(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let texts = ["She runs to the station every morning", "We walked the dogs", "Their invoices arrived"];
    let batch = texts.iter().map(|s| NewMessage::text(Role::User, *s).unwrap()).collect();
    let stored = b.messages.append(&t, id, batch).await.unwrap();
    for (query, found) in [("running", 0), ("Run", 0), ("stations", 0), ("walking dog", 1), ("invoice", 2)] {
        let hits = b.embeddings.lexical_search(&whole_tenant(&t), query.into(), 10).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![stored[found].id], "{query}");
    }
    assert!(b.embeddings.lexical_search(&whole_tenant(&t), "runway".into(), 10).await.unwrap().is_empty());
}

/// The starvation defect: one tenant's bulk import queued first, another
/// tenant's one new message after it; the first batch holds the new message.
pub async fn due_jobs_are_fair_across_tenants(b: Backend) {
    let (bulk, small) = (tenant("bulk"), tenant("small"));
    let big = thread(&b, &bulk).await;
    let imported = b.messages.append(&bulk, big, msgs(0..500)).await.unwrap();
    let mine = thread(&b, &small).await;
    let new = b.messages.append(&small, mine, msgs(0..2)).await.unwrap();
    let batch = b.embeddings.due_jobs(memlayer_domain::now(), 8).await.unwrap();
    assert_eq!(batch.len(), 8);
    let ids: Vec<_> = batch.iter().map(|j| j.id).collect();
    assert!(
        ids.contains(&new[0].id) && ids.contains(&new[1].id),
        "the small tenant waits behind the import: {batch:?}"
    );
    let bulk_ids: Vec<_> = batch.iter().filter(|j| j.tenant == bulk).map(|j| j.id).collect();
    assert_eq!(bulk_ids, imported[..6].iter().map(|m| m.id).collect::<Vec<_>>(), "each tenant oldest first");
    // Round-robin: every tenant's first job before any tenant's second.
    let tenants: Vec<_> = batch.iter().take(2).map(|j| j.tenant.clone()).collect();
    assert!(tenants.contains(&bulk) && tenants.contains(&small), "first round: one job per tenant: {tenants:?}");
    // A job backing off does not hold a tenant's turn.
    b.embeddings.fail_jobs(vec![new[0].id], "boom".into(), far_future()).await.unwrap();
    let batch = b.embeddings.due_jobs(memlayer_domain::now(), 2).await.unwrap();
    let ids: Vec<_> = batch.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![imported[0].id, new[1].id], "same round: the job due first goes first");
}

/// Leases: a claimed job is handed to no one else until it is completed,
/// failed, or its lease runs out.
pub async fn claimed_jobs_are_leased_until_done_or_expired(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..4)).await.unwrap();
    let now = memlayer_domain::now();
    let until = now + time::Duration::minutes(5);
    let first = b.embeddings.claim_jobs(now, 2, until).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![stored[0].id, stored[1].id]);
    let second = b.embeddings.claim_jobs(now, 10, until).await.unwrap();
    let second: Vec<_> = second.iter().map(|j| j.id).collect();
    assert_eq!(second, vec![stored[2].id, stored[3].id], "leased jobs are skipped");
    assert!(b.embeddings.claim_jobs(now, 10, until).await.unwrap().is_empty(), "everything is leased");
    assert!(b.embeddings.due_jobs(now, 10).await.unwrap().is_empty(), "leased jobs are not due");
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await.pending, 4, "leased jobs are still pending");
    // Completing and failing end the lease.
    b.embeddings.complete_jobs(vec![(stored[0].id, embedding("m1", 0))]).await.unwrap();
    b.embeddings.fail_jobs(vec![stored[1].id], "boom".into(), now).await.unwrap();
    let again = b.embeddings.claim_jobs(now, 10, until).await.unwrap();
    assert_eq!(again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(), vec![(stored[1].id, 1)]);
    // A crashed worker's jobs come back once the lease has run out.
    let after = until + time::Duration::seconds(1);
    let back = b.embeddings.claim_jobs(after, 10, after + time::Duration::minutes(5)).await.unwrap();
    let back: BTreeSet<_> = back.iter().map(|j| j.id).collect();
    let expected: BTreeSet<_> = stored[1..].iter().map(|m| m.id).collect();
    assert_eq!(back, expected, "expired leases are handed out again");
}
