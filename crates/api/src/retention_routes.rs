//! Handlers of retention (issue 14), with their wire shapes:
//!
//! - `/api/retention/policies` (`admin`): create (`POST`, 201), list
//!   (`GET`), and per id read (`GET`), replace (`PUT`) and delete
//!   (`DELETE`, 204) the caller's tenant's policies. A zero or negative
//!   age or count is a 400 naming the field; an agent or resource nobody
//!   has yet is allowed (the policy applies once one appears).
//! - `POST /api/retention/prune` (`admin`, `?dry_run=true`): apply the
//!   tenant's policies now (what `memlayer prune` does), returning a
//!   receipt per policy; every run's receipt is stored, a dry run's too.
//! - `GET /api/retention/runs` (`admin`): the tenant's receipts, newest
//!   first, a page at a time (`limit`, `cursor` = a previous page's
//!   `next_cursor`).
//! - `DELETE /api/resources/{id}` (`write`): erase everything of one
//!   resource, done in the request (bounded transactions, resumed by the
//!   scheduler if the server dies midway), answered 200 with the receipt.
//!   A caller bound to another resource gets 404.
//!
//! A caller bound to a resource is refused the `admin` routes (403
//! `resource_bound`): policies and receipts cover the whole tenant.

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_domain::{
    AgentName, DomainError, IdRange, NewRetentionPolicy, PolicyId, Principal, ResourceId, RetentionPolicy,
    RetentionRules, RetentionRun, RunCounts, RunId,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Write};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the retention routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_policy, list_policies))
        .routes(routes!(get_policy, replace_policy, delete_policy))
        .routes(routes!(prune))
        .routes(routes!(list_runs))
        .routes(routes!(erase_resource))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The admin routes' principal, refused when bound to a resource.
fn whole_tenant(principal: Principal) -> Result<Principal, ApiError> {
    if principal.resource.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "resource_bound",
            "retention policies and receipts cover the whole tenant: use a credential not bound to a resource",
        ));
    }
    Ok(principal)
}

/// A retention policy as created or replaced. Every rule is optional, but
/// at least one must be set; numbers are at least 1.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Only threads of this agent (it need not exist yet).
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 128)]
    pub agent_id: Option<String>,
    /// Only threads of this resource (it need not exist yet).
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// Delete a thread whose last activity is older than this many seconds.
    /// At least one of the four rules must be set.
    #[serde(default, deserialize_with = "crate::dto::whole_opt")]
    #[schema(minimum = 1, maximum = 3_162_240_000_i64)]
    pub max_thread_age_secs: Option<i64>,
    /// Delete messages older than this many seconds.
    #[serde(default, deserialize_with = "crate::dto::whole_opt")]
    #[schema(minimum = 1, maximum = 3_162_240_000_i64)]
    pub max_message_age_secs: Option<i64>,
    /// Keep at most this many messages per thread (the newest).
    #[serde(default, deserialize_with = "crate::dto::whole_opt")]
    #[schema(minimum = 1, maximum = 3_162_240_000_i64)]
    pub max_messages_per_thread: Option<i64>,
    /// With `max_messages_per_thread` only (a 400 otherwise): delete only
    /// messages a summary covers.
    #[serde(default)]
    pub only_summarized: bool,
    /// Keep at most this many threads per resource (the most recently active).
    #[serde(default, deserialize_with = "crate::dto::whole_opt")]
    #[schema(minimum = 1, maximum = 3_162_240_000_i64)]
    pub max_threads_per_resource: Option<i64>,
}

impl TryFrom<PolicyBody> for NewRetentionPolicy {
    type Error = DomainError;
    fn try_from(b: PolicyBody) -> Result<Self, DomainError> {
        let new = Self {
            agent_id: b.agent_id.map(AgentName::parse).transpose()?,
            resource_id: b.resource_id.map(ResourceId::parse).transpose()?,
            rules: RetentionRules {
                max_thread_age_secs: b.max_thread_age_secs,
                max_message_age_secs: b.max_message_age_secs,
                max_messages_per_thread: b.max_messages_per_thread,
                only_summarized: b.only_summarized,
                max_threads_per_resource: b.max_threads_per_resource,
            },
        };
        new.validate()?;
        Ok(new)
    }
}

