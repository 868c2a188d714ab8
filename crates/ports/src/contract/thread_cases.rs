//! Contract cases of [`crate::ThreadStore`]. Each `pub async fn` here takes a
//! fresh [`Backend`] and checks one group of "MUST" sentences from the port
//! docs. Adding a case means adding its name to `contract_suite!` too (the
//! completeness test fails otherwise).

use std::collections::BTreeSet;
use std::time::Duration;

use memlayer_domain::{
    AgentName, Direction, FORKED_FROM_KEY, ForkThread, Message, Metadata, MetadataFilter, NewMessage, NewThread,
    ResourceId, Role, ThreadFilter, ThreadId, ThreadPatch, Title, TokenCount, ToolCall, WorkingContent, WorkingScope,
};
use serde_json::json;

use super::Backend;
use super::embedding_cases::{embedding, far_future, progress};
use super::support::{assert_invalid, assert_not_found, msgs, size, tenant, thread};
use crate::StoreError;

pub async fn thread_create_returns_whole_thread(b: Backend) {
    let t = tenant("acme");
    let mut meta = serde_json::Map::new();
    meta.insert("topic".into(), json!("billing"));
    let new = NewThread {
        resource_id: Some(ResourceId::parse("user-1").unwrap()),
        agent_id: Some(AgentName::parse("support").unwrap()),
        title: Some(Title::parse("Refund").unwrap()),
        model: Some("gpt-4o".into()),
        metadata: Metadata::from_value(serde_json::Value::Object(meta)).unwrap(),
    };
    let created = b.threads.create(&t, new.clone()).await.unwrap();
    assert_eq!(created.tenant, t);
    assert_eq!(created.resource_id, new.resource_id);
    assert_eq!(created.agent_id, new.agent_id);
    assert_eq!(created.title, new.title);
    assert_eq!(created.model, new.model);
    assert_eq!(created.metadata, new.metadata);
    assert_eq!(created.last_seq, 0);
    assert_eq!(created.created_at, created.updated_at);
    let got = b.threads.get(&t, created.id).await.unwrap();
    assert_eq!(got, created, "get returns what create returned");
    let second = b.threads.create(&t, NewThread::default()).await.unwrap();
    assert!(second.id > created.id, "ids are time-ordered");
}

pub async fn thread_missing_or_foreign_is_not_found(b: Backend) {
    let (a, other) = (tenant("a"), tenant("b"));
    let id = thread(&b, &a).await;
    assert_not_found(b.threads.get(&a, ThreadId::new()).await, "missing thread");
    assert_not_found(b.threads.get(&other, id).await, "foreign thread get");
    assert_not_found(
        b.threads
            .update(&other, id, ThreadPatch { title: Some(Some(Title::parse("x").unwrap())), ..Default::default() })
            .await,
        "foreign thread update",
    );
    assert_not_found(b.threads.delete(&other, id).await, "foreign thread delete");
    assert_not_found(b.messages.page(&other, id, None, None, size(10)).await, "foreign page");
    assert_not_found(b.messages.last(&other, id, size(10)).await, "foreign last");
    assert!(b.threads.get(&a, id).await.is_ok(), "owner still sees it");
}

pub async fn thread_update_patches_and_bumps_updated_at(b: Backend) {
    let t = tenant("acme");
    let created = b
        .threads
        .create(
            &t,
            NewThread { title: Some(Title::parse("old").unwrap()), model: Some("gpt-4".into()), ..Default::default() },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let patch = ThreadPatch {
        title: Some(Some(Title::parse("new").unwrap())),
        model: Some(None),
        metadata: Some(Metadata::from_value(json!({"k": [1, 2]})).unwrap()),
        ..Default::default()
    };
    let updated = b.threads.update(&t, created.id, patch).await.unwrap();
    assert_eq!(updated.title.as_ref().map(Title::as_str), Some("new"));
    assert_eq!(updated.model, None, "Some(None) clears");
    assert_eq!(updated.metadata.as_map().get("k"), Some(&json!([1, 2])));
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at > created.updated_at, "updated_at moves forward");
    assert_eq!(b.threads.get(&t, created.id).await.unwrap(), updated);
    // `pinned` alone sets that one key and keeps the others; with
    // `metadata` it goes into the new object.
    let pinned = b.threads.update(&t, created.id, ThreadPatch { pinned: Some(true), ..Default::default() }).await;
    let pinned = pinned.unwrap();
    assert_eq!(pinned.metadata.as_map().get("k"), Some(&json!([1, 2])), "kept");
    assert_eq!(pinned.metadata.as_map().get("pinned"), Some(&json!(true)));
    assert_eq!(pinned.title, updated.title);
    let patch = ThreadPatch {
        metadata: Some(Metadata::from_value(json!({"x": 1})).unwrap()),
        pinned: Some(false),
        ..Default::default()
    };
    let replaced = b.threads.update(&t, created.id, patch).await.unwrap();
    assert_eq!(replaced.metadata.as_map().get("pinned"), Some(&json!(false)));
    assert_eq!((replaced.metadata.as_map().get("x"), replaced.metadata.as_map().len()), (Some(&json!(1)), 2));
    assert_eq!(b.threads.get(&t, created.id).await.unwrap(), replaced);
}

