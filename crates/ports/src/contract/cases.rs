//! Contract cases. Each `pub async fn` here takes a fresh [`Backend`] and
//! checks one group of "MUST" sentences from the port docs. Adding a case
//! means adding its name to `contract_suite!` too (the completeness test
//! fails otherwise).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::{
    AgentId, Direction, MAX_BATCH, Message, Metadata, MetadataFilter, NewMessage, NewThread, PageSize, ResourceId,
    Role, TenantId, ThreadFilter, ThreadId, ThreadPatch, Title, TokenCount, ToolCall,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use super::Backend;
use crate::StoreError;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn msg(i: usize) -> NewMessage {
    NewMessage::text(Role::User, format!("message {i}")).unwrap()
}

fn msgs(range: std::ops::Range<usize>) -> Vec<NewMessage> {
    range.map(msg).collect()
}

fn size(n: u32) -> PageSize {
    PageSize::new(n).unwrap()
}

async fn thread(b: &Backend, t: &TenantId) -> ThreadId {
    b.threads.create(t, NewThread::default()).await.unwrap().id
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, ctx: &str) {
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{ctx}: expected NotFound, got {r:?}");
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, ctx: &str) {
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{ctx}: expected Invalid, got {r:?}");
}

/// Reads every message of a thread page by page in `dir`, returning the seqs.
async fn read_all(b: &Backend, t: &TenantId, id: ThreadId, dir: Direction, limit: u32) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.messages.page(t, id, cursor, Some(dir), size(limit)).await.unwrap();
        assert!(page.items.len() <= limit as usize, "page larger than its limit");
        seqs.extend(page.items.iter().map(|m| m.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seqs
}

pub async fn thread_create_returns_whole_thread(b: Backend) {
    let t = tenant("acme");
    let mut meta = serde_json::Map::new();
    meta.insert("topic".into(), json!("billing"));
    let new = NewThread {
        resource_id: Some(ResourceId::parse("user-1").unwrap()),
        agent_id: Some(AgentId::parse("support").unwrap()),
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
    let agent = AgentId::parse("a1").unwrap();
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
    let support = AgentId::parse("support").unwrap();
    let mk = |r: Option<&ResourceId>, a: Option<&AgentId>, m: serde_json::Value| NewThread {
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

pub async fn append_assigns_consecutive_seqs_and_bumps_thread(b: Backend) {
    let t = tenant("acme");
    let before = b.threads.create(&t, NewThread::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let first = b.messages.append(&t, before.id, msgs(0..3)).await.unwrap();
    let second = b.messages.append(&t, before.id, msgs(3..4)).await.unwrap();
    let seqs: Vec<_> = first.iter().chain(&second).map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(first[1].content, "message 1", "batch order kept");
    assert!(first.iter().all(|m| m.thread_id == before.id));
    let after = b.threads.get(&t, before.id).await.unwrap();
    assert_eq!(after.last_seq, 4);
    assert!(after.updated_at > before.updated_at, "append bumps updated_at");
    let ids: BTreeSet<_> = first.iter().chain(&second).map(|m| m.id).collect();
    assert_eq!(ids.len(), 4, "distinct ids");
}

pub async fn append_rejects_empty_and_oversized_batch(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    assert_invalid(b.messages.append(&t, id, Vec::new()).await, "empty batch");
    assert_invalid(b.messages.append(&t, id, msgs(0..MAX_BATCH + 1)).await, "oversized batch");
    assert_eq!(b.threads.get(&t, id).await.unwrap().last_seq, 0, "nothing stored");
    assert!(b.messages.last(&t, id, size(10)).await.unwrap().is_empty());
    let full = b.messages.append(&t, id, msgs(0..MAX_BATCH)).await.unwrap();
    assert_eq!(full.len(), MAX_BATCH, "exactly the maximum is accepted");
}

pub async fn append_to_missing_or_foreign_thread_stores_nothing(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    assert_not_found(b.messages.append(&t, ThreadId::new(), msgs(0..2)).await, "missing thread");
    assert_not_found(b.messages.append(&tenant("other"), id, msgs(0..2)).await, "foreign thread");
    assert_eq!(b.threads.get(&t, id).await.unwrap().last_seq, 0);
    assert!(b.messages.last(&t, id, size(10)).await.unwrap().is_empty());
}

pub async fn append_round_trips_every_field(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let call = ToolCall { id: "call_1".into(), name: "weather".into(), arguments: json!({"city": "Zürich"}) };
    let assistant = NewMessage::new(
        Role::Assistant,
        "",
        None,
        None,
        vec![call],
        Metadata::from_value(json!({"latency_ms": 12.5, "nested": {"a": [null, true]}})).unwrap(),
    )
    .unwrap()
    .with_token_count(TokenCount { count: 7, model: "gpt-4o".into(), encoding: "o200k_base".into(), exact: true });
    let tool = NewMessage::new(
        Role::Tool,
        "18°C ☀️ \"quoted\" 'single' \\ back",
        Some("call_1".into()),
        Some("weather".into()),
        vec![],
        Metadata::default(),
    )
    .unwrap();
    let system =
        NewMessage::text(Role::System, "you are helpful\n\ttabs and 日本語").unwrap().with_token_count(TokenCount {
            count: 5,
            model: "claude-3".into(),
            encoding: "estimate:chars/4".into(),
            exact: false,
        });
    let stored = b.messages.append(&t, id, vec![system, assistant, tool]).await.unwrap();
    let read = b.messages.page(&t, id, None, None, size(10)).await.unwrap().items;
    assert_eq!(read, stored, "read back exactly what append returned");
    assert_eq!(read[1].tool_calls[0].arguments, json!({"city": "Zürich"}));
    assert_eq!(read[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(read[2].tool_name.as_deref(), Some("weather"));
    assert!(read[0].token_count.as_ref().is_some_and(|c| !c.exact));
    assert!(read[2].token_count.is_none());
    assert_eq!(b.messages.get(&t, stored[2].id).await.unwrap(), stored[2]);
}

pub async fn page_forward_and_backward_cover_thread_exactly(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    b.messages.append(&t, id, msgs(0..57)).await.unwrap();
    let all: Vec<i64> = (1..=57).collect();
    for limit in [1, 7, 56, 57, 58, 1000] {
        assert_eq!(read_all(&b, &t, id, Direction::Forward, limit).await, all, "forward limit {limit}");
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(read_all(&b, &t, id, Direction::Backward, limit).await, rev, "backward limit {limit}");
    }
    let exact = b.messages.page(&t, id, None, Some(Direction::Forward), size(57)).await.unwrap();
    assert!(exact.next_cursor.is_none(), "no cursor when the page reaches the end");
    let empty_thread = thread(&b, &t).await;
    let empty = b.messages.page(&t, empty_thread, None, None, size(10)).await.unwrap();
    assert!(empty.items.is_empty() && empty.next_cursor.is_none());
}

pub async fn page_rejects_foreign_or_contradicting_cursor(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let other = thread(&b, &t).await;
    b.messages.append(&t, id, msgs(0..5)).await.unwrap();
    b.messages.append(&t, other, msgs(0..5)).await.unwrap();
    let c = b.messages.page(&t, id, None, Some(Direction::Forward), size(2)).await.unwrap().next_cursor.unwrap();
    assert_invalid(b.messages.page(&t, other, Some(c), None, size(2)).await, "other thread's cursor");
    assert_invalid(
        b.messages.page(&t, id, Some(c), Some(Direction::Backward), size(2)).await,
        "contradicting direction",
    );
    let listing = memlayer_domain::Cursor::threads(&t, &ThreadFilter::default(), id);
    assert_invalid(b.messages.page(&t, id, Some(listing), None, size(2)).await, "thread-listing cursor");
    let ok = b.messages.page(&t, id, Some(c), None, size(2)).await.unwrap();
    assert_eq!(ok.items.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4], "direction taken from the cursor");
}

pub async fn last_returns_newest_oldest_first(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    assert!(b.messages.last(&t, id, size(10)).await.unwrap().is_empty());
    b.messages.append(&t, id, msgs(0..25)).await.unwrap();
    let last = b.messages.last(&t, id, size(10)).await.unwrap();
    assert_eq!(last.iter().map(|m| m.seq).collect::<Vec<_>>(), (16..=25).collect::<Vec<_>>());
    assert_eq!(b.messages.last(&t, id, size(100)).await.unwrap().len(), 25);
    assert_not_found(b.messages.last(&t, ThreadId::new(), size(10)).await, "missing thread");
}

pub async fn message_get_is_tenant_scoped(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let m = b.messages.append(&t, id, msgs(0..1)).await.unwrap().remove(0);
    assert_eq!(b.messages.get(&t, m.id).await.unwrap(), m);
    assert_not_found(b.messages.get(&tenant("other"), m.id).await, "foreign message");
    assert_not_found(b.messages.get(&t, memlayer_domain::MessageId::new()).await, "missing message");
}

pub async fn state_save_and_load_versions(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentId::parse("planner").unwrap();
    let other_agent = AgentId::parse("critic").unwrap();
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none());
    let v1 = b.states.save(&t, id, &agent, json!({"step": 1}), 0).await.unwrap();
    assert_eq!((v1.version, &v1.state), (1, &json!({"step": 1})));
    let v2 = b.states.save(&t, id, &agent, json!({"step": 2, "notes": ["a"]}), 1).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(b.states.load(&t, id, &agent).await.unwrap(), Some(v2));
    assert!(b.states.load(&t, id, &other_agent).await.unwrap().is_none(), "state is per agent");
    assert_not_found(b.states.load(&tenant("other"), id, &agent).await, "foreign tenant");
}

pub async fn state_stale_version_conflicts(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentId::parse("planner").unwrap();
    b.states.save(&t, id, &agent, json!({"v": 1}), 0).await.unwrap();
    b.states.save(&t, id, &agent, json!({"v": 2}), 1).await.unwrap();
    for stale in [0, 1, 3, 99] {
        let r = b.states.save(&t, id, &agent, json!({"v": "stale"}), stale).await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "expected {stale} is stale: {r:?}");
    }
    let now = b.states.load(&t, id, &agent).await.unwrap().unwrap();
    assert_eq!((now.version, now.state), (2, json!({"v": 2})), "no lost update");
}

pub async fn state_concurrent_savers_exactly_one_wins(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentId::parse("planner").unwrap();
    b.states.save(&t, id, &agent, json!({"v": 0}), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (b, t, agent) = (b.clone(), t.clone(), agent.clone());
        tasks.push(tokio::spawn(async move { b.states.save(&t, id, &agent, json!({"writer": i}), 1).await }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(s) => {
                wins += 1;
                assert_eq!(s.version, 2);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer of version 1 wins");
}

pub async fn state_rejects_non_object_and_missing_thread(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let agent = AgentId::parse("planner").unwrap();
    assert_invalid(b.states.save(&t, id, &agent, json!([1]), 0).await, "array state");
    assert_invalid(b.states.save(&t, id, &agent, json!("s"), 0).await, "string state");
    assert_not_found(b.states.save(&t, ThreadId::new(), &agent, json!({}), 0).await, "missing thread");
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none(), "nothing stored");
    for absurd in [u64::MAX, i64::MAX as u64, memlayer_domain::AgentState::MAX_EXPECTED_VERSION + 1] {
        assert_invalid(b.states.save(&t, id, &agent, json!({}), absurd).await, "expected version past i64");
    }
    assert!(b.states.load(&t, id, &agent).await.unwrap().is_none(), "nothing stored");
}

/// Runs a small proptest inside the async test, blocking in place.
fn run_prop<S: Strategy>(cases: u32, strategy: S, body: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    tokio::task::block_in_place(|| runner.run(&strategy, body)).unwrap();
}

pub async fn concurrent_appenders_get_gapless_increasing_seqs(b: Backend) {
    let handle = tokio::runtime::Handle::current();
    let strategy = (1usize..5, proptest::collection::vec(1usize..40, 1..6));
    run_prop(6, strategy, |(writers, batches)| {
        handle.block_on(async {
            let t = tenant("acme");
            let id = thread(&b, &t).await;
            let mut tasks = Vec::new();
            for w in 0..writers {
                let (b, t, batches) = (b.clone(), t.clone(), batches.clone());
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    for (k, n) in batches.iter().enumerate() {
                        let batch = (0..*n).map(|i| msg(w * 100_000 + k * 1000 + i)).collect();
                        let stored = b.messages.append(&t, id, batch).await.unwrap();
                        let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
                        assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "one batch is consecutive");
                        got.extend(seqs);
                    }
                    got
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                let mine = task.await.unwrap();
                prop_assert!(mine.windows(2).all(|p| p[1] > p[0]), "each writer sees increasing seqs");
                all.extend(mine);
            }
            all.sort_unstable();
            let total = writers * batches.iter().sum::<usize>();
            prop_assert_eq!(all, (1..=total as i64).collect::<Vec<_>>(), "gapless, no duplicates");
            let read = read_all(&b, &t, id, Direction::Forward, 97).await;
            prop_assert_eq!(read, (1..=total as i64).collect::<Vec<_>>());
            Ok(())
        })
    });
}

pub async fn paging_during_concurrent_appends_never_skips_or_repeats(b: Backend) {
    let handle = tokio::runtime::Handle::current();
    let strategy = (0usize..50, 1u32..30, 1usize..20, prop_oneof![Just(Direction::Forward), Just(Direction::Backward)]);
    run_prop(8, strategy, |(initial, limit, batch, dir)| {
        handle.block_on(async {
            let t = tenant("acme");
            let id = thread(&b, &t).await;
            if initial > 0 {
                b.messages.append(&t, id, msgs(0..initial)).await.unwrap();
            }
            let writer = {
                let (b, t) = (b.clone(), t.clone());
                tokio::spawn(async move {
                    for k in 0..10 {
                        b.messages.append(&t, id, msgs(k * batch..(k + 1) * batch)).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            };
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = b.messages.page(&t, id, cursor, Some(dir), size(limit)).await.unwrap();
                seen.extend(page.items.iter().map(|m| m.seq));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            writer.await.unwrap();
            let unique: BTreeSet<_> = seen.iter().copied().collect();
            prop_assert_eq!(unique.len(), seen.len(), "a message repeated");
            match dir {
                Direction::Forward => {
                    // Forward paging reads a gapless prefix of the thread.
                    prop_assert_eq!(&seen, &(1..=seen.len() as i64).collect::<Vec<_>>());
                    prop_assert!(seen.len() >= initial, "skipped messages that existed before paging");
                }
                Direction::Backward => {
                    // Backward paging reads a gapless run ending at seq 1.
                    prop_assert!(seen.windows(2).all(|p| p[1] == p[0] - 1), "gap or disorder: {seen:?}");
                    prop_assert!(seen.is_empty() || seen.last() == Some(&1));
                    prop_assert!(seen.len() >= initial);
                }
            }
            Ok(())
        })
    });
}

pub async fn database_ping_and_idempotent_migrations(b: Backend) {
    b.database.ping().await.unwrap();
    assert!(!b.database.describe().is_empty());
    let status = b.database.migration_status().await.unwrap();
    assert!(!status.is_empty(), "at least one migration");
    assert!(status.iter().all(|m| m.applied_at.is_some()), "fresh backend is fully migrated");
    assert!(status.windows(2).all(|p| p[0].version < p[1].version), "ordered by version");
    let again = b.database.migrate_up().await.unwrap();
    assert!(again.is_empty(), "nothing pending the second time");
    let _unused: Arc<()> = Arc::new(());
}

fn unit(seed: usize, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|i| (((i + 1) * (seed + 3)) % 17) as f32 - 8.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / n).collect()
}

fn embedding(model: &str, seed: usize) -> memlayer_domain::Embedding {
    memlayer_domain::Embedding::new(model, unit(seed, 8), 8).unwrap()
}

fn whole_tenant(t: &TenantId) -> crate::VectorFilter {
    crate::VectorFilter { tenant: t.clone(), threads: None }
}

/// `embedding_counts`, checked against `coverage` on the same scope.
async fn progress(b: &Backend, filter: &crate::VectorFilter, model: &str) -> memlayer_domain::EmbeddingCounts {
    let counts = b.embeddings.embedding_counts(filter, model.into()).await.unwrap();
    let coverage = b.embeddings.coverage(filter, model.into()).await.unwrap();
    assert_eq!(coverage, counts.into(), "coverage agrees with the counts of {filter:?}");
    counts
}

fn far_future() -> memlayer_domain::Timestamp {
    memlayer_domain::now() + time::Duration::days(3650)
}

pub async fn messages_get_many_range_and_delete(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..6)).await.unwrap();
    let pick = vec![stored[4].id, memlayer_domain::MessageId::new(), stored[1].id];
    let got = b.messages.get_many(&t, pick).await.unwrap();
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![5, 2], "order of ids kept, missing left out");
    assert!(b.messages.get_many(&tenant("other"), vec![stored[0].id]).await.unwrap().is_empty(), "foreign left out");
    let range = b.messages.range(&t, id, 2, 4).await.unwrap();
    assert_eq!(range.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_not_found(b.messages.range(&t, ThreadId::new(), 1, 3).await, "range of a missing thread");
    assert_not_found(b.messages.delete(&tenant("other"), stored[2].id).await, "foreign delete");
    b.messages.delete(&t, stored[2].id).await.unwrap();
    assert_not_found(b.messages.delete(&t, stored[2].id).await, "second delete");
    assert_not_found(b.messages.get(&t, stored[2].id).await, "deleted message");
    let seqs = read_all(&b, &t, id, Direction::Forward, 2).await;
    assert_eq!(seqs, vec![1, 2, 4, 5, 6], "paging skips the deleted message");
    let next = b.messages.append(&t, id, msgs(6..7)).await.unwrap();
    assert_eq!(next[0].seq, 7, "a deleted message's seq is never reused");
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
    let only = |id| crate::VectorFilter { tenant: t.clone(), threads: Some(vec![id]) };
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
    let none = crate::VectorFilter { tenant: t.clone(), threads: Some(vec![]) };
    assert_eq!(progress(&b, &none, "m1").await, memlayer_domain::EmbeddingCounts::default());
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
    let only_id = crate::VectorFilter { tenant: t.clone(), threads: Some(vec![id]) };
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
    let mut got = b.embeddings.resource_threads(&t, &u1).await.unwrap();
    got.sort();
    assert_eq!(got, vec![a, c]);
    assert!(b.embeddings.resource_threads(&t, &ResourceId::parse("nobody").unwrap()).await.unwrap().is_empty());
}

/// A word no other message of a case holds: letters only, so every
/// backend's tokenizer keeps it whole.
fn unique_word(n: usize) -> String {
    let mut word = String::from("zq");
    let mut n = n;
    loop {
        word.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
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

/// A message of `kib` KiB of content.
fn big(kib: usize) -> NewMessage {
    NewMessage::text(Role::User, "x".repeat(kib * 1024)).unwrap()
}

pub async fn message_reads_stop_at_a_byte_budget(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, (0..20).map(|_| big(4)).collect()).await.unwrap();
    let each = stored[0].approx_bytes();
    for dir in [Direction::Forward, Direction::Backward] {
        // Room for three and a half messages: pages of three, each with a
        // cursor after its last message, cover the thread exactly once.
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = b.messages.page_within(&t, id, cursor, Some(dir), size(1000), each * 7 / 2).await.unwrap();
            assert!(!page.items.is_empty(), "{dir:?}: a page is never empty while messages remain");
            assert!(page.items.len() <= 3, "{dir:?}: the budget holds {} messages", page.items.len());
            seen.extend(page.items.iter().map(|m| m.seq));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<i64> = (1..=20).collect();
        if dir == Direction::Backward {
            want.reverse();
        }
        assert_eq!(seen, want, "{dir:?}: every message exactly once");
    }
    // A budget smaller than one message still returns one, with a cursor.
    let one = b.messages.page_within(&t, id, None, None, size(10), 1).await.unwrap();
    assert_eq!(one.items.len(), 1);
    assert!(one.next_cursor.is_some());
    // The limit still applies within the budget; the last page has no cursor.
    let two = b.messages.page_within(&t, id, None, None, size(2), usize::MAX).await.unwrap();
    assert_eq!(two.items.len(), 2);
    let all = b.messages.page_within(&t, id, None, None, size(20), each * 20).await.unwrap();
    assert_eq!((all.items.len(), all.next_cursor), (20, None), "exactly the budget fits everything");
    assert_not_found(b.messages.page_within(&t, ThreadId::new(), None, None, size(10), 1).await, "missing thread");
}

pub async fn read_windows_reads_each_message_once_within_a_budget(b: Backend) {
    use crate::SeqRange;
    let t = tenant("acme");
    let (a, c) = (thread(&b, &t).await, thread(&b, &t).await);
    b.messages.append(&t, a, msgs(0..10)).await.unwrap();
    b.messages.append(&t, c, msgs(0..5)).await.unwrap();
    let foreign = thread(&b, &tenant("other")).await;
    b.messages.append(&tenant("other"), foreign, msgs(0..5)).await.unwrap();
    let w = |thread, from, to| SeqRange { thread, from, to };
    let windows = vec![
        w(a, 6, 8),
        w(c, 1, 2),
        w(a, 2, 7), // overlaps the first: 6 and 7 come once, with the first window
        w(foreign, 1, 5),
        w(ThreadId::new(), 1, 5),
        w(a, 5, 4),
        w(c, 4, 99),
    ];
    let got = b.messages.read_windows(&t, windows.clone(), usize::MAX).await.unwrap();
    let order: Vec<(bool, i64)> = got.messages.iter().map(|m| (m.thread_id == a, m.seq)).collect();
    assert_eq!(
        order,
        vec![
            (true, 6),
            (true, 7),
            (true, 8),
            (false, 1),
            (false, 2),
            (true, 2),
            (true, 3),
            (true, 4),
            (true, 5),
            (false, 4),
            (false, 5)
        ],
        "windows in order, each message once, nothing foreign or missing"
    );
    assert!(!got.truncated);
    // A budget of four messages stops after the fourth, in window order.
    let each = got.messages[0].approx_bytes();
    let cut = b.messages.read_windows(&t, windows.clone(), each * 4 + each / 2).await.unwrap();
    assert!(cut.truncated);
    assert_eq!(
        cut.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        got.messages[..4].iter().map(|m| m.id).collect::<Vec<_>>()
    );
    let none = b.messages.read_windows(&t, windows, 1).await.unwrap();
    assert!(none.truncated && none.messages.is_empty(), "no minimum: a budget below one message reads none");
    assert_eq!(b.messages.read_windows(&t, Vec::new(), 1).await.unwrap(), crate::Windows::default());
    let extremes = vec![w(c, i64::MIN, i64::MAX), w(a, i64::MAX - 1, i64::MAX), w(a, i64::MIN, 0)];
    let whole = b.messages.read_windows(&t, extremes, usize::MAX).await.unwrap();
    assert_eq!(whole.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "extreme bounds");
}

/// A thread with five messages (the first embedded with `m1`) and a saved
/// agent state, in resource `r1`: what the deletion cases delete.
async fn doomed_thread(b: &Backend, t: &TenantId, words: std::ops::Range<usize>) -> (ThreadId, Vec<Message>) {
    let new = NewThread { resource_id: Some(ResourceId::parse("r1").unwrap()), ..Default::default() };
    let id = b.threads.create(t, new).await.unwrap().id;
    let batch = words.map(|i| NewMessage::text(Role::User, format!("kettle {}", unique_word(i))).unwrap()).collect();
    let stored = b.messages.append(t, id, batch).await.unwrap();
    b.embeddings.complete_jobs(vec![(stored[0].id, embedding("m1", 0))]).await.unwrap();
    b.states.save(t, id, &AgentId::parse("a1").unwrap(), json!({"x": 1}), 0).await.unwrap();
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
    let agent = AgentId::parse("a1").unwrap();
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
    assert_not_found(b.messages.range(&t, gone, 1, 5).await, "range");
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
    let resource = b.embeddings.resource_threads(&t, &ResourceId::parse("r1").unwrap()).await.unwrap();
    assert_eq!(resource, vec![keep], "resource_threads");
    for filter in [whole_tenant(&t), crate::VectorFilter { tenant: t.clone(), threads: Some(vec![gone, keep]) }] {
        let hits = b.embeddings.lexical_search(&filter, "kettle".into(), 100).await.unwrap();
        assert_eq!(hits.len(), 5, "lexical search sees only the live thread: {hits:?}");
        assert!(hits.iter().all(|h| h.thread == keep));
    }
    let only = crate::VectorFilter { tenant: t.clone(), threads: Some(vec![gone]) };
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
    assert!(b.states.load(&t, keep, &AgentId::parse("a1").unwrap()).await.unwrap().is_some());
    assert_not_found(b.threads.get(&t, gone).await, "swept thread");
    assert_not_found(b.threads.delete(&t, gone).await, "delete of a swept thread");
    // New messages after the sweep are indexed and queued as usual.
    let next = b.messages.append(&t, keep, vec![NewMessage::text(Role::User, "kettle fresh").unwrap()]).await.unwrap();
    let hits = b.embeddings.lexical_search(&whole_tenant(&t), "fresh".into(), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![next[0].id]);
}
