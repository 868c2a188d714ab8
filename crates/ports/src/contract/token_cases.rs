//! Contract cases of [`crate::MessageStore`]'s per-encoding token counts
//! (`token_counts`, `save_token_counts`): stored once, tenant-scoped, gone
//! with their message or thread. Each `pub async fn` here takes a fresh
//! [`Backend`]; adding a case means adding its name to `contract_suite!`
//! too (the completeness test fails otherwise).

use std::collections::BTreeMap;

use memlayer_domain::MessageId;

use super::Backend;
use super::support::{assert_invalid, msgs, tenant, thread};

fn sorted(v: Vec<(MessageId, u32)>) -> BTreeMap<MessageId, u32> {
    v.into_iter().collect()
}

pub async fn token_counts_are_stored_once_per_encoding(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..3)).await.unwrap();
    let ids: Vec<MessageId> = stored.iter().map(|m| m.id).collect();
    assert!(b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap().is_empty(), "none stored yet");
    assert!(b.messages.token_counts(&t, "o200k_base", Vec::new()).await.unwrap().is_empty());
    b.messages.save_token_counts(&t, "o200k_base", vec![(ids[0], 5), (ids[2], 7)]).await.unwrap();
    let got = sorted(b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap());
    assert_eq!(got, BTreeMap::from([(ids[0], 5), (ids[2], 7)]), "only the counts stored, whatever was asked");
    // The first write wins: a message's count never changes.
    b.messages.save_token_counts(&t, "o200k_base", vec![(ids[0], 99), (ids[1], 6)]).await.unwrap();
    let got = sorted(b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap());
    assert_eq!(got, BTreeMap::from([(ids[0], 5), (ids[1], 6), (ids[2], 7)]));
    // Encodings are apart.
    b.messages.save_token_counts(&t, "cl100k_base", vec![(ids[0], 4)]).await.unwrap();
    let got = sorted(b.messages.token_counts(&t, "cl100k_base", ids.clone()).await.unwrap());
    assert_eq!(got, BTreeMap::from([(ids[0], 4)]));
    // Unknown ids are left out; many ids at once are read in full.
    let mut many: Vec<MessageId> = (0..1200).map(|_| MessageId::new()).collect();
    many.push(ids[1]);
    assert_eq!(sorted(b.messages.token_counts(&t, "o200k_base", many).await.unwrap()), BTreeMap::from([(ids[1], 6)]));
    for bad in ["", &"x".repeat(65)] {
        assert_invalid(b.messages.token_counts(&t, bad, ids.clone()).await, "encoding name");
        assert_invalid(b.messages.save_token_counts(&t, bad, vec![(ids[0], 1)]).await, "encoding name");
    }
    // Saving nothing is no error.
    b.messages.save_token_counts(&t, "o200k_base", Vec::new()).await.unwrap();
}

pub async fn token_counts_are_tenant_scoped(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..2)).await.unwrap();
    let ids: Vec<MessageId> = stored.iter().map(|m| m.id).collect();
    b.messages.save_token_counts(&t, "o200k_base", vec![(ids[0], 5)]).await.unwrap();
    assert!(b.messages.token_counts(&other, "o200k_base", ids.clone()).await.unwrap().is_empty(), "foreign read");
    // Another tenant's write about these messages is ignored.
    b.messages.save_token_counts(&other, "o200k_base", vec![(ids[1], 1)]).await.unwrap();
    let got = sorted(b.messages.token_counts(&t, "o200k_base", ids).await.unwrap());
    assert_eq!(got, BTreeMap::from([(stored[0].id, 5)]));
}

pub async fn token_counts_go_with_their_message_and_thread(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    let stored = b.messages.append(&t, id, msgs(0..3)).await.unwrap();
    let ids: Vec<MessageId> = stored.iter().map(|m| m.id).collect();
    let counts: Vec<(MessageId, u32)> = ids.iter().map(|m| (*m, 3)).collect();
    b.messages.save_token_counts(&t, "o200k_base", counts.clone()).await.unwrap();
    b.messages.delete(&t, ids[1]).await.unwrap();
    let got = sorted(b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![ids[0], ids[2]], "a deleted message's count is gone");
    // Saving for a deleted message stores nothing.
    b.messages.save_token_counts(&t, "o200k_base", vec![(ids[1], 3)]).await.unwrap();
    assert!(b.messages.token_counts(&t, "o200k_base", vec![ids[1]]).await.unwrap().is_empty());
    // A deleted thread's messages have no counts from the mark on.
    b.threads.delete(&t, id).await.unwrap();
    assert!(b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap().is_empty(), "thread deleted");
    b.messages.save_token_counts(&t, "o200k_base", counts).await.unwrap();
    assert!(b.messages.token_counts(&t, "o200k_base", ids).await.unwrap().is_empty());
}