pub async fn thread_empty_patch_changes_nothing(b: Backend) {
    let t = tenant("acme");
    let created = b.threads.create(&t, NewThread::default()).await.unwrap();
    let same = b.threads.update(&t, created.id, ThreadPatch::default()).await.unwrap();
    assert_eq!(same, created);
}

pub async fn thread_delete_removes_messages_and_state(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let keep = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..5)).await.unwrap();
    b.messages.append(&t, keep, msgs(0..2)).await.unwrap();
    let agent = AgentName::parse("a1").unwrap();
    b.states.save(&t, id, &agent, json!({"x": 1}), 0).await.unwrap();
    b.threads.delete(&t, id).await.unwrap();
    assert_not_found(b.threads.get(&t, id).await, "deleted thread");
    assert_not_found(b.messages.page(&t, id, None, None, size(10)).await, "deleted thread's messages");
    assert_not_found(b.messages.get(&t, stored[0].id).await, "deleted message by id");
    assert_not_found(b.states.load(&t, id, &agent).await, "deleted thread's state");
    assert_not_found(b.threads.delete(&t, id).await, "second delete");
    assert_eq!(b.messages.last(&t, keep, size(10)).await.unwrap().len(), 2, "other threads untouched");
}

pub async fn thread_list_pages_newest_first_without_gaps(b: Backend) {
    let t = tenant("acme");
    let mut ids = Vec::new();
    for _ in 0..23 {
        ids.push(thread(&b, &t).await);
    }
    thread(&b, &tenant("other")).await;
    ids.reverse();
    let filter = ThreadFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.threads.list(&t, &filter, cursor, size(5)).await.unwrap();
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|th| th.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every thread once, newest first, only this tenant's");
    let exact = b.threads.list(&t, &filter, None, size(23)).await.unwrap();
    assert_eq!(exact.items.len(), 23);
    assert!(exact.next_cursor.is_none(), "no cursor when nothing more matches");
}

