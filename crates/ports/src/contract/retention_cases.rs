//! Contract cases of [`crate::RetentionStore`]: policies, the steps that
//! apply each rule (and what a deletion takes with it, across every port),
//! erasure of a resource, receipts and the lease. Each `pub async fn` here
//! takes a fresh [`Backend`]; adding a case means adding its name to
//! `contract_suite!` too (the completeness test fails otherwise).

use std::sync::Arc;

use memlayer_domain::{
    AgentName, Message, Metadata, NewMessage, NewRetentionPolicy, NewSummary, NewThread, ResourceId, RetentionPolicy,
    RetentionRule, RetentionRules, RetentionRun, Role, RunKind, TenantId, ThreadFilter, ThreadId, Timestamp,
    WorkingContent, WorkingScope, now,
};
use serde_json::json;

use super::Backend;
use super::embedding_cases::{embedding, progress, unique_word};
use super::support::{assert_invalid, assert_not_found, size, tenant};
use crate::{Claim, Fingerprint, IdempotencyKey, SearchFilter, StoredResponse};

fn rules(f: impl FnOnce(&mut RetentionRules)) -> NewRetentionPolicy {
    let mut rules = RetentionRules::default();
    f(&mut rules);
    NewRetentionPolicy { rules, ..Default::default() }
}

async fn new_thread(b: &Backend, t: &TenantId, resource: &str, agent: &str, pinned: bool) -> ThreadId {
    let mut metadata = serde_json::Map::new();
    if pinned {
        metadata.insert("pinned".into(), json!(true));
    }
    let new = NewThread {
        resource_id: Some(ResourceId::parse(resource).unwrap()),
        agent_id: Some(AgentName::parse(agent).unwrap()),
        metadata: Metadata::from_value(serde_json::Value::Object(metadata)).unwrap(),
        ..Default::default()
    };
    b.threads.create(t, new).await.unwrap().id
}

/// Appends `n` messages, each with a word of its own plus "kettle".
async fn append(b: &Backend, t: &TenantId, thread: ThreadId, words: std::ops::Range<usize>) -> Vec<Message> {
    let batch = words.map(|i| NewMessage::text(Role::User, format!("kettle {}", unique_word(i))).unwrap()).collect();
    b.messages.append(t, thread, batch).await.unwrap()
}

/// Records an idempotent response holding `thread`'s id.
async fn record(b: &Backend, t: &TenantId, key: &str, thread: ThreadId) -> IdempotencyKey {
    let (key, fp) = (IdempotencyKey::parse(key).unwrap(), Fingerprint::new([1; 32]));
    let later = now() + time::Duration::hours(1);
    assert_eq!(b.idempotency.claim(t, &key, fp, now(), later).await.unwrap(), Claim::New);
    let body = json!({"thread_id": thread.to_string()}).to_string().into_bytes();
    b.idempotency.complete(t, &key, fp, StoredResponse { status: 201, body }).await.unwrap();
    key
}

async fn recorded(b: &Backend, t: &TenantId, key: &IdempotencyKey) -> bool {
    let later = now() + time::Duration::hours(1);
    let claim = b.idempotency.claim(t, key, Fingerprint::new([1; 32]), now(), later).await.unwrap();
    if claim == Claim::New {
        b.idempotency.release(t, key, Fingerprint::new([1; 32])).await.unwrap();
    }
    matches!(claim, Claim::Replay(_))
}

/// Runs `rule` of `policy` as of `at` to the end, `limit` per step.
async fn prune(
    b: &Backend,
    policy: &RetentionPolicy,
    rule: RetentionRule,
    at: Timestamp,
    limit: u32,
) -> crate::PruneStep {
    let mut total = crate::PruneStep::default();
    loop {
        let step = b.retention.prune_step(policy, rule, at, limit).await.unwrap();
        assert!(step.threads.len() + step.messages.len() <= limit as usize, "a step stays within its limit");
        total.threads.extend(step.threads);
        total.messages.extend(step.messages);
        total.counts.add(&step.counts);
        if !step.more {
            return total;
        }
    }
}

