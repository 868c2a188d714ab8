//! [`WorkflowStore`]: durable workflows, their steps and events (issue 16),
//! and [`StepRunner`], what runs a step.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{
    NewWorkflow, Reach, RunnerSpec, Step, ThreadId, Timestamp, ToolCall, Workflow, WorkflowEvent, WorkflowFilter,
    WorkflowId, WorkflowOp, WorkflowPatch, WorkflowState,
};
use serde_json::Value;

use crate::StoreError;

/// Most workflows one [`WorkflowStore::list_workflows`] page holds.
pub const MAX_WORKFLOW_PAGE: u32 = 200;
/// Most events one [`WorkflowStore::workflow_events`] page holds.
pub const MAX_EVENT_PAGE: u32 = 1_000;

/// A step a runner claimed, with its workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedStep {
    /// The workflow as it was after the claim.
    pub workflow: Workflow,
    /// The step, `running` under the claimer's lease.
    pub step: Step,
}

/// Durable workflows. Every change is one transaction that reads the
/// workflow and its steps (on Postgres locking the workflow's row), applies
/// the domain's state machine ([`WorkflowState::apply`]) and writes the rows
/// that changed and one event per transition, so a refused operation stores
/// nothing and concurrent writers of one workflow are serial.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait WorkflowStore: Send + Sync + std::fmt::Debug {
    /// Stores a new `draft` workflow with its steps.
    ///
    /// MUST refuse what [`WorkflowState::create`] refuses (`Invalid` naming
    /// the field: cycles, unknown dependencies, stray `$ref`s) storing
    /// nothing, and record the creation as events.
    async fn create_workflow(&self, who: &(dyn Reach + 'static), new: NewWorkflow)
    -> Result<WorkflowState, StoreError>;

    /// The workflow and its steps in position order.
    ///
    /// MUST return `NotFound` for another tenant's workflow, and for one of
    /// another resource when `who` is bound to a resource.
    async fn workflow(&self, who: &(dyn Reach + 'static), id: WorkflowId) -> Result<WorkflowState, StoreError>;

    /// Workflows matching `filter`, newest first, after `after` (keyset on
    /// the id), at most `limit` (capped at [`MAX_WORKFLOW_PAGE`]).
    async fn list_workflows(
        &self,
        who: &(dyn Reach + 'static),
        filter: &WorkflowFilter,
        after: Option<WorkflowId>,
        limit: u32,
    ) -> Result<Vec<Workflow>, StoreError>;

    /// Changes name, description or metadata (in any status: they are not
    /// part of its state).
    async fn patch_workflow(
        &self,
        who: &(dyn Reach + 'static),
        id: WorkflowId,
        patch: WorkflowPatch,
    ) -> Result<WorkflowState, StoreError>;

    /// Deletes the workflow, its steps and events, and marks its steps'
    /// threads deleted, in one transaction.
    ///
    /// MUST return `Conflict` naming the status while it is `running` or a
    /// step is (cancel first), and `NotFound` as [`WorkflowStore::workflow`].
    async fn delete_workflow(&self, who: &(dyn Reach + 'static), id: WorkflowId) -> Result<(), StoreError>;

    /// Applies `op` at `now`, storing what changed and its events.
    ///
    /// MUST return `Conflict` naming the current state for an operation the
    /// state machine refuses, `Invalid` for bad steps, `NotFound` for a
    /// missing workflow or step, and then store nothing.
    async fn apply_workflow(
        &self,
        who: &(dyn Reach + 'static),
        id: WorkflowId,
        op: WorkflowOp,
        now: Timestamp,
    ) -> Result<WorkflowState, StoreError>;

    /// Claims up to `limit` steps of any tenant that may run at `now` (due
    /// `ready` steps and `running` ones whose lease expired, of `running`
    /// workflows), leasing them to `holder` until `lease_until`.
    ///
    /// MUST never hand one step to two concurrent claimers (on Postgres the
    /// workflow rows are taken `FOR UPDATE SKIP LOCKED`), and MUST hand out
    /// a step whose lease expired again.
    async fn claim_steps(
        &self,
        holder: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedStep>, StoreError>;

    /// The workflow's events with a seq above `after`, oldest first, at
    /// most `limit` (capped at [`MAX_EVENT_PAGE`]).
    ///
    /// MUST return `NotFound` as [`WorkflowStore::workflow`].
    async fn workflow_events(
        &self,
        who: &(dyn Reach + 'static),
        id: WorkflowId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<WorkflowEvent>, StoreError>;
}

/// What a runner gets to run one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    /// The workflow.
    pub workflow: Workflow,
    /// The step (its resolved input is [`Step::run_input`]).
    pub step: Step,
    /// The step's thread: its input is its first user message.
    pub thread: ThreadId,
    /// The key to deduplicate by: the same when a step runs again after a
    /// crash ([`Step::idempotency_key`]).
    pub idempotency_key: String,
    /// The runner chosen: the step's own, else its agent's, else
    /// `workflows.default_runner` (an `http` runner's URL is here).
    pub runner: RunnerSpec,
    /// The chat messages to send, ready for a chat-completions API
    /// (`role`, `content`, and `name`, `tool_calls`, `tool_call_id` when
    /// present): the step thread's context assembled by the context engine
    /// under the agent's budget (system prompt, working memory, summary,
    /// recall, recent messages) when it can be; else the agent's system
    /// prompt, if any, and the thread's newest messages, oldest first.
    pub context: Vec<Value>,
    /// Whether `context` was assembled by the context engine.
    pub assembled: bool,
    /// The agent's model from the catalog, if the agent is there.
    pub model: Option<String>,
    /// The agent's system prompt from the catalog, if any (already the
    /// first message of `context`).
    pub system_prompt: Option<String>,
    /// The agent's tools from the catalog, in order, as chat-completions
    /// `tools` entries (`{"type": "function", "function": {name,
    /// description, parameters}}`).
    pub tools: Vec<Value>,
    /// The model's prices per million input and output tokens, if known.
    pub prices: Option<(f64, f64)>,
}

/// What a runner says about a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The step's output.
    pub output: Value,
    /// What to append to the step's thread as assistant messages (the last
    /// one is the output's text); empty: the output's JSON text.
    pub messages: Vec<String>,
    /// Tokens used, when the runner knows (`prompt`, `completion`).
    pub usage: Option<(u64, u64)>,
    /// Tool calls the model asked for, stored on the last assistant
    /// message.
    pub tool_calls: Vec<ToolCall>,
}

/// Runs steps: an HTTP endpoint, a chat-completions model, or code in the
/// host application (the trait is public so a host can run steps in
/// process).
#[async_trait]
pub trait StepRunner: Send + Sync + std::fmt::Debug {
    /// Runs one step. MUST return `Unavailable` for a failure worth retrying
    /// and `Invalid` for one that is not (both are recorded as the step's
    /// error and retried while attempts remain); MUST NOT name keys or
    /// secrets in errors.
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError>;
}