pub async fn thread_list_filters(b: Backend) {
    let t = tenant("acme");
    let u1 = ResourceId::parse("u1").unwrap();
    let support = AgentName::parse("support").unwrap();
    let mk = |r: Option<&ResourceId>, a: Option<&AgentName>, m: serde_json::Value| NewThread {
        resource_id: r.cloned(),
        agent_id: a.cloned(),
        metadata: Metadata::from_value(m).unwrap(),
        ..Default::default()
    };
    let t1 = b.threads.create(&t, mk(Some(&u1), Some(&support), json!({"lang": "en", "n": 1}))).await.unwrap().id;
    let t2 = b.threads.create(&t, mk(Some(&u1), None, json!({"lang": "fr", "n": 2}))).await.unwrap().id;
    let t3 = b.threads.create(&t, mk(None, Some(&support), json!({"lang": "en", "vip": true}))).await.unwrap().id;
    let check = |filter: ThreadFilter, expect: Vec<ThreadId>| {
        let b = b.clone();
        let t = t.clone();
        async move {
            let got: Vec<_> =
                b.threads.list(&t, &filter, None, size(50)).await.unwrap().items.iter().map(|x| x.id).collect();
            assert_eq!(got, expect, "filter {filter:?}");
        }
    };
    let meta = |k: &str, v: serde_json::Value| MetadataFilter::new(k, v).unwrap();
    check(ThreadFilter { resource_id: Some(u1.clone()), ..Default::default() }, vec![t2, t1]).await;
    check(ThreadFilter { agent_id: Some(support.clone()), ..Default::default() }, vec![t3, t1]).await;
    check(
        ThreadFilter { resource_id: Some(u1.clone()), agent_id: Some(support.clone()), ..Default::default() },
        vec![t1],
    )
    .await;
    check(ThreadFilter { metadata: vec![meta("lang", json!("en"))], ..Default::default() }, vec![t3, t1]).await;
    check(ThreadFilter { metadata: vec![meta("n", json!(2))], ..Default::default() }, vec![t2]).await;
    check(ThreadFilter { metadata: vec![meta("n", json!("2"))], ..Default::default() }, vec![]).await;
    check(ThreadFilter { metadata: vec![meta("vip", json!(true))], ..Default::default() }, vec![t3]).await;
    check(
        ThreadFilter { metadata: vec![meta("lang", json!("en")), meta("n", json!(1))], ..Default::default() },
        vec![t1],
    )
    .await;
    check(ThreadFilter { metadata: vec![meta("missing", json!("x"))], ..Default::default() }, vec![]).await;
    let many = |n: usize| ThreadFilter {
        metadata: (0..n).map(|i| meta(&format!("k{i}"), json!(i))).collect(),
        ..Default::default()
    };
    check(many(memlayer_domain::MAX_FILTERS), vec![]).await;
    assert_invalid(b.threads.list(&t, &many(memlayer_domain::MAX_FILTERS + 1), None, size(50)).await, "17 filters");
    assert_invalid(b.threads.list(&t, &many(600), None, size(50)).await, "600 filters");
}

pub async fn thread_list_rejects_foreign_cursor(b: Backend) {
    let t = tenant("acme");
    for _ in 0..3 {
        thread(&b, &t).await;
    }
    let page = b.threads.list(&t, &ThreadFilter::default(), None, size(1)).await.unwrap();
    let cursor = page.next_cursor.unwrap();
    assert_invalid(
        b.threads.list(&tenant("other"), &ThreadFilter::default(), Some(cursor), size(1)).await,
        "other tenant",
    );
    let filtered = ThreadFilter { resource_id: Some(ResourceId::parse("u").unwrap()), ..Default::default() };
    assert_invalid(b.threads.list(&t, &filtered, Some(cursor), size(1)).await, "other filter");
    let id = thread(&b, &t).await;
    let mcursor = memlayer_domain::Cursor::messages(id, Direction::Forward, 0);
    assert_invalid(b.threads.list(&t, &ThreadFilter::default(), Some(mcursor), size(1)).await, "message cursor");
}