/// A stored retention policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDto {
    /// Its id (UUID).
    pub id: String,
    /// Only threads of this agent.
    pub agent_id: Option<String>,
    /// Only threads of this resource.
    pub resource_id: Option<String>,
    /// Threads idle longer than this are deleted.
    pub max_thread_age_secs: Option<i64>,
    /// Messages older than this are deleted.
    pub max_message_age_secs: Option<i64>,
    /// A thread keeps at most this many messages.
    pub max_messages_per_thread: Option<i64>,
    /// Only messages a summary covers are deleted by `max_messages_per_thread`.
    pub only_summarized: bool,
    /// A resource keeps at most this many threads.
    pub max_threads_per_resource: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<RetentionPolicy> for PolicyDto {
    fn from(p: RetentionPolicy) -> Self {
        Self {
            id: p.id.to_string(),
            agent_id: p.agent_id.map(|a| a.to_string()),
            resource_id: p.resource_id.map(|r| r.to_string()),
            max_thread_age_secs: p.rules.max_thread_age_secs,
            max_message_age_secs: p.rules.max_message_age_secs,
            max_messages_per_thread: p.rules.max_messages_per_thread,
            only_summarized: p.rules.only_summarized,
            max_threads_per_resource: p.rules.max_threads_per_resource,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// The tenant's policies.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoliciesDto {
    /// Oldest first.
    pub items: Vec<PolicyDto>,
}

/// How many of each kind a run deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountsDto {
    /// Threads deleted whole.
    pub threads: u64,
    /// Messages deleted (those of the deleted threads included).
    pub messages: u64,
    /// Summary versions that covered only deleted messages.
    pub summaries: u64,
    /// `Idempotency-Key` records that held deleted data.
    pub idempotency_records: u64,
    /// Resource working-memory documents (erasure).
    pub working_memory: u64,
    /// The resource's workflows, with their steps and events (erasure).
    pub workflows: u64,
}

impl From<RunCounts> for CountsDto {
    fn from(c: RunCounts) -> Self {
        Self {
            threads: c.threads,
            messages: c.messages,
            summaries: c.summaries,
            idempotency_records: c.idempotency_records,
            working_memory: c.working_memory,
            workflows: c.workflows,
        }
    }
}

/// The smallest and largest (time-ordered) id deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdRangeDto {
    /// UUID.
    pub first: String,
    /// UUID.
    pub last: String,
}

impl From<IdRange> for IdRangeDto {
    fn from(r: IdRange) -> Self {
        Self { first: r.first.to_string(), last: r.last.to_string() }
    }
}

/// A receipt: what a retention run or an erasure deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDto {
    /// Its id (UUID).
    pub id: String,
    /// `prune` or `erase`.
    pub kind: String,
    /// The policy applied (`prune`).
    pub policy_id: Option<String>,
    /// The resource erased (`erase`).
    pub resource_id: Option<String>,
    /// Nothing was deleted: the counts say what would have been.
    pub dry_run: bool,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; absent while an erasure is under way, and for a prune an
    /// error cut short (its counts are what its finished steps deleted).
    pub finished_at: Option<String>,
    /// Counts per kind.
    pub counts: CountsDto,
    /// The ids of the threads deleted.
    pub thread_ids: Option<IdRangeDto>,
    /// The ids of the messages deleted one by one.
    pub message_ids: Option<IdRangeDto>,
}

impl From<RetentionRun> for RunDto {
    fn from(r: RetentionRun) -> Self {
        Self {
            id: r.id.to_string(),
            kind: r.kind.as_str().to_owned(),
            policy_id: r.policy_id.map(|p| p.to_string()),
            resource_id: r.resource_id.map(|x| x.to_string()),
            dry_run: r.dry_run,
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            counts: r.counts.into(),
            thread_ids: r.thread_ids.map(Into::into),
            message_ids: r.message_ids.map(Into::into),
        }
    }
}

/// A page of receipts.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsDto {
    /// Newest first.
    pub items: Vec<RunDto>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Receipts of a prune.
#[derive(Debug, Serialize, ToSchema)]
pub struct PruneDto {
    /// One per policy.
    pub items: Vec<RunDto>,
}

