//! Handlers of a thread's summary, with their wire shapes:
//!
//! - `GET /api/threads/{id}/summary` (`read`): the current summary with its
//!   coverage (`covers_through`, `covered_messages`), what follows it
//!   (`unsummarised_messages`, `unsummarised_tokens`) and the pending job;
//! - `POST /api/threads/{id}/summary` (`write`): summarise now. The job is
//!   queued first, then one step runs in the request (at most
//!   `summary.step_messages` messages); a longer backlog continues in the
//!   background. An unreachable summariser is a 503 with its reason and
//!   `Retry-After`: nothing is lost, the job stays queued and is retried;
//! - `GET /api/threads/{id}/summary/versions` (`read`): the kept versions,
//!   newest first.
//!
//! A caller bound to a resource reaches only that resource's threads (404
//! elsewhere), as on every thread route.

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_app::{SummaryError, SummaryView};
use memlayer_domain::{Summary, ThreadId};
use memlayer_ports::{StoreError, SummaryJob};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Read, Write};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the summary routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(get_summary, summarize)).routes(routes!(summary_versions))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// One version of a thread's summary.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryDto {
    /// 1, 2, 3… per thread.
    pub version: u64,
    /// The summary.
    pub text: String,
    /// The last message seq it covers: every message up to it is folded in.
    pub covers_through: i64,
    /// Messages folded in over all versions.
    pub covered_messages: u64,
    /// What wrote it (`local:extractive`, `openai:<model>`).
    pub summarizer: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<Summary> for SummaryDto {
    fn from(s: Summary) -> Self {
        Self {
            version: s.version,
            text: s.text,
            covers_through: s.covers_through,
            covered_messages: s.covered_messages,
            summarizer: s.summarizer,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// A queued summary job.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryJobDto {
    /// RFC 3339: when it runs next (after a failure, its retry).
    pub due_at: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// A worker holds it now.
    pub running: bool,
}

impl From<SummaryJob> for SummaryJobDto {
    fn from(j: SummaryJob) -> Self {
        Self {
            due_at: rfc3339(j.due_at),
            attempts: j.attempts,
            last_error: j.last_error,
            running: j.leased_until.is_some_and(|l| l > memlayer_domain::now()),
        }
    }
}

/// A thread's current summary and its coverage.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryStatusDto {
    /// The thread.
    pub thread_id: String,
    /// The newest version; `null` before the first summary.
    pub summary: Option<SummaryDto>,
    /// The last message seq the summary covers (0 without one).
    pub covers_through: i64,
    /// Messages the summary has folded in (0 without one).
    pub covered_messages: u64,
    /// Messages after `covers_through`, not yet summarised.
    pub unsummarised_messages: u64,
    /// Their tokens: stored counts, else an estimate (bytes / 4).
    pub unsummarised_tokens: u64,
    /// The queued job (with its failed attempts), if any.
    pub job: Option<SummaryJobDto>,
    /// `POST` only: whether this call stored a new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced: Option<bool>,
}

impl From<SummaryView> for SummaryStatusDto {
    fn from(v: SummaryView) -> Self {
        Self {
            thread_id: v.thread_id.to_string(),
            covered_messages: v.summary.as_ref().map_or(0, |s| s.covered_messages),
            summary: v.summary.map(Into::into),
            covers_through: v.backlog.covers_through,
            unsummarised_messages: v.backlog.messages,
            unsummarised_tokens: v.backlog.tokens,
            job: v.job.map(Into::into),
            advanced: None,
        }
    }
}

/// Kept versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryVersionsDto {
    /// The versions.
    pub items: Vec<SummaryDto>,
    /// The next page's `cursor`; null at the end.
    pub next_cursor: Option<String>,
}

/// Query of `GET /api/threads/{id}/summary/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// 1 to 1000, default 20.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn thread_id(s: &str) -> Result<ThreadId, ApiError> {
    s.parse().map_err(ApiError::from)
}

/// A failed summary as a response: an unreachable summariser is a 503
/// `summarizer_unavailable` with its reason and `Retry-After` (the job is
/// kept); a missing model is the usual `model_unavailable`.
fn summary_error(e: SummaryError) -> ApiError {
    match e {
        SummaryError::Store(e) => e.into(),
        SummaryError::Summarizer { error: StoreError::Unavailable(reason), retry_in } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "summarizer_unavailable",
            format!(
                "{reason}; nothing was lost: the summary job is kept and retried in {} s",
                retry_in.as_secs().max(1)
            ),
        )
        .with_retry_after(retry_in),
        SummaryError::Summarizer { error, retry_in } => ApiError::from(error).with_retry_after(retry_in),
    }
}

/// A thread's current summary with its coverage.
///
/// `summary` is `null` until the first summary; `unsummarised_messages` and
/// `unsummarised_tokens` count what follows its coverage; `job` is the
/// queued summary job, with its failed attempts and last error.
#[utoipa::path(get, path = "/api/threads/{id}/summary", security(("bearer" = ["read"])), tag = "summaries",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = SummaryStatusDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_summary(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<SummaryStatusDto>, ApiError> {
    Ok(Json(s.summaries.current(&who, thread_id(&id)?).await?.into()))
}

/// Summarise a thread now.
///
/// Folds the messages after the current summary's coverage into it (one
/// step: at most `summary.step_messages` messages; a longer backlog goes on
/// in the background, `job` says so) and stores the next version. Nothing
/// new: the current summary, `advanced: false`. Never changes a message.
#[utoipa::path(post, path = "/api/threads/{id}/summary", security(("bearer" = ["write"])), tag = "summaries",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = SummaryStatusDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "`summarizer_unavailable`: the summariser could not be \
                reached or answered badly; the message says why, nothing was lost and the job is retried after \
                `Retry-After`. `model_unavailable`: the local summariser's embedding model is missing. Also \
                `unavailable`, `timeout`, `overloaded` as on every route")))]
async fn summarize(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<Json<SummaryStatusDto>, ApiError> {
    let run = s.summaries.summarize_now(&who, thread_id(&id)?).await.map_err(summary_error)?;
    let mut dto = SummaryStatusDto::from(run.view);
    dto.advanced = Some(run.advanced);
    Ok(Json(dto))
}

/// A thread's kept summary versions, newest first.
#[utoipa::path(get, path = "/api/threads/{id}/summary/versions", security(("bearer" = ["read"])), tag = "summaries",
    params(("id" = String, Path, description = "Thread id"), VersionsQuery,
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = SummaryVersionsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn summary_versions(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
    Query(q): Query<VersionsQuery>,
) -> Result<Json<SummaryVersionsDto>, ApiError> {
    let limit = match q.limit {
        None => 20,
        Some(n) if (1..=memlayer_domain::MAX_PAGE_SIZE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit: must be between 1 and {}, got {n}",
                memlayer_domain::MAX_PAGE_SIZE
            )));
        }
    };
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty()).map(memlayer_domain::Cursor::decode).transpose()?;
    let page = s.summaries.versions_page(&who, thread_id(&id)?, cursor, limit).await?;
    Ok(Json(SummaryVersionsDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}