/// A source thread for the fork cases: six messages of every kind (tool
/// calls, metadata, token counts), the third deleted, the first two
/// embedded with `m1`, an agent state at version 2 and a thread working
/// memory at version 2.
pub(super) async fn fork_source(b: &Backend, t: &memlayer_domain::TenantId) -> (memlayer_domain::Thread, Vec<Message>) {
    let mut meta = serde_json::Map::new();
    meta.insert("lang".into(), json!("en"));
    let new = NewThread {
        resource_id: Some(ResourceId::parse("user-1").unwrap()),
        agent_id: Some(AgentName::parse("support").unwrap()),
        title: Some(Title::parse("Refund").unwrap()),
        model: Some("gpt-4o".into()),
        metadata: Metadata::from_value(serde_json::Value::Object(meta)).unwrap(),
    };
    let source = b.threads.create(t, new).await.unwrap();
    let call = ToolCall { id: "c1".into(), name: "lookup".into(), arguments: json!({"order": "A-17"}) };
    let count = TokenCount { count: 7, model: "gpt-4o".into(), encoding: "o200k_base".into(), exact: true };
    let batch = vec![
        NewMessage::new(
            Role::User,
            "where is my kettle refund",
            None,
            None,
            Vec::new(),
            Metadata::from_value(json!({"k": 1})).unwrap(),
        )
        .unwrap()
        .with_token_count(count),
        NewMessage::new(Role::Assistant, "", None, None, vec![call], Metadata::default()).unwrap(),
        NewMessage::text(Role::User, "doomed words").unwrap(),
        NewMessage::new(
            Role::Tool,
            "refund sent monday",
            Some("c1".into()),
            Some("lookup".into()),
            Vec::new(),
            Metadata::default(),
        )
        .unwrap(),
        NewMessage::text(Role::Assistant, "your zanzibarian refund was sent").unwrap(),
        NewMessage::text(Role::User, "after the fork point").unwrap(),
    ];
    // The first state and document are saved after seq 2, the second ones
    // after seq 6: a fork at 2..=5 takes the first ones.
    let mut batch = batch;
    let later = batch.split_off(2);
    let mut stored = b.messages.append(t, source.id, batch).await.unwrap();
    let agent = AgentName::parse("support").unwrap();
    let scope = WorkingScope::Thread(source.id);
    b.states.save(t, source.id, &agent, json!({"step": 1}), 0).await.unwrap();
    b.working.put_working(t, &scope, WorkingContent::Json(json!({"name": "Ada"})), 0, 10).await.unwrap();
    stored.extend(b.messages.append(t, source.id, later).await.unwrap());
    b.messages.delete(t, stored[2].id).await.unwrap();
    b.embeddings
        .complete_jobs(vec![(stored[0].id, embedding("m1", 1)), (stored[1].id, embedding("m1", 2))])
        .await
        .unwrap();
    b.states.save(t, source.id, &agent, json!({"step": 2}), 1).await.unwrap();
    b.working.put_working(t, &scope, WorkingContent::Json(json!({"name": "Ada", "tz": "CET"})), 1, 10).await.unwrap();
    let summary = |text: &str, through: i64| memlayer_domain::NewSummary {
        text: text.into(),
        covers_through: through,
        newly_covered: 1,
        summarizer: "test".into(),
    };
    b.summaries.save_summary(t, source.id, summary("up to four", 4), 0).await.unwrap();
    b.summaries.save_summary(t, source.id, summary("up to six", 6), 1).await.unwrap();
    let source = b.threads.get(t, source.id).await.unwrap();
    (source, stored)
}

/// All of a thread's messages, oldest first.
async fn all_messages(b: &Backend, t: &memlayer_domain::TenantId, id: ThreadId) -> Vec<Message> {
    b.messages.page(t, id, None, None, size(100)).await.unwrap().items
}

