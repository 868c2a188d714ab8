//! `WorkflowService` (issue 16): the workflow use cases and the runner loop.
//!
//! Callers create, change and drive workflows through the service; each
//! call is one [`WorkflowStore`] operation (the domain's state machine
//! applied and stored in one transaction). The runner loop, started by
//! `Services::start_background`, claims due steps under a lease
//! (`workflows.lease_secs`), at most `workflows.concurrency` at a time, and
//! runs each one:
//!
//! 1. its thread: created when it first starts (agent = the step's agent,
//!    resource = the workflow's, the input as the first user message) and
//!    recorded on the step; a step claimed again after a crash keeps it;
//! 2. if the thread already ends with the output message of this attempt
//!    (the process died after appending it, before completing the step), the
//!    step completes with that output without running again, so no output
//!    is lost or written twice;
//! 3. otherwise the runner runs it (the step's own `runner`, else its
//!    agent's in the catalog, else `workflows.default_runner`) with the
//!    thread's context assembled by the context engine (else the agent's
//!    system prompt and the newest messages) and the agent's tools, within
//!    the step's timeout, a heartbeat
//!    extending the lease meanwhile; its messages are appended to the thread
//!    (the last one marked as the output, carrying it), then the step is
//!    completed;
//! 4. a failure or timeout is recorded, and the step is due again after an
//!    exponential backoff (`workflows.base_backoff_ms`, doubled per
//!    failure, at most `workflows.max_backoff_secs`) while attempts remain.
//!
//! A killed server leaves its leases to expire; another server (or the
//! restarted one) claims the step again with the same idempotency key.

use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::{
    DomainError, Metadata, NewMessage, NewStep, NewThread, NewWorkflow, Reach, Role, RunnerSpec, Step, StepId,
    TenantId, Title, Workflow, WorkflowCursor, WorkflowEvent, WorkflowFilter, WorkflowId, WorkflowOp, WorkflowPatch,
    WorkflowState, backoff, now,
};
use memlayer_ports::{ClaimedStep, StepOutcome, StepRun, StepRunner, StoreError, WorkflowStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};

use crate::{AppendOptions, CatalogService, ContextRequest, ContextService, MemoryService, Secret};

/// The metadata key of a step thread's messages written by the runner
/// loop: `{"workflow_id", "step_id", "key", "output"}` on the output message.
pub const STEP_METADATA_KEY: &str = "_workflow_step";

/// Most messages of a step's thread sent to a runner as its context.
const CONTEXT_MESSAGES: u32 = 100;

/// `workflows.*`: the runner loop and the runners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Run steps in this process (`false`: the API still stores and drives
    /// workflows; another server runs them).
    pub enabled: bool,
    /// Most steps this process runs at once.
    pub concurrency: u32,
    /// How long a claimed step is leased, in seconds (renewed every third of
    /// it while it runs; a crashed server's steps run again after it).
    pub lease_secs: u64,
    /// How often an idle loop looks for due steps, in milliseconds.
    pub poll_interval_ms: u64,
    /// First retry delay of a failed step, in milliseconds (doubled per
    /// failure).
    pub base_backoff_ms: u64,
    /// Longest retry delay, in seconds.
    pub max_backoff_secs: u64,
    /// The runner of steps that name none: `noop`, `openai`, or an
    /// `http(s)://` URL; unset: such a step fails with `no runner`.
    pub default_runner: Option<String>,
    /// The Standard Webhooks signing secret of the `http` runner
    /// (`whsec_` and base64, or any text); unset: requests are unsigned.
    pub signing_secret: Option<Secret>,
    /// The chat-completions endpoint of the `openai` runner.
    pub openai: OpenAiRunnerConfig,
}

/// `workflows.openai.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiRunnerConfig {
    /// Base URL up to the API version; `/chat/completions` is appended.
    pub base_url: String,
    /// Bearer key; never logged or shown.
    pub api_key: Option<Secret>,
    /// The model of agents that are not in the catalog.
    pub model: String,
}

impl Default for OpenAiRunnerConfig {
    fn default() -> Self {
        Self { base_url: "https://api.openai.com/v1".into(), api_key: None, model: "gpt-4o-mini".into() }
    }
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            lease_secs: 30,
            poll_interval_ms: 500,
            base_backoff_ms: 1_000,
            max_backoff_secs: 300,
            default_runner: None,
            signing_secret: None,
            openai: OpenAiRunnerConfig::default(),
        }
    }
}

