//! Handlers of workflows (issue 16), with their wire shapes:
//!
//! - `POST /api/workflows` (`write`): a `draft` workflow with its steps;
//!   `GET /api/workflows` (`read`): newest first, filtered by `status`,
//!   `resource_id`, `name`, keyset-paged by `cursor`;
//! - `GET|PATCH|DELETE /api/workflows/{id}`: read (with steps), rename or
//!   re-describe, delete (with steps, events and step threads; 409 while
//!   running: cancel first);
//! - `POST /api/workflows/{id}/steps`, `DELETE /api/workflows/{id}/steps/{step}`
//!   (while `draft` or `paused`);
//! - `POST /api/workflows/{id}/{execute|pause|resume|cancel}` and
//!   `POST /api/workflows/{id}/steps/{step}/retry`: transitions; an illegal
//!   one is 409 naming the current state;
//! - `GET /api/workflows/{id}/events` (`read`): transitions, oldest first,
//!   keyset by `after` (the last `seq` seen).
//!
//! `{step}` is a step's id or its name. A caller bound to a resource
//! reaches only its resource's workflows (404 elsewhere).

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_domain::{
    AgentName, Metadata, NewStep, NewWorkflow, ResourceId, RunnerSpec, Step, StepId, StepName, Workflow, WorkflowEvent,
    WorkflowFilter, WorkflowId, WorkflowOp, WorkflowPatch, WorkflowState, WorkflowStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Read, Write};
use crate::dto::whole_opt;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the workflow routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_workflow, list_workflows))
        .routes(routes!(get_workflow, patch_workflow, delete_workflow))
        .routes(routes!(add_steps))
        .routes(routes!(remove_step))
        .routes(routes!(execute))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(cancel))
        .routes(routes!(retry_step))
        .routes(routes!(workflow_events))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// How a step runs: `{"kind": "http", "url": "https://…"}`, `{"kind":
/// "openai"}` or `{"kind": "noop"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerDto {
    /// `http`, `openai` or `noop`.
    #[schema(pattern = "^(http|openai|noop)$")]
    pub kind: String,
    /// The URL of an `http` runner (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 10, max_length = 2048, pattern = "^https?://")]
    pub url: Option<String>,
}

