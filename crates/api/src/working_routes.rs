//! Handlers of working memory (`/api/resources/{id}/working-memory` and
//! `/api/threads/{id}/working-memory`, with `…/versions` and
//! `…/versions/{version}/restore`), their wire shapes, each registered with
//! its OpenAPI description by [`register`].

use axum::extract::State;
use axum::http::HeaderMap;
use memlayer_app::WorkingDocument;
use memlayer_domain::{
    AgentName, ResourceId, ThreadId, WorkingContent, WorkingFormatKind, WorkingMemory, WorkingScope,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Read, Write};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the working-memory routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(get_resource_working, put_resource_working, patch_resource_working))
        .routes(routes!(resource_working_versions))
        .routes(routes!(restore_resource_working))
        .routes(routes!(get_thread_working, put_thread_working, patch_thread_working))
        .routes(routes!(thread_working_versions))
        .routes(routes!(restore_thread_working))
}

/// A working-memory document. `version` 0 with `updated_at` null: never
/// written (`content` is then the agent's template, or `{}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkingMemoryDto {
    /// `resource` or `thread`.
    pub scope: &'static str,
    /// The resource's or the thread's id.
    pub id: String,
    /// `json` or `markdown`.
    pub format: &'static str,
    /// The document: any JSON value, or the Markdown text as a string.
    pub content: Value,
    /// Pass as `expected_version` on the next `PUT`.
    pub version: u64,
    /// RFC 3339, or null when never written.
    pub updated_at: Option<String>,
    /// The catalog agent whose working-memory options applied, if any.
    pub agent: Option<String>,
}

fn scope_parts(scope: &WorkingScope) -> (&'static str, String) {
    (scope.kind().as_str(), scope.id_text())
}

fn content_parts(content: WorkingContent) -> (&'static str, Value) {
    let format = content.format().as_str();
    let value = match content {
        WorkingContent::Json(v) => v,
        WorkingContent::Markdown(s) => Value::String(s),
    };
    (format, value)
}

fn rfc3339(t: memlayer_domain::Timestamp) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl From<WorkingDocument> for WorkingMemoryDto {
    fn from(d: WorkingDocument) -> Self {
        let (scope, id) = scope_parts(&d.scope);
        let (format, content) = content_parts(d.content);
        Self {
            scope,
            id,
            format,
            content,
            version: d.version,
            updated_at: d.updated_at.map(rfc3339),
            agent: d.agent.map(|a| a.to_string()),
        }
    }
}

impl From<WorkingMemory> for WorkingMemoryDto {
    fn from(w: WorkingMemory) -> Self {
        let (scope, id) = scope_parts(&w.scope);
        let (format, content) = content_parts(w.content);
        Self { scope, id, format, content, version: w.version, updated_at: Some(rfc3339(w.updated_at)), agent: None }
    }
}

/// The kept versions of a document, newest first (the current one first).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkingVersionsDto {
    /// Newest first.
    pub items: Vec<WorkingMemoryDto>,
}

/// Body of `PUT …/working-memory`. The document's schema in
/// `/api/openapi.json` is completed by hand: with `format: markdown`,
/// `content` is a string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutWorkingMemoryDto {
    /// `json` or `markdown`; absent: the agent's format, else `json`. With
    /// an agent that sets its format, another one is a 400.
    #[serde(default)]
    pub format: Option<String>,
    /// The whole new document (at most 256 KiB): any JSON value (checked
    /// against the agent's JSON Schema; a failure is a 400 naming the JSON
    /// path), or the Markdown text as a string.
    pub content: Value,
    /// The version this write replaces: 0 when never written; a stale one
    /// is a 409 and changes nothing.
    #[serde(deserialize_with = "crate::dto::whole")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_806_i64)]
    pub expected_version: u64,
}

/// Query of a resource's working-memory routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResourceWorkingQuery {
    /// The catalog agent whose working-memory options apply (format, JSON
    /// Schema, template, versions kept); absent: the defaults. An agent
    /// the catalog does not hold is a 404.
    pub agent: Option<String>,
}

impl ResourceWorkingQuery {
    fn agent(&self) -> Result<Option<AgentName>, ApiError> {
        Ok(self.agent.clone().map(AgentName::parse).transpose()?)
    }
}

