//! Contract cases of [`crate::DeletionLog`]: every deletion path logs in the
//! deleting transaction (a message deleted, a retention step, a thread
//! marked deleted, an erasure), a cursor reads what came after it in pages,
//! and a purge tells a reader behind it that it missed entries. Each
//! `pub async fn` here takes a fresh [`Backend`]; adding a case means adding
//! its name to `contract_suite!` too (the completeness test fails
//! otherwise).

use std::collections::BTreeSet;

use memlayer_domain::{
    MessageId, NewMessage, NewRetentionPolicy, NewThread, ResourceId, RetentionRule, RetentionRules, Role, TenantId,
    ThreadId, now,
};

use super::Backend;
use super::support::{assert_invalid, tenant};
use crate::{Deletion, DeletionCursor};

async fn thread(b: &Backend, t: &TenantId, resource: &str, n: usize) -> (ThreadId, Vec<MessageId>) {
    let new = NewThread { resource_id: Some(ResourceId::parse(resource).unwrap()), ..Default::default() };
    let id = b.threads.create(t, new).await.unwrap().id;
    let batch = (0..n).map(|i| NewMessage::text(Role::User, format!("entry {i}")).unwrap()).collect();
    let stored = b.messages.append(t, id, batch).await.unwrap();
    (id, stored.into_iter().map(|m| m.id).collect())
}

fn message(t: &TenantId, thread: ThreadId, id: MessageId) -> Deletion {
    Deletion { tenant: t.clone(), thread, message: Some(id) }
}

fn whole(t: &TenantId, thread: ThreadId) -> Deletion {
    Deletion { tenant: t.clone(), thread, message: None }
}

/// Everything logged after `cursor`, every page.
async fn read_all(b: &Backend, cursor: &DeletionCursor) -> (Vec<Deletion>, DeletionCursor) {
    let (mut items, mut cursor) = (Vec::new(), cursor.clone());
    loop {
        let page = b.deletions.deletions_since(&cursor, 1000).await.unwrap();
        assert!(!page.lost, "nothing purged");
        items.extend(page.items);
        cursor = page.next;
        if !page.more {
            return (items, cursor);
        }
    }
}

fn set(items: &[Deletion]) -> BTreeSet<String> {
    items.iter().map(|d| format!("{} {} {:?}", d.tenant, d.thread, d.message)).collect()
}

/// A message deleted, a retention step's messages, a thread marked deleted
/// (of another tenant too) and an erasure's threads are logged, each with
/// its tenant and thread; what was deleted before the cursor is not read
/// again, nor what a failed delete did not delete. Swept messages of a
/// marked thread, if logged, belong to that thread.
pub async fn deletion_log_holds_every_deleted_message_and_thread(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let (early, early_msgs) = thread(&b, &t, "r", 2).await;
    b.messages.delete(&t, early_msgs[0]).await.unwrap();
    let cursor = b.deletions.deletion_cursor().await.unwrap();

    let (a, a_msgs) = thread(&b, &t, "r", 3).await;
    b.messages.delete(&t, a_msgs[1]).await.unwrap();
    assert!(b.messages.delete(&t, a_msgs[1]).await.is_err(), "already gone");
    // A retention step keeping the newest message of `c`.
    let (c, c_msgs) = thread(&b, &t, "pruned", 3).await;
    let rules = RetentionRules { max_messages_per_thread: Some(1), ..Default::default() };
    let new =
        NewRetentionPolicy { resource_id: Some(ResourceId::parse("pruned").unwrap()), rules, ..Default::default() };
    let policy = b.retention.create_policy(&t, new).await.unwrap();
    let step = b.retention.prune_step(&policy, RetentionRule::MessagesPerThread, now(), 100).await.unwrap();
    assert_eq!(step.messages.len(), 2);
    // A thread marked deleted, in another tenant.
    let (x, _) = thread(&b, &other, "r", 2).await;
    b.threads.delete(&other, x).await.unwrap();
    // An erasure's threads.
    let (e, _) = thread(&b, &t, "erased", 1).await;
    let erased = b.retention.erase_step(&t, &ResourceId::parse("erased").unwrap(), None, 100).await.unwrap();
    assert_eq!(erased.threads, vec![e]);

    let (items, after) = read_all(&b, &cursor).await;
    let want = [
        message(&t, a, a_msgs[1]),
        message(&t, c, c_msgs[0]),
        message(&t, c, c_msgs[1]),
        whole(&other, x),
        whole(&t, e),
    ];
    assert_eq!(set(&items), set(&want), "{items:?}");
    assert!(!items.iter().any(|d| d.thread == early), "a deletion before the cursor is not read: {items:?}");
    assert_eq!(items.len(), want.len(), "each deletion once: {items:?}");
    // The marks come after the messages deleted before them.
    let order: Vec<Option<MessageId>> = items.iter().map(|d| d.message).collect();
    assert_eq!(&order[3..], [None, None], "{items:?}");

    let (nothing, after) = read_all(&b, &after).await;
    assert!(nothing.is_empty(), "nothing new: {nothing:?}");
    while b.threads.sweep_deleted(100).await.unwrap().more {}
    let (swept, _) = read_all(&b, &after).await;
    assert!(swept.iter().all(|d| d.message.is_some() && (d.thread == x || d.thread == e)), "{swept:?}");
}

