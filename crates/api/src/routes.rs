//! Handlers of threads, messages, agent state, search, embeddings and
//! operations (`/health`, `/ready`, the OpenAPI document), each registered
//! with its OpenAPI description by [`register`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use memlayer_app::AppendOptions;
use memlayer_domain::{
    AgentName, Cursor, Direction, MessageId, MetadataFilter, NewMessage, NewThread, PageSize, ResourceId, SearchMode,
    SearchQuery, SearchScope, ThreadFilter, ThreadId, ThreadPatch, TopK, Window,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Read, Write};
use crate::dto::{
    AgentStateDto, AppendBody, CreateThreadDto, EmbedRequestDto, EmbedResponseDto, EmbeddingStatusDto, ForkThreadDto,
    HealthDto, HitDto, MessageBatchDto, MessageDto, MessagesDto, NewMessageDto, PageDto, PatchThreadDto, PlanDto,
    SaveStateDto, SearchRequestDto, SearchResponseDto, StageDto, ThreadDto, UsageDto,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the thread, message, state, search and operations routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_thread, list_threads))
        .routes(routes!(get_thread, update_thread, delete_thread))
        .routes(routes!(fork_thread))
        .routes(routes!(append_messages, list_messages))
        .routes(routes!(delete_message))
        .routes(routes!(thread_embeddings))
        .routes(routes!(usage))
        .routes(routes!(get_state, put_state))
        .routes(routes!(search))
        .routes(routes!(embed))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(openapi_json))
}

fn thread_id(s: &str) -> Result<ThreadId, ApiError> {
    s.parse().map_err(ApiError::from)
}

fn page_size(limit: Option<u32>) -> Result<PageSize, ApiError> {
    limit.map_or(Ok(PageSize::default()), |n| PageSize::new(n).map_err(ApiError::from))
}

fn cursor(s: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    s.filter(|s| !s.is_empty()).map(Cursor::decode).transpose().map_err(ApiError::from)
}

/// Create a thread.
#[utoipa::path(post, path = "/api/threads", security(("bearer" = ["write"])), tag = "threads",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant; the default tenant when absent")),
    request_body = CreateThreadDto,
    responses((status = 201, body = ThreadDto), (status = 400, body = ErrorBody)))]
async fn create_thread(
    State(s): State<AppState>,
    Write(who): Write,
    Json(body): Json<CreateThreadDto>,
) -> Result<(StatusCode, Json<ThreadDto>), ApiError> {
    let new = NewThread::try_from(body)?;
    let thread = s.memory.create_thread(&who, new).await?;
    Ok((StatusCode::CREATED, Json(thread.into())))
}

/// Query of `GET /api/threads`. Besides these, `metadata.KEY=VALUE` filters
/// on a top-level metadata key; VALUE is read as JSON when it parses
/// (`metadata.n=2` is the number 2, `metadata.n="2"` the string) and as a
/// string otherwise.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListThreadsQuery {
    /// Only threads of this resource.
    pub resource_id: Option<String>,
    /// Only threads of this agent.
    pub agent_id: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
}

fn parse_list_threads(pairs: Vec<(String, String)>) -> Result<(ListThreadsQuery, Vec<MetadataFilter>), ApiError> {
    let mut q = ListThreadsQuery::default();
    let mut meta = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "resource_id" => q.resource_id = Some(v),
            "agent_id" => q.agent_id = Some(v),
            "cursor" => q.cursor = Some(v),
            "limit" => {
                q.limit = Some(v.parse().map_err(|_| ApiError::invalid(format!("limit: `{v}` is not a number")))?);
            }
            _ => match k.strip_prefix("metadata.") {
                Some(key) => {
                    let value = serde_json::from_str::<Value>(&v).unwrap_or(Value::String(v));
                    meta.push(MetadataFilter::new(key, value)?);
                }
                None => {
                    return Err(ApiError::invalid(format!(
                        "unknown query parameter `{k}`; expected resource_id, agent_id, metadata.KEY, cursor, limit"
                    )));
                }
            },
        }
    }
    Ok((q, meta))
}

/// List threads, newest first.
#[utoipa::path(get, path = "/api/threads", security(("bearer" = ["read"])), tag = "threads",
    params(ListThreadsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PageDto<ThreadDto>), (status = 400, body = ErrorBody)))]