impl RunnerDto {
    /// The runner it names.
    ///
    /// # Errors
    /// On `field`, as [`RunnerSpec::from_value`].
    pub fn spec(self, field: &'static str) -> Result<RunnerSpec, memlayer_domain::DomainError> {
        RunnerSpec::from_value(field, serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

/// The document's `RunnerDto`: the derived schema lets `kind` and `url`
/// vary apart, so `{"kind": "http"}` (no URL) or an `openai` runner with
/// a URL would be schema-valid and still refused with a 400; one variant
/// per kind says what the server accepts.
pub(crate) fn runner_schema() -> Value {
    serde_json::json!({
        "description": "How a step runs: `{\"kind\": \"http\", \"url\": \"https://…\"}`, `{\"kind\": \"openai\"}` or \
            `{\"kind\": \"noop\"}`.",
        "oneOf": [
            {"type": "object", "required": ["kind", "url"], "additionalProperties": false,
             "properties": {"kind": {"type": "string", "const": "http"},
                            "url": {"type": "string", "minLength": 10, "maxLength": 2048, "pattern": "^https?://",
                                    "description": "`http://` or `https://`"}}},
            {"type": "object", "required": ["kind"], "additionalProperties": false,
             "properties": {"kind": {"type": "string", "enum": ["openai", "noop"]}}}
        ]
    })
}

impl From<&RunnerSpec> for RunnerDto {
    fn from(r: &RunnerSpec) -> Self {
        match r {
            RunnerSpec::Http { url } => Self { kind: "http".into(), url: Some(url.clone()) },
            other => Self { kind: other.kind().into(), url: None },
        }
    }
}

/// A step to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStepDto {
    /// Unique within the workflow: 1 to 64 ASCII letters, digits, `-`, `_`, `.`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// The agent running it (a catalog agent's name, or a free name).
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:@-]{1,128}$")]
    pub agent: String,
    /// Its input (any JSON; `{"$ref": "steps/<name>/output/<pointer>"}`
    /// anywhere in it is replaced by that step's output when this step
    /// becomes ready; the step must depend on it). Default `null`.
    #[serde(default)]
    pub input: Option<Value>,
    /// Names of the steps it waits for; absent: the step before it (none
    /// for the first); `[]`: none. Must not form a cycle.
    pub depends_on: Option<Vec<String>>,
    /// Its runner; absent: `workflows.default_runner`.
    pub runner: Option<RunnerDto>,
    /// Whether the workflow continues past its failure (default false).
    pub optional: Option<bool>,
    /// Attempts before it fails: 1 to 20, default 3.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<u32>,
    /// How long one attempt may run, in milliseconds: 1 to 3600000, default 300000.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 3_600_000)]
    pub timeout_ms: Option<u64>,
    /// A JSON object of at most 64 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl NewStepDto {
    fn into_step(self) -> Result<NewStep, ApiError> {
        let name = StepName::parse(self.name)?;
        let agent = AgentName::parse(self.agent).map_err(|e| memlayer_domain::DomainError::new("agent", e.reason))?;
        let mut step = NewStep::new(name, agent, self.input.unwrap_or(Value::Null));
        step.depends_on = self
            .depends_on
            .map(|names| {
                names
                    .into_iter()
                    .map(|n| StepName::parse(n).map_err(|e| memlayer_domain::DomainError::new("depends_on", e.reason)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        step.runner = self.runner.map(|r| r.spec("runner")).transpose()?;
        step.optional = self.optional.unwrap_or(false);
        step.max_attempts = self.max_attempts.unwrap_or(NewStep::DEFAULT_MAX_ATTEMPTS);
        step.timeout_ms = self.timeout_ms.unwrap_or(NewStep::DEFAULT_TIMEOUT_MS);
        step.metadata = Metadata::from_value(self.metadata.unwrap_or(Value::Null))?;
        step.validate()?;
        Ok(step)
    }
}

fn steps_of(dtos: Vec<NewStepDto>) -> Result<Vec<NewStep>, ApiError> {
    if dtos.len() > memlayer_domain::MAX_STEPS {
        return Err(ApiError::invalid(format!("steps: at most {} per workflow", memlayer_domain::MAX_STEPS)));
    }
    dtos.into_iter().map(NewStepDto::into_step).collect()
}

/// A new workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkflowDto {
    /// 1 to 256 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    pub description: Option<String>,
    /// The resource its step threads belong to.
    #[schema(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9_.:@-]{1,256}$")]
    pub resource_id: Option<String>,
    /// A JSON object of at most 64 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Its steps, in order (at most 100; more may be added while `draft`
    /// or `paused`).
    #[schema(max_items = 100)]
    pub steps: Option<Vec<NewStepDto>>,
}

/// Steps to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStepsDto {
    /// 1 to 100 steps, after the existing ones.
    #[schema(min_items = 1, max_items = 100)]
    pub steps: Vec<NewStepDto>,
}

/// A change to a workflow's name, description or metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWorkflowDto {
    /// 1 to 256 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: Option<String>,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    pub description: Option<String>,
    /// A JSON object of at most 64 KiB (replaces the old).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// A step with its status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepDto {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its place in the workflow.
    pub position: u32,
    /// Its agent.
    pub agent: String,
    /// Its input as written.
    pub input: Value,
    /// Its input with `$ref`s resolved, once ready.
    pub resolved_input: Option<Value>,
    /// The steps it waits for.
    pub depends_on: Vec<String>,
    /// Its own runner, if it names one.
    pub runner: Option<RunnerDto>,
    /// Whether the workflow continues past its failure.
    pub optional: bool,
    /// `pending`, `ready`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`.
    pub status: String,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts before it fails.
    pub max_attempts: u32,
    /// Timeout of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Its output, once succeeded.
    pub output: Option<Value>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// Its thread (input first, output last), once started.
    pub thread_id: Option<String>,
    /// The caller's metadata.
    pub metadata: Value,
    /// RFC 3339: when a ready step may run (after a failure, its retry).
    pub due_at: Option<String>,
    /// RFC 3339: when it first started.
    pub started_at: Option<String>,
    /// RFC 3339: when it finished.
    pub finished_at: Option<String>,
}

impl From<&Step> for StepDto {
    fn from(s: &Step) -> Self {
        Self {
            id: s.id.to_string(),
            name: s.name.to_string(),
            position: s.position,
            agent: s.agent.to_string(),
            input: s.input.clone(),
            resolved_input: s.resolved_input.clone(),
            depends_on: s.depends_on.iter().map(ToString::to_string).collect(),
            runner: s.runner.as_ref().map(Into::into),
            optional: s.optional,
            status: s.status.to_string(),
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            timeout_ms: s.timeout_ms,
            output: s.output.clone(),
            error: s.error.clone(),
            thread_id: s.thread_id.map(|t| t.to_string()),
            metadata: Value::Object(s.metadata.as_map().clone()),
            due_at: s.due_at.map(rfc3339),
            started_at: s.started_at.map(rfc3339),
            finished_at: s.finished_at.map(rfc3339),
        }
    }
}

/// A workflow (with its steps, except in listings).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDto {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The resource its step threads belong to.
    pub resource_id: Option<String>,
    /// The caller's metadata.
    pub metadata: Value,
    /// `draft`, `running`, `paused`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Its steps in order (absent in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepDto>>,
}

impl From<&Workflow> for WorkflowDto {
    fn from(w: &Workflow) -> Self {
        Self {
            id: w.id.to_string(),
            name: w.name.clone(),
            description: w.description.clone(),
            resource_id: w.resource.as_ref().map(ToString::to_string),
            metadata: Value::Object(w.metadata.as_map().clone()),
            status: w.status.to_string(),
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
            steps: None,
        }
    }
}

impl From<&WorkflowState> for WorkflowDto {
    fn from(s: &WorkflowState) -> Self {
        let mut dto = Self::from(&s.workflow);
        dto.steps = Some(s.steps.iter().map(Into::into).collect());
        dto
    }
}

/// A page of workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowListDto {
    /// Newest first.
    pub items: Vec<WorkflowDto>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// One transition.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowEventDto {
    /// 1, 2, … per workflow.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// The step that changed; `null`: the workflow.
    pub step_id: Option<String>,
    /// The status before (`null`: created).
    pub from: Option<String>,
    /// The status after (`null`: removed).
    pub to: Option<String>,
    /// Why.
    pub cause: String,
}

