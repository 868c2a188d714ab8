//! Contract cases of storage quotas: [`crate::UsageStore::usage`] counts
//! exactly what each tenant stores, and
//! [`crate::ThreadStore::create_within`] and
//! [`crate::MessageStore::append_within`] check the quota in the transaction
//! that writes, so concurrent writers take the last free slot exactly once
//! and a refused write stores nothing. Each `pub async fn` here takes a fresh
//! [`Backend`]; adding a case means adding its name to `contract_suite!` too
//! (the completeness test fails otherwise).

use memlayer_domain::{
    ForkThread, Message, Metadata, NewMessage, NewThread, Quota, QuotaKind, Role, TenantId, ThreadId, ToolCall, Usage,
};
use serde_json::json;

use super::Backend;
use super::support::{msg, msgs, size, tenant, thread};
use crate::StoreError;

/// Writers racing for the last free slots.
const RACERS: usize = 24;

fn bytes(stored: &[Message]) -> u64 {
    stored.iter().map(|m| m.approx_bytes() as u64).sum()
}

async fn usage(b: &Backend, t: &TenantId) -> Usage {
    b.usage.usage(t).await.unwrap()
}

/// A user message of exactly `n` bytes of content.
fn sized(n: usize) -> NewMessage {
    NewMessage::text(Role::User, "x".repeat(n)).unwrap()
}

/// A message with every field that counts: tool calls, metadata, text.
fn rich(i: usize) -> NewMessage {
    let call = ToolCall {
        id: format!("call_{i}"),
        name: "lookup_order".into(),
        arguments: json!({"order": format!("A-{i}"), "tags": ["é", "\"q\"", 1.5, null, {"deep": true}]}),
    };
    let metadata = Metadata::from_value(json!({"lang": "fr", "n": i, "nested": {"a": [1, 2]}})).unwrap();
    NewMessage::new(Role::Assistant, format!("thinking {i} ünïcode"), None, None, vec![call], metadata).unwrap()
}

fn assert_exceeded<T: std::fmt::Debug>(
    r: Result<T, StoreError>,
    kind: QuotaKind,
    limit: u64,
    usage: u64,
    requested: u64,
    ctx: &str,
) {
    match r {
        Err(StoreError::QuotaExceeded { quota, limit: l, usage: u, requested: q }) => {
            assert_eq!((quota, l, u, q), (kind, limit, usage, requested), "{ctx}: the refusal's figures");
        }
        other => panic!("{ctx}: expected QuotaExceeded({kind}), got {other:?}"),
    }
}

/// Usage counts every live thread, its live messages and their
/// `approx_bytes`, moves with creates, appends (single and batched),
/// message deletes and thread deletes (at the mark, before the sweep), and
/// is per tenant.
pub async fn quota_usage_counts_what_is_stored(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    assert_eq!(usage(&b, &t).await, Usage::default(), "a tenant that stores nothing");
    let (a, c) = (thread(&b, &t).await, thread(&b, &t).await);
    assert_eq!(usage(&b, &t).await, Usage { threads: 2, messages: 0, bytes: 0 });
    let mut stored = b.messages.append(&t, a, vec![rich(0)]).await.unwrap();
    stored.extend(b.messages.append(&t, a, (1..4).map(rich).collect()).await.unwrap());
    let in_c = b.messages.append(&t, c, msgs(0..5)).await.unwrap();
    let all = bytes(&stored) + bytes(&in_c);
    assert_eq!(usage(&b, &t).await, Usage { threads: 2, messages: 9, bytes: all });
    // Another tenant's writes never count here.
    let theirs = thread(&b, &other).await;
    let their = b.messages.append(&other, theirs, msgs(0..3)).await.unwrap();
    assert_eq!(usage(&b, &other).await, Usage { threads: 1, messages: 3, bytes: bytes(&their) });
    assert_eq!(usage(&b, &t).await, Usage { threads: 2, messages: 9, bytes: all });

    b.messages.delete(&t, stored[1].id).await.unwrap();
    let left = all - stored[1].approx_bytes() as u64;
    assert_eq!(usage(&b, &t).await, Usage { threads: 2, messages: 8, bytes: left }, "a message delete");
    // A refused or failed write counts nothing.
    let _ = b.messages.append(&t, ThreadId::new(), msgs(0..2)).await.unwrap_err();
    assert_eq!(usage(&b, &t).await, Usage { threads: 2, messages: 8, bytes: left }, "an append to no thread");

    b.threads.delete(&t, a).await.unwrap();
    assert_eq!(usage(&b, &t).await, Usage { threads: 1, messages: 5, bytes: bytes(&in_c) }, "a thread delete");
    while b.threads.sweep_deleted(2).await.unwrap().more {}
    assert_eq!(usage(&b, &t).await, Usage { threads: 1, messages: 5, bytes: bytes(&in_c) }, "the sweep");
    assert_eq!(usage(&b, &other).await, Usage { threads: 1, messages: 3, bytes: bytes(&their) });
}

