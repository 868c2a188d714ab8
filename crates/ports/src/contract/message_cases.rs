//! Contract cases of [`crate::MessageStore`]: appends, sequence numbers,
//! paging (also under concurrent appends), point and range reads, deletes and
//! byte-budgeted reads. Each `pub async fn` here takes a fresh [`Backend`];
//! adding a case means adding its name to `contract_suite!` too (the
//! completeness test fails otherwise).

use std::collections::BTreeSet;
use std::time::Duration;

use memlayer_domain::{
    Direction, MAX_BATCH, Metadata, NewMessage, NewThread, Role, TenantId, ThreadFilter, ThreadId, TokenCount, ToolCall,
};
use proptest::prelude::*;
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, msg, msgs, run_prop, size, tenant, thread};

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

pub async fn messages_get_many_and_delete(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..6)).await.unwrap();
    let pick = vec![stored[4].id, memlayer_domain::MessageId::new(), stored[1].id];
    let got = b.messages.get_many(&t, pick).await.unwrap();
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![5, 2], "order of ids kept, missing left out");
    assert!(b.messages.get_many(&tenant("other"), vec![stored[0].id]).await.unwrap().is_empty(), "foreign left out");
    assert_not_found(b.messages.delete(&tenant("other"), stored[2].id).await, "foreign delete");
    b.messages.delete(&t, stored[2].id).await.unwrap();
    assert_not_found(b.messages.delete(&t, stored[2].id).await, "second delete");
    assert_not_found(b.messages.get(&t, stored[2].id).await, "deleted message");
    let seqs = read_all(&b, &t, id, Direction::Forward, 2).await;
    assert_eq!(seqs, vec![1, 2, 4, 5, 6], "paging skips the deleted message");
    let next = b.messages.append(&t, id, msgs(6..7)).await.unwrap();
    assert_eq!(next[0].seq, 7, "a deleted message's seq is never reused");
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

/// Concurrent appends where some fail (a missing thread, a batch the
/// tenant's quota has no room for) while the others commit: each caller
/// hears its own outcome, a refused append leaves nothing behind (no
/// message, no gap in its thread's sequence, nothing counted), and the
/// tenant's usage counts exactly what was stored. With group commit
/// (libSQL) such appends share one transaction; each must still be atomic
/// on its own.
pub async fn concurrent_appends_fail_alone(b: Backend) {
    use memlayer_domain::{Quota, QuotaKind, Usage};

    use crate::StoreError;

    const ROUNDS: usize = 4;
    const SMALL: usize = 8;
    let t = tenant("acme");
    let (a, c) = (thread(&b, &t).await, thread(&b, &t).await);
    let mut stored = b.messages.append(&t, a, msgs(0..10)).await.unwrap();
    for round in 0..ROUNDS {
        // Room for the small appends of this round, never for the batch of
        // `room + 1`, whatever order they run in.
        let room = SMALL as u64;
        let quota = Quota { messages: Some(stored.len() as u64 + room), ..Quota::UNLIMITED };
        let mut tasks = Vec::new();
        for i in 0..SMALL + 2 {
            let (messages, t) = (b.messages.clone(), t.clone());
            let base = 1_000 * (round + 1) + 10 * i;
            let (target, batch) = match i {
                0 => (ThreadId::new(), msgs(base..base + 1)),
                1 => (a, msgs(base..base + room as usize + 1)),
                _ => (if i % 2 == 0 { a } else { c }, msgs(base..base + 1)),
            };
            tasks.push(tokio::spawn(async move { messages.append_within(&t, target, batch, &quota).await }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            match (i, task.await.unwrap()) {
                (0, Err(StoreError::NotFound { .. })) => {}
                (1, Err(StoreError::QuotaExceeded { quota: QuotaKind::Messages, requested, .. })) => {
                    assert_eq!(requested, room + 1);
                }
                (i, Ok(batch)) if i > 1 => stored.extend(batch),
                (i, other) => panic!("round {round}, append {i}: {other:?}"),
            }
        }
    }
    for id in [a, c] {
        let seqs = read_all(&b, &t, id, Direction::Forward, 50).await;
        let expected = stored.iter().filter(|m| m.thread_id == id).count();
        assert_eq!(seqs, (1..=expected as i64).collect::<Vec<_>>(), "gapless, and only what was acknowledged");
    }
    let bytes = stored.iter().map(|m| m.approx_bytes() as u64).sum();
    let usage = b.usage.usage(&t).await.unwrap();
    assert_eq!(usage, Usage { threads: 2, messages: stored.len() as u64, bytes });
    let next = b.messages.append(&t, a, vec![msg(1)]).await.unwrap();
    assert_eq!(next[0].seq, stored.iter().filter(|m| m.thread_id == a).count() as i64 + 1);
}
