//! The workflow state machine's rules, one test each, and a property test
//! driving random operation sequences against the invariants of issue 16.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn t0() -> Timestamp {
    crate::from_micros(1_700_000_000_000_000)
}

fn secs(s: i64) -> Timestamp {
    t0() + time::Duration::seconds(s)
}

fn step(name: &str) -> NewStep {
    NewStep::new(StepName::parse(name).unwrap(), AgentName::parse("agent").unwrap(), json!({"n": name}))
}

fn workflow(steps: Vec<NewStep>) -> Result<WorkflowState, TransitionError> {
    let new = NewWorkflow {
        resource: None,
        name: "wf".into(),
        description: String::new(),
        metadata: Metadata::default(),
        steps,
    };
    WorkflowState::create(TenantId::parse("t").unwrap(), new, t0()).map(|(s, _)| s)
}

fn id(s: &WorkflowState, name: &str) -> StepId {
    s.step_named(name).unwrap().id
}

fn status(s: &WorkflowState, name: &str) -> StepStatus {
    s.step_named(name).unwrap().status
}

fn claim(s: &mut WorkflowState, name: &str, holder: &str, at: Timestamp) -> Result<Vec<Transition>, TransitionError> {
    let step = id(s, name);
    s.apply(WorkflowOp::Claim { step, holder: holder.into(), until: at + time::Duration::seconds(30) }, at)
}

fn complete(
    s: &mut WorkflowState,
    name: &str,
    holder: &str,
    output: Value,
) -> Result<Vec<Transition>, TransitionError> {
    let step = id(s, name);
    s.apply(WorkflowOp::Complete { step, holder: holder.into(), output }, t0())
}