async fn list_threads(
    State(s): State<AppState>,
    Read(who): Read,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<PageDto<ThreadDto>>, ApiError> {
    let (q, metadata) = parse_list_threads(pairs)?;
    let filter = ThreadFilter {
        resource_id: q.resource_id.map(ResourceId::parse).transpose()?,
        agent_id: q.agent_id.map(AgentName::parse).transpose()?,
        metadata,
    };
    let page = s.memory.list_threads(&who, &filter, cursor(q.cursor.as_deref())?, page_size(q.limit)?).await?;
    Ok(Json(page.into()))
}

/// Get a thread.
#[utoipa::path(get, path = "/api/threads/{id}", security(("bearer" = ["read"])), tag = "threads",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = ThreadDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_thread(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<ThreadDto>, ApiError> {
    Ok(Json(s.memory.get_thread(&who, thread_id(&id)?).await?.into()))
}

/// Update a thread: absent fields stay, `null` clears.
#[utoipa::path(patch, path = "/api/threads/{id}", security(("bearer" = ["write"])), tag = "threads",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PatchThreadDto,
    responses((status = 200, body = ThreadDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_thread(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Json(body): Json<PatchThreadDto>,
) -> Result<Json<ThreadDto>, ApiError> {
    let id = thread_id(&id)?;
    let patch = ThreadPatch::try_from(body)?;
    Ok(Json(s.memory.update_thread(&who, id, patch).await?.into()))
}

/// Delete a thread with its messages and agent state.
///
/// Answered at once whatever the thread's size: from the answer on the
/// thread is 404 everywhere (reads, appends, state, searches); its rows are
/// removed in the background.
#[utoipa::path(delete, path = "/api/threads/{id}", security(("bearer" = ["write"])), tag = "threads",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_thread(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.memory.delete_thread(&who, thread_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fork a thread: a new thread of the same resource, agent and model holding
/// the source's messages 1..`at_seq` (default: all) with new ids and the same
/// sequence numbers, roles, content, tool calls, metadata and token counts,
/// their vectors (copied, not recomputed), each agent's state and the
/// thread's working memory as of `at_seq` (the current ones for the whole
/// thread), its newest summary covering no message past `at_seq` (each as
/// version 1), its metadata naming the source under
/// `forked_from` (`{"thread_id", "at_seq"}`). One transaction: on any error
/// nothing is created. The source is untouched.
#[utoipa::path(post, path = "/api/threads/{id}/fork", security(("bearer" = ["write"])), tag = "threads",
    params(("id" = String, Path, description = "Thread id of the source"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ForkThreadDto,
    responses((status = 201, body = ThreadDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn fork_thread(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Json(body): Json<ForkThreadDto>,
) -> Result<(StatusCode, Json<ThreadDto>), ApiError> {
    let source = thread_id(&id)?;
    let fork = memlayer_domain::ForkThread::try_from(body)?;
    let thread = s.memory.fork_thread(&who, source, fork).await?;
    Ok((StatusCode::CREATED, Json(thread.into())))
}

/// Query of `POST /api/threads/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AppendQuery {
    /// Count tokens of each message (default: the server's `memory.count_tokens`).
    pub count_tokens: Option<bool>,
    /// Model whose tokenizer counts (default: the thread's model, else its agent's).
    pub model: Option<String>,
}

/// Append one message, or a batch `{"messages": [...]}` atomically.
///
/// One message answers with the stored message; a batch with `{"items": [...]}`.
#[utoipa::path(post, path = "/api/threads/{id}/messages", security(("bearer" = ["write"])), tag = "messages",
    params(("id" = String, Path, description = "Thread id"), AppendQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body(content = AppendBody, description = "One message, or `{\"messages\": [...]}` (1 to 1000)"),
    responses((status = 201, body = MessageDto, description = "The stored message, or `{\"items\": [...]}` for a batch"),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn append_messages(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Query(q): Query<AppendQuery>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let id = thread_id(&id)?;
    let options = AppendOptions { count_tokens: q.count_tokens, model: q.model };
    let is_batch = body.as_object().is_some_and(|o| o.contains_key("messages"));
    let parse = |v: Value| -> Result<NewMessage, ApiError> {
        let dto: NewMessageDto = serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("message: {e}")))?;
        Ok(NewMessage::try_from(dto)?)
    };
    if is_batch {
        let batch: MessageBatchDto =
            serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("batch: {e}")))?;
        let mut messages = Vec::with_capacity(batch.messages.len());
        for (i, dto) in batch.messages.into_iter().enumerate() {
            let m = NewMessage::try_from(dto).map_err(|e| ApiError::invalid(format!("messages[{i}].{e}")))?;
            messages.push(m);
        }
        let stored = s.memory.append_messages(&who, id, messages, options).await?;
        let items = stored.into_iter().map(Into::into).collect();
        Ok((StatusCode::CREATED, Json(MessagesDto { items })).into_response())
    } else {
        if !body.is_object() {
            return Err(ApiError::invalid("body must be a message object or {\"messages\": [...]}"));
        }
        let stored = s.memory.append_message(&who, id, parse(body)?, options).await?;
        Ok((StatusCode::CREATED, Json(MessageDto::from(stored))).into_response())
    }
}

/// Query of `GET /api/threads/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListMessagesQuery {
    /// From a previous page's `next_cursor` (it carries its direction).
    pub cursor: Option<String>,
    /// 1 to 1000; default the thread's `_memory.last_n` (from its agent), else 50.
    pub limit: Option<u32>,
    /// `forward` (oldest first, default) or `backward` (newest first).
    pub direction: Option<String>,
}

/// Page through a thread's messages by sequence number.
#[utoipa::path(get, path = "/api/threads/{id}/messages", security(("bearer" = ["read"])), tag = "messages",
    params(("id" = String, Path, description = "Thread id"), ListMessagesQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PageDto<MessageDto>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_messages(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
    Query(q): Query<ListMessagesQuery>,
) -> Result<Json<PageDto<MessageDto>>, ApiError> {
    let id = thread_id(&id)?;
    let direction = q.direction.as_deref().map(str::parse::<Direction>).transpose()?;
    let limit = q.limit.map(PageSize::new).transpose()?;
    let page = s.memory.page_messages(&who, id, cursor(q.cursor.as_deref())?, direction, limit).await?;
    Ok(Json(page.into()))
}

/// An agent's state in a thread (version 0 and null state when never saved).
#[utoipa::path(get, path = "/api/threads/{id}/state/{agent_id}", security(("bearer" = ["read"])), tag = "state",
    params(("id" = String, Path, description = "Thread id"), ("agent_id" = String, Path, description = "Agent id"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = AgentStateDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_state(
    State(s): State<AppState>,
    Read(who): Read,
    Path((id, agent)): Path<(String, String)>,
) -> Result<Json<AgentStateDto>, ApiError> {
    let id = thread_id(&id)?;
    let agent = AgentName::parse(agent)?;
    let dto = match s.memory.load_state(&who, id, &agent).await? {
        Some(state) => state.into(),
        None => AgentStateDto {
            thread_id: id.to_string(),
            agent_id: agent.to_string(),
            state: Value::Null,
            version: 0,
            updated_at: None,
        },
    };
    Ok(Json(dto))
}

/// Save an agent's state if `expected_version` is current (0 to create);
/// a stale version is a 409 and changes nothing.
#[utoipa::path(put, path = "/api/threads/{id}/state/{agent_id}", security(("bearer" = ["write"])), tag = "state",
    params(("id" = String, Path, description = "Thread id"), ("agent_id" = String, Path, description = "Agent id"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = SaveStateDto,
    responses((status = 200, body = AgentStateDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn put_state(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, agent)): Path<(String, String)>,
    Json(body): Json<SaveStateDto>,
) -> Result<Json<AgentStateDto>, ApiError> {
    let id = thread_id(&id)?;
    let agent = AgentName::parse(agent)?;
    let saved = s.memory.save_state(&who, id, &agent, body.state, body.expected_version).await?;
    Ok(Json(saved.into()))
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = HealthDto)))]
async fn health() -> Json<HealthDto> {
    Json(HealthDto { status: "ok", redis: None })
}

/// The database is reachable (and, with `redis.url`, whether Redis is).
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = HealthDto), (status = 503, body = ErrorBody)))]
async fn ready(State(s): State<AppState>) -> Result<Json<HealthDto>, ApiError> {
    s.database.ping().await?;
    let redis = match &s.coordinator {
        None => None,
        Some(c) => Some(match c.ping().await {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("unreachable ({e}): limits are per server and the catalog cache waits for its TTL"),
        }),
    };
    Ok(Json(HealthDto { status: "ok", redis }))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json(axum::Extension(document): axum::Extension<Arc<Result<Bytes, String>>>) -> Response {
    match document.as_ref() {
        Ok(json) => ([(axum::http::header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "openapi serialisation failed");
            ApiError::internal().into_response()
        }
    }
}

/// Delete one message with its vector and index entry.
#[utoipa::path(delete, path = "/api/threads/{id}/messages/{message_id}", security(("bearer" = ["write"])), tag = "messages",
    params(("id" = String, Path, description = "Thread id"), ("message_id" = String, Path, description = "Message id"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_message(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let thread = thread_id(&id)?;
    let message: MessageId = message_id.parse()?;
    s.memory.delete_message(&who, thread, message).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the caller's tenant stores (live threads, messages, their bytes) against its storage quota. A
/// credential bound to a resource gets 403 `forbidden`: the figures cover the whole tenant.
#[utoipa::path(get, path = "/api/usage", security(("bearer" = ["read"])), tag = "threads",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = UsageDto)))]
async fn usage(State(s): State<AppState>, Read(who): Read) -> Result<Json<UsageDto>, ApiError> {
    Ok(Json(s.memory.usage(&who).await?.into()))
}

/// Embedding progress of a thread: embedded, pending (still retried), other model.
#[utoipa::path(get, path = "/api/threads/{id}/embeddings", security(("bearer" = ["read"])), tag = "search",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = EmbeddingStatusDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn thread_embeddings(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<EmbeddingStatusDto>, ApiError> {
    let counts = s.search.thread_embeddings(&who, thread_id(&id)?).await?;
    Ok(Json(EmbeddingStatusDto {
        model: s.search.embedder_info().model,
        embedded: counts.embedded,
        pending: counts.pending,
        failing: counts.failing,
        other_model: counts.other_model,
    }))
}

fn search_query(body: SearchRequestDto) -> Result<SearchQuery, ApiError> {
    let scope = match body.scope {
        None => SearchScope::Tenant,
        Some(scope) => match (scope.thread_id, scope.resource_id, scope.tenant) {
            (Some(t), None, None) => SearchScope::Thread(thread_id(&t)?),
            (None, Some(r), None) => SearchScope::Resource(ResourceId::parse(r)?),
            (None, None, Some(true)) => SearchScope::Tenant,
            _ => {
                return Err(ApiError::invalid(
                    "scope: give exactly one of {\"thread_id\": …}, {\"resource_id\": …} or {\"tenant\": true}",
                ));
            }
        },
    };
    let mode = body.mode.map(SearchMode::from).unwrap_or_default();
    let top_k = body.top_k.map(TopK::new).transpose()?;
    let window = body.window.map_or(Ok(Window::default()), |w| Window::new(w.before, w.after))?;
    Ok(SearchQuery::new(body.query, scope, mode, top_k, window, body.min_score)?)
}

/// Find messages by meaning (`vector`), by words (`lexical`) or both (`hybrid`).
#[utoipa::path(post, path = "/api/search", security(("bearer" = ["read"])), tag = "search",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = SearchRequestDto,
    responses((status = 200, body = SearchResponseDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "The embedding model is missing; the message says how to fix it")))]
async fn search(
    State(s): State<AppState>,
    Read(who): Read,
    Json(body): Json<SearchRequestDto>,
) -> Result<Json<SearchResponseDto>, ApiError> {
    let query = search_query(body)?;
    let results = s.search.search(&who, &query).await?;
    let hits = results
        .hits
        .into_iter()
        .map(|h| HitDto {
            thread_id: h.message.thread_id.to_string(),
            score: h.score,
            mode: h.mode.into(),
            message: h.message.into(),
            before: h.before.into_iter().map(Into::into).collect(),
            after: h.after.into_iter().map(Into::into).collect(),
        })
        .collect();
    let p = results.plan;
    let counts_capped = p.counts_capped();
    Ok(Json(SearchResponseDto {
        hits,
        mode: query.mode.into(),
        plan: PlanDto {
            vector_index: p.vector_index,
            model: p.model,
            pending: p.pending,
            other_model: p.other_model,
            counts_capped,
            stages: p
                .stages
                .iter()
                .map(|st| StageDto {
                    stage: st.kind.as_str().to_owned(),
                    candidates: u64::try_from(st.candidates).unwrap_or(u64::MAX),
                })
                .collect(),
        },
        truncated: results.truncated,
    }))
}

/// Embed texts with the server's model.
#[utoipa::path(post, path = "/api/embed", security(("bearer" = ["read"])), tag = "search",
    request_body = EmbedRequestDto,
    responses((status = 200, body = EmbedResponseDto), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "The embedding model is missing; the message says how to fix it")))]
async fn embed(
    State(s): State<AppState>,
    Read(who): Read,
    Json(body): Json<EmbedRequestDto>,
) -> Result<Json<EmbedResponseDto>, ApiError> {
    let vectors = s.search.embed(&who, body.texts).await?;
    let info = s.search.embedder_info();
    Ok(Json(EmbedResponseDto {
        model: info.model,
        dim: info.dim,
        vectors: vectors.into_iter().map(memlayer_domain::Embedding::into_vector).collect(),
    }))
}
