//! Contract cases of deleting a thread, across every port at once:
//! [`crate::ThreadStore::delete`] marks the thread and from then on every
//! port answers for it as for a thread that never existed;
//! [`crate::ThreadStore::sweep_deleted`] removes what is left a bounded chunk
//! at a time. Each `pub async fn` here takes a fresh [`Backend`]; adding a
//! case means adding its name to `contract_suite!` too (the completeness test
//! fails otherwise).

use memlayer_domain::{
    AgentName, Direction, Message, NewMessage, NewThread, ResourceId, Role, TenantId, ThreadFilter, ThreadId,
    ThreadPatch,
};
use serde_json::json;

use super::Backend;
use super::embedding_cases::{embedding, far_future, progress, unique_word, whole_tenant};
use super::support::{assert_invalid, assert_not_found, msgs, size, tenant, thread};

/// A thread with five messages (the first embedded with `m1`) and a saved
/// agent state, in resource `r1`: what the deletion cases delete.
async fn doomed_thread(b: &Backend, t: &TenantId, words: std::ops::Range<usize>) -> (ThreadId, Vec<Message>) {
    let new = NewThread { resource_id: Some(ResourceId::parse("r1").unwrap()), ..Default::default() };
    let id = b.threads.create(t, new).await.unwrap().id;
    let batch = words.map(|i| NewMessage::text(Role::User, format!("kettle {}", unique_word(i))).unwrap()).collect();
    let stored = b.messages.append(t, id, batch).await.unwrap();
    b.embeddings.complete_jobs(vec![(stored[0].id, embedding("m1", 0))]).await.unwrap();
    b.states.save(t, id, &AgentName::parse("a1").unwrap(), json!({"x": 1}), 0).await.unwrap();
    (id, stored)
}

