//! `WorkflowService` over libSQL: steps run in order with a thread each
//! (input first, output last), failures retry then fail the workflow, a
//! step past its timeout fails, and a step whose output reached its thread
//! before a crash completes from the thread without running again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use memlayer_adapters_embed::TiktokenCounter;
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{MemoryService, NoopRunner, Runners, STEP_METADATA_KEY, WorkflowConfig, WorkflowService};
use memlayer_domain::{
    AgentName, Metadata, NewMessage, NewStep, NewThread, NewWorkflow, Role, RunnerSpec, StepName, StepStatus, TenantId,
    WorkflowId, WorkflowOp, WorkflowState, WorkflowStatus, now,
};
use memlayer_ports::{StepOutcome, StepRun, StepRunner, StoreError, WorkflowStore};
use serde_json::{Value, json};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Fails its first `fail_first` runs, sleeps `delay` each run, counts runs.
#[derive(Debug, Default)]
struct Scripted {
    runs: AtomicUsize,
    fail_first: usize,
    delay: Duration,
}

#[async_trait::async_trait]
impl StepRunner for Scripted {
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if n < self.fail_first {
            return Err(StoreError::Unavailable(format!("scripted failure {n}")));
        }
        Ok(StepOutcome {
            output: json!({"echo": run.step.run_input()}),
            messages: vec!["done".into()],
            usage: None,
            tool_calls: Vec::new(),
        })
    }
}

struct Fixture {
    service: WorkflowService,
    store: Arc<LibsqlBackend>,
    memory: MemoryService,
}

async fn fixture(runner: Arc<dyn StepRunner>) -> Fixture {
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let memory = MemoryService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(TiktokenCounter::new()),
        tenant(),
        false,
    );
    let runners = Runners { http: runner.clone(), openai: runner.clone(), noop: runner };
    let config = WorkflowConfig { base_backoff_ms: 1, max_backoff_secs: 1, ..WorkflowConfig::default() };
    let service = WorkflowService::new(store.clone(), memory.clone(), runners, config);
    Fixture { service, store, memory }
}

fn step(name: &str, input: Value) -> NewStep {
    let mut s = NewStep::new(StepName::parse(name).unwrap(), AgentName::parse("writer").unwrap(), input);
    s.runner = Some(RunnerSpec::Noop);
    s
}

fn workflow(steps: Vec<NewStep>) -> NewWorkflow {
    NewWorkflow { resource: None, name: "wf".into(), description: String::new(), metadata: Metadata::default(), steps }
}

