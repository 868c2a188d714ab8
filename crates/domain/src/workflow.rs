//! Workflows (issue 16): durable multi-step agent processes.
//!
//! A [`Workflow`] holds ordered [`Step`]s, each naming an agent, an input
//! and the steps it depends on (by name; by default the step before it). The
//! whole state machine is here, once: [`WorkflowState::apply`] takes an
//! [`WorkflowOp`] (execute, pause, resume, cancel, add or remove steps, claim,
//! heartbeat, complete, fail, retry) and either changes the state, returning
//! one [`Transition`] per status change, or refuses it with a
//! [`TransitionError`] naming the current state, changing nothing. Stores
//! load a workflow's state, apply the operation and write what changed in
//! one transaction, so every backend follows the same rules.
//!
//! Rules:
//! - workflow: `draft → running → (paused ⇄ running) → succeeded | failed`,
//!   and `cancelled` from any unfinished state; a finished workflow
//!   (`succeeded`, `failed`, `cancelled`) never changes again;
//! - step: `pending → ready → running → succeeded | failed`, `ready` again
//!   after a failed attempt with attempts left (due after a backoff), and
//!   `skipped`/`cancelled` when its workflow fails or is cancelled;
//! - a step becomes `ready` only when every step it depends on has
//!   succeeded (or failed while marked `optional`); only a `ready` step that
//!   is due, or a `running` one whose lease has expired (its runner died),
//!   is claimed, and only while the workflow is `running`;
//! - `depends_on` names steps of the same workflow and forms no cycle; a
//!   `{"$ref": "steps/<name>/output/<pointer>"}` in a step's input names a
//!   step it (transitively) depends on, and is replaced by that step's
//!   output when it becomes ready.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::seal::{fnv1a, seal, unseal};
use crate::{AgentName, DomainError, Metadata, ResourceId, StepId, TenantId, ThreadId, Timestamp, WorkflowId};

/// Most steps one workflow holds.
pub const MAX_STEPS: usize = 100;
/// Longest workflow name, in characters.
pub const MAX_WORKFLOW_NAME_CHARS: usize = 256;
/// Longest workflow description, in characters.
pub const MAX_WORKFLOW_DESCRIPTION_CHARS: usize = 4_096;
/// Largest step input, serialised, in bytes.
pub const MAX_STEP_INPUT_BYTES: usize = 256 * 1024;
/// Most attempts a step may be given.
pub const MAX_STEP_ATTEMPTS: u32 = 20;
/// Longest step timeout, in milliseconds (one hour).
pub const MAX_STEP_TIMEOUT_MS: u64 = 3_600_000;
/// Longest step error kept, in bytes.
pub const MAX_STEP_ERROR_BYTES: usize = 2_000;

/// A workflow's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    /// Being written: steps may be added; nothing runs.
    Draft,
    /// Its ready steps are claimed and run.
    Running,
    /// Running steps finish; no new one starts.
    Paused,
    /// Every step succeeded (or failed while optional).
    Succeeded,
    /// A step that is not optional failed with no attempt left.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
}

impl WorkflowStatus {
    /// Every status, in order.
    pub const ALL: [Self; 6] =
        [Self::Draft, Self::Running, Self::Paused, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Its wire and storage name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether it never changes again.
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Parses a stored or caller's name.
    ///
    /// # Errors
    /// On `status`, naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            DomainError::new(
                "status",
                format!("`{}` is not one of draft, running, paused, succeeded, failed, cancelled", short(s)),
            )
        })
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for its dependencies (or for the workflow to run).
    Pending,
    /// May be claimed once due.
    Ready,
    /// Claimed by a runner holding its lease.
    Running,
    /// Done; its output is kept.
    Succeeded,
    /// Failed with no attempt left.
    Failed,
    /// Never ran: its workflow failed first.
    Skipped,
    /// Its workflow was cancelled before it finished.
    Cancelled,
}

impl StepStatus {
    /// Its wire and storage name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether it never changes again (within an unfinished workflow, a
    /// failed step may still be retried).
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's name: unique within its workflow, 1 to 64 ASCII letters,
/// digits, `-`, `_` or `.` (it is a path segment of a `$ref`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StepName(String);

impl StepName {
    /// Longest name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a name.
    ///
    /// # Errors
    /// On `name` when empty, too long or holding other characters.
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(DomainError::new("name", format!("a step name must be 1 to {} bytes", Self::MAX_LEN)));
        }
        if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(DomainError::new(
                "name",
                format!("character {c:?} is not allowed in a step name (use ASCII letters, digits, - _ .)"),
            ));
        }
        Ok(Self(value))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StepName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How a step is run: named by the step, else by its agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RunnerSpec {
    /// POST the step to `url` (signed, Standard Webhooks), the JSON reply
    /// is its output.
    Http {
        /// An `http://` or `https://` URL.
        url: String,
    },
    /// An OpenAI-compatible chat completion with the agent's model.
    Openai,
    /// In-process runner that answers at once (tests, benchmarks).
    Noop,
}