/// Pages stop at their limit and carry on from their cursor, in the order
/// of deletion, each entry once; a limit of 0 is refused. A purge deletes
/// only entries older than its time; a reader whose cursor is behind what
/// it purged is told `lost`, one taken after it is not.
pub async fn deletion_log_pages_and_tells_a_reader_behind_a_purge(b: Backend) {
    let t = tenant("acme");
    let start = b.deletions.deletion_cursor().await.unwrap();
    let (th, msgs) = thread(&b, &t, "r", 5).await;
    for id in &msgs {
        b.messages.delete(&t, *id).await.unwrap();
    }
    let mut cursor = start.clone();
    let mut pages = Vec::new();
    loop {
        let page = b.deletions.deletions_since(&cursor, 2).await.unwrap();
        assert!(page.items.len() <= 2);
        pages.push(page.items.len());
        cursor = page.next;
        let more = page.more;
        if !more {
            break;
        }
    }
    assert_eq!(pages, vec![2, 2, 1], "pages of 2, then the rest");
    let (all, _) = read_all(&b, &start).await;
    assert_eq!(all, msgs.iter().map(|id| message(&t, th, *id)).collect::<Vec<_>>(), "in the order deleted");
    assert_invalid(b.deletions.deletions_since(&start, 0).await, "limit");

    assert_eq!(b.deletions.purge_deletions(now() - time::Duration::minutes(1), 100).await.unwrap(), 0, "too recent");
    let fresh = b.deletions.deletion_cursor().await.unwrap();
    assert_eq!(b.deletions.purge_deletions(now() + time::Duration::seconds(1), 3).await.unwrap(), 3, "at most 3");
    assert_eq!(b.deletions.purge_deletions(now() + time::Duration::seconds(1), 100).await.unwrap(), 2);
    let behind = b.deletions.deletions_since(&start, 100).await.unwrap();
    assert!(behind.lost && behind.items.is_empty(), "{behind:?}");
    let current = b.deletions.deletions_since(&fresh, 100).await.unwrap();
    assert!(!current.lost && current.items.is_empty(), "{current:?}");
    // A cursor taken after the purge reads on from there.
    let after = b.deletions.deletion_cursor().await.unwrap();
    assert!(after.seq >= fresh.seq, "numbers never go back: {after:?} {fresh:?}");
    let (th2, more) = thread(&b, &t, "r", 1).await;
    b.messages.delete(&t, more[0]).await.unwrap();
    let page = b.deletions.deletions_since(&after, 100).await.unwrap();
    assert!(!page.lost);
    assert_eq!(page.items, vec![message(&t, th2, more[0])]);
}