/// Policies round-trip, are the tenant's own, and bad rules are refused
/// naming the field; an agent or resource nobody has yet is allowed.
pub async fn retention_policies_round_trip_and_refuse_bad_rules(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let mut new = rules(|r| r.max_thread_age_secs = Some(3600));
    new.agent_id = Some(AgentName::parse("nobody-yet").unwrap());
    let p = b.retention.create_policy(&t, new.clone()).await.unwrap();
    assert_eq!((p.agent_id.clone(), p.rules, p.tenant.clone()), (new.agent_id.clone(), new.rules, t.clone()));
    assert_eq!(b.retention.get_policy(&t, p.id).await.unwrap(), p);
    assert_not_found(b.retention.get_policy(&other, p.id).await, "another tenant's policy");
    assert_not_found(b.retention.delete_policy(&other, p.id).await, "another tenant's delete");
    assert!(b.retention.list_policies(&other).await.unwrap().is_empty());
    let replaced = rules(|r| {
        r.max_messages_per_thread = Some(10);
        r.only_summarized = true;
    });
    let q = b.retention.replace_policy(&t, p.id, replaced.clone()).await.unwrap();
    assert_eq!((q.id, q.rules, q.agent_id.clone()), (p.id, replaced.rules, None));
    assert_eq!(b.retention.list_policies(&t).await.unwrap(), vec![q.clone()]);
    assert!(b.retention.all_policies().await.unwrap().contains(&q));
    for (bad, field) in [
        (rules(|r| r.max_thread_age_secs = Some(0)), "max_thread_age_secs"),
        (rules(|r| r.max_message_age_secs = Some(-1)), "max_message_age_secs"),
        (rules(|r| r.max_messages_per_thread = Some(0)), "max_messages_per_thread"),
        (rules(|r| r.max_threads_per_resource = Some(-3)), "max_threads_per_resource"),
        (rules(|_| {}), "rules"),
    ] {
        let got = b.retention.create_policy(&t, bad.clone()).await;
        assert!(matches!(&got, Err(crate::StoreError::Invalid(e)) if e.field == field), "{field}: {got:?}");
        assert_invalid(b.retention.replace_policy(&t, p.id, bad).await, field);
    }
    b.retention.delete_policy(&t, p.id).await.unwrap();
    assert_not_found(b.retention.get_policy(&t, p.id).await, "deleted");
    assert_not_found(b.retention.replace_policy(&t, p.id, replaced).await, "replace deleted");
}