impl RunnerSpec {
    /// Its kind's name.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Openai => "openai",
            Self::Noop => "noop",
        }
    }

    /// Parses a caller's runner object.
    ///
    /// # Errors
    /// On `field`: not `{"kind": "http", "url": …}`, `{"kind": "openai"}` or
    /// `{"kind": "noop"}`, or a URL that is not http(s).
    pub fn from_value(field: &'static str, value: Value) -> Result<Self, DomainError> {
        let spec: Self = serde_json::from_value(value).map_err(|e| {
            DomainError::new(field, format!("must be {{\"kind\": \"http\", \"url\": …}}, {{\"kind\": \"openai\"}} or {{\"kind\": \"noop\"}}: {e}"))
        })?;
        spec.validate(field)?;
        Ok(spec)
    }

    /// Checks the URL of an `http` runner.
    ///
    /// # Errors
    /// On `field` when the URL is not `http://` or `https://`, or shorter
    /// than 10 or longer than 2,048 characters (characters, as the OpenAPI
    /// document's `minLength` and `maxLength` count them).
    pub fn validate(&self, field: &'static str) -> Result<(), DomainError> {
        let Self::Http { url } = self else { return Ok(()) };
        if !(url.starts_with("http://") || url.starts_with("https://")) || !(10..=2_048).contains(&url.chars().count())
        {
            return Err(DomainError::new(field, "url must be an http:// or https:// URL of 10 to 2048 characters"));
        }
        crate::no_nul(field, url)
    }
}

/// A step as a caller describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// Unique within the workflow.
    pub name: StepName,
    /// The agent that runs it (a catalog agent, or a free name).
    pub agent: AgentName,
    /// Its input (may hold `$ref`s to outputs of steps it depends on).
    pub input: Value,
    /// The steps it waits for; `None`: the step before it.
    pub depends_on: Option<Vec<StepName>>,
    /// Its runner; `None`: its agent's configured runner.
    pub runner: Option<RunnerSpec>,
    /// Whether the workflow continues past its failure.
    pub optional: bool,
    /// Attempts before it fails (1 to [`MAX_STEP_ATTEMPTS`]).
    pub max_attempts: u32,
    /// How long one attempt may run, in milliseconds.
    pub timeout_ms: u64,
    /// The caller's metadata.
    pub metadata: Metadata,
}

impl NewStep {
    /// Default attempts.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// Default timeout of one attempt (five minutes).
    pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

    /// A step with the defaults: depends on the step before it, the agent's
    /// runner, 3 attempts, 5 minutes each.
    #[must_use]
    pub fn new(name: StepName, agent: AgentName, input: Value) -> Self {
        Self {
            name,
            agent,
            input,
            depends_on: None,
            runner: None,
            optional: false,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            metadata: Metadata::default(),
        }
    }

    /// Checks the bounds of its fields.
    ///
    /// # Errors
    /// Naming the field: `max_attempts`, `timeout_ms`, `input`, `runner`.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.max_attempts == 0 || self.max_attempts > MAX_STEP_ATTEMPTS {
            return Err(DomainError::new(
                "max_attempts",
                format!("is {}, must be 1 to {MAX_STEP_ATTEMPTS}", self.max_attempts),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_STEP_TIMEOUT_MS {
            return Err(DomainError::new(
                "timeout_ms",
                format!("is {}, must be 1 to {MAX_STEP_TIMEOUT_MS}", self.timeout_ms),
            ));
        }
        let size = serde_json::to_vec(&self.input).map_or(usize::MAX, |v| v.len());
        if size > MAX_STEP_INPUT_BYTES {
            return Err(DomainError::new("input", format!("is {size} bytes, at most {MAX_STEP_INPUT_BYTES}")));
        }
        crate::no_nul_json("input", &self.input)?;
        if let Some(r) = &self.runner {
            r.validate("runner")?;
        }
        refs_of(&self.input)?;
        Ok(())
    }
}

/// A runner's hold on a running step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (a server's id).
    pub holder: String,
    /// When it expires unless renewed by a heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub until: Timestamp,
}

/// A step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Its id.
    pub id: StepId,
    /// Its workflow.
    pub workflow_id: WorkflowId,
    /// Its place in the workflow (0, 1, …; gaps after removals).
    pub position: u32,
    /// Unique within the workflow.
    pub name: StepName,
    /// The agent that runs it.
    pub agent: AgentName,
    /// Its input as written.
    pub input: Value,
    /// Its input with `$ref`s replaced, from the moment it became ready.
    pub resolved_input: Option<Value>,
    /// The steps it waits for.
    pub depends_on: Vec<StepName>,
    /// Its own runner, if it names one.
    pub runner: Option<RunnerSpec>,
    /// Whether the workflow continues past its failure.
    pub optional: bool,
    /// Attempts before it fails.
    pub max_attempts: u32,
    /// How long one attempt may run, in milliseconds.
    pub timeout_ms: u64,
    /// The caller's metadata.
    #[serde(with = "metadata_serde")]
    pub metadata: Metadata,
    /// Its status.
    pub status: StepStatus,
    /// Attempts started (claims, a re-claim after a lease expired included).
    pub attempts: u32,
    /// Attempts that failed and were retried: part of the idempotency key,
    /// which a re-claim after a crash keeps.
    pub failures: u32,
    /// Its output, once succeeded.
    pub output: Option<Value>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Its thread, created when it first starts.
    pub thread_id: Option<ThreadId>,
    /// The lease of the runner running it (exactly when `running`).
    pub lease: Option<Lease>,
    /// When a `ready` step may be claimed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub due_at: Option<Timestamp>,
    /// When it first started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<Timestamp>,
}