/// Concurrent creates never pass `quota.threads`: with one slot free, one
/// of many wins; from none used, exactly `limit` do; the refused store
/// nothing and say the quota, its limit and the usage.
pub async fn quota_last_thread_slot_is_taken_once(b: Backend) {
    let t = tenant("acme");
    for _ in 0..3 {
        thread(&b, &t).await;
    }
    // One free slot.
    let quota = Quota { threads: Some(4), ..Quota::UNLIMITED };
    let won = race_creates(&b, &t, quota).await;
    assert_eq!(won, 1, "one create takes the last slot");
    assert_eq!(usage(&b, &t).await.threads, 4);
    assert_exceeded(
        b.threads.create_within(&t, NewThread::default(), &quota).await,
        QuotaKind::Threads,
        4,
        4,
        1,
        "full",
    );
    let listed = b.threads.list(&t, &Default::default(), None, size(100)).await.unwrap();
    assert_eq!(listed.items.len(), 4, "refused creates stored nothing");
    // Many free slots, fewer than the racers (a Postgres charge far from
    // the limit runs beside the others, near it alone); a few tenants, so a
    // lost race shows whatever the scheduling.
    for name in ["umbrella", "vortex", "walnut"] {
        let u = tenant(name);
        let quota = Quota { threads: Some(20), ..Quota::UNLIMITED };
        let mut won = race_creates(&b, &u, quota).await;
        won += race_creates(&b, &u, quota).await;
        assert_eq!(won, 20, "exactly the limit of creates pass");
        assert_eq!(usage(&b, &u).await.threads, 20);
        let listed = b.threads.list(&u, &Default::default(), None, size(100)).await.unwrap();
        assert_eq!(listed.items.len(), 20);
    }
}

async fn race_creates(b: &Backend, t: &TenantId, quota: Quota) -> usize {
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (threads, t) = (b.threads.clone(), t.clone());
            tokio::spawn(async move { threads.create_within(&t, NewThread::default(), &quota).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::QuotaExceeded { quota: QuotaKind::Threads, .. }) => {}
            Err(e) => panic!("a racing create failed otherwise: {e}"),
        }
    }
    won
}

/// Concurrent appends (single and batched, to one thread and to many)
/// never pass `quota.messages`: exactly the free slots are filled, and
/// every message stored is counted.
pub async fn quota_last_message_slot_is_taken_once(b: Backend) {
    for name in ["acme", "beta", "gamma"] {
        race_appends(&b, &tenant(name)).await;
    }
}