impl From<WorkflowEvent> for WorkflowEventDto {
    fn from(e: WorkflowEvent) -> Self {
        Self {
            seq: e.seq,
            at: rfc3339(e.at),
            step_id: e.step_id.map(|s| s.to_string()),
            from: e.from,
            to: e.to,
            cause: e.cause,
        }
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowEventsDto {
    /// Oldest first.
    pub items: Vec<WorkflowEventDto>,
    /// Pass as `after` for the next page (the last `seq`); `null` when
    /// this page was not full.
    pub next_after: Option<u64>,
}

/// Query of `GET /api/workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListWorkflowsQuery {
    /// Only workflows in this status.
    #[param(pattern = "^(draft|running|paused|succeeded|failed|cancelled)$")]
    pub status: Option<String>,
    /// Only workflows of this resource.
    #[param(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9_.:@-]{1,256}$")]
    pub resource_id: Option<String>,
    /// Only workflows of exactly this name.
    #[param(max_length = 256)]
    pub name: Option<String>,
    /// From a previous page's `next_cursor` (opaque; bound to the filters).
    pub cursor: Option<String>,
    /// 1 to 1000, default 50; a page holds at most 200.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Query of `GET /api/workflows/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events with a `seq` above this (default 0: from the first).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn workflow_id(s: &str) -> Result<WorkflowId, ApiError> {
    s.parse().map_err(ApiError::from)
}

/// A step by id, or by name within the workflow.
async fn step_id(
    s: &AppState,
    who: &memlayer_domain::Principal,
    id: WorkflowId,
    step: &str,
) -> Result<StepId, ApiError> {
    if let Ok(sid) = step.parse::<StepId>() {
        return Ok(sid);
    }
    let state = s.workflows.get(who, id).await?;
    state.step_named(step).map(|x| x.id).ok_or_else(|| ApiError::not_found(format!("step {step} not found")))
}

fn metadata(v: Option<Value>) -> Result<Metadata, ApiError> {
    Ok(Metadata::from_value(v.unwrap_or(Value::Null))?)
}

/// The workflow a request body describes.
pub(crate) fn new_workflow(body: NewWorkflowDto) -> Result<NewWorkflow, ApiError> {
    Ok(NewWorkflow {
        resource: body.resource_id.map(ResourceId::parse).transpose()?,
        name: body.name,
        description: body.description.unwrap_or_default(),
        metadata: metadata(body.metadata)?,
        steps: steps_of(body.steps.unwrap_or_default())?,
    })
}

/// Create a workflow (`draft`) with its steps.
///
/// `depends_on` defaults to the step before; a cycle, a dependency naming
/// no step, a duplicate step name or a `$ref` to a step it does not depend
/// on is a 400 naming the field. Nothing runs until `execute`.
#[utoipa::path(post, path = "/api/workflows", security(("bearer" = ["write"])), tag = "workflows",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = NewWorkflowDto,
    responses((status = 201, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_workflow(
    State(s): State<AppState>,
    Write(who): Write,
    Json(body): Json<NewWorkflowDto>,
) -> Result<(StatusCode, Json<WorkflowDto>), ApiError> {
    let state = s.workflows.create(&who, new_workflow(body)?).await?;
    Ok((StatusCode::CREATED, Json((&state).into())))
}

/// List workflows, newest first.
#[utoipa::path(get, path = "/api/workflows", security(("bearer" = ["read"])), tag = "workflows",
    params(ListWorkflowsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowListDto), (status = 400, body = ErrorBody)))]