/// `ThreadStore::fork` copies messages up to `at_seq` exactly (new ids in
/// seq order, same seqs, every field; deleted ones not), their vectors, a
/// pending embedding for the others, agent state and working memory as of
/// `at_seq` at version 1 (the current ones for the whole thread, none
/// before the first save), names its source, leaves the source untouched,
/// and the copies are found by lexical search.
pub async fn thread_fork_copies_up_to_at_seq_exactly(b: Backend) {
    let t = tenant("acme");
    let (source, stored) = fork_source(&b, &t).await;
    let before = all_messages(&b, &t, source.id).await;
    let request = ForkThread::new(Some(5), None).unwrap();
    let fork = b.threads.fork(&t, source.id, request).await.unwrap();
    let forked = &fork.thread;
    assert_ne!(forked.id, source.id);
    assert_eq!(b.threads.get(&t, forked.id).await.unwrap(), *forked, "the returned thread is the stored one");
    assert_eq!(
        (&forked.resource_id, &forked.agent_id, &forked.model, forked.last_seq),
        (&source.resource_id, &source.agent_id, &source.model, 5)
    );
    assert_eq!(forked.title.as_ref().map(Title::as_str), Some("Refund (fork)"));
    assert_eq!(forked.metadata.as_map()["lang"], json!("en"));
    assert_eq!(forked.metadata.as_map()[FORKED_FROM_KEY], json!({"thread_id": source.id.to_string(), "at_seq": 5}));

    let copies = all_messages(&b, &t, forked.id).await;
    assert_eq!(fork.messages, 4);
    assert_eq!(copies.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 4, 5], "deleted seq 3 stays a gap");
    let originals: Vec<&Message> = before.iter().filter(|m| m.seq <= 5).collect();
    for (copy, original) in copies.iter().zip(&originals) {
        assert_ne!(copy.id, original.id);
        assert_eq!(copy.thread_id, forked.id);
        let same = Message { id: original.id, thread_id: original.thread_id, ..copy.clone() };
        assert_eq!(&same, *original, "every field but id and thread is copied");
    }
    assert!(copies.windows(2).all(|p| p[0].id < p[1].id), "new ids are time-ordered in seq order");
    let ids: BTreeSet<_> = before.iter().map(|m| m.id).collect();
    assert!(copies.iter().all(|m| !ids.contains(&m.id)));

    let mut vectors = fork.vectors.clone();
    vectors.sort_by_key(|v| v.id);
    assert_eq!(vectors.len(), 2, "the two embedded messages' vectors, returned for the index");
    for (v, (copy, seed)) in vectors.iter().zip([(&copies[0], 1), (&copies[1], 2)]) {
        assert_eq!((v.id, v.thread, &v.tenant), (copy.id, forked.id, &t));
        assert_eq!(v.embedding, embedding("m1", seed), "copied, not recomputed");
    }
    let scanned = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap().0;
    let of_fork: Vec<_> = scanned.iter().filter(|v| v.thread == forked.id).collect();
    assert_eq!(of_fork.len(), 2, "stored vectors of the fork");
    let counts = progress(&b, &crate::SearchFilter::these_threads(t.clone(), vec![forked.id]), "m1").await;
    assert_eq!((counts.embedded, counts.pending), (2, 2), "copies without a vector wait for one");
    let due = b.embeddings.due_jobs(far_future(), 100).await.unwrap();
    let mut due_of_fork: Vec<_> = due.iter().filter(|j| j.thread == forked.id).map(|j| j.id).collect();
    due_of_fork.sort();
    assert_eq!(due_of_fork, vec![copies[2].id, copies[3].id], "jobs for exactly the copies without a vector");

    let only_fork = crate::SearchFilter::these_threads(t.clone(), vec![forked.id]);
    let hits = b.embeddings.lexical_search(&only_fork, "zanzibarian".into(), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![copies[3].id], "copies are searchable");
    let hits = b.embeddings.lexical_search(&only_fork, "fork point".into(), 10).await.unwrap();
    assert!(hits.is_empty(), "nothing after at_seq is copied");

    let agent = AgentName::parse("support").unwrap();
    let state = b.states.load(&t, forked.id, &agent).await.unwrap().unwrap();
    assert_eq!((state.state, state.version), (json!({"step": 1}), 1), "the state as of seq 5, saved after seq 2");
    let scope = WorkingScope::Thread(forked.id);
    let working = b.working.get_working(&t, &scope).await.unwrap().unwrap();
    assert_eq!(
        (working.content, working.version),
        (WorkingContent::Json(json!({"name": "Ada"})), 1),
        "the document as of seq 5, written after seq 2"
    );
    assert_eq!(b.working.working_versions(&t, &scope, 10).await.unwrap().len(), 1, "that document only");
    let summary = b.summaries.current_summary(&t, forked.id).await.unwrap().unwrap();
    assert_eq!(
        (summary.text.as_str(), summary.covers_through, summary.version),
        ("up to four", 4, 1),
        "the newest summary as of at_seq, not the newer one covering seq 6"
    );
    assert_eq!(b.summaries.summary_versions(&t, forked.id, 10).await.unwrap().len(), 1);

    assert_eq!(all_messages(&b, &t, source.id).await, before, "source messages untouched");
    let src = b.threads.get(&t, source.id).await.unwrap();
    assert_eq!((src.last_seq, &src.metadata), (6, &source.metadata));
    assert_eq!(b.states.load(&t, source.id, &agent).await.unwrap().unwrap().version, 2);
    let src_scope = WorkingScope::Thread(source.id);
    assert_eq!(b.working.get_working(&t, &src_scope).await.unwrap().unwrap().version, 2);
    assert_eq!(b.messages.get(&t, stored[0].id).await.unwrap().thread_id, source.id);

    let next = b.messages.append(&t, forked.id, msgs(0..1)).await.unwrap();
    assert_eq!(next[0].seq, 6, "the fork continues after at_seq");
    let whole = b.threads.fork(&t, source.id, ForkThread::default()).await.unwrap();
    assert_eq!((whole.thread.last_seq, whole.messages), (6, 5), "no at_seq: the whole thread");
    let newest = b.summaries.current_summary(&t, whole.thread.id).await.unwrap().unwrap();
    assert_eq!(newest.text, "up to six");
    let current = b.states.load(&t, whole.thread.id, &agent).await.unwrap().unwrap();
    assert_eq!((current.state, current.version), (json!({"step": 2}), 1), "the whole thread: the current state");
    let whole_scope = WorkingScope::Thread(whole.thread.id);
    let current = b.working.get_working(&t, &whole_scope).await.unwrap().unwrap();
    assert_eq!(current.content, WorkingContent::Json(json!({"name": "Ada", "tz": "CET"})), "and document");
    let early = b.threads.fork(&t, source.id, ForkThread::new(Some(2), None).unwrap()).await.unwrap();
    assert!(b.summaries.current_summary(&t, early.thread.id).await.unwrap().is_none(), "no summary as of seq 2");
    let state = b.states.load(&t, early.thread.id, &agent).await.unwrap().unwrap();
    assert_eq!(state.state, json!({"step": 1}), "saved while the last seq was 2");
    let first = b.threads.fork(&t, source.id, ForkThread::new(Some(1), None).unwrap()).await.unwrap();
    assert_eq!(b.states.load(&t, first.thread.id, &agent).await.unwrap(), None, "no state as of seq 1");
    let first_scope = WorkingScope::Thread(first.thread.id);
    assert_eq!(b.working.get_working(&t, &first_scope).await.unwrap(), None, "no document as of seq 1");
    // A fork's own history dates what it copied by the seq it was saved at,
    // so a fork of the fork is as exact.
    let again = b.threads.fork(&t, forked.id, ForkThread::new(Some(2), None).unwrap()).await.unwrap();
    assert_eq!(b.states.load(&t, again.thread.id, &agent).await.unwrap().unwrap().state, json!({"step": 1}));
    let again_scope = WorkingScope::Thread(again.thread.id);
    assert!(b.working.get_working(&t, &again_scope).await.unwrap().is_some());
    let again = b.threads.fork(&t, forked.id, ForkThread::new(Some(1), None).unwrap()).await.unwrap();
    assert_eq!(b.states.load(&t, again.thread.id, &agent).await.unwrap(), None);

    // Of several saves while the last seq stood still, the last one; a
    // document version no longer kept is not copied.
    let id = thread(&b, &t).await;
    let scope = WorkingScope::Thread(id);
    b.messages.append(&t, id, msgs(0..1)).await.unwrap();
    b.states.save(&t, id, &agent, json!({"step": "a"}), 0).await.unwrap();
    b.states.save(&t, id, &agent, json!({"step": "b"}), 1).await.unwrap();
    b.working.put_working(&t, &scope, WorkingContent::Markdown("one".into()), 0, 1).await.unwrap();
    b.messages.append(&t, id, msgs(1..2)).await.unwrap();
    b.states.save(&t, id, &agent, json!({"step": "c"}), 2).await.unwrap();
    b.working.put_working(&t, &scope, WorkingContent::Markdown("two".into()), 1, 1).await.unwrap();
    let at_one = b.threads.fork(&t, id, ForkThread::new(Some(1), None).unwrap()).await.unwrap();
    assert_eq!(b.states.load(&t, at_one.thread.id, &agent).await.unwrap().unwrap().state, json!({"step": "b"}));
    let at_one_scope = WorkingScope::Thread(at_one.thread.id);
    assert_eq!(b.working.get_working(&t, &at_one_scope).await.unwrap(), None, "version 1 is no longer kept");
}