/// `max_thread_age_secs` deletes idle threads of its scope: not pinned
/// ones, not another agent's, not recent ones; a deleted thread is gone
/// from every read and search, its usage and idempotency records with it.
pub async fn retention_thread_age_deletes_idle_threads_everywhere(b: Backend) {
    let t = tenant("acme");
    let idle = new_thread(&b, &t, "r1", "bot", false).await;
    let pinned = new_thread(&b, &t, "r1", "bot", true).await;
    let other_agent = new_thread(&b, &t, "r1", "helper", false).await;
    for (i, th) in [idle, pinned, other_agent].into_iter().enumerate() {
        let stored = append(&b, &t, th, i * 10..i * 10 + 3).await;
        b.embeddings.complete_jobs(vec![(stored[0].id, embedding("m1", i))]).await.unwrap();
    }
    let key = record(&b, &t, "create-idle", idle).await;
    let kept_key = record(&b, &t, "create-pinned", pinned).await;
    let mut new = rules(|r| r.max_thread_age_secs = Some(3600));
    new.agent_id = Some(AgentName::parse("bot").unwrap());
    let policy = b.retention.create_policy(&t, new).await.unwrap();
    // As of now nothing is an hour idle.
    let none = prune(&b, &policy, RetentionRule::ThreadAge, now(), 10).await;
    assert!(none.threads.is_empty(), "nothing idle yet: {none:?}");
    let usage = b.usage.usage(&t).await.unwrap();
    let later = now() + time::Duration::hours(2);
    let preview = b.retention.prune_preview(&policy, RetentionRule::ThreadAge, later, 10).await.unwrap();
    assert_eq!((preview.threads.clone(), preview.counts.messages), (vec![idle], 3), "preview");
    b.threads.get(&t, idle).await.unwrap();
    let done = prune(&b, &policy, RetentionRule::ThreadAge, later, 1).await;
    assert_eq!(done.threads, vec![idle], "only the idle, unpinned thread of the agent");
    assert_eq!((done.counts.threads, done.counts.messages, done.counts.idempotency_records), (1, 3, 1));
    assert_not_found(b.threads.get(&t, idle).await, "thread");
    assert_not_found(b.messages.page(&t, idle, None, None, size(10)).await, "messages");
    let listed = b.threads.list(&t, &ThreadFilter::default(), None, size(10)).await.unwrap();
    assert!(listed.items.iter().all(|th| th.id != idle) && listed.items.len() == 2, "listing");
    let hits = b.embeddings.lexical_search(&SearchFilter::all_threads(t.clone()), "kettle".into(), 100).await.unwrap();
    assert!(hits.iter().all(|h| h.thread != idle) && hits.len() == 6, "lexical search: {hits:?}");
    assert_eq!(progress(&b, &SearchFilter::all_threads(t.clone()), "m1").await.embedded, 2, "vector counts");
    let after = b.usage.usage(&t).await.unwrap();
    assert_eq!((after.threads, after.messages), (usage.threads - 1, usage.messages - 3), "usage released");
    assert!(!recorded(&b, &t, &key).await, "the idempotency record holding the thread went");
    assert!(recorded(&b, &t, &kept_key).await, "another thread's record stays");
    // The sweeper removes the rows later, as for any deleted thread.
    while b.threads.sweep_deleted(100).await.unwrap().more {}
    let (scan, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert!(scan.iter().all(|v| v.thread != idle) && scan.len() == 2, "vectors swept");
}

/// `max_message_age_secs` deletes the old messages of live threads with
/// their vectors, full-text entries, token counts and the summaries that
/// covered only them; pages, searches, counts and usage agree.
pub async fn retention_message_age_deletes_old_messages_everywhere(b: Backend) {
    let t = tenant("acme");
    let th = new_thread(&b, &t, "r1", "bot", false).await;
    // Recorded before the old messages were appended: it holds what goes.
    let early_key = record(&b, &t, "append-old", th).await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await; // distinct times, not a timing assert
    let old = append(&b, &t, th, 0..3).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // distinct creation times, not a timing assert
    let new = append(&b, &t, th, 3..6).await;
    // Recorded after the newer batch: it may hold live messages and stays.
    let late_key = record(&b, &t, "append-new", th).await;
    let vectors = old.iter().chain(&new).enumerate().map(|(i, m)| (m.id, embedding("m1", i))).collect();
    b.embeddings.complete_jobs(vectors).await.unwrap();
    let ids: Vec<_> = old.iter().chain(&new).map(|m| m.id).collect();
    b.messages.save_token_counts(&t, "o200k_base", ids.iter().map(|id| (*id, 7)).collect()).await.unwrap();
    let summary = |covers: i64| NewSummary {
        text: "s".into(),
        covers_through: covers,
        newly_covered: 1,
        summarizer: "test".into(),
    };
    b.summaries.save_summary(&t, th, summary(2), 0).await.unwrap();
    b.summaries.save_summary(&t, th, summary(5), 1).await.unwrap();
    let usage = b.usage.usage(&t).await.unwrap();
    let policy = b.retention.create_policy(&t, rules(|r| r.max_message_age_secs = Some(60))).await.unwrap();
    // Everything created before the newer batch's first message is old.
    let at = new[0].created_at + time::Duration::seconds(60);
    let done = prune(&b, &policy, RetentionRule::MessageAge, at, 2).await;
    let mut deleted = done.messages.clone();
    deleted.sort();
    assert_eq!(deleted, old.iter().map(|m| m.id).collect::<Vec<_>>(), "exactly the old messages");
    assert_eq!((done.counts.messages, done.counts.summaries, done.counts.threads), (3, 1, 0));
    assert_eq!(done.counts.idempotency_records, 1);
    assert!(!recorded(&b, &t, &early_key).await, "the record older than the deleted messages went");
    assert!(recorded(&b, &t, &late_key).await, "a newer record stays");
    for m in &old {
        assert_not_found(b.messages.get(&t, m.id).await, "old message");
    }
    let page = b.messages.page(&t, th, None, None, size(10)).await.unwrap();
    assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), new.iter().map(|m| m.id).collect::<Vec<_>>());
    let filter = SearchFilter::all_threads(t.clone());
    let hits = b.embeddings.lexical_search(&filter, "kettle".into(), 100).await.unwrap();
    assert_eq!(hits.len(), 3, "lexical search: {hits:?}");
    assert!(hits.iter().all(|h| new.iter().any(|m| m.id == h.id)));
    assert_eq!(progress(&b, &filter, "m1").await.embedded, 3, "vector counts");
    let (scan, _) = b.embeddings.scan_vectors("m1".into(), None, 100).await.unwrap();
    assert!(scan.iter().all(|v| new.iter().any(|m| m.id == v.id)) && scan.len() == 3, "vectors");
    let counts = b.messages.token_counts(&t, "o200k_base", ids.clone()).await.unwrap();
    assert_eq!(counts.len(), 3, "token counts of the old messages went");
    let versions = b.summaries.summary_versions(&t, th, 10).await.unwrap();
    assert_eq!(versions.iter().map(|s| s.covers_through).collect::<Vec<_>>(), vec![5], "the summary of 1..2 went");
    let after = b.usage.usage(&t).await.unwrap();
    assert_eq!(after.messages, usage.messages - 3, "usage released");
    assert!(after.bytes < usage.bytes);
    let last = b.messages.last(&t, th, size(10)).await.unwrap();
    assert_eq!(last.len(), 3, "last");
}