impl Step {
    /// The key a runner deduplicates by: the same for every run of one
    /// attempt (a re-claim after a crash runs it again with the same key),
    /// new after a failed attempt is retried.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.id, self.failures)
    }

    /// The input a runner gets: resolved once ready, else as written.
    #[must_use]
    pub fn run_input(&self) -> &Value {
        self.resolved_input.as_ref().unwrap_or(&self.input)
    }

    /// Whether a step depending on it may run.
    #[must_use]
    pub fn satisfies(&self) -> bool {
        self.status == StepStatus::Succeeded || (self.status == StepStatus::Failed && self.optional)
    }
}

/// A workflow (its steps are in [`WorkflowState`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// Its id.
    pub id: WorkflowId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The resource its step threads belong to.
    pub resource: Option<ResourceId>,
    /// Its name (not unique).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The caller's metadata.
    pub metadata: Metadata,
    /// Its status.
    pub status: WorkflowStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A workflow as a caller creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkflow {
    /// The resource its step threads belong to.
    pub resource: Option<ResourceId>,
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The caller's metadata.
    pub metadata: Metadata,
    /// Its first steps (more may be added while `draft` or `paused`).
    pub steps: Vec<NewStep>,
}

/// A change to a workflow's name, description or metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New metadata (replaces the old).
    pub metadata: Option<Metadata>,
}

fn check_name(name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() || name.chars().count() > MAX_WORKFLOW_NAME_CHARS {
        return Err(DomainError::new("name", format!("must be 1 to {MAX_WORKFLOW_NAME_CHARS} characters, not blank")));
    }
    crate::no_nul("name", name)
}

fn check_description(d: &str) -> Result<(), DomainError> {
    let n = d.chars().count();
    if n > MAX_WORKFLOW_DESCRIPTION_CHARS {
        return Err(DomainError::new(
            "description",
            format!("is {n} characters, at most {MAX_WORKFLOW_DESCRIPTION_CHARS}"),
        ));
    }
    crate::no_nul("description", d)
}

impl WorkflowPatch {
    /// Checks the new values.
    ///
    /// # Errors
    /// On `name` or `description`.
    pub fn validate(&self) -> Result<(), DomainError> {
        if let Some(n) = &self.name {
            check_name(n)?;
        }
        if let Some(d) = &self.description {
            check_description(d)?;
        }
        Ok(())
    }
}

/// What a store does to a workflow, as the state machine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowOp {
    /// `draft → running`: steps without unmet dependencies become ready.
    Execute,
    /// `running → paused`: running steps finish, no new one starts.
    Pause,
    /// `paused → running`.
    Resume,
    /// Any unfinished workflow → `cancelled`; unfinished steps `cancelled`.
    Cancel,
    /// Adds steps (while `draft` or `paused`).
    AddSteps(Vec<NewStep>),
    /// Removes a step nothing depends on that never started (while `draft`
    /// or `paused`).
    RemoveStep(StepId),
    /// A runner takes a due `ready` step, or a `running` one whose lease
    /// expired, leasing it until `until`.
    Claim {
        /// The step.
        step: StepId,
        /// The runner.
        holder: String,
        /// The lease's expiry.
        until: Timestamp,
    },
    /// The lease's holder extends it.
    Heartbeat {
        /// The step.
        step: StepId,
        /// The runner.
        holder: String,
        /// The new expiry.
        until: Timestamp,
    },
    /// The lease's holder records the step's thread.
    SetThread {
        /// The step.
        step: StepId,
        /// The runner.
        holder: String,
        /// The thread.
        thread: ThreadId,
    },
    /// The lease's holder reports success.
    Complete {
        /// The step.
        step: StepId,
        /// The runner.
        holder: String,
        /// The output.
        output: Value,
    },
    /// The lease's holder reports a failed attempt: `ready` again, due at
    /// `retry_at`, while attempts remain; else `failed`.
    Fail {
        /// The step.
        step: StepId,
        /// The runner.
        holder: String,
        /// What went wrong.
        error: String,
        /// When to try again.
        retry_at: Timestamp,
    },
    /// A caller asks for a step to run again now: a `ready` step waiting
    /// for its backoff, or a `failed` optional step none of whose dependents
    /// started; its attempts start again from 0.
    Retry(StepId),
}

impl WorkflowOp {
    /// Its name, the cause of the events it makes.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
            Self::AddSteps(_) => "add_steps",
            Self::RemoveStep(_) => "remove_step",
            Self::Claim { .. } => "claim",
            Self::Heartbeat { .. } => "heartbeat",
            Self::SetThread { .. } => "set_thread",
            Self::Complete { .. } => "complete",
            Self::Fail { .. } => "fail",
            Self::Retry(_) => "retry",
        }
    }
}

/// One status change, before it is stored as a [`WorkflowEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The step that changed, `None` for the workflow itself.
    pub step: Option<StepId>,
    /// The status before (`None`: the step or workflow was created).
    pub from: Option<String>,
    /// The status after (`None`: the step was removed).
    pub to: Option<String>,
    /// Why (the operation and its details).
    pub cause: String,
}