/// `ThreadStore::fork` refuses an `at_seq` beyond the thread (naming it),
/// a missing, foreign or deleted source, and creates nothing then; a fork
/// of an empty thread is an empty thread.
pub async fn thread_fork_refuses_beyond_missing_and_foreign(b: Backend) {
    let t = tenant("acme");
    let (source, _) = fork_source(&b, &t).await;
    let listed = || async { b.threads.list(&t, &ThreadFilter::default(), None, size(100)).await.unwrap().items.len() };
    let threads_before = listed().await;
    let r = b.threads.fork(&t, source.id, ForkThread::new(Some(7), None).unwrap()).await;
    match r {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "at_seq"),
        other => panic!("at_seq beyond the thread: expected Invalid on at_seq, got {other:?}"),
    }
    assert_not_found(b.threads.fork(&tenant("other"), source.id, ForkThread::default()).await, "foreign");
    assert_not_found(b.threads.fork(&t, ThreadId::new(), ForkThread::default()).await, "missing");
    assert_eq!(listed().await, threads_before, "a refused fork creates no thread");
    let other = tenant("other");
    assert!(b.threads.list(&other, &ThreadFilter::default(), None, size(10)).await.unwrap().items.is_empty());
    let gone = thread(&b, &t).await;
    b.threads.delete(&t, gone).await.unwrap();
    assert_not_found(b.threads.fork(&t, gone, ForkThread::default()).await, "deleted");

    let empty = thread(&b, &t).await;
    let fork = b.threads.fork(&t, empty, ForkThread::default()).await.unwrap();
    assert_eq!((fork.thread.last_seq, fork.messages, fork.thread.title), (0, 0, None));
    assert!(all_messages(&b, &t, fork.thread.id).await.is_empty());
    assert_invalid(b.threads.fork(&t, empty, ForkThread::new(Some(1), None).unwrap()).await, "beyond an empty thread");
}