/// Drains until the workflow finishes (a failed attempt waits out a 1 ms
/// backoff); at most 200 rounds.
async fn finish(f: &Fixture, id: WorkflowId) -> WorkflowState {
    for _ in 0..200 {
        f.service.drain().await.unwrap();
        let state = f.service.get(&tenant(), id).await.unwrap();
        if state.workflow.status.is_finished() {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("workflow {id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_order_each_with_its_own_thread() {
    let f = fixture(Arc::new(NoopRunner)).await;
    let second = step("b", json!({"prev": {"$ref": "steps/a/output/step"}}));
    let w = f.service.create(&tenant(), workflow(vec![step("a", json!("hello")), second])).await.unwrap();
    f.service.apply(&tenant(), w.workflow.id, WorkflowOp::Execute).await.unwrap();
    let done = finish(&f, w.workflow.id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(done.steps[1].resolved_input, Some(json!({"prev": "a"})), "$ref to a's output");
    for s in &done.steps {
        let thread = s.thread_id.expect("a thread per step");
        let t = f.memory.get_thread(&tenant(), thread).await.unwrap();
        assert_eq!(t.agent_id.as_ref().map(AgentName::as_str), Some("writer"));
        let msgs = f.memory.last_messages(&tenant(), thread, None).await.unwrap();
        assert_eq!(msgs.len(), 2, "input, then output");
        assert_eq!(msgs[0].role, Role::User);
        assert_eq!(msgs[1].role, Role::Assistant);
        assert_eq!(serde_json::from_str::<Value>(&msgs[1].content).unwrap(), s.output.clone().unwrap());
    }
    assert_eq!(
        f.memory.last_messages(&tenant(), done.steps[0].thread_id.unwrap(), None).await.unwrap()[0].content,
        "hello"
    );
    let events = f.service.events(&tenant(), w.workflow.id, 0, 1000).await.unwrap();
    assert_eq!(events.last().unwrap().to.as_deref(), Some("succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_retry_with_backoff_until_they_succeed_or_run_out() {
    let runner = Arc::new(Scripted { fail_first: 2, ..Scripted::default() });
    let f = fixture(runner.clone()).await;
    let w = f.service.create(&tenant(), workflow(vec![step("a", json!(1))])).await.unwrap();
    f.service.apply(&tenant(), w.workflow.id, WorkflowOp::Execute).await.unwrap();
    let done = finish(&f, w.workflow.id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Succeeded, "third attempt of 3");
    assert_eq!((done.steps[0].attempts, runner.runs.load(Ordering::SeqCst)), (3, 3));

    let runner = Arc::new(Scripted { fail_first: 10, ..Scripted::default() });
    let f = fixture(runner.clone()).await;
    let mut s = step("a", json!(1));
    s.max_attempts = 2;
    let w = f.service.create(&tenant(), workflow(vec![s, step("b", json!(2))])).await.unwrap();
    f.service.apply(&tenant(), w.workflow.id, WorkflowOp::Execute).await.unwrap();
    let done = finish(&f, w.workflow.id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Failed);
    assert_eq!(done.steps[0].error.as_deref(), Some("scripted failure 1"));
    assert_eq!((done.steps[1].status, runner.runs.load(Ordering::SeqCst)), (StepStatus::Skipped, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_slower_than_its_timeout_fails() {
    let runner = Arc::new(Scripted { delay: Duration::from_secs(30), ..Scripted::default() });
    let f = fixture(runner).await;
    let mut s = step("a", json!(1));
    (s.timeout_ms, s.max_attempts) = (50, 1);
    let w = f.service.create(&tenant(), workflow(vec![s])).await.unwrap();
    f.service.apply(&tenant(), w.workflow.id, WorkflowOp::Execute).await.unwrap();
    let done = finish(&f, w.workflow.id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Failed);
    assert!(done.steps[0].error.as_deref().unwrap().contains("timeout of 50 ms"), "{:?}", done.steps[0].error);
}

/// A server died after appending a step's output to its thread, before
/// completing it: once the lease expires the step completes from the
/// thread, its runner not called again, the output in the thread once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_written_before_a_crash_is_neither_lost_nor_written_twice() {
    let runner = Arc::new(Scripted::default());
    let f = fixture(runner.clone()).await;
    let w = f.service.create(&tenant(), workflow(vec![step("a", json!(1))])).await.unwrap();
    let id = w.workflow.id;
    f.service.apply(&tenant(), id, WorkflowOp::Execute).await.unwrap();
    // The dead server's claim, its lease already over.
    let (at, past) = (now(), now() - Duration::from_secs(120));
    let claimed = f.store.claim_steps("dead", at, past, 1).await.unwrap().remove(0).step;
    let thread = f.memory.create_thread(&tenant(), NewThread::default()).await.unwrap().id;
    let set = WorkflowOp::SetThread { step: claimed.id, holder: "dead".into(), thread };
    f.store.apply_workflow(&tenant(), id, set, at).await.unwrap();
    let key = claimed.idempotency_key();
    let output = json!({"written": "before the crash"});
    let meta = Metadata::from_value(json!({STEP_METADATA_KEY: {"step_id": claimed.id, "key": key, "output": output}}))
        .unwrap();
    let m = NewMessage::new(Role::Assistant, "before the crash", None, None, Vec::new(), meta).unwrap();
    f.memory.append_messages(&tenant(), thread, vec![m], Default::default()).await.unwrap();

    let done = finish(&f, id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(done.steps[0].output, Some(output), "the output from the thread");
    assert_eq!(runner.runs.load(Ordering::SeqCst), 0, "not run again");
    assert_eq!(f.memory.last_messages(&tenant(), thread, None).await.unwrap().len(), 1, "written once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_runners_claim_complete_or_fail_steps() {
    let f = fixture(Arc::new(NoopRunner)).await;
    let w = f.service.create(&tenant(), workflow(vec![step("a", json!(1))])).await.unwrap();
    let op = WorkflowOp::Complete { step: w.steps[0].id, holder: "me".into(), output: json!(1) };
    assert!(
        matches!(f.service.apply(&tenant(), w.workflow.id, op).await, Err(StoreError::Invalid(e)) if e.field == "op")
    );
}

/// Keeps what each run was given.
#[derive(Debug, Default)]
struct Recording {
    runs: std::sync::Mutex<Vec<StepRun>>,
}

#[async_trait::async_trait]
impl StepRunner for Recording {
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError> {
        self.runs.lock().unwrap().push(run);
        let call = memlayer_domain::ToolCall { id: "call_1".into(), name: "lookup".into(), arguments: json!({"q": 1}) };
        Ok(StepOutcome {
            output: json!({"ok": true}),
            messages: vec!["calling".into()],
            usage: None,
            tool_calls: vec![call],
        })
    }
}

/// A step that names no runner runs with its agent's (from the catalog),
/// gets the thread's context as the context engine assembles it (the
/// agent's system prompt first, once) and the agent's tools, and the
/// runner's tool calls are stored on the output message; a free agent
/// name falls back to `workflows.default_runner` and the newest messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_with_its_agents_runner_assembled_context_and_tools() {
    use memlayer_app::{CacheSettings, CatalogService, ContextService};
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let counter = Arc::new(TiktokenCounter::new());
    let memory = MemoryService::new(store.clone(), store.clone(), store.clone(), counter.clone(), tenant(), false);
    let catalog = CatalogService::new(store.clone(), CacheSettings::default());
    let model = memlayer_domain::NewModel {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        context_window: 8_000,
        max_output_tokens: 1_000,
        input_price: 2.5,
        output_price: 10.0,
        is_default: false,
    };
    let model = catalog.create_model(&tenant(), model).await.unwrap();
    let tool = memlayer_domain::NewTool {
        name: "lookup".into(),
        description: "Looks things up".into(),
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    };
    let tool = catalog.create_tool(&tenant(), tool).await.unwrap();
    let agent = memlayer_domain::NewAgent {
        name: AgentName::parse("writer").unwrap(),
        model_id: model.id,
        system_prompt: "You write.".into(),
        tool_ids: vec![tool.id],
        memory: memlayer_domain::MemoryOptions::default(),
        runner: Some(RunnerSpec::Http { url: "http://127.0.0.1:9/hook".into() }),
    };
    catalog.create_agent(&tenant(), agent).await.unwrap();
    let context = ContextService::new(store.clone(), store.clone(), counter, catalog.clone());
    let (http, noop) = (Arc::new(Recording::default()), Arc::new(Recording::default()));
    let runners = Runners { http: http.clone(), openai: Arc::new(NoopRunner), noop: noop.clone() };
    let config = WorkflowConfig { default_runner: Some("noop".into()), ..WorkflowConfig::default() };
    let service = WorkflowService::new(store.clone(), memory.clone(), runners, config)
        .with_catalog(catalog)
        .with_context(context);
    let f = Fixture { service, store, memory };

    let agents_step = NewStep::new(StepName::parse("a").unwrap(), AgentName::parse("writer").unwrap(), json!("hi"));
    let free_step = NewStep::new(StepName::parse("b").unwrap(), AgentName::parse("nobody").unwrap(), json!("yo"));
    let w = f.service.create(&tenant(), workflow(vec![agents_step, free_step])).await.unwrap();
    f.service.apply(&tenant(), w.workflow.id, WorkflowOp::Execute).await.unwrap();
    let done = finish(&f, w.workflow.id).await;
    assert_eq!(done.workflow.status, WorkflowStatus::Succeeded);

    let runs = http.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "the agent's http runner ran step a");
    let run = &runs[0];
    assert_eq!(run.runner, RunnerSpec::Http { url: "http://127.0.0.1:9/hook".into() });
    assert!(run.assembled, "assembled by the context engine");
    assert_eq!(run.context[0], json!({"role": "system", "content": "You write."}));
    assert_eq!(run.context.iter().filter(|m| m["content"] == "You write.").count(), 1, "the prompt once");
    assert_eq!(run.context.last().unwrap(), &json!({"role": "user", "content": "hi"}));
    assert_eq!(run.tools[0]["function"]["name"], json!("lookup"));
    assert_eq!(run.tools[0]["function"]["parameters"]["properties"]["q"]["type"], json!("string"));
    assert_eq!((run.model.as_deref(), run.prices), (Some("gpt-4o"), Some((2.5, 10.0))));
    let thread = done.steps[0].thread_id.unwrap();
    let stored = f.memory.last_messages(&tenant(), thread, None).await.unwrap();
    assert_eq!(stored.last().unwrap().tool_calls[0].name, "lookup", "tool calls kept on the output message");

    let runs = noop.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "a free agent name: workflows.default_runner");
    assert!(!runs[0].assembled, "no model or budget for a free agent: the newest messages");
    assert_eq!(runs[0].context, vec![json!({"role": "user", "content": "yo"})]);
    assert!(runs[0].tools.is_empty());
}