/// A stored [`Transition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    /// Its workflow.
    pub workflow_id: WorkflowId,
    /// 1, 2, … within the workflow; the keyset of the events' listing.
    pub seq: u64,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
    /// The step that changed, `None` for the workflow.
    pub step_id: Option<StepId>,
    /// The status before.
    pub from: Option<String>,
    /// The status after.
    pub to: Option<String>,
    /// Why.
    pub cause: String,
}

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Not allowed in the current state (HTTP 409); the text names it.
    #[error("{0}")]
    Conflict(String),
    /// Bad input (HTTP 400), naming the field.
    #[error(transparent)]
    Invalid(#[from] DomainError),
    /// No such step in the workflow.
    #[error("step {0} not found")]
    StepNotFound(StepId),
}

fn conflict(msg: impl Into<String>) -> TransitionError {
    TransitionError::Conflict(msg.into())
}

/// A workflow and its steps: what [`WorkflowState::apply`] changes.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    /// The workflow.
    pub workflow: Workflow,
    /// Its steps in position order.
    pub steps: Vec<Step>,
}

/// The retry delay after the `failures`-th failed attempt: `base`
/// doubled per failure, at most `max`.
#[must_use]
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

const REF_PREFIX: &str = "steps/";

/// The step names the `$ref`s of `input` point at.
fn refs_of(input: &Value) -> Result<BTreeSet<StepName>, DomainError> {
    fn walk(v: &Value, out: &mut BTreeSet<StepName>) -> Result<(), DomainError> {
        match v {
            Value::Object(map) => {
                if let Some(r) = as_ref(map) {
                    out.insert(parse_ref(r)?.0);
                    return Ok(());
                }
                map.values().try_for_each(|x| walk(x, out))
            }
            Value::Array(items) => items.iter().try_for_each(|x| walk(x, out)),
            _ => Ok(()),
        }
    }
    let mut out = BTreeSet::new();
    walk(input, &mut out)?;
    Ok(out)
}

fn as_ref(map: &serde_json::Map<String, Value>) -> Option<&str> {
    if map.len() == 1 { map.get("$ref").and_then(Value::as_str) } else { None }
}

/// `steps/<name>/output[/<pointer>]` → the name and the JSON pointer into
/// the output.
fn parse_ref(r: &str) -> Result<(StepName, String), DomainError> {
    let bad =
        || DomainError::new("input", format!("$ref `{}` must be steps/<step name>/output[/<JSON pointer>]", short(r)));
    let rest = r.strip_prefix(REF_PREFIX).ok_or_else(bad)?;
    let (name, rest) = rest.split_once('/').ok_or_else(bad)?;
    let name = StepName::parse(name).map_err(|_| bad())?;
    let pointer = match rest.strip_prefix("output") {
        Some("") => String::new(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        _ => return Err(bad()),
    };
    Ok((name, pointer))
}

/// `input` with every `{"$ref": "steps/<name>/output/<pointer>"}` replaced
/// by the value at the pointer in that step's output (`output` looks a
/// step's output up by name).
///
/// # Errors
/// On `input`: a malformed `$ref`, a step with no output, or a pointer
/// that finds nothing.
pub fn resolve_refs(input: &Value, output: &dyn Fn(&StepName) -> Option<Value>) -> Result<Value, DomainError> {
    match input {
        Value::Object(map) => {
            if let Some(r) = as_ref(map) {
                let (name, pointer) = parse_ref(r)?;
                let out = output(&name).ok_or_else(|| {
                    DomainError::new("input", format!("$ref `{}`: step `{name}` has no output", short(r)))
                })?;
                return out.pointer(&pointer).cloned().ok_or_else(|| {
                    DomainError::new("input", format!("$ref `{}` finds nothing in the output of `{name}`", short(r)))
                });
            }
            let mut resolved = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                resolved.insert(k.clone(), resolve_refs(v, output)?);
            }
            Ok(Value::Object(resolved))
        }
        Value::Array(items) => {
            items.iter().map(|v| resolve_refs(v, output)).collect::<Result<_, _>>().map(Value::Array)
        }
        other => Ok(other.clone()),
    }
}