async fn race_appends(b: &Backend, t: &TenantId) {
    let t = t.clone();
    let threads: Vec<ThreadId> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(thread(b, &t).await);
        }
        v
    };
    // 1,500 stored and 30 free slots (a limit large enough that a Postgres
    // charge first tries to run beside the others), 24 racers of 1 message
    // and 24 of 3.
    b.messages.append(&t, threads[0], msgs(0..1000)).await.unwrap();
    b.messages.append(&t, threads[0], msgs(0..500)).await.unwrap();
    let (stored_before, limit) = (1_500, 1_530);
    let quota = Quota { messages: Some(limit), ..Quota::UNLIMITED };
    let tasks: Vec<_> = (0..RACERS * 2)
        .map(|i| {
            let (messages, t, th) = (b.messages.clone(), t.clone(), threads[i % threads.len()]);
            let batch = if i % 2 == 0 { msgs(i..i + 1) } else { msgs(i..i + 3) };
            tokio::spawn(async move { messages.append_within(&t, th, batch, &quota).await })
        })
        .collect();
    let mut stored = stored_before;
    for task in tasks {
        match task.await.unwrap() {
            Ok(batch) => stored += batch.len(),
            Err(StoreError::QuotaExceeded { quota: QuotaKind::Messages, limit: 1_530, usage, requested }) => {
                assert!(usage + requested > limit, "refused with room: {usage} + {requested}");
            }
            Err(e) => panic!("a racing append failed otherwise: {e}"),
        }
    }
    assert!(stored <= 1_530, "{stored} messages stored past a quota of {limit}");
    let mut counted = 0;
    for th in &threads {
        let mut cursor = None;
        loop {
            let page = b.messages.page(&t, *th, cursor, None, size(1000)).await.unwrap();
            counted += page.items.len();
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    assert_eq!(counted, stored, "every message stored was answered, none more");
    assert_eq!(usage(b, &t).await.messages, stored as u64);
    // Singles fill what batches of 3 left, then the quota is full.
    while usage(b, &t).await.messages < limit {
        b.messages.append_within(&t, threads[1], vec![msg(0)], &quota).await.unwrap();
    }
    assert_exceeded(
        b.messages.append_within(&t, threads[1], vec![msg(0)], &quota).await,
        QuotaKind::Messages,
        limit,
        limit,
        1,
        "full",
    );
}

/// Concurrent appends never pass `quota.bytes`, measured by
/// `Message::approx_bytes`: with room for exactly N messages, N are stored.
pub async fn quota_last_byte_slot_is_taken_once(b: Backend) {
    let t = tenant("acme");
    let mut threads = Vec::new();
    for _ in 0..4 {
        threads.push(thread(&b, &t).await);
    }
    let each = b.messages.append(&t, threads[0], vec![sized(1000)]).await.unwrap()[0].approx_bytes() as u64;
    // Room for 10 more, and a little less than an 11th.
    let quota = Quota { bytes: Some(each * 11 + each / 2), ..Quota::UNLIMITED };
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (messages, t, th) = (b.messages.clone(), t.clone(), threads[i % threads.len()]);
            tokio::spawn(async move { messages.append_within(&t, th, vec![sized(1000)], &quota).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::QuotaExceeded { quota: QuotaKind::Bytes, .. }) => {}
            Err(e) => panic!("a racing append failed otherwise: {e}"),
        }
    }
    assert_eq!(won, 10, "exactly the messages that fit are stored");
    assert_eq!(usage(&b, &t).await, Usage { threads: 4, messages: 11, bytes: each * 11 });
    let mut stored = 0;
    for th in threads {
        stored += b.messages.page(&t, th, None, None, size(100)).await.unwrap().items.len();
    }
    assert_eq!(stored, 11);
}

