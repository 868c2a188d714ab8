//! Contract cases of [`crate::WorkflowStore`]: workflows round-trip with
//! their steps, listings page by keyset under filters, refused operations
//! store nothing, claims lease steps (never one step to two claimers, an
//! expired lease handed out again), failures back off, events are gapless,
//! a delete takes steps, events and step threads with it. Each `pub async
//! fn` here takes a fresh [`Backend`]; adding a case means adding its name
//! to `contract_suite!`'s workflow list (the completeness test fails
//! otherwise).

use std::time::Duration;

use memlayer_domain::{
    AgentName, Metadata, NewStep, NewThread, NewWorkflow, Principal, ResourceId, StepName, StepStatus, TenantId,
    Timestamp, WorkflowFilter, WorkflowOp, WorkflowPatch, WorkflowStatus,
};
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, tenant};
use crate::StoreError;

/// A fixed instant with microsecond precision, as every backend stores it.
fn at(secs: i64) -> Timestamp {
    memlayer_domain::from_micros(1_764_400_000_000_000 + secs * 1_000_000)
}

fn step(name: &str) -> NewStep {
    NewStep::new(StepName::parse(name).unwrap(), AgentName::parse("writer").unwrap(), json!({"task": name}))
}

fn new_workflow(name: &str, steps: Vec<NewStep>) -> NewWorkflow {
    NewWorkflow {
        resource: None,
        name: name.to_owned(),
        description: "does things".to_owned(),
        metadata: Metadata::from_value(json!({"team": "docs"})).unwrap(),
        steps,
    }
}

fn independent(name: &str) -> NewStep {
    let mut s = step(name);
    s.depends_on = Some(Vec::new());
    s
}

/// A created workflow reads back whole (steps in order, dependencies
/// defaulting to the step before, metadata), is another tenant's
/// `NotFound`, and listings go newest first by keyset under each filter.
pub async fn workflow_create_get_and_list_round_trip(b: Backend) {
    let t = tenant("acme");
    let created = b.workflows.create_workflow(&t, new_workflow("digest", vec![step("a"), step("b")])).await.unwrap();
    assert_eq!(created.workflow.status, WorkflowStatus::Draft);
    assert_eq!(created.steps[1].depends_on, vec![StepName::parse("a").unwrap()], "default: the step before");
    let read = b.workflows.workflow(&t, created.workflow.id).await.unwrap();
    assert_eq!(read, created, "read back whole");
    assert_not_found(b.workflows.workflow(&tenant("other"), created.workflow.id).await, "another tenant's");

    let mut ids = vec![created.workflow.id];
    for i in 0..4 {
        let mut new = new_workflow(if i % 2 == 0 { "even" } else { "odd" }, vec![step("s")]);
        new.resource = Some(ResourceId::parse("user-1").unwrap());
        ids.push(b.workflows.create_workflow(&t, new).await.unwrap().workflow.id);
    }
    ids.reverse();
    let all = WorkflowFilter::default();
    let first = b.workflows.list_workflows(&t, &all, None, 2).await.unwrap();
    let second = b.workflows.list_workflows(&t, &all, Some(first[1].id), 10).await.unwrap();
    let paged: Vec<_> = first.iter().chain(&second).map(|w| w.id).collect();
    assert_eq!(paged, ids, "newest first, no gap or repeat across pages");
    let even = WorkflowFilter { name: Some("even".into()), ..WorkflowFilter::default() };
    assert_eq!(b.workflows.list_workflows(&t, &even, None, 10).await.unwrap().len(), 2);
    let user = WorkflowFilter { resource: Some(ResourceId::parse("user-1").unwrap()), ..WorkflowFilter::default() };
    assert_eq!(b.workflows.list_workflows(&t, &user, None, 10).await.unwrap().len(), 4);
    let draft = WorkflowFilter { status: Some(WorkflowStatus::Draft), ..WorkflowFilter::default() };
    assert_eq!(b.workflows.list_workflows(&t, &draft, None, 10).await.unwrap().len(), 5);
    let running = WorkflowFilter { status: Some(WorkflowStatus::Running), ..WorkflowFilter::default() };
    assert!(b.workflows.list_workflows(&t, &running, None, 10).await.unwrap().is_empty());
    assert!(b.workflows.list_workflows(&tenant("other"), &all, None, 10).await.unwrap().is_empty());

    // A caller bound to a resource reaches only its resource's workflows.
    let mut bound = Principal::anonymous(t.clone());
    bound.resource = Some(ResourceId::parse("user-1").unwrap());
    assert_eq!(b.workflows.list_workflows(&bound, &all, None, 10).await.unwrap().len(), 4);
    assert_not_found(b.workflows.workflow(&bound, created.workflow.id).await, "another resource's");
}