#[test]
fn steps_depend_on_the_previous_one_by_default_and_run_in_order() {
    let mut s = workflow(vec![step("a"), step("b"), step("c")]).unwrap();
    assert_eq!(s.step_named("b").unwrap().depends_on, vec![StepName::parse("a").unwrap()]);
    assert!(s.step_named("a").unwrap().depends_on.is_empty());
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    assert_eq!((status(&s, "a"), status(&s, "b")), (StepStatus::Ready, StepStatus::Pending));
    assert_eq!(s.claimable(t0()), vec![id(&s, "a")]);
    claim(&mut s, "a", "h", t0()).unwrap();
    complete(&mut s, "a", "h", json!(1)).unwrap();
    assert_eq!(status(&s, "b"), StepStatus::Ready);
    claim(&mut s, "b", "h", t0()).unwrap();
    complete(&mut s, "b", "h", json!(2)).unwrap();
    claim(&mut s, "c", "h", t0()).unwrap();
    complete(&mut s, "c", "h", json!(3)).unwrap();
    assert_eq!(s.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(s.next_wake(), None);
}

#[test]
fn independent_steps_are_ready_together() {
    let mut b = step("b");
    b.depends_on = Some(vec![]);
    let mut s = workflow(vec![step("a"), b]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    assert_eq!(s.claimable(t0()).len(), 2);
}

#[test]
fn illegal_transitions_name_the_current_state_and_change_nothing() {
    let mut s = workflow(vec![step("a")]).unwrap();
    let before = s.clone();
    let err = s.apply(WorkflowOp::Pause, t0()).unwrap_err();
    assert_eq!(err, TransitionError::Conflict("workflow is draft; only a running workflow can be paused".into()));
    assert_eq!(s, before);
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    let TransitionError::Conflict(m) = s.apply(WorkflowOp::Execute, t0()).unwrap_err() else { panic!() };
    assert!(m.starts_with("workflow is running"), "{m}");
    s.apply(WorkflowOp::Cancel, t0()).unwrap();
    for op in [WorkflowOp::Resume, WorkflowOp::Cancel, WorkflowOp::Execute, WorkflowOp::AddSteps(vec![step("z")])] {
        let TransitionError::Conflict(m) = s.apply(op, t0()).unwrap_err() else { panic!() };
        assert!(m.starts_with("workflow is cancelled"), "{m}");
    }
}

#[test]
fn cycles_unknown_dependencies_and_stray_refs_are_refused() {
    let mut a = step("a");
    a.depends_on = Some(vec![StepName::parse("b").unwrap()]);
    let b = step("b");
    let TransitionError::Invalid(e) = workflow(vec![a, b]).unwrap_err() else { panic!() };
    assert_eq!(e.field, "depends_on");
    assert!(e.reason.contains("cycle"), "{e}");

    let mut x = step("x");
    x.depends_on = Some(vec![StepName::parse("nope").unwrap()]);
    assert!(matches!(workflow(vec![x]), Err(TransitionError::Invalid(e)) if e.field == "depends_on"));

    let mut c = step("c");
    c.depends_on = Some(vec![]);
    c.input = json!({"$ref": "steps/a/output"});
    assert!(matches!(workflow(vec![step("a"), c]), Err(TransitionError::Invalid(e)) if e.field == "input"));
    assert!(matches!(workflow(vec![step("a"), step("a")]), Err(TransitionError::Invalid(e)) if e.field == "name"));
}

#[test]
fn refs_resolve_to_outputs_of_dependencies_when_ready() {
    let mut b = step("b");
    b.input = json!({"text": {"$ref": "steps/a/output/summary/0"}, "all": {"$ref": "steps/a/output"}});
    let mut s = workflow(vec![step("a"), b]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    complete(&mut s, "a", "h", json!({"summary": ["hello"]})).unwrap();
    let b = s.step_named("b").unwrap();
    assert_eq!(b.resolved_input, Some(json!({"text": "hello", "all": {"summary": ["hello"]}})));
}

#[test]
fn a_ref_that_finds_nothing_fails_the_step() {
    let mut b = step("b");
    b.input = json!({"$ref": "steps/a/output/missing"});
    let mut s = workflow(vec![step("a"), b]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    complete(&mut s, "a", "h", json!({})).unwrap();
    assert_eq!(status(&s, "b"), StepStatus::Failed);
    assert_eq!(s.workflow.status, WorkflowStatus::Failed);
}

#[test]
fn failed_attempts_retry_with_backoff_then_fail_the_workflow() {
    let mut a = step("a");
    a.max_attempts = 2;
    let mut s = workflow(vec![a, step("b")]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    let a = id(&s, "a");
    s.apply(WorkflowOp::Fail { step: a, holder: "h".into(), error: "boom".into(), retry_at: secs(10) }, t0()).unwrap();
    assert_eq!(status(&s, "a"), StepStatus::Ready);
    assert!(s.claimable(secs(9)).is_empty());
    assert!(claim(&mut s, "a", "h", secs(9)).is_err());
    assert_eq!(s.next_wake(), Some(secs(10)));
    claim(&mut s, "a", "h", secs(10)).unwrap();
    s.apply(WorkflowOp::Fail { step: a, holder: "h".into(), error: "boom".into(), retry_at: secs(30) }, secs(10))
        .unwrap();
    assert_eq!(status(&s, "a"), StepStatus::Failed);
    assert_eq!(status(&s, "b"), StepStatus::Skipped);
    assert_eq!(s.workflow.status, WorkflowStatus::Failed);
}

#[test]
fn an_optional_step_failing_lets_the_workflow_continue() {
    let mut a = step("a");
    a.max_attempts = 1;
    a.optional = true;
    let mut s = workflow(vec![a, step("b")]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    let a = id(&s, "a");
    s.apply(WorkflowOp::Fail { step: a, holder: "h".into(), error: "x".into(), retry_at: t0() }, t0()).unwrap();
    assert_eq!(s.workflow.status, WorkflowStatus::Running);
    assert_eq!(status(&s, "b"), StepStatus::Ready);
}

#[test]
fn an_expired_lease_is_claimed_again_with_the_same_idempotency_key() {
    let mut s = workflow(vec![step("a")]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "dead", t0()).unwrap();
    let key = s.step_named("a").unwrap().idempotency_key();
    assert!(claim(&mut s, "a", "other", secs(29)).is_err(), "a live lease is not taken");
    claim(&mut s, "a", "other", secs(30)).unwrap();
    assert_eq!(s.step_named("a").unwrap().idempotency_key(), key);
    assert!(complete(&mut s, "a", "dead", json!(1)).is_err(), "the old holder cannot report");
    complete(&mut s, "a", "other", json!(1)).unwrap();
}

#[test]
fn pause_starts_nothing_new_and_lets_running_steps_finish() {
    let mut s = workflow(vec![step("a"), step("b")]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    s.apply(WorkflowOp::Pause, t0()).unwrap();
    complete(&mut s, "a", "h", json!(1)).unwrap();
    assert_eq!(status(&s, "b"), StepStatus::Pending);
    assert!(s.claimable(secs(100)).is_empty());
    s.apply(WorkflowOp::Resume, t0()).unwrap();
    assert_eq!(status(&s, "b"), StepStatus::Ready);
}

#[test]
fn cancel_marks_unfinished_steps_cancelled() {
    let mut s = workflow(vec![step("a"), step("b")]).unwrap();
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    claim(&mut s, "a", "h", t0()).unwrap();
    s.apply(WorkflowOp::Cancel, t0()).unwrap();
    assert!(s.steps.iter().all(|x| x.status == StepStatus::Cancelled && x.lease.is_none()));
    assert!(complete(&mut s, "a", "h", json!(1)).is_err());
}

#[test]
fn steps_are_added_and_removed_only_while_draft_or_paused() {
    let mut s = workflow(vec![step("a")]).unwrap();
    s.apply(WorkflowOp::AddSteps(vec![step("b")]), t0()).unwrap();
    assert_eq!(s.step_named("b").unwrap().depends_on, vec![StepName::parse("a").unwrap()]);
    let a = id(&s, "a");
    assert!(matches!(s.apply(WorkflowOp::RemoveStep(a), t0()), Err(TransitionError::Conflict(m)) if m.contains("b")));
    s.apply(WorkflowOp::Execute, t0()).unwrap();
    assert!(
        matches!(s.apply(WorkflowOp::AddSteps(vec![step("c")]), t0()), Err(TransitionError::Conflict(m)) if m.starts_with("workflow is running"))
    );
    s.apply(WorkflowOp::Pause, t0()).unwrap();
    s.apply(WorkflowOp::AddSteps(vec![step("c")]), t0()).unwrap();
    let c = id(&s, "c");
    s.apply(WorkflowOp::RemoveStep(c), t0()).unwrap();
    assert!(s.step_named("c").is_none());
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = |n| backoff(Duration::from_secs(1), Duration::from_secs(60), n);
    assert_eq!([b(1), b(2), b(3), b(7), b(30)].map(|d| d.as_secs()), [1, 2, 4, 60, 60]);
}

#[test]
fn cursors_are_bound_to_tenant_and_filter() {
    let t = TenantId::parse("t").unwrap();
    let f = WorkflowFilter { status: Some(WorkflowStatus::Running), ..WorkflowFilter::default() };
    let last = WorkflowId::new();
    let c = WorkflowCursor::encode(&t, &f, last);
    assert_eq!(WorkflowCursor::decode(&c, &t, &f).unwrap(), last);
    assert!(WorkflowCursor::decode(&c, &t, &WorkflowFilter::default()).is_err());
    assert!(WorkflowCursor::decode(&c, &TenantId::parse("u").unwrap(), &f).is_err());
}

// ---- property test ----

#[derive(Debug, Clone)]
enum Action {
    Execute,
    Pause,
    Resume,
    Cancel,
    Claim(usize, u8),
    Heartbeat(usize, u8),
    Complete(usize, u8),
    Fail(usize, u8, u8),
    Retry(usize),
    /// Time passes (a runner may have died: its lease expires).
    Tick(u8),
    Remove(usize),
    Add,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => Just(Action::Execute),
        1 => Just(Action::Pause),
        1 => Just(Action::Resume),
        1 => Just(Action::Cancel),
        6 => (0..6usize, 0..3u8).prop_map(|(i, h)| Action::Claim(i, h)),
        2 => (0..6usize, 0..3u8).prop_map(|(i, h)| Action::Heartbeat(i, h)),
        5 => (0..6usize, 0..3u8).prop_map(|(i, h)| Action::Complete(i, h)),
        3 => (0..6usize, 0..3u8, 0..40u8).prop_map(|(i, h, d)| Action::Fail(i, h, d)),
        1 => (0..6usize).prop_map(Action::Retry),
        3 => (0..60u8).prop_map(Action::Tick),
        1 => (0..6usize).prop_map(Action::Remove),
        1 => Just(Action::Add),
    ]
}

/// Steps with dependencies on earlier steps only (so acyclic), random
/// optional flags and attempts.
fn steps() -> impl Strategy<Value = Vec<NewStep>> {
    (1..6usize).prop_flat_map(|n| {
        proptest::collection::vec((proptest::collection::vec(any::<bool>(), 6), any::<bool>(), 1..4u32), n).prop_map(
            |specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (deps, optional, attempts))| {
                        let mut s = step(&format!("s{i}"));
                        s.depends_on = Some(
                            (0..i).filter(|&j| deps[j]).map(|j| StepName::parse(format!("s{j}")).unwrap()).collect(),
                        );
                        if let Some(first) = s.depends_on.as_ref().and_then(|d| d.first()) {
                            s.input = json!({"from": {"$ref": format!("steps/{first}/output")}});
                        }
                        s.optional = optional;
                        s.max_attempts = attempts;
                        s
                    })
                    .collect()
            },
        )
    })
}

fn check_invariants(s: &WorkflowState) {
    let w = s.workflow.status;
    for st in &s.steps {
        assert_eq!(st.status == StepStatus::Running, st.lease.is_some(), "lease iff running: {st:?}");
        assert!(st.attempts <= st.max_attempts, "attempts within max: {st:?}");
        if w == WorkflowStatus::Draft {
            assert_eq!((st.status, st.attempts), (StepStatus::Pending, 0), "nothing moves in a draft");
        }
        if w.is_finished() {
            assert!(st.status.is_finished(), "a finished workflow has only finished steps: {st:?}");
        }
        if matches!(st.status, StepStatus::Ready | StepStatus::Running | StepStatus::Succeeded) {
            for d in &st.depends_on {
                let dep = s.step_named(d.as_str()).expect("a dependency exists");
                assert!(dep.satisfies(), "step {} is {} before its dependency {d} succeeded", st.name, st.status);
            }
        }
        if st.status == StepStatus::Succeeded {
            assert!(st.output.is_some());
        }
    }
    match w {
        WorkflowStatus::Succeeded => assert!(s.steps.iter().all(|x| x.satisfies())),
        WorkflowStatus::Failed => {
            assert!(s.steps.iter().any(|x| x.status == StepStatus::Failed && !x.optional));
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_operations_keep_every_invariant(steps in steps(), actions in proptest::collection::vec(action(), 1..60)) {
        let mut s = workflow(steps).unwrap();
        let mut clock = 0i64;
        let mut added = 0;
        check_invariants(&s);
        for a in actions {
            let at = secs(clock);
            let pick = |s: &WorkflowState, i: usize| s.steps.get(i % s.steps.len().max(1)).map(|x| x.id);
            let holder = |h: u8| format!("h{h}");
            let op = match a {
                Action::Execute => Some(WorkflowOp::Execute),
                Action::Pause => Some(WorkflowOp::Pause),
                Action::Resume => Some(WorkflowOp::Resume),
                Action::Cancel => Some(WorkflowOp::Cancel),
                Action::Claim(i, h) => pick(&s, i).map(|step| WorkflowOp::Claim { step, holder: holder(h), until: at + time::Duration::seconds(30) }),
                Action::Heartbeat(i, h) => pick(&s, i).map(|step| WorkflowOp::Heartbeat { step, holder: holder(h), until: at + time::Duration::seconds(30) }),
                Action::Complete(i, h) => pick(&s, i).map(|step| WorkflowOp::Complete { step, holder: holder(h), output: json!({"by": h}) }),
                Action::Fail(i, h, d) => pick(&s, i).map(|step| WorkflowOp::Fail { step, holder: holder(h), error: "e".into(), retry_at: at + time::Duration::seconds(i64::from(d)) }),
                Action::Retry(i) => pick(&s, i).map(WorkflowOp::Retry),
                Action::Tick(d) => { clock += i64::from(d); None }
                Action::Remove(i) => pick(&s, i).map(WorkflowOp::RemoveStep),
                Action::Add => { added += 1; Some(WorkflowOp::AddSteps(vec![step(&format!("x{added}"))])) }
            };
            let Some(op) = op else { continue };
            let before = s.clone();
            let claimable = s.claimable(at);
            let is_claim = matches!(op, WorkflowOp::Claim { .. });
            let claimed = if let WorkflowOp::Claim { step, .. } = &op { Some(*step) } else { None };
            match s.apply(op, at) {
                Ok(_) => {
                    prop_assert!(!before.workflow.status.is_finished(), "a finished workflow changed");
                    if is_claim {
                        prop_assert!(claimable.contains(&claimed.unwrap()), "only a claimable step is claimed");
                    }
                }
                Err(_) => prop_assert_eq!(&s, &before, "a refused operation changed the state"),
            }
            check_invariants(&s);
        }
    }

    #[test]
    fn a_cycle_is_refused_exactly_when_the_graph_has_one(edges in proptest::collection::vec((0..5usize, 0..5usize), 0..8)) {
        let names: Vec<StepName> = (0..5).map(|i| StepName::parse(format!("s{i}")).unwrap()).collect();
        let steps: Vec<NewStep> = (0..5).map(|i| {
            let mut s = step(&format!("s{i}"));
            let mut deps: Vec<StepName> = edges.iter().filter(|(a, _)| *a == i).map(|(_, b)| names[*b].clone()).collect();
            deps.sort();
            deps.dedup();
            s.depends_on = Some(deps);
            s
        }).collect();
        // Reachability by repeated relaxation: a cycle is a node reaching itself.
        let mut reach = [[false; 5]; 5];
        for (a, b) in &edges { reach[*a][*b] = true; }
        for k in 0..5 { for i in 0..5 { for j in 0..5 { if reach[i][k] && reach[k][j] { reach[i][j] = true; } } } }
        let cyclic = (0..5).any(|i| reach[i][i]);
        let result = workflow(steps);
        prop_assert_eq!(result.is_err(), cyclic, "{:?}", result.err());
    }
}

/// A runner URL's length is counted in characters, as the OpenAPI
/// document's `maxLength` counts it: 2,048 two-byte characters pass.
#[test]
fn runner_url_length_counts_characters() {
    let url = |n: usize| RunnerSpec::Http { url: format!("https://{}", "é".repeat(n - 8)) };
    assert!(url(2_048).validate("runner").is_ok());
    assert!(url(2_049).validate("runner").is_err());
    assert!(RunnerSpec::Http { url: "http://a".into() }.validate("runner").is_err(), "shorter than 10");
}
