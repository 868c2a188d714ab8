//! Contract cases of [`crate::ThreadStore`]. Each `pub async fn` here takes a
//! fresh [`Backend`] and checks one group of "MUST" sentences from the port
//! docs. Adding a case means adding its name to `contract_suite!` too (the
//! completeness test fails otherwise).

use std::time::Duration;

use memlayer_domain::{
    AgentName, Direction, Metadata, MetadataFilter, NewThread, ResourceId, ThreadFilter, ThreadId, ThreadPatch, Title,
};
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, msgs, size, tenant, thread};

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