/// What the state machine refuses is stored nowhere: a cycle at creation
/// (`Invalid` on `depends_on`), an illegal transition (`Conflict` naming
/// the current state, no event), a step of a running workflow.
pub async fn workflow_refused_operations_store_nothing(b: Backend) {
    let t = tenant("acme");
    let mut a = step("a");
    a.depends_on = Some(vec![StepName::parse("b").unwrap()]);
    let r = b.workflows.create_workflow(&t, new_workflow("cyclic", vec![a, step("b")])).await;
    assert!(matches!(&r, Err(StoreError::Invalid(e)) if e.field == "depends_on"), "{r:?}");
    assert!(b.workflows.list_workflows(&t, &WorkflowFilter::default(), None, 10).await.unwrap().is_empty());

    let w = b.workflows.create_workflow(&t, new_workflow("w", vec![step("a")])).await.unwrap();
    let id = w.workflow.id;
    let events = b.workflows.workflow_events(&t, id, 0, 100).await.unwrap();
    let r = b.workflows.apply_workflow(&t, id, WorkflowOp::Pause, at(0)).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("draft")), "{r:?}");
    assert_eq!(b.workflows.workflow(&t, id).await.unwrap(), w, "unchanged");
    assert_eq!(b.workflows.workflow_events(&t, id, 0, 100).await.unwrap(), events, "no event");
    b.workflows.apply_workflow(&t, id, WorkflowOp::Execute, at(0)).await.unwrap();
    let r = b.workflows.apply_workflow(&t, id, WorkflowOp::AddSteps(vec![step("z")]), at(0)).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("running")), "{r:?}");
    let r = b.workflows.apply_workflow(&t, id, WorkflowOp::AddSteps(vec![step("a")]), at(0)).await;
    assert!(r.is_err());
    b.workflows.apply_workflow(&t, id, WorkflowOp::Pause, at(0)).await.unwrap();
    assert_invalid(b.workflows.apply_workflow(&t, id, WorkflowOp::AddSteps(vec![step("a")]), at(0)).await, "dup name");
    assert_eq!(b.workflows.workflow(&t, id).await.unwrap().steps.len(), 1);
    assert_not_found(b.workflows.apply_workflow(&tenant("other"), id, WorkflowOp::Resume, at(0)).await, "foreign");
}