fn short(s: &str) -> String {
    crate::ids::truncate(s)
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl WorkflowState {
    /// A new `draft` workflow with its first steps, and the transitions that
    /// record its creation.
    ///
    /// # Errors
    /// `Invalid` naming the field: the name, description, a step's fields,
    /// a duplicate step name, a `depends_on` naming no step or forming a
    /// cycle, a `$ref` to a step it does not depend on, more than
    /// [`MAX_STEPS`] steps.
    pub fn create(
        tenant: TenantId,
        new: NewWorkflow,
        at: Timestamp,
    ) -> Result<(Self, Vec<Transition>), TransitionError> {
        check_name(&new.name)?;
        check_description(&new.description)?;
        let mut state = Self {
            workflow: Workflow {
                id: WorkflowId::new(),
                tenant,
                resource: new.resource,
                name: new.name,
                description: new.description,
                metadata: new.metadata,
                status: WorkflowStatus::Draft,
                created_at: at,
                updated_at: at,
            },
            steps: Vec::new(),
        };
        let mut transitions =
            vec![Transition { step: None, from: None, to: Some("draft".into()), cause: "create".into() }];
        transitions.extend(state.add_steps(new.steps)?);
        Ok((state, transitions))
    }

    /// The step with this id.
    #[must_use]
    pub fn step(&self, id: StepId) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The step named `name`.
    #[must_use]
    pub fn step_named(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name.as_str() == name)
    }

    /// The steps a runner may claim at `at`: due `ready` steps and `running`
    /// ones whose lease expired, while the workflow is `running`.
    #[must_use]
    pub fn claimable(&self, at: Timestamp) -> Vec<StepId> {
        if self.workflow.status != WorkflowStatus::Running {
            return Vec::new();
        }
        self.steps
            .iter()
            .filter(|s| match s.status {
                StepStatus::Ready => s.due_at.is_none_or(|d| d <= at),
                StepStatus::Running => s.lease.as_ref().is_none_or(|l| l.until <= at),
                _ => false,
            })
            .map(|s| s.id)
            .collect()
    }

    /// When a step may next be claimed (the earliest due `ready` step or
    /// expiring lease), `None` when nothing can be while the workflow is
    /// not `running`. Stores keep it on the workflow's row so claims find
    /// work by one index range.
    #[must_use]
    pub fn next_wake(&self) -> Option<Timestamp> {
        if self.workflow.status != WorkflowStatus::Running {
            return None;
        }
        self.steps
            .iter()
            .filter_map(|s| match s.status {
                StepStatus::Ready => Some(s.due_at.unwrap_or(self.workflow.updated_at)),
                StepStatus::Running => s.lease.as_ref().map(|l| l.until),
                _ => None,
            })
            .min()
    }

    /// Applies `op` at time `at`: the transitions it made, or an error and
    /// no change at all.
    ///
    /// # Errors
    /// `Conflict` naming the current state when `op` is not allowed in it;
    /// `Invalid` for bad steps; `StepNotFound`.
    pub fn apply(&mut self, op: WorkflowOp, at: Timestamp) -> Result<Vec<Transition>, TransitionError> {
        let mut next = self.clone();
        let transitions = next.apply_inner(op, at)?;
        if !transitions.is_empty() || next != *self {
            next.workflow.updated_at = at;
        }
        *self = next;
        Ok(transitions)
    }

    fn apply_inner(&mut self, op: WorkflowOp, at: Timestamp) -> Result<Vec<Transition>, TransitionError> {
        let status = self.workflow.status;
        if status.is_finished() {
            return Err(conflict(format!("workflow is {status}; a finished workflow never changes")));
        }
        let cause = op.name();
        let mut t = Vec::new();
        match op {
            WorkflowOp::Execute => {
                if status != WorkflowStatus::Draft {
                    return Err(conflict(format!("workflow is {status}; only a draft workflow can be executed")));
                }
                if self.steps.is_empty() {
                    return Err(DomainError::new("steps", "a workflow needs at least one step to execute").into());
                }
                self.set_status(WorkflowStatus::Running, cause, &mut t);
                self.settle(at, &mut t);
            }
            WorkflowOp::Pause => {
                if status != WorkflowStatus::Running {
                    return Err(conflict(format!("workflow is {status}; only a running workflow can be paused")));
                }
                self.set_status(WorkflowStatus::Paused, cause, &mut t);
            }
            WorkflowOp::Resume => {
                if status != WorkflowStatus::Paused {
                    return Err(conflict(format!("workflow is {status}; only a paused workflow can be resumed")));
                }
                self.set_status(WorkflowStatus::Running, cause, &mut t);
                self.settle(at, &mut t);
            }
            WorkflowOp::Cancel => {
                self.set_status(WorkflowStatus::Cancelled, cause, &mut t);
                self.close_steps(StepStatus::Cancelled, StepStatus::Cancelled, cause, at, &mut t);
            }
            WorkflowOp::AddSteps(steps) => {
                if !matches!(status, WorkflowStatus::Draft | WorkflowStatus::Paused) {
                    return Err(conflict(format!(
                        "workflow is {status}; steps can be added only while it is draft or paused"
                    )));
                }
                t.extend(self.add_steps(steps)?);
            }
            WorkflowOp::RemoveStep(id) => {
                if !matches!(status, WorkflowStatus::Draft | WorkflowStatus::Paused) {
                    return Err(conflict(format!(
                        "workflow is {status}; steps can be removed only while it is draft or paused"
                    )));
                }
                let step = self.step(id).ok_or(TransitionError::StepNotFound(id))?;
                if step.attempts > 0 || !matches!(step.status, StepStatus::Pending | StepStatus::Ready) {
                    return Err(conflict(format!(
                        "step `{}` is {}; only a step that never started can be removed",
                        step.name, step.status
                    )));
                }
                let name = step.name.clone();
                let from = step.status;
                let dependents: Vec<&str> =
                    self.steps.iter().filter(|s| s.depends_on.contains(&name)).map(|s| s.name.as_str()).collect();
                if !dependents.is_empty() {
                    return Err(conflict(format!(
                        "step `{name}` cannot be removed: {} depend on it",
                        dependents.join(", ")
                    )));
                }
                self.steps.retain(|s| s.id != id);
                t.push(Transition { step: Some(id), from: Some(from.as_str().into()), to: None, cause: cause.into() });
                self.settle(at, &mut t);
            }
            WorkflowOp::Claim { step, holder, until } => {
                if status != WorkflowStatus::Running {
                    return Err(conflict(format!("workflow is {status}; steps are claimed only while it runs")));
                }
                let s = self.step_mut(step)?;
                let expired = match s.status {
                    StepStatus::Ready => {
                        if s.due_at.is_some_and(|d| d > at) {
                            return Err(conflict(format!("step `{}` is ready but not due yet", s.name)));
                        }
                        false
                    }
                    StepStatus::Running if s.lease.as_ref().is_none_or(|l| l.until <= at) => true,
                    other => {
                        return Err(conflict(format!("step `{}` is {other}; it cannot be claimed", s.name)));
                    }
                };
                if expired && s.attempts >= s.max_attempts {
                    let reason = format!("lease expired on attempt {} of {}", s.attempts, s.max_attempts);
                    self.finish_failed(step, reason, at, &mut t);
                    self.settle(at, &mut t);
                } else {
                    let s = self.step_mut(step)?;
                    s.attempts += 1;
                    let detail = if expired {
                        format!(
                            "claim by {holder} after the lease of {} expired (attempt {})",
                            s.lease.as_ref().map_or("?", |l| l.holder.as_str()),
                            s.attempts
                        )
                    } else {
                        format!("claim by {holder} (attempt {})", s.attempts)
                    };
                    s.lease = Some(Lease { holder, until });
                    s.due_at = None;
                    s.started_at.get_or_insert(at);
                    let from = s.status;
                    s.status = StepStatus::Running;
                    t.push(Transition {
                        step: Some(step),
                        from: Some(from.as_str().into()),
                        to: Some("running".into()),
                        cause: detail,
                    });
                }
            }
            WorkflowOp::Heartbeat { step, holder, until } => {
                let s = self.held_step(step, &holder)?;
                if let Some(l) = s.lease.as_mut() {
                    l.until = l.until.max(until);
                }
            }
            WorkflowOp::SetThread { step, holder, thread } => {
                let s = self.held_step(step, &holder)?;
                if s.thread_id.is_some_and(|t| t != thread) {
                    return Err(conflict(format!("step `{}` already has a thread", s.name)));
                }
                s.thread_id = Some(thread);
            }
            WorkflowOp::Complete { step, holder, output } => {
                let s = self.held_step(step, &holder)?;
                s.status = StepStatus::Succeeded;
                s.output = Some(output);
                s.error = None;
                s.lease = None;
                s.finished_at = Some(at);
                t.push(Transition {
                    step: Some(step),
                    from: Some("running".into()),
                    to: Some("succeeded".into()),
                    cause: cause.into(),
                });
                self.settle(at, &mut t);
            }
            WorkflowOp::Fail { step, holder, error, retry_at } => {
                let s = self.held_step(step, &holder)?;
                let error = cut(&error, MAX_STEP_ERROR_BYTES);
                if s.attempts < s.max_attempts {
                    s.status = StepStatus::Ready;
                    s.lease = None;
                    s.failures += 1;
                    s.due_at = Some(retry_at.max(at));
                    let detail = format!("attempt {} of {} failed: {error}", s.attempts, s.max_attempts);
                    s.error = Some(error);
                    t.push(Transition {
                        step: Some(step),
                        from: Some("running".into()),
                        to: Some("ready".into()),
                        cause: cut(&detail, MAX_STEP_ERROR_BYTES),
                    });
                } else {
                    self.finish_failed(step, error, at, &mut t);
                    self.settle(at, &mut t);
                }
            }
            WorkflowOp::Retry(step) => {
                if !matches!(status, WorkflowStatus::Running | WorkflowStatus::Paused) {
                    return Err(conflict(format!(
                        "workflow is {status}; steps are retried only while it runs or is paused"
                    )));
                }
                let name = self.step_mut(step)?.name.clone();
                let started_dependents =
                    self.steps.iter().any(|d| d.depends_on.contains(&name) && d.status != StepStatus::Pending);
                let s = self.step_mut(step)?;
                match s.status {
                    StepStatus::Ready => {}
                    StepStatus::Failed if !started_dependents => {}
                    other => {
                        return Err(conflict(format!(
                            "step `{}` is {other}; only a ready step waiting to retry, or a failed optional step none of whose dependents started, can be retried",
                            s.name
                        )));
                    }
                }
                let from = s.status;
                s.status = StepStatus::Ready;
                s.attempts = 0;
                s.failures += 1;
                s.due_at = Some(at);
                s.finished_at = None;
                t.push(Transition {
                    step: Some(step),
                    from: Some(from.as_str().into()),
                    to: Some("ready".into()),
                    cause: cause.into(),
                });
            }
        }
        Ok(t)
    }

    fn step_mut(&mut self, id: StepId) -> Result<&mut Step, TransitionError> {
        self.steps.iter_mut().find(|s| s.id == id).ok_or(TransitionError::StepNotFound(id))
    }

    /// The running step `id` whose lease `holder` holds.
    fn held_step(&mut self, id: StepId, holder: &str) -> Result<&mut Step, TransitionError> {
        let s = self.step_mut(id)?;
        if s.status != StepStatus::Running {
            return Err(conflict(format!("step `{}` is {}; only its running attempt can report", s.name, s.status)));
        }
        if s.lease.as_ref().is_none_or(|l| l.holder != holder) {
            return Err(conflict(format!("step `{}` is leased to another runner", s.name)));
        }
        Ok(s)
    }

    fn set_status(&mut self, to: WorkflowStatus, cause: &str, t: &mut Vec<Transition>) {
        let from = self.workflow.status;
        if from != to {
            self.workflow.status = to;
            t.push(Transition {
                step: None,
                from: Some(from.as_str().into()),
                to: Some(to.as_str().into()),
                cause: cause.into(),
            });
        }
    }

    fn set_step(&mut self, i: usize, to: StepStatus, cause: &str, at: Timestamp, t: &mut Vec<Transition>) {
        let s = &mut self.steps[i];
        let from = s.status;
        s.status = to;
        if to.is_finished() {
            s.lease = None;
            s.due_at = None;
            s.finished_at = Some(at);
        }
        t.push(Transition {
            step: Some(s.id),
            from: Some(from.as_str().into()),
            to: Some(to.as_str().into()),
            cause: cause.into(),
        });
    }

    /// Unfinished steps: pending and ready ones to `waiting`, running ones
    /// to `running` (their leases end).
    fn close_steps(
        &mut self,
        waiting: StepStatus,
        running: StepStatus,
        cause: &str,
        at: Timestamp,
        t: &mut Vec<Transition>,
    ) {
        for i in 0..self.steps.len() {
            match self.steps[i].status {
                StepStatus::Pending | StepStatus::Ready => self.set_step(i, waiting, cause, at, t),
                StepStatus::Running => self.set_step(i, running, cause, at, t),
                _ => {}
            }
        }
    }

    fn finish_failed(&mut self, step: StepId, error: String, at: Timestamp, t: &mut Vec<Transition>) {
        let Some(i) = self.steps.iter().position(|s| s.id == step) else { return };
        let error = cut(&error, MAX_STEP_ERROR_BYTES);
        let cause = format!("failed: {error}");
        self.steps[i].error = Some(error);
        self.set_step(i, StepStatus::Failed, &cut(&cause, MAX_STEP_ERROR_BYTES), at, t);
        if !self.steps[i].optional {
            let name = self.steps[i].name.clone();
            self.set_status(WorkflowStatus::Failed, &format!("step `{name}` failed"), t);
            self.close_steps(StepStatus::Skipped, StepStatus::Cancelled, "workflow failed", at, t);
        }
    }

    /// Promotes pending steps whose dependencies are satisfied (while
    /// running), fails those whose `$ref`s cannot be resolved, and finishes
    /// the workflow once every step has finished.
    fn settle(&mut self, at: Timestamp, t: &mut Vec<Transition>) {
        loop {
            if self.workflow.status.is_finished() {
                return;
            }
            let mut changed = false;
            if self.workflow.status == WorkflowStatus::Running {
                for i in 0..self.steps.len() {
                    if self.workflow.status.is_finished() {
                        return;
                    }
                    if self.steps[i].status != StepStatus::Pending {
                        continue;
                    }
                    let deps_met = self.steps[i]
                        .depends_on
                        .iter()
                        .all(|d| self.step_named(d.as_str()).is_some_and(Step::satisfies));
                    if !deps_met {
                        continue;
                    }
                    let outputs = |name: &StepName| self.step_named(name.as_str()).and_then(|s| s.output.clone());
                    match resolve_refs(&self.steps[i].input, &outputs) {
                        Ok(resolved) => {
                            self.steps[i].resolved_input = Some(resolved);
                            self.steps[i].due_at = Some(at);
                            self.set_step(i, StepStatus::Ready, "dependencies met", at, t);
                        }
                        Err(e) => {
                            let id = self.steps[i].id;
                            self.finish_failed(id, e.to_string(), at, t);
                        }
                    }
                    changed = true;
                }
            }
            if !self.workflow.status.is_finished()
                && !self.steps.is_empty()
                && self.steps.iter().all(|s| s.status.is_finished())
            {
                self.set_status(WorkflowStatus::Succeeded, "every step finished", t);
                return;
            }
            if !changed {
                return;
            }
        }
    }

    /// Adds steps after the existing ones, checking names, dependencies
    /// (default: the step before), cycles and `$ref`s.
    fn add_steps(&mut self, steps: Vec<NewStep>) -> Result<Vec<Transition>, TransitionError> {
        if self.steps.len() + steps.len() > MAX_STEPS {
            return Err(DomainError::new("steps", format!("a workflow holds at most {MAX_STEPS} steps")).into());
        }
        let first = self.steps.last().map_or(0, |s| s.position + 1);
        let mut previous = self.steps.last().map(|s| s.name.clone());
        let mut names: BTreeSet<StepName> = self.steps.iter().map(|s| s.name.clone()).collect();
        let mut added = Vec::with_capacity(steps.len());
        for (position, new) in (first..).zip(steps) {
            new.validate()?;
            if !names.insert(new.name.clone()) {
                return Err(DomainError::new(
                    "name",
                    format!("step name `{}` is used twice in the workflow", new.name),
                )
                .into());
            }
            let depends_on = new.depends_on.unwrap_or_else(|| previous.iter().cloned().collect());
            let mut seen = BTreeSet::new();
            if !depends_on.iter().all(|d| seen.insert(d)) {
                return Err(
                    DomainError::new("depends_on", format!("step `{}` names a dependency twice", new.name)).into()
                );
            }
            previous = Some(new.name.clone());
            added.push(Step {
                id: StepId::new(),
                workflow_id: self.workflow.id,
                position,
                name: new.name,
                agent: new.agent,
                input: new.input,
                resolved_input: None,
                depends_on,
                runner: new.runner,
                optional: new.optional,
                max_attempts: new.max_attempts,
                timeout_ms: new.timeout_ms,
                metadata: new.metadata,
                status: StepStatus::Pending,
                attempts: 0,
                failures: 0,
                output: None,
                error: None,
                thread_id: None,
                lease: None,
                due_at: None,
                started_at: None,
                finished_at: None,
            });
        }
        let mut all = self.steps.clone();
        all.extend(added.iter().cloned());
        check_graph(&all)?;
        let t = added
            .iter()
            .map(|s| Transition { step: Some(s.id), from: None, to: Some("pending".into()), cause: "add_steps".into() })
            .collect();
        self.steps = all;
        Ok(t)
    }
}