/// `ThreadStore::delete` only marks the thread, and from then on every port
/// answers for it as for a thread that never existed, before any sweep.
pub async fn deleted_thread_is_missing_everywhere_at_once(b: Backend) {
    let t = tenant("acme");
    let (gone, doomed) = doomed_thread(&b, &t, 0..5).await;
    let (keep, kept) = doomed_thread(&b, &t, 10..15).await;
    let before = progress(&b, &whole_tenant(&t), "m1").await;
    b.threads.delete(&t, gone).await.unwrap();
    let agent = AgentName::parse("a1").unwrap();
    assert_not_found(b.threads.get(&t, gone).await, "get");
    assert_not_found(
        b.threads.update(&t, gone, ThreadPatch { title: Some(None), ..Default::default() }).await,
        "update",
    );
    assert_not_found(b.threads.delete(&t, gone).await, "second delete");
    let listed = b.threads.list(&t, &ThreadFilter::default(), None, size(100)).await.unwrap();
    assert_eq!(listed.items.iter().map(|th| th.id).collect::<Vec<_>>(), vec![keep], "listing");
    let by_resource = ThreadFilter { resource_id: Some(ResourceId::parse("r1").unwrap()), ..Default::default() };
    let listed = b.threads.list(&t, &by_resource, None, size(100)).await.unwrap();
    assert_eq!(listed.items.len(), 1, "resource listing");
    assert_not_found(b.messages.append(&t, gone, msgs(0..1)).await, "append");
    assert_not_found(b.messages.page(&t, gone, None, None, size(10)).await, "page");
    assert_not_found(b.messages.page(&t, gone, None, Some(Direction::Backward), size(10)).await, "page backward");
    assert_not_found(b.messages.last(&t, gone, size(10)).await, "last");
    assert_not_found(b.messages.get(&t, doomed[0].id).await, "message get");
    assert_not_found(b.messages.delete(&t, doomed[1].id).await, "message delete");
    let ids = vec![doomed[0].id, kept[0].id, doomed[2].id];
    let many = b.messages.get_many(&t, ids).await.unwrap();
    assert_eq!(many.iter().map(|m| m.id).collect::<Vec<_>>(), vec![kept[0].id], "get_many");
    let windows =
        vec![crate::SeqRange { thread: gone, from: 1, to: 5 }, crate::SeqRange { thread: keep, from: 1, to: 2 }];
    let read = b.messages.read_windows(&t, windows, usize::MAX).await.unwrap();
    assert!(read.messages.iter().all(|m| m.thread_id == keep) && read.messages.len() == 2, "read_windows");
    assert_not_found(b.states.load(&t, gone, &agent).await, "state load");
    assert_not_found(b.states.save(&t, gone, &agent, json!({"x": 2}), 1).await, "state save");
    // Search, counts and the embedding queue.
    let resource = b.threads.resource_threads(&t, &ResourceId::parse("r1").unwrap()).await.unwrap();
    assert_eq!(resource, vec![keep], "resource_threads");
    for filter in [whole_tenant(&t), crate::SearchFilter::these_threads(t.clone(), vec![gone, keep])] {
        let hits = b.embeddings.lexical_search(&filter, "kettle".into(), 100).await.unwrap();
        assert_eq!(hits.len(), 5, "lexical search sees only the live thread: {hits:?}");
        assert!(hits.iter().all(|h| h.thread == keep));
    }
    let only = crate::SearchFilter::these_threads(t.clone(), vec![gone]);
    assert!(b.embeddings.lexical_search(&only, "kettle".into(), 100).await.unwrap().is_empty());
    assert_eq!(progress(&b, &only, "m1").await, memlayer_domain::EmbeddingCounts::default(), "counts of the thread");
    let after = progress(&b, &whole_tenant(&t), "m1").await;
    assert_eq!(after.embedded, before.embedded - 1, "tenant counts lose its vector");
    assert_eq!(after.pending, before.pending - 4, "and its pending messages");
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert_eq!(due.len(), 4, "due jobs: only the live thread's");
    assert!(due.iter().all(|j| j.thread == keep));
    let far = far_future();
    let claimed = b.embeddings.claim_jobs(memlayer_domain::now(), 100, far).await.unwrap();
    assert!(claimed.iter().all(|j| j.thread == keep), "claimed jobs");
    let stored = b.embeddings.complete_jobs(vec![(doomed[3].id, embedding("m1", 3))]).await.unwrap();
    assert!(stored.is_empty(), "completing a deleted thread's job stores nothing");
    let (scanned, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert_eq!(scanned.iter().map(|e| e.id).collect::<Vec<_>>(), vec![kept[0].id], "scan_vectors");
    // The live thread's one vector of m1 is queued again for m2, the deleted
    // thread's is not.
    assert_eq!(b.embeddings.enqueue_missing("m2".into()).await.unwrap(), 1, "enqueue_missing");
}

/// `ThreadStore::sweep_deleted` removes marked threads a bounded chunk per
/// call, reports what it did, and leaves live threads alone; a sweep cut
/// short (one chunk, then a new caller) continues where it stopped.
pub async fn sweep_removes_deleted_threads_in_chunks(b: Backend) {
    let (t, u) = (tenant("acme"), tenant("other"));
    assert_invalid(b.threads.sweep_deleted(0).await, "a chunk of 0");
    assert_eq!(b.threads.sweep_deleted(3).await.unwrap(), crate::Sweep::default(), "nothing marked");
    let (gone, _) = doomed_thread(&b, &t, 0..5).await;
    b.messages.append(&t, gone, msgs(0..2)).await.unwrap();
    let (keep, kept) = doomed_thread(&b, &t, 10..15).await;
    let empty = thread(&b, &u).await;
    b.threads.delete(&t, gone).await.unwrap();
    b.threads.delete(&u, empty).await.unwrap();
    let live = progress(&b, &whole_tenant(&t), "m1").await;
    // Seven messages in chunks of 3: the oldest mark first.
    let first = b.threads.sweep_deleted(3).await.unwrap();
    assert_eq!(first, crate::Sweep { messages: 3, threads: 0, more: true });
    // Cut short here: still missing for every caller, nothing live touched.
    assert_not_found(b.threads.get(&t, gone).await, "partly swept thread");
    assert_not_found(b.messages.page(&t, gone, None, None, size(10)).await, "partly swept thread's messages");
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await, live, "counts unchanged by the sweep");
    let rest = b.threads.sweep_deleted(3).await.unwrap();
    assert_eq!(rest, crate::Sweep { messages: 3, threads: 0, more: true });
    let last = b.threads.sweep_deleted(3).await.unwrap();
    assert_eq!(last, crate::Sweep { messages: 1, threads: 1, more: true }, "the thread goes with its last chunk");
    let other = b.threads.sweep_deleted(3).await.unwrap();
    assert_eq!(other, crate::Sweep { messages: 0, threads: 1, more: false }, "another tenant's empty thread");
    assert_eq!(b.threads.sweep_deleted(3).await.unwrap(), crate::Sweep::default());
    // Nothing of it is left that any port can reach; the live thread is whole.
    assert_eq!(progress(&b, &whole_tenant(&t), "m1").await, live);
    let (scanned, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert_eq!(scanned.iter().map(|e| e.id).collect::<Vec<_>>(), vec![kept[0].id]);
    let due = b.embeddings.due_jobs(memlayer_domain::now(), 100).await.unwrap();
    assert!(due.iter().all(|j| j.thread == keep) && due.len() == 4);
    let hits = b.embeddings.lexical_search(&whole_tenant(&t), "kettle".into(), 100).await.unwrap();
    assert!(hits.iter().all(|h| h.thread == keep) && hits.len() == 5);
    assert_eq!(b.messages.last(&t, keep, size(10)).await.unwrap(), kept, "the live thread is untouched");
    assert!(b.states.load(&t, keep, &AgentName::parse("a1").unwrap()).await.unwrap().is_some());
    assert_not_found(b.threads.get(&t, gone).await, "swept thread");
    assert_not_found(b.threads.delete(&t, gone).await, "delete of a swept thread");
    // New messages after the sweep are indexed and queued as usual.
    let next = b.messages.append(&t, keep, vec![NewMessage::text(Role::User, "kettle fresh").unwrap()]).await.unwrap();
    let hits = b.embeddings.lexical_search(&whole_tenant(&t), "fresh".into(), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![next[0].id]);
}
