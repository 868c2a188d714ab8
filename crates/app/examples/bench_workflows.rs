//! Workflow benchmark (library level, no HTTP): the overhead per step with
//! the in-process no-op runner, and 1,000 workflows of 5 steps run to
//! completion.
//!
//! ```text
//! cargo run --release -p memlayer-app --example bench_workflows                 # libSQL file
//! MEMLAYER_TEST_DATABASE_URL=postgres://… \
//!   cargo run --release -p memlayer-app --example bench_workflows -- --postgres # a fresh Postgres database
//! cargo run --release -p memlayer-app --example bench_workflows -- --quick      # smoke run
//! ```
//!
//! 1. Overhead: 200 one-step workflows run one step at a time
//!    (`workflows.concurrency = 1`): each `run_once` is one step's claim,
//!    thread, input message, thread link, context read, no-op run, output
//!    message, completion and events. Prints p50/p99 of `run_once`.
//! 2. Throughput: 1,000 workflows of 5 steps (in order) executed at once and
//!    run by the loop with `workflows.concurrency = 8` until all succeed.
//!    Prints steps per second and p50/p99 of a step's latency (claim to
//!    completion, from the stored `started_at`/`finished_at`).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use memlayer_adapters_embed::TiktokenCounter;
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{MemoryService, NoopRunner, Runners, WorkflowConfig, WorkflowService};
use memlayer_domain::{
    AgentName, Metadata, NewStep, NewWorkflow, RunnerSpec, StepName, TenantId, WorkflowFilter, WorkflowOp,
    WorkflowStatus,
};
use memlayer_ports::{Database, MessageStore, StateStore, StepRunner, ThreadStore, WorkflowStore};
use serde_json::json;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "an index")]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn workflow(i: usize, steps: usize) -> NewWorkflow {
    let steps = (0..steps)
        .map(|s| {
            let mut step = NewStep::new(
                StepName::parse(format!("s{s}")).unwrap(),
                AgentName::parse("writer").unwrap(),
                json!({"task": s}),
            );
            step.runner = Some(RunnerSpec::Noop);
            step
        })
        .collect();
    NewWorkflow {
        resource: None,
        name: format!("w{i}"),
        description: String::new(),
        metadata: Metadata::default(),
        steps,
    }
}

trait Store: WorkflowStore + ThreadStore + MessageStore + StateStore + Database + 'static {}
impl<T: WorkflowStore + ThreadStore + MessageStore + StateStore + Database + 'static> Store for T {}

fn service<S: Store>(store: &Arc<S>, concurrency: u32) -> WorkflowService {
    let memory = MemoryService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(TiktokenCounter::new()),
        TenantId::parse("bench").unwrap(),
        false,
    );
    let noop: Arc<dyn StepRunner> = Arc::new(NoopRunner);
    let runners = Runners { http: noop.clone(), openai: noop.clone(), noop };
    let config = WorkflowConfig { concurrency, ..WorkflowConfig::default() };
    WorkflowService::new(store.clone(), memory, runners, config)
}

async fn run<S: Store>(store: Arc<S>, quick: bool) {
    let t = TenantId::parse("bench").unwrap();
    println!("{}", store.describe());

    // 1. Overhead per step, one at a time.
    let n = if quick { 20 } else { 200 };
    let one = service(&store, 1);
    for i in 0..n {
        let w = one.create(&t, workflow(i, 1)).await.unwrap();
        one.apply(&t, w.workflow.id, WorkflowOp::Execute).await.unwrap();
    }
    let mut rounds = Vec::with_capacity(n);
    loop {
        let start = Instant::now();
        let r = one.run_once().await.unwrap();
        if r.claimed == 0 {
            break;
        }
        assert_eq!(r.succeeded, 1);
        rounds.push(start.elapsed());
    }
    assert_eq!(rounds.len(), n);
    println!(
        "overhead per step (no-op runner, one at a time, {n} steps): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut rounds, 0.5).as_secs_f64() * 1e3,
        pct(&mut rounds, 0.99).as_secs_f64() * 1e3
    );

    // 2. 1,000 workflows of 5 steps.
    let workflows = if quick { 50 } else { 1_000 };
    let many = service(&store, 8);
    let mut ids = Vec::with_capacity(workflows);
    for i in 0..workflows {
        let w = many.create(&t, workflow(i, 5)).await.unwrap();
        ids.push(w.workflow.id);
    }
    let start = Instant::now();
    for id in &ids {
        many.apply(&t, *id, WorkflowOp::Execute).await.unwrap();
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = many.clone().spawn(rx);
    let running = WorkflowFilter { status: Some(WorkflowStatus::Running), ..WorkflowFilter::default() };
    while !many.list(&t, running.clone(), None, 1).await.unwrap().items.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(true);
    let _ = handle.await;
    let mut latencies = Vec::with_capacity(workflows * 5);
    for id in &ids {
        let s = many.get(&t, *id).await.unwrap();
        assert_eq!(s.workflow.status, WorkflowStatus::Succeeded);
        for step in &s.steps {
            let d = step.finished_at.unwrap() - step.started_at.unwrap();
            latencies.push(Duration::from_micros(u64::try_from(d.whole_microseconds()).unwrap_or(0)));
        }
    }
    let steps = latencies.len();
    println!(
        "{workflows} workflows × 5 steps, concurrency 8: {:.1} s, {:.0} steps/s; step latency p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        steps as f64 / elapsed.as_secs_f64(),
        pct(&mut latencies, 0.5).as_secs_f64() * 1e3,
        pct(&mut latencies, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--postgres") {
        let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else {
            println!("SKIP: no Postgres (set MEMLAYER_TEST_DATABASE_URL)");
            return;
        };
        let store = Arc::new(db.backend().await);
        run(store, quick).await;
    } else {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap());
        run(store, quick).await;
    }
}