impl WorkflowConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// The key and what to set.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000).contains(&self.concurrency) {
            return Err(("workflows.concurrency", "must be between 1 and 1000".into()));
        }
        if !(2..=3_600).contains(&self.lease_secs) {
            return Err(("workflows.lease_secs", "must be between 2 and 3600".into()));
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(("workflows.poll_interval_ms", "must be between 10 and 60000".into()));
        }
        if self.base_backoff_ms == 0 || self.max_backoff_secs == 0 {
            return Err(("workflows.base_backoff_ms", "backoffs must be at least 1".into()));
        }
        if let Some(r) = &self.default_runner {
            parse_runner(r).map_err(|e| ("workflows.default_runner", e.reason))?;
        }
        Ok(())
    }

    fn default_spec(&self) -> Option<RunnerSpec> {
        self.default_runner.as_deref().and_then(|r| parse_runner(r).ok())
    }
}

fn parse_runner(r: &str) -> Result<RunnerSpec, DomainError> {
    let spec = match r {
        "noop" => RunnerSpec::Noop,
        "openai" => RunnerSpec::Openai,
        url => RunnerSpec::Http { url: url.to_owned() },
    };
    spec.validate("workflows.default_runner")?;
    Ok(spec)
}

/// The runners a [`WorkflowService`] picks from by a step's [`RunnerSpec`].
#[derive(Debug, Clone)]
pub struct Runners {
    /// `{"kind": "http", …}`: the URL is the step's.
    pub http: Arc<dyn StepRunner>,
    /// `{"kind": "openai"}`.
    pub openai: Arc<dyn StepRunner>,
    /// `{"kind": "noop"}`, or a host application's in-process runner.
    pub noop: Arc<dyn StepRunner>,
}

/// A page of workflows.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPage {
    /// The workflows, newest first.
    pub items: Vec<Workflow>,
    /// The cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// What one [`WorkflowService::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunRound {
    /// Steps claimed.
    pub claimed: usize,
    /// Steps completed.
    pub succeeded: usize,
    /// Attempts that failed.
    pub failed: usize,
}

/// The workflow use cases and the runner loop.
#[derive(Debug, Clone)]
pub struct WorkflowService {
    store: Arc<dyn WorkflowStore>,
    memory: MemoryService,
    catalog: Option<CatalogService>,
    context: Option<ContextService>,
    runners: Runners,
    config: WorkflowConfig,
    holder: String,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
}