/// Steps run in dependency order through claims: only a due `ready` step
/// of a `running` workflow is claimed, under the claimer's lease; its
/// completion readies the next (its `$ref` resolved); the last one
/// finishes the workflow, and every transition is an event, seqs 1, 2, …
/// without gaps, paged by `after`.
pub async fn workflow_steps_run_in_order_through_claims(b: Backend) {
    let t = tenant("acme");
    let mut second = step("b");
    second.input = json!({"text": {"$ref": "steps/a/output/text"}});
    let w = b.workflows.create_workflow(&t, new_workflow("w", vec![step("a"), second])).await.unwrap();
    let id = w.workflow.id;
    assert!(b.workflows.claim_steps("h1", at(0), at(30), 10).await.unwrap().is_empty(), "a draft runs nothing");
    b.workflows.apply_workflow(&t, id, WorkflowOp::Execute, at(0)).await.unwrap();
    let claimed = b.workflows.claim_steps("h1", at(1), at(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "b waits for a");
    let a = &claimed[0].step;
    assert_eq!((a.name.as_str(), a.status, a.attempts), ("a", StepStatus::Running, 1));
    assert_eq!(a.lease.as_ref().map(|l| (l.holder.as_str(), l.until)), Some(("h1", at(30))));
    assert!(b.workflows.claim_steps("h2", at(2), at(30), 10).await.unwrap().is_empty(), "leased");
    let done = WorkflowOp::Complete { step: a.id, holder: "h1".into(), output: json!({"text": "hi"}) };
    b.workflows.apply_workflow(&t, id, done, at(3)).await.unwrap();
    let claimed = b.workflows.claim_steps("h2", at(4), at(30), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step.resolved_input, Some(json!({"text": "hi"})), "$ref resolved");
    let done = WorkflowOp::Complete { step: claimed[0].step.id, holder: "h2".into(), output: json!(2) };
    let end = b.workflows.apply_workflow(&t, id, done, at(5)).await.unwrap();
    assert_eq!(end.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(b.workflows.workflow(&t, id).await.unwrap(), end, "stored as returned");

    let events = b.workflows.workflow_events(&t, id, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=u64::try_from(events.len()).unwrap()).collect::<Vec<_>>(), "gapless");
    let last = events.last().unwrap();
    assert_eq!((last.step_id, last.to.as_deref()), (None, Some("succeeded")));
    assert!(events.iter().any(|e| e.step_id == Some(a.id) && e.to.as_deref() == Some("running")));
    let page = b.workflows.workflow_events(&t, id, 2, 3).await.unwrap();
    assert_eq!(page, events[2..5].to_vec(), "keyset by seq");
    assert_not_found(b.workflows.workflow_events(&tenant("other"), id, 0, 10).await, "foreign events");
}

/// A lease that expires (its runner died) is handed to the next claimer
/// with the same idempotency key; a failed attempt waits for its retry
/// time; heartbeats extend a lease; the old holder cannot report.
pub async fn workflow_expired_leases_are_claimed_again_and_failures_back_off(b: Backend) {
    let t = tenant("acme");
    let w = b.workflows.create_workflow(&t, new_workflow("w", vec![step("a")])).await.unwrap();
    let id = w.workflow.id;
    b.workflows.apply_workflow(&t, id, WorkflowOp::Execute, at(0)).await.unwrap();
    let first = b.workflows.claim_steps("dead", at(0), at(10), 1).await.unwrap().remove(0).step;
    let beat = WorkflowOp::Heartbeat { step: first.id, holder: "dead".into(), until: at(20) };
    b.workflows.apply_workflow(&t, id, beat, at(5)).await.unwrap();
    assert!(b.workflows.claim_steps("next", at(15), at(40), 1).await.unwrap().is_empty(), "extended lease");
    let again = b.workflows.claim_steps("next", at(20), at(40), 1).await.unwrap().remove(0).step;
    assert_eq!((again.id, again.attempts), (first.id, 2));
    assert_eq!(again.idempotency_key(), first.idempotency_key(), "same key after a crash");
    let late = WorkflowOp::Complete { step: first.id, holder: "dead".into(), output: json!(0) };
    assert!(matches!(b.workflows.apply_workflow(&t, id, late, at(21)).await, Err(StoreError::Conflict(_))));
    let fail = WorkflowOp::Fail { step: first.id, holder: "next".into(), error: "boom".into(), retry_at: at(60) };
    let after = b.workflows.apply_workflow(&t, id, fail, at(22)).await.unwrap();
    assert_eq!((after.steps[0].status, after.steps[0].error.as_deref()), (StepStatus::Ready, Some("boom")));
    assert!(b.workflows.claim_steps("x", at(59), at(90), 1).await.unwrap().is_empty(), "backing off");
    let third = b.workflows.claim_steps("x", at(60), at(90), 1).await.unwrap().remove(0).step;
    assert_eq!(third.attempts, 3);
    assert_ne!(third.idempotency_key(), first.idempotency_key(), "a retried failure gets a new key");
    let fail = WorkflowOp::Fail { step: first.id, holder: "x".into(), error: "again".into(), retry_at: at(100) };
    let end = b.workflows.apply_workflow(&t, id, fail, at(61)).await.unwrap();
    assert_eq!(end.workflow.status, WorkflowStatus::Failed, "out of attempts");
}

/// Concurrent claimers never get the same step, and every ready step is
/// claimed by one of them.
pub async fn workflow_concurrent_claimers_never_share_a_step(b: Backend) {
    let t = tenant("acme");
    let mut expected = Vec::new();
    for i in 0..8 {
        let w = b
            .workflows
            .create_workflow(&t, new_workflow(&format!("w{i}"), vec![independent("a"), independent("b")]))
            .await
            .unwrap();
        b.workflows.apply_workflow(&t, w.workflow.id, WorkflowOp::Execute, at(0)).await.unwrap();
        expected.extend(w.steps.iter().map(|s| s.id));
    }
    let mut tasks = Vec::new();
    for c in 0..6 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..6 {
                mine.extend(b.workflows.claim_steps(&format!("c{c}"), at(1), at(1000), 2).await.unwrap());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap().into_iter().map(|c| c.step.id));
    }
    claimed.sort();
    let mut unique = claimed.clone();
    unique.dedup();
    assert_eq!(claimed, unique, "a step went to two claimers");
    expected.sort();
    assert_eq!(unique, expected, "every ready step claimed once");
}