/// Create a retention policy in the caller's tenant.
#[utoipa::path(post, path = "/api/retention/policies", security(("bearer" = ["admin"])), tag = "retention",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PolicyBody,
    responses((status = 201, body = PolicyDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_policy(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Json(body): Json<PolicyBody>,
) -> Result<(StatusCode, Json<PolicyDto>), ApiError> {
    let p = whole_tenant(principal)?;
    let new = NewRetentionPolicy::try_from(body)?;
    Ok((StatusCode::CREATED, Json(s.retention.create_policy(&p.tenant, new).await?.into())))
}

/// List the caller's tenant's retention policies.
#[utoipa::path(get, path = "/api/retention/policies", security(("bearer" = ["admin"])), tag = "retention",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PoliciesDto), (status = 403, body = ErrorBody)))]
async fn list_policies(State(s): State<AppState>, Admin(principal): Admin) -> Result<Json<PoliciesDto>, ApiError> {
    let p = whole_tenant(principal)?;
    let items = s.retention.list_policies(&p.tenant).await?.into_iter().map(Into::into).collect();
    Ok(Json(PoliciesDto { items }))
}

fn policy_id(id: &str) -> Result<PolicyId, DomainError> {
    id.parse()
}

/// Read a retention policy.
#[utoipa::path(get, path = "/api/retention/policies/{id}", security(("bearer" = ["admin"])), tag = "retention",
    params(("id" = String, Path, description = "The policy's id (UUID)"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PolicyDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_policy(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Path(id): Path<String>,
) -> Result<Json<PolicyDto>, ApiError> {
    let p = whole_tenant(principal)?;
    Ok(Json(s.retention.get_policy(&p.tenant, policy_id(&id)?).await?.into()))
}

/// Replace a retention policy's scope and rules.
#[utoipa::path(put, path = "/api/retention/policies/{id}", security(("bearer" = ["admin"])), tag = "retention",
    params(("id" = String, Path, description = "The policy's id (UUID)"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PolicyBody,
    responses((status = 200, body = PolicyDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn replace_policy(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Path(id): Path<String>,
    Json(body): Json<PolicyBody>,
) -> Result<Json<PolicyDto>, ApiError> {
    let p = whole_tenant(principal)?;
    let id = policy_id(&id)?;
    let new = NewRetentionPolicy::try_from(body)?;
    Ok(Json(s.retention.replace_policy(&p.tenant, id, new).await?.into()))
}

/// Delete a retention policy (what it deleted stays deleted).
#[utoipa::path(delete, path = "/api/retention/policies/{id}", security(("bearer" = ["admin"])), tag = "retention",
    params(("id" = String, Path, description = "The policy's id (UUID)"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_policy(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = whole_tenant(principal)?;
    s.retention.delete_policy(&p.tenant, policy_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `POST /api/retention/prune`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PruneQuery {
    /// Only report what would be deleted.
    pub dry_run: Option<bool>,
}

/// Apply the caller's tenant's policies now, in bounded transactions;
/// returns a receipt per policy, each stored (a dry run's marked
/// `dry_run`, one that deleted nothing too).
#[utoipa::path(post, path = "/api/retention/prune", security(("bearer" = ["admin"])), tag = "retention",
    params(PruneQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PruneDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn prune(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Query(q): Query<PruneQuery>,
) -> Result<Json<PruneDto>, ApiError> {
    let p = whole_tenant(principal)?;
    let runs = s.retention.prune(Some(&p.tenant), q.dry_run.unwrap_or(false)).await?;
    Ok(Json(PruneDto { items: runs.into_iter().map(Into::into).collect() }))
}

/// Query of `GET /api/retention/runs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The caller's tenant's receipts, newest first.
#[utoipa::path(get, path = "/api/retention/runs", security(("bearer" = ["admin"])), tag = "retention",
    params(RunsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = RunsDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_runs(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunsDto>, ApiError> {
    let p = whole_tenant(principal)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(DomainError::new("limit", "must be between 1 and 1000").into());
    }
    let before = q
        .cursor
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<RunId>())
        .transpose()
        .map_err(|e| DomainError::new("cursor", e.reason))?;
    let mut runs = s.retention.list_runs(&p.tenant, before, limit + 1).await?;
    let next_cursor = if runs.len() > limit as usize {
        runs.truncate(limit as usize);
        runs.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(RunsDto { items: runs.into_iter().map(Into::into).collect(), next_cursor }))
}

/// Erase everything of one resource: its threads (pinned ones too) with
/// their messages, vectors, index and full-text entries, summaries, agent
/// state and working memory, and the resource's working memory. Done when
/// answered (200 with the receipt); a crash midway is resumed by the
/// scheduler. A caller bound to another resource gets 404.
#[utoipa::path(delete, path = "/api/resources/{id}", security(("bearer" = ["write"])), tag = "retention",
    params(("id" = String, Path, description = "The resource"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = RunDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn erase_resource(
    State(s): State<AppState>,
    Write(principal): Write,
    Path(id): Path<String>,
) -> Result<Json<RunDto>, ApiError> {
    let resource = ResourceId::parse(id)?;
    Ok(Json(s.retention.erase_resource(&principal, &resource).await?.into()))
}