/// Every `depends_on` names a step of the workflow other than itself, the
/// graph has no cycle, and every `$ref` names an ancestor.
fn check_graph(steps: &[Step]) -> Result<(), DomainError> {
    let index: BTreeMap<&StepName, usize> = steps.iter().enumerate().map(|(i, s)| (&s.name, i)).collect();
    for s in steps {
        for d in &s.depends_on {
            if d == &s.name {
                return Err(DomainError::new("depends_on", format!("step `{}` depends on itself", s.name)));
            }
            if !index.contains_key(d) {
                return Err(DomainError::new(
                    "depends_on",
                    format!("step `{}` depends on `{d}`, which is no step of the workflow", s.name),
                ));
            }
        }
    }
    // Kahn's algorithm: what is left once every step whose dependencies are
    // all placed has been placed lies on a cycle.
    let mut remaining: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut queue: Vec<usize> = (0..steps.len()).filter(|&i| remaining[i] == 0).collect();
    let mut placed = 0;
    while let Some(i) = queue.pop() {
        placed += 1;
        for (j, s) in steps.iter().enumerate() {
            if s.depends_on.contains(&steps[i].name) {
                remaining[j] -= 1;
                if remaining[j] == 0 {
                    queue.push(j);
                }
            }
        }
    }
    if placed < steps.len() {
        let on_cycle: Vec<&str> =
            steps.iter().enumerate().filter(|(i, _)| remaining[*i] > 0).map(|(_, s)| s.name.as_str()).collect();
        return Err(DomainError::new("depends_on", format!("the steps {} form a cycle", on_cycle.join(", "))));
    }
    for s in steps {
        let ancestors = ancestors(steps, &index, s);
        for r in refs_of(&s.input)? {
            if !ancestors.contains(&r) {
                return Err(DomainError::new(
                    "input",
                    format!("step `{}` refers to the output of `{r}`, which it does not depend on", s.name),
                ));
            }
        }
    }
    Ok(())
}