/// A running workflow is not deleted (`Conflict`); once cancelled, a
/// delete takes its steps, events and step threads (missing at once).
pub async fn workflow_delete_takes_steps_events_and_threads(b: Backend) {
    let t = tenant("acme");
    let w = b.workflows.create_workflow(&t, new_workflow("w", vec![step("a"), step("b")])).await.unwrap();
    let id = w.workflow.id;
    b.workflows.apply_workflow(&t, id, WorkflowOp::Execute, at(0)).await.unwrap();
    let r = b.workflows.delete_workflow(&t, id).await;
    assert!(
        matches!(&r, Err(StoreError::Conflict(m)) if m.starts_with("workflow is running")),
        "nothing claimed yet: {r:?}"
    );
    let s = b.workflows.claim_steps("h", at(0), at(30), 1).await.unwrap().remove(0).step;
    let thread = b.threads.create(&t, NewThread::default()).await.unwrap();
    let set = WorkflowOp::SetThread { step: s.id, holder: "h".into(), thread: thread.id };
    b.workflows.apply_workflow(&t, id, set, at(1)).await.unwrap();
    let r = b.workflows.delete_workflow(&t, id).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("running")), "{r:?}");
    assert_not_found(b.workflows.delete_workflow(&tenant("other"), id).await, "foreign");
    b.workflows.apply_workflow(&t, id, WorkflowOp::Cancel, at(2)).await.unwrap();
    b.workflows.delete_workflow(&t, id).await.unwrap();
    assert_not_found(b.workflows.workflow(&t, id).await, "workflow gone");
    assert_not_found(b.workflows.workflow_events(&t, id, 0, 10).await, "events gone");
    assert_not_found(b.threads.get(&t, thread.id).await, "step thread gone");
    assert_eq!(b.usage.usage(&t).await.unwrap().threads, 0, "its quota freed");
}

/// A patch changes name, description and metadata, in any status, and
/// nothing else.
pub async fn workflow_patch_changes_descriptive_fields_only(b: Backend) {
    let t = tenant("acme");
    let w = b.workflows.create_workflow(&t, new_workflow("w", vec![step("a")])).await.unwrap();
    let patch = WorkflowPatch {
        name: Some("renamed".into()),
        description: None,
        metadata: Some(Metadata::from_value(json!({"k": 1})).unwrap()),
    };
    let after = b.workflows.patch_workflow(&t, w.workflow.id, patch).await.unwrap();
    assert_eq!((after.workflow.name.as_str(), after.workflow.description.as_str()), ("renamed", "does things"));
    assert_eq!(after.workflow.metadata.as_map().get("k"), Some(&json!(1)));
    assert_eq!((after.workflow.status, &after.steps), (w.workflow.status, &w.steps));
    assert_eq!(b.workflows.workflow(&t, w.workflow.id).await.unwrap(), after);
    let blank = WorkflowPatch { name: Some(" ".into()), ..WorkflowPatch::default() };
    assert_invalid(b.workflows.patch_workflow(&t, w.workflow.id, blank).await, "blank name");
    let _: &TenantId = &t;
}