fn resource(id: String) -> Result<WorkingScope, ApiError> {
    Ok(WorkingScope::Resource(ResourceId::parse(id)?))
}

fn thread(id: &str) -> Result<WorkingScope, ApiError> {
    Ok(WorkingScope::Thread(id.parse::<ThreadId>()?))
}

fn format(f: Option<&str>) -> Result<Option<WorkingFormatKind>, ApiError> {
    Ok(f.map(|f| WorkingFormatKind::parse("format", f)).transpose()?)
}

async fn get(
    s: &AppState,
    who: &(impl memlayer_domain::Reach + 'static),
    scope: WorkingScope,
    agent: Option<AgentName>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    Ok(Json(s.working.get(who, &scope, agent.as_ref()).await?.into()))
}

async fn put(
    s: &AppState,
    who: &(impl memlayer_domain::Reach + 'static),
    scope: WorkingScope,
    agent: Option<AgentName>,
    body: PutWorkingMemoryDto,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    let format = format(body.format.as_deref())?;
    let doc = s.working.put(who, &scope, agent.as_ref(), format, body.content, body.expected_version).await?;
    Ok(Json(doc.into()))
}

/// The version an `If-Match` header names: `"7"` (the document's
/// `version`, quoted as an entity tag) or `7`; absent: `None`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else { return Ok(None) };
    let bad = || ApiError::invalid("If-Match: must be the document's version as an entity tag, like \"7\"");
    let text = value.to_str().map_err(|_| bad())?.trim();
    let unquoted = text.strip_prefix('"').unwrap_or(text);
    let unquoted = unquoted.strip_suffix('"').unwrap_or(unquoted);
    unquoted.parse::<u64>().map(Some).map_err(|_| bad())
}

async fn patch(
    s: &AppState,
    who: &(impl memlayer_domain::Reach + 'static),
    scope: WorkingScope,
    agent: Option<AgentName>,
    body: &Value,
    headers: &HeaderMap,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    let expected = if_match(headers)?;
    Ok(Json(s.working.patch_if(who, &scope, agent.as_ref(), body, expected).await?.into()))
}

async fn versions(
    s: &AppState,
    who: &(impl memlayer_domain::Reach + 'static),
    scope: WorkingScope,
) -> Result<Json<WorkingVersionsDto>, ApiError> {
    let items = s.working.versions(who, &scope).await?.into_iter().map(Into::into).collect();
    Ok(Json(WorkingVersionsDto { items }))
}

async fn restore(
    s: &AppState,
    who: &(impl memlayer_domain::Reach + 'static),
    scope: WorkingScope,
    agent: Option<AgentName>,
    version: u64,
    headers: &HeaderMap,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    let expected = if_match(headers)?;
    Ok(Json(s.working.restore_if(who, &scope, agent.as_ref(), version, expected).await?.into()))
}

/// A resource's working memory (never written: version 0, with the
/// agent's template or `{}`).
#[utoipa::path(get, path = "/api/resources/{id}/working-memory", security(("bearer" = ["read"])), tag = "working-memory",
    params(("id" = String, Path, description = "Resource id"), ResourceWorkingQuery,
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_resource_working(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
    Query(q): Query<ResourceWorkingQuery>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    get(&s, &who, resource(id)?, q.agent()?).await
}

/// Replace a resource's working memory if `expected_version` is current (0
/// when never written); a stale version is a 409 and changes nothing.
#[utoipa::path(put, path = "/api/resources/{id}/working-memory", security(("bearer" = ["write"])), tag = "working-memory",
    params(("id" = String, Path, description = "Resource id"), ResourceWorkingQuery,
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PutWorkingMemoryDto,
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn put_resource_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Query(q): Query<ResourceWorkingQuery>,
    Json(body): Json<PutWorkingMemoryDto>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    put(&s, &who, resource(id)?, q.agent()?, body).await
}

/// Apply a JSON merge patch (RFC 7396) to a resource's JSON working memory,
/// atomically: concurrent patches of different fields all stay. A Markdown
/// document (or agent) is a 409.
#[utoipa::path(patch, path = "/api/resources/{id}/working-memory", security(("bearer" = ["write"])), tag = "working-memory",
    params(("id" = String, Path, description = "Resource id"), ResourceWorkingQuery,
           ("If-Match" = Option<String>, Header, description = "Only if the document is at this version (its `version`, quoted: `\"7\"`); else 412 and nothing is written"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body(content = Value, description = "The merge patch: `null` removes a field, an object merges, anything else replaces",
                 content_type = "application/merge-patch+json"),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn patch_resource_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Query(q): Query<ResourceWorkingQuery>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    patch(&s, &who, resource(id)?, q.agent()?, &body, &headers).await
}

/// The kept versions of a resource's working memory, newest first.
#[utoipa::path(get, path = "/api/resources/{id}/working-memory/versions", security(("bearer" = ["read"])), tag = "working-memory",
    params(("id" = String, Path, description = "Resource id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingVersionsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resource_working_versions(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<WorkingVersionsDto>, ApiError> {
    versions(&s, &who, resource(id)?).await
}

/// Make a kept version of a resource's working memory current again, as a
/// new version (404 when that version is no longer kept).
#[utoipa::path(post, path = "/api/resources/{id}/working-memory/versions/{version}/restore", security(("bearer" = ["write"])),
    tag = "working-memory",
    params(("id" = String, Path, description = "Resource id"), ("version" = u64, Path, description = "A kept version"),
           ResourceWorkingQuery, ("If-Match" = Option<String>, Header, description = "Only if the document is at this version (its `version`, quoted: `\"7\"`); else 412 and nothing is written"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn restore_resource_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, version)): Path<(String, u64)>,
    Query(q): Query<ResourceWorkingQuery>,
    headers: HeaderMap,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    restore(&s, &who, resource(id)?, q.agent()?, version, &headers).await
}

/// A thread's working memory, under its agent's options (never written:
/// version 0, with the template or `{}`).
#[utoipa::path(get, path = "/api/threads/{id}/working-memory", security(("bearer" = ["read"])), tag = "working-memory",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_thread_working(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    get(&s, &who, thread(&id)?, None).await
}

/// Replace a thread's working memory if `expected_version` is current (0
/// when never written); a stale version is a 409 and changes nothing.
#[utoipa::path(put, path = "/api/threads/{id}/working-memory", security(("bearer" = ["write"])), tag = "working-memory",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PutWorkingMemoryDto,
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn put_thread_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    Json(body): Json<PutWorkingMemoryDto>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    put(&s, &who, thread(&id)?, None, body).await
}

/// Apply a JSON merge patch (RFC 7396) to a thread's JSON working memory,
/// atomically: concurrent patches of different fields all stay. A Markdown
/// document (or agent) is a 409.
#[utoipa::path(patch, path = "/api/threads/{id}/working-memory", security(("bearer" = ["write"])), tag = "working-memory",
    params(("id" = String, Path, description = "Thread id"), ("If-Match" = Option<String>, Header, description = "Only if the document is at this version (its `version`, quoted: `\"7\"`); else 412 and nothing is written"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body(content = Value, description = "The merge patch: `null` removes a field, an object merges, anything else replaces",
                 content_type = "application/merge-patch+json"),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn patch_thread_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    patch(&s, &who, thread(&id)?, None, &body, &headers).await
}

/// The kept versions of a thread's working memory, newest first.
#[utoipa::path(get, path = "/api/threads/{id}/working-memory/versions", security(("bearer" = ["read"])), tag = "working-memory",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingVersionsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn thread_working_versions(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
) -> Result<Json<WorkingVersionsDto>, ApiError> {
    versions(&s, &who, thread(&id)?).await
}

/// Make a kept version of a thread's working memory current again, as a
/// new version (404 when that version is no longer kept).
#[utoipa::path(post, path = "/api/threads/{id}/working-memory/versions/{version}/restore", security(("bearer" = ["write"])),
    tag = "working-memory",
    params(("id" = String, Path, description = "Thread id"), ("version" = u64, Path, description = "A kept version"),
           ("If-Match" = Option<String>, Header, description = "Only if the document is at this version (its `version`, quoted: `\"7\"`); else 412 and nothing is written"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = WorkingMemoryDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn restore_thread_working(
    State(s): State<AppState>,
    Write(who): Write,
    Path((id, version)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Json<WorkingMemoryDto>, ApiError> {
    restore(&s, &who, thread(&id)?, None, version, &headers).await
}

/// What the derived document cannot say about these routes: a `PUT` body's
/// `content` is a string with `format: markdown`; an agent's options take
/// `schema` with `json` only and `template` with `markdown` only; a merge
/// patch is sent as `application/merge-patch+json` or `application/json`.
pub(crate) fn complete_document(doc: &mut Value) {
    use serde_json::json;
    let expected = json!({"type": "integer", "minimum": 0, "maximum": memlayer_domain::AgentState::MAX_EXPECTED_VERSION,
        "description": "The version this write replaces: 0 when never written; a stale one is a 409"});
    let chars = memlayer_domain::WorkingContent::MAX_BYTES / 4;
    // `If-Match` carries the document's version, quoted or bare.
    if let Some(paths) = doc.pointer_mut("/paths").and_then(Value::as_object_mut) {
        for (_, item) in paths.iter_mut().filter(|(p, _)| p.contains("/working-memory")) {
            let Some(ops) = item.as_object_mut() else { continue };
            for op in ops.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
                for param in params.iter_mut().filter(|p| p["name"] == "If-Match") {
                    param["schema"] = json!({"type": "string", "pattern": "^\"?[0-9]{1,18}\"?$"});
                }
            }
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert(
            "PutWorkingMemoryDto".into(),
            json!({"description": "The whole new document with the version it replaces. Without `format`, the \
            agent's format applies (else `json`); an agent that sets its format refuses another (400). A JSON \
            document must satisfy the agent's JSON Schema (a failure is a 400 naming the JSON path).",
            "oneOf": [
                {"type": "object", "additionalProperties": false, "required": ["content", "expected_version"],
                 "properties": {"format": {"type": "string", "enum": ["json"]},
                                "content": {"description": "Any JSON value, at most 256 KiB serialised"},
                                "expected_version": expected}},
                {"type": "object", "additionalProperties": false, "required": ["format", "content", "expected_version"],
                 "properties": {"format": {"type": "string", "enum": ["markdown"]},
                                "content": {"type": "string", "maxLength": chars,
                                            "description": "Markdown: at most 256 KiB of UTF-8"},
                                "expected_version": expected}}
            ]}),
        );
        let scope = json!({"type": "string", "enum": ["resource", "thread"],
            "description": "`resource` (default): one document per resource, across its threads; `thread`: one per thread"});
        let versions = json!({"type": "integer", "minimum": 1, "maximum": memlayer_domain::WorkingMemoryOptions::MAX_VERSIONS,
                   "description": "Versions kept, the current one included (default 10)"});
        schemas.insert(
            "WorkingMemoryOptionsDto".into(),
            json!({"description": "How the agent keeps working memory. `schema` (with `json`) must be a JSON Schema \
            that compiles: draft from `$schema` (2020-12 by default), no external `$ref` fetched, at most 64 KiB; \
            otherwise the agent is refused with a 400 naming `memory.working_memory.schema`.",
            "oneOf": [
                {"type": "object", "additionalProperties": false,
                 "properties": {"scope": scope, "format": {"type": "string", "enum": ["json"]},
                                "schema": {"type": ["object", "boolean"], "description": "A JSON Schema"},
                                "versions": versions}},
                {"type": "object", "additionalProperties": false, "required": ["format"],
                 "properties": {"scope": scope, "format": {"type": "string", "enum": ["markdown"]},
                                "template": {"type": "string", "maxLength": chars,
                                             "description": "What a never-written document reads as"},
                                "versions": versions}}
            ]}),
        );
    }
    for path in ["/api/resources/{id}/working-memory", "/api/threads/{id}/working-memory"] {
        let pointer = format!("/paths/{}/patch/requestBody/content", path.replace('/', "~1"));
        if let Some(content) = doc.pointer_mut(&pointer).and_then(Value::as_object_mut) {
            let any = json!({"schema": {"description": "An RFC 7396 merge patch: any JSON value"}});
            content.clear();
            content.insert("application/merge-patch+json".into(), any.clone());
            content.insert("application/json".into(), any);
        }
    }
}