async fn list_workflows(
    State(s): State<AppState>,
    Read(who): Read,
    Query(q): Query<ListWorkflowsQuery>,
) -> Result<Json<WorkflowListDto>, ApiError> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=memlayer_domain::MAX_PAGE_SIZE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit: must be between 1 and {}, got {n}",
                memlayer_domain::MAX_PAGE_SIZE
            )));
        }
    };
    let filter = WorkflowFilter {
        status: q.status.as_deref().map(WorkflowStatus::parse).transpose()?,
        resource: q.resource_id.map(ResourceId::parse).transpose()?,
        name: q.name,
    };
    let page = s.workflows.list(&who, filter, q.cursor.as_deref(), limit).await?;
    Ok(Json(WorkflowListDto { items: page.items.iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

/// A workflow with its steps and their status.
#[utoipa::path(get, path = "/api/workflows/{id}", security(("bearer" = ["read"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_workflow(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDto>, ApiError> {
    Ok(Json((&s.workflows.get(&who, workflow_id(&id)?).await?).into()))
}

/// Change a workflow's name, description or metadata (any status).
#[utoipa::path(patch, path = "/api/workflows/{id}", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PatchWorkflowDto,
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn patch_workflow(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Json(body): Json<PatchWorkflowDto>,
) -> Result<Json<WorkflowDto>, ApiError> {
    let patch = WorkflowPatch {
        name: body.name,
        description: body.description,
        metadata: body.metadata.map(|m| metadata(Some(m))).transpose()?,
    };
    Ok(Json((&s.workflows.patch(&who, workflow_id(&id)?, patch).await?).into()))
}

/// Delete a workflow with its steps, events and step threads.
///
/// A running workflow (or one with a running step) is a 409: cancel it first.
#[utoipa::path(delete, path = "/api/workflows/{id}", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_workflow(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.workflows.delete(&who, workflow_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add steps (while `draft` or `paused`; else 409).
#[utoipa::path(post, path = "/api/workflows/{id}/steps", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = AddStepsDto,
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_steps(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Json(body): Json<AddStepsDto>,
) -> Result<Json<WorkflowDto>, ApiError> {
    if body.steps.is_empty() {
        return Err(ApiError::invalid("steps: at least one step"));
    }
    let steps = steps_of(body.steps)?;
    Ok(Json((&s.workflows.add_steps(&who, workflow_id(&id)?, steps).await?).into()))
}

/// Remove a step that never started and nothing depends on (while `draft`
/// or `paused`; else 409).
#[utoipa::path(delete, path = "/api/workflows/{id}/steps/{step}", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("step" = String, Path, description = "Step id or name"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_step(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, step)): Path<(String, String)>,
) -> Result<Json<WorkflowDto>, ApiError> {
    let id = workflow_id(&id)?;
    let step = step_id(&s, &who, id, &step).await?;
    Ok(Json((&s.workflows.remove_step(&who, id, step).await?).into()))
}

async fn transition(
    s: &AppState,
    who: &memlayer_domain::Principal,
    id: &str,
    op: WorkflowOp,
) -> Result<Json<WorkflowDto>, ApiError> {
    Ok(Json((&s.workflows.apply(who, workflow_id(id)?, op).await?).into()))
}

/// Start a `draft` workflow: steps without unmet dependencies become ready.
#[utoipa::path(post, path = "/api/workflows/{id}/execute", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Not `draft`; the message names the current state")))]
async fn execute(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDto>, ApiError> {
    transition(&s, &who, &id, WorkflowOp::Execute).await
}

/// Pause a running workflow: running steps finish, no new one starts.
#[utoipa::path(post, path = "/api/workflows/{id}/pause", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Not `running`; the message names the current state")))]
async fn pause(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDto>, ApiError> {
    transition(&s, &who, &id, WorkflowOp::Pause).await
}

/// Resume a paused workflow.
#[utoipa::path(post, path = "/api/workflows/{id}/resume", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Not `paused`; the message names the current state")))]
async fn resume(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDto>, ApiError> {
    transition(&s, &who, &id, WorkflowOp::Resume).await
}

/// Cancel an unfinished workflow: nothing more is scheduled, unfinished
/// steps are `cancelled`.
#[utoipa::path(post, path = "/api/workflows/{id}/cancel", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Already finished; the message names its state")))]
async fn cancel(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDto>, ApiError> {
    transition(&s, &who, &id, WorkflowOp::Cancel).await
}

/// Run a step again now: a ready step waiting out its backoff, or a failed
/// optional step none of whose dependents started; its attempts start
/// again from 0.
#[utoipa::path(post, path = "/api/workflows/{id}/steps/{step}/retry", security(("bearer" = ["write"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("step" = String, Path, description = "Step id or name"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_step(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, step)): Path<(String, String)>,
) -> Result<Json<WorkflowDto>, ApiError> {
    let wid = workflow_id(&id)?;
    let step = step_id(&s, &who, wid, &step).await?;
    transition(&s, &who, &id, WorkflowOp::Retry(step)).await
}

/// A workflow's transitions, oldest first, with their time and cause.
#[utoipa::path(get, path = "/api/workflows/{id}/events", security(("bearer" = ["read"])), tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), EventsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkflowEventsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn workflow_events(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<WorkflowEventsDto>, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=memlayer_ports::MAX_EVENT_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit: must be between 1 and {}, got {n}",
                memlayer_ports::MAX_EVENT_PAGE
            )));
        }
    };
    let items = s.workflows.events(&who, workflow_id(&id)?, q.after.unwrap_or(0), limit).await?;
    let next_after = (items.len() == limit as usize).then(|| items.last().map(|e| e.seq)).flatten();
    Ok(Json(WorkflowEventsDto { items: items.into_iter().map(Into::into).collect(), next_after }))
}