/// A batch that does not fit stores none of its messages (not the ones that
/// would have fitted), bumps nothing and counts nothing; a batch larger than
/// the quota itself is refused as too large; each names the quota.
pub async fn quota_refused_batch_stores_nothing(b: Backend) {
    let t = tenant("acme");
    let th = thread(&b, &t).await;
    let first = b.messages.append(&t, th, msgs(0..8)).await.unwrap();
    let before = usage(&b, &t).await;
    let quota = Quota { messages: Some(10), ..Quota::UNLIMITED };
    assert_exceeded(
        b.messages.append_within(&t, th, msgs(8..11), &quota).await,
        QuotaKind::Messages,
        10,
        8,
        3,
        "batch",
    );
    let err = b.messages.append_within(&t, th, msgs(0..11), &quota).await.unwrap_err();
    assert!(err.is_too_large(), "a batch above the quota itself: {err}");
    let by_bytes = Quota { bytes: Some(before.bytes + 500), ..Quota::UNLIMITED };
    let two = vec![sized(10), sized(1000)];
    assert_exceeded(
        b.messages.append_within(&t, th, two.clone(), &by_bytes).await,
        QuotaKind::Bytes,
        before.bytes + 500,
        before.bytes,
        (2 * 320 + 10 + 1000 + 4) as u64,
        "bytes",
    );
    assert_eq!(usage(&b, &t).await, before, "nothing counted");
    let page = b.messages.page(&t, th, None, None, size(100)).await.unwrap();
    assert_eq!(page.items, first, "nothing stored");
    assert_eq!(b.threads.get(&t, th).await.unwrap().last_seq, 8, "no sequence number taken");
    // What fits is stored, and the next message continues the sequence.
    let fits = b.messages.append_within(&t, th, msgs(8..10), &quota).await.unwrap();
    assert_eq!(fits.iter().map(|m| m.seq).collect::<Vec<_>>(), [9, 10]);
    let unlimited_other = b.messages.append_within(&t, th, two, &Quota { threads: Some(1), ..Quota::UNLIMITED });
    assert_eq!(unlimited_other.await.unwrap().len(), 2, "a quota on threads does not limit appends");
}

/// Deleting a message or a thread frees its room at once, before any sweep.
pub async fn quota_deletes_free_room(b: Backend) {
    let t = tenant("acme");
    let quota = Quota { threads: Some(2), messages: Some(4), bytes: None };
    let a = b.threads.create_within(&t, NewThread::default(), &quota).await.unwrap().id;
    let c = b.threads.create_within(&t, NewThread::default(), &quota).await.unwrap().id;
    assert!(b.threads.create_within(&t, NewThread::default(), &quota).await.is_err());
    let stored = b.messages.append_within(&t, a, msgs(0..4), &quota).await.unwrap();
    assert_exceeded(b.messages.append_within(&t, c, msgs(4..5), &quota).await, QuotaKind::Messages, 4, 4, 1, "full");
    b.messages.delete(&t, stored[0].id).await.unwrap();
    b.messages.append_within(&t, c, msgs(4..5), &quota).await.unwrap();
    assert!(b.messages.append_within(&t, c, msgs(5..6), &quota).await.is_err(), "full again");
    b.threads.delete(&t, a).await.unwrap();
    // Three messages and a thread freed, before the sweep.
    b.messages.append_within(&t, c, msgs(5..8), &quota).await.unwrap();
    b.threads.create_within(&t, NewThread::default(), &quota).await.unwrap();
    assert_eq!(usage(&b, &t).await.messages, 4);
    assert_eq!(usage(&b, &t).await.threads, 2);
}