impl WorkflowService {
    /// A service over `store`, writing step threads through `memory`.
    #[must_use]
    pub fn new(store: Arc<dyn WorkflowStore>, memory: MemoryService, runners: Runners, config: WorkflowConfig) -> Self {
        let holder = format!("{}-{}", std::process::id(), StepId::new());
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
        Self {
            store,
            memory,
            catalog: None,
            context: None,
            runners,
            config,
            holder,
            slots,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Reads agents' models and system prompts from the catalog.
    #[must_use]
    pub fn with_catalog(mut self, catalog: CatalogService) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Sends runners the step thread's context as the context engine
    /// assembles it (under the agent's model and budget).
    #[must_use]
    pub fn with_context(mut self, context: ContextService) -> Self {
        self.context = Some(context);
        self
    }

    /// Runs steps of runner kind `noop` with `runner` (a host
    /// application's in-process runner).
    #[must_use]
    pub fn with_in_process_runner(mut self, runner: Arc<dyn StepRunner>) -> Self {
        self.runners.noop = runner;
        self
    }

    /// Who this process's leases name.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Creates a `draft` workflow.
    ///
    /// # Errors
    /// `Invalid` naming the field (a cycle, an unknown dependency…),
    /// `Forbidden` for a bound caller naming another resource.
    pub async fn create(&self, who: &(impl Reach + 'static), new: NewWorkflow) -> Result<WorkflowState, StoreError> {
        self.store.create_workflow(who, new).await
    }

    /// A workflow with its steps.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get(&self, who: &(impl Reach + 'static), id: WorkflowId) -> Result<WorkflowState, StoreError> {
        self.store.workflow(who, id).await
    }

    /// A page of workflows, newest first.
    ///
    /// # Errors
    /// `Invalid` on `cursor` for a cursor of another listing.
    pub async fn list(
        &self,
        who: &(impl Reach + 'static),
        filter: WorkflowFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<WorkflowPage, StoreError> {
        let limit = limit.min(memlayer_ports::MAX_WORKFLOW_PAGE);
        let after =
            cursor.filter(|c| !c.is_empty()).map(|c| WorkflowCursor::decode(c, who.tenant(), &filter)).transpose()?;
        let items = self.store.list_workflows(who, &filter, after, limit).await?;
        let next_cursor = (items.len() == limit as usize && limit > 0)
            .then(|| items.last().map(|w| WorkflowCursor::encode(who.tenant(), &filter, w.id)))
            .flatten();
        Ok(WorkflowPage { items, next_cursor })
    }

    /// Changes name, description or metadata.
    ///
    /// # Errors
    /// `NotFound`, `Invalid`.
    pub async fn patch(
        &self,
        who: &(impl Reach + 'static),
        id: WorkflowId,
        patch: WorkflowPatch,
    ) -> Result<WorkflowState, StoreError> {
        self.store.patch_workflow(who, id, patch).await
    }

    /// Deletes a workflow that is not running, with its steps, events and
    /// step threads.
    ///
    /// # Errors
    /// `Conflict` while it runs, `NotFound`.
    pub async fn delete(&self, who: &(impl Reach + 'static), id: WorkflowId) -> Result<(), StoreError> {
        self.store.delete_workflow(who, id).await
    }

    /// Applies a caller's operation (execute, pause, resume, cancel, add or
    /// remove steps, retry), waking the runner loop when steps may be due.
    ///
    /// # Errors
    /// `Conflict` naming the current state, `Invalid`, `NotFound`;
    /// `Invalid` on `op` for the operations only a runner may send.
    pub async fn apply(
        &self,
        who: &(impl Reach + 'static),
        id: WorkflowId,
        op: WorkflowOp,
    ) -> Result<WorkflowState, StoreError> {
        if matches!(
            op,
            WorkflowOp::Claim { .. }
                | WorkflowOp::Heartbeat { .. }
                | WorkflowOp::SetThread { .. }
                | WorkflowOp::Complete { .. }
                | WorkflowOp::Fail { .. }
        ) {
            return Err(DomainError::new("op", "only a runner claims, heartbeats, completes or fails steps").into());
        }
        let state = self.store.apply_workflow(who, id, op, now()).await?;
        self.wake.notify_one();
        Ok(state)
    }

    /// Adds steps (while `draft` or `paused`).
    ///
    /// # Errors
    /// As [`WorkflowService::apply`].
    pub async fn add_steps(
        &self,
        who: &(impl Reach + 'static),
        id: WorkflowId,
        steps: Vec<NewStep>,
    ) -> Result<WorkflowState, StoreError> {
        self.apply(who, id, WorkflowOp::AddSteps(steps)).await
    }

    /// Removes a step that never started (while `draft` or `paused`).
    ///
    /// # Errors
    /// As [`WorkflowService::apply`].
    pub async fn remove_step(
        &self,
        who: &(impl Reach + 'static),
        id: WorkflowId,
        step: StepId,
    ) -> Result<WorkflowState, StoreError> {
        self.apply(who, id, WorkflowOp::RemoveStep(step)).await
    }

    /// The workflow's events after `after`, oldest first.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn events(
        &self,
        who: &(impl Reach + 'static),
        id: WorkflowId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<WorkflowEvent>, StoreError> {
        self.store.workflow_events(who, id, after, limit).await
    }

    /// Claims what free slots allow and runs those steps to their end
    /// (success or a recorded failure).
    ///
    /// # Errors
    /// When the claim fails; a step's own failure is recorded, not returned.
    pub async fn run_once(&self) -> Result<RunRound, StoreError> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(RunRound::default());
        }
        let at = now();
        let lease = at + Duration::from_secs(self.config.lease_secs);
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let claimed = self.store.claim_steps(&self.holder, at, lease, limit).await?;
        let mut round = RunRound { claimed: claimed.len(), ..RunRound::default() };
        let mut tasks = Vec::with_capacity(claimed.len());
        for c in claimed {
            let Ok(permit) = self.slots.clone().acquire_owned().await else { break };
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                let ok = this.run_step(c).await;
                drop(permit);
                ok
            }));
        }
        for t in tasks {
            match t.await {
                Ok(true) => round.succeeded += 1,
                Ok(false) | Err(_) => round.failed += 1,
            }
        }
        Ok(round)
    }

    /// Runs rounds until one claims nothing (tests, benchmarks, tools).
    ///
    /// # Errors
    /// When a claim fails.
    pub async fn drain(&self) -> Result<RunRound, StoreError> {
        let mut total = RunRound::default();
        loop {
            let r = self.run_once().await?;
            if r.claimed == 0 {
                return Ok(total);
            }
            total.claimed += r.claimed;
            total.succeeded += r.succeeded;
            total.failed += r.failed;
        }
    }

    /// The runner loop: claims due steps while slots are free and runs each
    /// in its own task, until `shutdown`.
    #[must_use]
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let poll = Duration::from_millis(self.config.poll_interval_ms);
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let claimed = match self.claim_and_spawn().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "workflow runner: store error");
                        0
                    }
                };
                if claimed == 0 {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        })
    }