/// `max_messages_per_thread` keeps the newest N; with `only_summarized`
/// it deletes only what the newest summary covers, and keeps that summary.
pub async fn retention_messages_per_thread_keeps_the_newest(b: Backend) {
    let t = tenant("acme");
    let th = new_thread(&b, &t, "r1", "bot", false).await;
    let pinned = new_thread(&b, &t, "r1", "bot", true).await;
    let stored = append(&b, &t, th, 0..10).await;
    append(&b, &t, pinned, 20..30).await;
    let mut new = rules(|r| {
        r.max_messages_per_thread = Some(4);
        r.only_summarized = true;
    });
    let policy = b.retention.create_policy(&t, new.clone()).await.unwrap();
    let at = now();
    let none = prune(&b, &policy, RetentionRule::MessagesPerThread, at, 3).await;
    assert!(none.messages.is_empty(), "no summary yet, nothing covered");
    let summary =
        |covers: i64| NewSummary { text: "s".into(), covers_through: covers, newly_covered: 1, summarizer: "t".into() };
    b.summaries.save_summary(&t, th, summary(3), 0).await.unwrap();
    let done = prune(&b, &policy, RetentionRule::MessagesPerThread, at, 2).await;
    assert_eq!(done.messages.len(), 3, "seqs 1..3, covered");
    b.summaries.save_summary(&t, th, summary(8), 1).await.unwrap();
    let done = prune(&b, &policy, RetentionRule::MessagesPerThread, at, 2).await;
    assert_eq!(done.counts.messages, 3, "seqs 4..6: 7..10 are the newest four");
    assert_eq!(done.counts.summaries, 1, "the summary of 1..3 covers only deleted messages");
    let page = b.messages.page(&t, th, None, None, size(20)).await.unwrap();
    assert_eq!(page.items.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
    assert_eq!(page.items[0].id, stored[6].id);
    let current = b.summaries.current_summary(&t, th).await.unwrap().unwrap();
    assert_eq!(current.covers_through, 8, "the newest summary stands for what went");
    assert_eq!(b.messages.page(&t, pinned, None, None, size(20)).await.unwrap().items.len(), 10, "pinned");
    // Without `only_summarized` the count alone decides.
    new.rules.only_summarized = false;
    new.rules.max_messages_per_thread = Some(1);
    let policy = b.retention.replace_policy(&t, policy.id, new).await.unwrap();
    prune(&b, &policy, RetentionRule::MessagesPerThread, at, 100).await;
    let page = b.messages.page(&t, th, None, None, size(20)).await.unwrap();
    assert_eq!(page.items.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![10]);
    assert_eq!(b.usage.usage(&t).await.unwrap().messages, 11, "usage: 1 + the pinned thread's 10");
}

/// `max_threads_per_resource` keeps each resource's most recently active
/// unpinned threads and deletes the rest, least recently active first.
pub async fn retention_threads_per_resource_keeps_the_most_recent(b: Backend) {
    let t = tenant("acme");
    let t1 = new_thread(&b, &t, "r1", "bot", false).await;
    let t2 = new_thread(&b, &t, "r1", "bot", true).await;
    let t3 = new_thread(&b, &t, "r1", "bot", false).await;
    let t4 = new_thread(&b, &t, "r1", "bot", false).await;
    let other = new_thread(&b, &t, "r2", "bot", false).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // distinct times, not a timing assert
    append(&b, &t, t1, 0..1).await; // t1 is now the most recently active
    let policy = b.retention.create_policy(&t, rules(|r| r.max_threads_per_resource = Some(2))).await.unwrap();
    let done = prune(&b, &policy, RetentionRule::ThreadsPerResource, now(), 10).await;
    assert_eq!(done.threads, vec![t3], "t1 and t4 are the two newest unpinned, t2 is pinned");
    for (id, live) in [(t1, true), (t2, true), (t3, false), (t4, true), (other, true)] {
        assert_eq!(b.threads.get(&t, id).await.is_ok(), live, "{id}");
    }
    assert!(prune(&b, &policy, RetentionRule::ThreadsPerResource, now(), 10).await.threads.is_empty(), "stable");
}

/// Erasing a resource marks its threads (pinned too) a bounded step at a
/// time, then deletes its working memory; another resource is untouched.
pub async fn retention_erase_removes_everything_of_a_resource(b: Backend) {
    let t = tenant("acme");
    let r1 = ResourceId::parse("r1").unwrap();
    let a = new_thread(&b, &t, "r1", "bot", false).await;
    let p = new_thread(&b, &t, "r1", "bot", true).await;
    let keep = new_thread(&b, &t, "r2", "bot", false).await;
    for th in [a, p, keep] {
        append(&b, &t, th, 0..2).await;
    }
    let doc = WorkingContent::Markdown("likes tea".into());
    b.working.put_working(&t, &WorkingScope::Resource(r1.clone()), doc.clone(), 0, 5).await.unwrap();
    b.working.put_working(&t, &WorkingScope::Resource(r1.clone()), doc.clone(), 1, 5).await.unwrap();
    b.working.put_working(&t, &WorkingScope::Thread(a), doc.clone(), 0, 5).await.unwrap();
    let r2 = WorkingScope::Resource(ResourceId::parse("r2").unwrap());
    b.working.put_working(&t, &r2, doc.clone(), 0, 5).await.unwrap();
    let workflow = |resource: &str| memlayer_domain::NewWorkflow {
        resource: Some(ResourceId::parse(resource).unwrap()),
        name: format!("for {resource}"),
        description: String::new(),
        metadata: memlayer_domain::Metadata::default(),
        steps: vec![memlayer_domain::NewStep::new(
            memlayer_domain::StepName::parse("s").unwrap(),
            memlayer_domain::AgentName::parse("bot").unwrap(),
            serde_json::json!({"secret": resource}),
        )],
    };
    let erased_wf = b.workflows.create_workflow(&t, workflow("r1")).await.unwrap().workflow.id;
    let kept_wf = b.workflows.create_workflow(&t, workflow("r2")).await.unwrap().workflow.id;
    // Each step adds to the stored receipt; a receipt not stored is refused
    // before anything is deleted.
    let r2_id = ResourceId::parse("r2").unwrap();
    assert_not_found(b.retention.erase_step(&t, &r2_id, Some(memlayer_domain::RunId::new()), 10).await, "no receipt");
    let mut run = memlayer_domain::RetentionRun::start(t.clone(), memlayer_domain::RunKind::Erase, now());
    run.resource_id = Some(r1.clone());
    b.retention.save_run(&run).await.unwrap();
    let first = b.retention.erase_step(&t, &r1, Some(run.id), 1).await.unwrap();
    assert!(first.more && first.threads.len() == 1, "one thread a step: {first:?}");
    assert!(b.working.get_working(&t, &WorkingScope::Resource(r1.clone())).await.unwrap().is_some(), "not yet");
    let stored = || async {
        let runs = b.retention.unfinished_erasures().await.unwrap();
        runs.into_iter().find(|r| r.id == run.id).expect("the receipt is stored, unfinished")
    };
    let after_one = stored().await;
    assert_eq!((after_one.counts.threads, after_one.counts.messages), (1, 2), "{after_one:?}");
    let second = b.retention.erase_step(&t, &r1, Some(run.id), 1).await.unwrap();
    assert!(second.more, "a full step may have more");
    let last = b.retention.erase_step(&t, &r1, Some(run.id), 1).await.unwrap();
    let receipt = stored().await;
    assert_eq!(
        (receipt.counts.threads, receipt.counts.messages, receipt.counts.working_memory, receipt.counts.workflows),
        (2, 4, 1, 1),
        "every step's deletes in the stored receipt: {receipt:?}"
    );
    let range = receipt.thread_ids.expect("thread id range");
    assert_eq!((range.first, range.last), (a.min(p).as_uuid(), a.max(p).as_uuid()));
    assert!(!last.more && last.threads.is_empty() && last.counts.working_memory == 1, "{last:?}");
    assert_eq!(last.counts.workflows, 1, "the resource's workflow: {last:?}");
    assert_not_found(b.workflows.workflow(&t, erased_wf).await, "erased workflow");
    b.workflows.workflow(&t, kept_wf).await.unwrap();
    assert_eq!(b.working.get_working(&t, &WorkingScope::Resource(r1.clone())).await.unwrap(), None);
    assert!(b.working.working_versions(&t, &WorkingScope::Resource(r1.clone()), 10).await.unwrap().is_empty());
    assert!(b.threads.resource_threads(&t, &r1).await.unwrap().is_empty());
    for th in [a, p] {
        assert_not_found(b.threads.get(&t, th).await, "erased thread");
    }
    assert_not_found(b.working.get_working(&t, &WorkingScope::Thread(a)).await, "thread working memory");
    b.threads.get(&t, keep).await.unwrap();
    assert!(b.working.get_working(&t, &r2).await.unwrap().is_some(), "another resource's document stays");
    assert_eq!(b.usage.usage(&t).await.unwrap().threads, 1);
    let again = b.retention.erase_step(&t, &r1, None, 10).await.unwrap();
    assert!(!again.more && again.counts == memlayer_domain::RunCounts::default(), "erasing again is a no-op");
    while b.threads.sweep_deleted(100).await.unwrap().more {}
    assert_eq!(b.threads.resource_threads(&t, &ResourceId::parse("r2").unwrap()).await.unwrap(), vec![keep]);
}

/// Receipts are the tenant's, newest first, paged by id; an erasure not
/// finished is found for resuming and never purged, a prune cut short is
/// purged by its start. The lease has one holder at a time.
pub async fn retention_runs_and_the_lease(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let mut runs = Vec::new();
    for i in 0..3u64 {
        let mut run = RetentionRun::start(t.clone(), RunKind::Prune, now());
        run.counts.messages = i;
        run.message_ids =
            Some(memlayer_domain::IdRange { first: uuid::Uuid::from_u128(1), last: uuid::Uuid::from_u128(9) });
        run.finished_at = Some(now());
        b.retention.save_run(&run).await.unwrap();
        runs.push(run);
    }
    let mut erase = RetentionRun::start(other.clone(), RunKind::Erase, now());
    erase.resource_id = Some(ResourceId::parse("r1").unwrap());
    b.retention.save_run(&erase).await.unwrap();
    assert_eq!(b.retention.unfinished_erasures().await.unwrap(), vec![erase.clone()]);
    erase.finished_at = Some(now());
    erase.counts.threads = 4;
    b.retention.save_run(&erase).await.unwrap();
    assert!(b.retention.unfinished_erasures().await.unwrap().is_empty(), "finished");
    assert_eq!(b.retention.list_runs(&other, None, 10).await.unwrap(), vec![erase]);
    let page = b.retention.list_runs(&t, None, 2).await.unwrap();
    assert_eq!(page, vec![runs[2].clone(), runs[1].clone()], "newest first");
    let rest = b.retention.list_runs(&t, Some(page[1].id), 2).await.unwrap();
    assert_eq!(rest, vec![runs[0].clone()]);
    // A prune an error cut short (never finished) and an erasure under way.
    let cut_short = RetentionRun::start(t.clone(), RunKind::Prune, now());
    b.retention.save_run(&cut_short).await.unwrap();
    let mut resumable = RetentionRun::start(t.clone(), RunKind::Erase, now());
    resumable.resource_id = Some(ResourceId::parse("r2").unwrap());
    b.retention.save_run(&resumable).await.unwrap();
    assert_eq!(b.retention.purge_runs(now() - time::Duration::minutes(1), 100).await.unwrap(), 0, "all too recent");
    assert_eq!(b.retention.purge_runs(now() + time::Duration::seconds(1), 100).await.unwrap(), 5);
    assert_eq!(b.retention.list_runs(&t, None, 10).await.unwrap(), vec![resumable.clone()], "the erasure stays");
    assert_eq!(b.retention.unfinished_erasures().await.unwrap(), vec![resumable]);
    // The lease.
    let (at, until) = (now(), now() + time::Duration::minutes(5));
    assert!(b.retention.try_lease("prune", "a", at, until).await.unwrap());
    assert!(!b.retention.try_lease("prune", "b", at, until).await.unwrap(), "held by a");
    assert!(b.retention.try_lease("prune", "a", at, until).await.unwrap(), "a renews");
    assert!(b.retention.try_lease("prune", "b", until, until + time::Duration::minutes(5)).await.unwrap(), "expired");
    b.retention.release_lease("prune", "a").await.unwrap();
    assert!(!b.retention.try_lease("prune", "a", at, until).await.unwrap(), "a no longer holds it to release");
    b.retention.release_lease("prune", "b").await.unwrap();
    let store = b.retention.clone();
    let takers = (0..8).map(|i| {
        let store: Arc<dyn crate::RetentionStore> = store.clone();
        tokio::spawn(async move { store.try_lease("race", &format!("h{i}"), at, until).await.unwrap() })
    });
    let mut won = 0;
    for taker in takers.collect::<Vec<_>>() {
        won += u32::from(taker.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one concurrent taker gets a free lease");
}