/// A fork counts like the thread and messages it copies (each message with
/// its bytes), is refused whole when they do not fit, and deleting it frees
/// exactly what it counted.
pub async fn quota_fork_counts_what_it_copies(b: Backend) {
    let t = tenant("acme");
    let th = thread(&b, &t).await;
    let stored = b.messages.append(&t, th, (0..4).map(rich).collect()).await.unwrap();
    let before = usage(&b, &t).await;
    let whole = b.threads.fork(&t, th, ForkThread::default()).await.unwrap();
    let grown =
        Usage { threads: before.threads + 1, messages: before.messages + 4, bytes: before.bytes + bytes(&stored) };
    assert_eq!(usage(&b, &t).await, grown, "the fork counts its thread, messages and bytes");
    let early = b.threads.fork(&t, th, ForkThread::new(Some(2), None).unwrap()).await.unwrap();
    let two =
        Usage { threads: grown.threads + 1, messages: grown.messages + 2, bytes: grown.bytes + bytes(&stored[..2]) };
    assert_eq!(usage(&b, &t).await, two, "a fork at seq 2 counts the two it copies");
    let quota = Quota { messages: Some(two.messages + 3), ..Quota::UNLIMITED };
    let listed = |b: &Backend, t: &TenantId| {
        let (threads, t) = (b.threads.clone(), t.clone());
        async move { threads.list(&t, &Default::default(), None, size(100)).await.unwrap().items.len() }
    };
    let threads_before = listed(&b, &t).await;
    assert_exceeded(
        b.threads.fork_within(&t, th, ForkThread::default(), &quota).await,
        QuotaKind::Messages,
        two.messages + 3,
        two.messages,
        4,
        "a fork past the quota",
    );
    assert_eq!(usage(&b, &t).await, two, "a refused fork counts nothing");
    assert_eq!(listed(&b, &t).await, threads_before, "and stores no thread");
    b.threads.fork_within(&t, th, ForkThread::new(Some(3), None).unwrap(), &quota).await.unwrap();
    b.threads.delete(&t, whole.thread.id).await.unwrap();
    b.threads.delete(&t, early.thread.id).await.unwrap();
    let left = usage(&b, &t).await;
    assert_eq!(left.threads, before.threads + 1, "the deletes free their threads");
    assert_eq!(left.messages, before.messages + 3, "and their messages");
    assert_eq!(left.bytes, before.bytes + bytes(&stored[..3]), "and their bytes");
}

/// The migration that adds the counters (11) counts what was stored before
/// it: reverted and applied again over stored data (messages with tool
/// calls and metadata, a deleted message, a thread marked deleted and not
/// yet swept, two tenants), it gives the same usage, and a thread delete
/// afterwards frees exactly what the thread held.
pub async fn quota_backfill_counts_what_is_stored(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let (a, c, gone) = (thread(&b, &t).await, thread(&b, &t).await, thread(&b, &t).await);
    let in_a = b.messages.append(&t, a, (0..5).map(rich).collect()).await.unwrap();
    b.messages.append(&t, c, msgs(0..3)).await.unwrap();
    b.messages
        .append(&t, c, vec![NewMessage::text(Role::User, "日本語のテキスト \"quoted\"\n\ttab").unwrap()])
        .await
        .unwrap();
    b.messages.append(&t, gone, msgs(0..4)).await.unwrap();
    b.messages.delete(&t, in_a[2].id).await.unwrap();
    b.threads.delete(&t, gone).await.unwrap();
    let theirs = thread(&b, &other).await;
    b.messages.append(&other, theirs, vec![rich(9)]).await.unwrap();
    let (mine, their) = (usage(&b, &t).await, usage(&b, &other).await);
    assert_eq!((mine.threads, mine.messages, their.messages), (2, 8, 1));

    let applied = b.database.migration_status().await.unwrap();
    let above_10 = applied.iter().filter(|m| m.version >= 11 && m.applied_at.is_some()).count();
    let reverted = b.database.migrate_down(above_10).await.unwrap();
    assert_eq!(reverted.last().map(|m| m.version), Some(11), "reverted down to version 10");
    b.database.migrate_up().await.unwrap();
    assert_eq!(usage(&b, &t).await, mine, "the backfill counts what was stored");
    assert_eq!(usage(&b, &other).await, their);
    // Per thread too: deleting one frees exactly what it held.
    b.threads.delete(&t, a).await.unwrap();
    let left = usage(&b, &t).await;
    let held: Vec<Message> = in_a.into_iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, m)| m).collect();
    assert_eq!(left, Usage { threads: 1, messages: 4, bytes: mine.bytes - bytes(&held) });
}