    /// Claims for the free slots and spawns each step's run; returns how
    /// many it claimed. A finished run wakes the loop (its step may have
    /// readied the next).
    async fn claim_and_spawn(&self) -> Result<usize, StoreError> {
        let free = self.slots.available_permits();
        if free == 0 {
            // Wait for a slot rather than spin.
            let permit = self.slots.clone().acquire_owned().await.map_err(StoreError::backend)?;
            drop(permit);
            return Ok(1);
        }
        let at = now();
        let lease = at + Duration::from_secs(self.config.lease_secs);
        let claimed = self.store.claim_steps(&self.holder, at, lease, u32::try_from(free).unwrap_or(u32::MAX)).await?;
        let n = claimed.len();
        for c in claimed {
            let permit = self.slots.clone().acquire_owned().await.map_err(StoreError::backend)?;
            let this = self.clone();
            tokio::spawn(async move {
                this.run_step(c).await;
                drop(permit);
                this.wake.notify_one();
            });
        }
        Ok(n)
    }

    /// Runs one claimed step to its end; `true` when it completed.
    #[tracing::instrument(name = "workflow.step", skip_all, fields(tenant = %claimed.workflow.tenant,
        workflow = %claimed.workflow.id, step = %claimed.step.id))]
    async fn run_step(&self, claimed: ClaimedStep) -> bool {
        let ClaimedStep { workflow, step } = claimed;
        let tenant = workflow.tenant.clone();
        let (wid, sid) = (workflow.id, step.id);
        let heartbeat = self.spawn_heartbeat(tenant.clone(), wid, sid, step.timeout_ms);
        let result = self.attempt(&workflow, &step).await;
        heartbeat.abort();
        let at = now();
        match result {
            Ok(output) => {
                let op = WorkflowOp::Complete { step: sid, holder: self.holder.clone(), output };
                match self.store.apply_workflow(&tenant, wid, op, at).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::info!(workflow = %wid, step = %sid, error = %e, "workflow step result not recorded");
                        false
                    }
                }
            }
            Err(e) => {
                let delay = backoff(
                    Duration::from_millis(self.config.base_backoff_ms),
                    Duration::from_secs(self.config.max_backoff_secs),
                    step.failures + 1,
                );
                tracing::debug!(workflow = %wid, step = %sid, error = %e, "workflow step attempt failed");
                let error = match e {
                    StoreError::Unavailable(reason) => reason,
                    StoreError::Invalid(e) => e.to_string(),
                    other => other.to_string(),
                };
                let op = WorkflowOp::Fail { step: sid, holder: self.holder.clone(), error, retry_at: at + delay };
                if let Err(e) = self.store.apply_workflow(&tenant, wid, op, at).await {
                    tracing::info!(workflow = %wid, step = %sid, error = %e, "workflow step failure not recorded");
                }
                false
            }
        }
    }

    fn spawn_heartbeat(
        &self,
        tenant: TenantId,
        workflow: WorkflowId,
        step: StepId,
        timeout_ms: u64,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let holder = self.holder.clone();
        let lease = Duration::from_secs(self.config.lease_secs);
        let _ = timeout_ms;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let op = WorkflowOp::Heartbeat { step, holder: holder.clone(), until: now() + lease };
                if let Err(e) = store.apply_workflow(&tenant, workflow, op, now()).await {
                    tracing::info!(%workflow, %step, error = %e, "workflow step lease lost");
                    return;
                }
            }
        })
    }

    /// One attempt: the thread, the recovery of an output already written,
    /// the runner within the timeout, the output appended.
    async fn attempt(&self, workflow: &Workflow, step: &Step) -> Result<Value, StoreError> {
        let tenant = &workflow.tenant;
        let key = step.idempotency_key();
        let thread = match step.thread_id {
            Some(t) => t,
            None => {
                let t = self.create_thread(workflow, step).await?;
                let op = WorkflowOp::SetThread { step: step.id, holder: self.holder.clone(), thread: t };
                self.store.apply_workflow(tenant, workflow.id, op, now()).await?;
                t
            }
        };
        let history =
            self.memory.last_messages(tenant, thread, memlayer_domain::PageSize::new(CONTEXT_MESSAGES)?).await?;
        if let Some(output) = history.last().and_then(|m| recorded_output(m, &key)) {
            return Ok(output);
        }
        let agent = self.agent_settings(tenant, step).await?;
        let spec = self.runner_spec(step, agent.runner.as_ref())?;
        let (context, assembled) = match self.assembled_context(tenant, thread).await {
            Some(messages) => (messages, true),
            None => {
                let prompt = agent.system_prompt.iter().map(|p| json!({"role": "system", "content": p}));
                (prompt.chain(history.iter().map(chat_message)).collect(), false)
            }
        };
        let run = StepRun {
            workflow: workflow.clone(),
            step: step.clone(),
            thread,
            idempotency_key: key.clone(),
            runner: spec.clone(),
            context,
            assembled,
            model: agent.model,
            system_prompt: agent.system_prompt,
            tools: agent.tools,
            prices: agent.prices,
        };
        let runner = self.runner_for(&spec);
        let timeout = Duration::from_millis(step.timeout_ms);
        let outcome = match tokio::time::timeout(timeout, runner.run(run)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no result within the step's timeout of {} ms",
                    step.timeout_ms
                )));
            }
        };
        self.append_outcome(workflow, step, thread, &key, &outcome).await?;
        Ok(outcome.output)
    }

    /// The step's runner, else its agent's, else `workflows.default_runner`.
    fn runner_spec(&self, step: &Step, agent: Option<&RunnerSpec>) -> Result<RunnerSpec, StoreError> {
        Ok(step.runner.clone().or_else(|| agent.cloned()).or_else(|| self.config.default_spec()).ok_or_else(|| {
            DomainError::new(
                "runner",
                "no runner: the step names none, its agent has none and workflows.default_runner is unset",
            )
        })?)
    }

    fn runner_for(&self, spec: &RunnerSpec) -> Arc<dyn StepRunner> {
        match spec {
            RunnerSpec::Http { .. } => self.runners.http.clone(),
            RunnerSpec::Openai => self.runners.openai.clone(),
            RunnerSpec::Noop => self.runners.noop.clone(),
        }
    }

    /// The step thread's context as the context engine assembles it, as
    /// chat messages; `None` without a context engine or when it cannot
    /// (no model or budget known for a free agent name): the caller falls
    /// back to the newest messages.
    async fn assembled_context(&self, tenant: &TenantId, thread: memlayer_domain::ThreadId) -> Option<Vec<Value>> {
        let context = self.context.as_ref()?;
        match context.assemble(tenant, thread, ContextRequest::default()).await {
            Ok(c) => Some(c.messages.iter().map(crate::ContextMessage::to_chat).collect()),
            Err(e) => {
                tracing::debug!(%thread, error = %e, "step context not assembled; sending the newest messages");
                None
            }
        }
    }

    /// What the catalog says about the step's agent (nothing for a free
    /// agent name or without a catalog).
    ///
    /// # Errors
    /// A store error reading the catalog (the attempt fails and is retried).
    async fn agent_settings(&self, tenant: &TenantId, step: &Step) -> Result<AgentSettings, StoreError> {
        let mut settings = AgentSettings::default();
        let Some(catalog) = &self.catalog else { return Ok(settings) };
        let Some(agent) = catalog.agent_by_name(tenant, &step.agent).await? else { return Ok(settings) };
        settings.system_prompt = Some(agent.spec.system_prompt.clone()).filter(|p| !p.is_empty());
        settings.runner = agent.spec.runner.clone();
        for id in &agent.spec.tool_ids {
            let tool = catalog.get_tool(tenant, *id).await?;
            settings.tools.push(json!({
                "type": "function",
                "function": {
                    "name": tool.spec.name,
                    "description": tool.spec.description,
                    "parameters": tool.spec.parameters,
                },
            }));
        }
        let model = catalog.get_model(tenant, agent.spec.model_id).await?;
        settings.model = Some(model.spec.name.clone());
        settings.prices = Some((model.spec.input_price, model.spec.output_price));
        Ok(settings)
    }

    async fn create_thread(&self, workflow: &Workflow, step: &Step) -> Result<memlayer_domain::ThreadId, StoreError> {
        let tenant = &workflow.tenant;
        let title = Title::parse(cut_chars(&format!("{} / {}", workflow.name, step.name), Title::MAX_CHARS)).ok();
        let metadata = Metadata::from_value(json!({
            "workflow": {"workflow_id": workflow.id, "step_id": step.id, "step": step.name.as_str()}
        }))?;
        let new = NewThread {
            resource_id: workflow.resource.clone(),
            agent_id: Some(step.agent.clone()),
            title,
            model: None,
            metadata,
        };
        let thread = self.memory.create_thread(tenant, new).await?;
        let input = step.run_input();
        let text = match input {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let meta = Metadata::from_value(json!({STEP_METADATA_KEY: {"step_id": step.id, "input": true}}))?;
        let message = NewMessage::new(Role::User, text, None, None, Vec::new(), meta)?;
        self.memory.append_messages(tenant, thread.id, vec![message], AppendOptions::default()).await?;
        Ok(thread.id)
    }

    /// Appends the runner's messages, the last one marked as this attempt's
    /// output and carrying it, in one append.
    async fn append_outcome(
        &self,
        workflow: &Workflow,
        step: &Step,
        thread: memlayer_domain::ThreadId,
        key: &str,
        outcome: &StepOutcome,
    ) -> Result<(), StoreError> {
        let mut texts = outcome.messages.clone();
        if texts.is_empty() {
            texts.push(match &outcome.output {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        let last = texts.len() - 1;
        let mut batch = Vec::with_capacity(texts.len());
        for (i, text) in texts.into_iter().enumerate() {
            let (meta, calls) = if i == last {
                (
                    json!({STEP_METADATA_KEY: {"step_id": step.id, "key": key, "output": outcome.output}}),
                    outcome.tool_calls.clone(),
                )
            } else {
                (json!({STEP_METADATA_KEY: {"step_id": step.id, "key": key}}), Vec::new())
            };
            batch.push(NewMessage::new(Role::Assistant, text, None, None, calls, Metadata::from_value(meta)?)?);
        }
        self.memory.append_messages(&workflow.tenant, thread, batch, AppendOptions::default()).await?;
        Ok(())
    }
}

/// What the catalog says about a step's agent.
#[derive(Debug, Default)]
struct AgentSettings {
    model: Option<String>,
    system_prompt: Option<String>,
    prices: Option<(f64, f64)>,
    runner: Option<RunnerSpec>,
    tools: Vec<Value>,
}

/// A stored message as a chat message (tool calls and the call answered
/// kept).
fn chat_message(m: &memlayer_domain::Message) -> Value {
    let mut v = json!({"role": m.role.as_str(), "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = crate::context::chat_tool_calls(&m.tool_calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = id.as_str().into();
    }
    v
}

/// The output a message records for the attempt with idempotency key `key`.
fn recorded_output(m: &memlayer_domain::Message, key: &str) -> Option<Value> {
    let meta = m.metadata.as_map().get(STEP_METADATA_KEY)?;
    (m.role == Role::Assistant && meta.get("key").and_then(Value::as_str) == Some(key))
        .then(|| meta.get("output").cloned())
        .flatten()
}

fn cut_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// An in-process runner that answers at once with
/// `{"ok": true, "step": <name>}` (tests, benchmarks); a host application
/// passes its own [`StepRunner`] to
/// [`WorkflowService::with_in_process_runner`] instead.
#[derive(Debug, Default, Clone)]
pub struct NoopRunner;

#[async_trait::async_trait]
impl StepRunner for NoopRunner {
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError> {
        Ok(StepOutcome {
            output: json!({"ok": true, "step": run.step.name.as_str()}),
            messages: Vec::new(),
            usage: None,
            tool_calls: Vec::new(),
        })
    }
}