fn ancestors(steps: &[Step], index: &BTreeMap<&StepName, usize>, s: &Step) -> BTreeSet<StepName> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&StepName> = s.depends_on.iter().collect();
    while let Some(n) = stack.pop() {
        if out.insert(n.clone())
            && let Some(&i) = index.get(n)
        {
            stack.extend(steps[i].depends_on.iter());
        }
    }
    out
}

/// What a workflow listing keeps (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    /// Only this status.
    pub status: Option<WorkflowStatus>,
    /// Only this resource.
    pub resource: Option<ResourceId>,
    /// Only this exact name.
    pub name: Option<String>,
}

impl WorkflowFilter {
    fn fingerprint(&self, tenant: &TenantId) -> u64 {
        let text = format!(
            "wf\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            tenant.as_str(),
            self.status.map_or("", WorkflowStatus::as_str),
            self.resource.as_ref().map_or("", ResourceId::as_str),
            self.name.as_deref().unwrap_or("")
        );
        fnv1a(text.as_bytes())
    }
}

/// The opaque cursor of a workflow listing (newest first, keyset on the
/// id): the last id, bound to the tenant and filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowCursor;

impl WorkflowCursor {
    /// The cursor after `last`.
    #[must_use]
    pub fn encode(tenant: &TenantId, filter: &WorkflowFilter, last: WorkflowId) -> String {
        let mut body = b"W".to_vec();
        body.extend_from_slice(&filter.fingerprint(tenant).to_be_bytes());
        body.extend_from_slice(last.as_uuid().as_bytes());
        seal(body)
    }

    /// The id after which the next page starts.
    ///
    /// # Errors
    /// On `cursor` when it was edited, or made for another tenant or filter.
    pub fn decode(s: &str, tenant: &TenantId, filter: &WorkflowFilter) -> Result<WorkflowId, DomainError> {
        let bad = || DomainError::new("cursor", "is not a cursor of this workflow listing (its filters changed?)");
        let body = unseal(s).ok_or_else(bad)?;
        if body.len() != 25 || body[0] != b'W' || body[1..9] != filter.fingerprint(tenant).to_be_bytes() {
            return Err(bad());
        }
        let id = uuid::Uuid::from_slice(&body[9..]).map_err(|_| bad())?;
        Ok(WorkflowId::from_uuid(id))
    }
}

/// A step's metadata in its stored JSON form, checked again when read.
mod metadata_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    use crate::Metadata;

    pub(super) fn serialize<S: Serializer>(m: &Metadata, s: S) -> Result<S::Ok, S::Error> {
        m.as_map().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
        Metadata::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