/// Migration 25 (agent state's history, working-memory versions' seqs)
/// dates the states and versions it finds by their thread's `last_seq`
/// then: a fork at that seq or later copies them, one before it none, and
/// a save after it is dated as usual. Reverting it keeps the states and
/// documents.
pub async fn thread_fork_dates_what_migration_25_found(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentName::parse("support").unwrap();
    let scope = WorkingScope::Thread(id);
    b.messages.append(&t, id, msgs(0..2)).await.unwrap();
    b.states.save(&t, id, &agent, json!({"step": 1}), 0).await.unwrap();
    b.working.put_working(&t, &scope, WorkingContent::Markdown("one".into()), 0, 10).await.unwrap();
    b.messages.append(&t, id, msgs(2..3)).await.unwrap();
    // Down to just below 25 (whatever came after it), then up again.
    let mut reverted = Vec::new();
    while !reverted.contains(&25) {
        let step = b.database.migrate_down(1).await.unwrap();
        assert_eq!(step.len(), 1, "migration 25 is applied: reverted {reverted:?}");
        reverted.push(step[0].version);
    }
    assert_eq!(b.states.load(&t, id, &agent).await.unwrap().unwrap().state, json!({"step": 1}), "states stay");
    assert_eq!(b.working.get_working(&t, &scope).await.unwrap().unwrap().version, 1, "documents stay");
    let applied: Vec<i64> = b.database.migrate_up().await.unwrap().iter().map(|m| m.version).collect();
    reverted.reverse();
    assert_eq!(applied, reverted);
    b.messages.append(&t, id, msgs(3..4)).await.unwrap();
    let fork_at = |seq| ForkThread::new(Some(seq), None).unwrap();
    let at_three = b.threads.fork(&t, id, fork_at(3)).await.unwrap().thread.id;
    assert_eq!(b.states.load(&t, at_three, &agent).await.unwrap().unwrap().state, json!({"step": 1}));
    let doc = b.working.get_working(&t, &WorkingScope::Thread(at_three)).await.unwrap().unwrap();
    assert_eq!(doc.content, WorkingContent::Markdown("one".into()));
    let at_two = b.threads.fork(&t, id, fork_at(2)).await.unwrap().thread.id;
    assert_eq!(b.states.load(&t, at_two, &agent).await.unwrap(), None, "saved at seq 2, but dated 3: unknown");
    assert_eq!(b.working.get_working(&t, &WorkingScope::Thread(at_two)).await.unwrap(), None);
    b.states.save(&t, id, &agent, json!({"step": 2}), 1).await.unwrap();
    b.messages.append(&t, id, msgs(4..5)).await.unwrap();
    let at_four = b.threads.fork(&t, id, fork_at(4)).await.unwrap().thread.id;
    assert_eq!(b.states.load(&t, at_four, &agent).await.unwrap().unwrap().state, json!({"step": 2}));
}
