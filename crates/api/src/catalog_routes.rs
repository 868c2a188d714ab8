//! Handlers of the catalog: models, agents, tools, settings.
//!
//! Listings take repeated `filter=FIELD:OP:VALUE` (all must hold; for `in`,
//! VALUE is comma-separated), one `sort=FIELD` or `sort=-FIELD`
//! (descending), `limit` (1 to 1000, default 50) and `cursor`. Fields and
//! operators are those declared by the domain (`MODEL_FIELDS`, …); anything
//! else is a 400 naming it.

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_domain::{
    AgentId, CatalogEntity, ListCursor, ListQuery, ModelId, NewAgent, NewModel, NewTool, PageSize, SettingName,
    TenantId, ToolId,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::TenantAdmin;
use crate::dto::{
    AgentBodyDto, AgentDto, ModelBodyDto, ModelDto, PageDto, PutSettingDto, SettingDto, ToolBodyDto, ToolDto, ToolsDto,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the catalog routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_model, list_models))
        .routes(routes!(get_model, update_model, delete_model))
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(agent_tools))
        .routes(routes!(create_tool, list_tools))
        .routes(routes!(get_tool, update_tool, delete_tool))
        .routes(routes!(get_setting, put_setting, delete_setting))
}

/// Query of the catalog listings (documentation for OpenAPI; the
/// handlers parse the pairs themselves, since `filter` repeats).
#[allow(dead_code, reason = "read by utoipa only; list_query parses the raw pairs")]
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCatalogQuery {
    /// `FIELD:OP:VALUE`, repeatable; OP is eq, ne, lt, lte, gt, gte, in
    /// (VALUE comma-separated) or contains, as the field's type allows.
    pub filter: Option<Vec<String>>,
    /// `FIELD` ascending or `-FIELD` descending; default `-created_at`.
    pub sort: Option<String>,
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor` (same filters and sort).
    pub cursor: Option<String>,
}

fn list_query(entity: CatalogEntity, tenant: &TenantId, pairs: Vec<(String, String)>) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery::new(entity);
    let (mut sort, mut limit, mut cursor) = (None, None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "filter" => query = query.filter_expr(&v)?,
            "sort" => sort = Some(v),
            "limit" => {
                let n = v.parse().map_err(|_| ApiError::invalid(format!("limit: `{v}` is not a number")))?;
                limit = Some(PageSize::new(n)?);
            }
            "cursor" => cursor = Some(v).filter(|c| !c.is_empty()),
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{shown}`; expected filter, sort, limit, cursor"
                )));
            }
        }
    }
    if let Some(s) = sort {
        query = query.sort_by(&s)?;
    }
    query = query.limit(limit.unwrap_or_default());
    if let Some(c) = cursor {
        query = query.resume(tenant, &ListCursor::decode(&c)?)?;
    }
    Ok(query)
}

/// Create a model.
#[utoipa::path(post, path = "/api/models", security(("bearer" = ["admin"])), tag = "catalog",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ModelBodyDto,
    responses((status = 201, body = ModelDto), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_model(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Json(body): Json<ModelBodyDto>,
) -> Result<(StatusCode, Json<ModelDto>), ApiError> {
    let model = s.catalog.create_model(&tenant, NewModel::from(body)).await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

/// List models. Fields: name, provider (text), context_window,
/// max_output_tokens (integer), input_price, output_price (float),
/// is_default (bool), created_at, updated_at (timestamp).
#[utoipa::path(get, path = "/api/models", security(("bearer" = ["admin"])), tag = "catalog",
    params(ListCatalogQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PageDto<ModelDto>), (status = 400, body = ErrorBody)))]
async fn list_models(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<PageDto<ModelDto>>, ApiError> {
    let query = list_query(CatalogEntity::Models, &tenant, pairs)?;
    Ok(Json(s.catalog.list_models(&tenant, &query).await?.into()))
}

/// Get a model.
#[utoipa::path(get, path = "/api/models/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Model id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = ModelDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_model(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<Json<ModelDto>, ApiError> {
    Ok(Json(s.catalog.get_model(&tenant, id.parse::<ModelId>()?).await?.into()))
}

/// Replace a model.
#[utoipa::path(put, path = "/api/models/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Model id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ModelBodyDto,
    responses((status = 200, body = ModelDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn update_model(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
    Json(body): Json<ModelBodyDto>,
) -> Result<Json<ModelDto>, ApiError> {
    let id = id.parse::<ModelId>()?;
    Ok(Json(s.catalog.update_model(&tenant, id, NewModel::from(body)).await?.into()))
}

/// Delete a model no agent uses (409 otherwise).
#[utoipa::path(delete, path = "/api/models/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Model id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_model(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.catalog.delete_model(&tenant, id.parse::<ModelId>()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an agent; its model and tools must be configured (400 otherwise).
#[utoipa::path(post, path = "/api/agents", security(("bearer" = ["admin"])), tag = "catalog",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = AgentBodyDto,
    responses((status = 201, body = AgentDto), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_agent(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Json(body): Json<AgentBodyDto>,
) -> Result<(StatusCode, Json<AgentDto>), ApiError> {
    let agent = s.catalog.create_agent(&tenant, NewAgent::try_from(body)?).await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// List agents. Fields: name (text), model_id (id: eq, ne, in), tool_ids
/// (list: contains a tool id), created_at, updated_at (timestamp).
#[utoipa::path(get, path = "/api/agents", security(("bearer" = ["admin"])), tag = "catalog",
    params(ListCatalogQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PageDto<AgentDto>), (status = 400, body = ErrorBody)))]
async fn list_agents(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<PageDto<AgentDto>>, ApiError> {
    let query = list_query(CatalogEntity::Agents, &tenant, pairs)?;
    Ok(Json(s.catalog.list_agents(&tenant, &query).await?.into()))
}

/// Get an agent.
#[utoipa::path(get, path = "/api/agents/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Agent id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = AgentDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<Json<AgentDto>, ApiError> {
    Ok(Json(s.catalog.get_agent(&tenant, id.parse::<AgentId>()?).await?.into()))
}

/// Replace an agent.
#[utoipa::path(put, path = "/api/agents/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Agent id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = AgentBodyDto,
    responses((status = 200, body = AgentDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn update_agent(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
    Json(body): Json<AgentBodyDto>,
) -> Result<Json<AgentDto>, ApiError> {
    let id = id.parse::<AgentId>()?;
    Ok(Json(s.catalog.update_agent(&tenant, id, NewAgent::try_from(body)?).await?.into()))
}

/// Delete an agent.
#[utoipa::path(delete, path = "/api/agents/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Agent id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_agent(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.catalog.delete_agent(&tenant, id.parse::<AgentId>()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's tools, whole, in the agent's order.
#[utoipa::path(get, path = "/api/agents/{id}/tools", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Agent id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = ToolsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn agent_tools(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<Json<ToolsDto>, ApiError> {
    let tools = s.catalog.agent_tools(&tenant, id.parse::<AgentId>()?).await?;
    Ok(Json(ToolsDto { items: tools.into_iter().map(Into::into).collect() }))
}

/// Create a tool; `parameters` must be a JSON object schema.
#[utoipa::path(post, path = "/api/tools", security(("bearer" = ["admin"])), tag = "catalog",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ToolBodyDto,
    responses((status = 201, body = ToolDto), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_tool(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Json(body): Json<ToolBodyDto>,
) -> Result<(StatusCode, Json<ToolDto>), ApiError> {
    let tool = s.catalog.create_tool(&tenant, NewTool::from(body)).await?;
    Ok((StatusCode::CREATED, Json(tool.into())))
}

/// List tools. Fields: name (text), description (text, not sortable),
/// created_at, updated_at (timestamp).
#[utoipa::path(get, path = "/api/tools", security(("bearer" = ["admin"])), tag = "catalog",
    params(ListCatalogQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PageDto<ToolDto>), (status = 400, body = ErrorBody)))]
async fn list_tools(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<PageDto<ToolDto>>, ApiError> {
    let query = list_query(CatalogEntity::Tools, &tenant, pairs)?;
    Ok(Json(s.catalog.list_tools(&tenant, &query).await?.into()))
}

/// Get a tool.
#[utoipa::path(get, path = "/api/tools/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Tool id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = ToolDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_tool(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<Json<ToolDto>, ApiError> {
    Ok(Json(s.catalog.get_tool(&tenant, id.parse::<ToolId>()?).await?.into()))
}

/// Replace a tool.
#[utoipa::path(put, path = "/api/tools/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Tool id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ToolBodyDto,
    responses((status = 200, body = ToolDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn update_tool(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
    Json(body): Json<ToolBodyDto>,
) -> Result<Json<ToolDto>, ApiError> {
    let id = id.parse::<ToolId>()?;
    Ok(Json(s.catalog.update_tool(&tenant, id, NewTool::from(body)).await?.into()))
}

/// Delete a tool no agent lists (409 otherwise).
#[utoipa::path(delete, path = "/api/tools/{id}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("id" = String, Path, description = "Tool id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_tool(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.catalog.delete_tool(&tenant, id.parse::<ToolId>()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/settings/{category}/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetSettingQuery {
    /// JSON returned (with `stored: false`) when the setting is absent;
    /// without it an absent setting is a 404.
    pub default: Option<String>,
}

fn setting_names(category: String, key: String) -> Result<(SettingName, SettingName), ApiError> {
    Ok((SettingName::category(category)?, SettingName::key(key)?))
}

/// Get a setting; absent: the `default` query value if given, else 404.
#[utoipa::path(get, path = "/api/settings/{category}/{key}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("category" = String, Path, description = "Category"), ("key" = String, Path, description = "Key"),
           GetSettingQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = SettingDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_setting(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path((category, key)): Path<(String, String)>,
    Query(q): Query<GetSettingQuery>,
) -> Result<Json<SettingDto>, ApiError> {
    let (category, key) = setting_names(category, key)?;
    let default = q
        .default
        .map(|d| serde_json::from_str::<Value>(&d))
        .transpose()
        .map_err(|e| ApiError::invalid(format!("default: is not JSON: {e}")))?;
    match (s.catalog.get_setting(&tenant, &category, &key).await?, default) {
        (Some(found), _) => Ok(Json(found.into())),
        (None, Some(value)) => Ok(Json(SettingDto {
            category: category.as_str().to_owned(),
            key: key.as_str().to_owned(),
            value,
            stored: false,
            updated_at: None,
        })),
        (None, None) => Err(ApiError::not_found(format!(
            "setting {}/{} not found (pass ?default=JSON to get a default instead)",
            category.as_str(),
            key.as_str()
        ))),
    }
}

/// Create or replace a setting: `{"value": <any JSON>}`.
#[utoipa::path(put, path = "/api/settings/{category}/{key}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("category" = String, Path, description = "Category"), ("key" = String, Path, description = "Key"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = PutSettingDto,
    responses((status = 200, body = SettingDto), (status = 400, body = ErrorBody)))]
async fn put_setting(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path((category, key)): Path<(String, String)>,
    Json(body): Json<PutSettingDto>,
) -> Result<Json<SettingDto>, ApiError> {
    let (category, key) = setting_names(category, key)?;
    operator_only(&category)?;
    Ok(Json(s.catalog.put_setting(&tenant, &category, &key, body.value).await?.into()))
}

/// Delete a setting.
#[utoipa::path(delete, path = "/api/settings/{category}/{key}", security(("bearer" = ["admin"])), tag = "catalog",
    params(("category" = String, Path, description = "Category"), ("key" = String, Path, description = "Key"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_setting(
    State(s): State<AppState>,
    TenantAdmin(tenant): TenantAdmin,
    Path((category, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (category, key) = setting_names(category, key)?;
    operator_only(&category)?;
    s.catalog.delete_setting(&tenant, &category, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Settings a tenant may read but only the operator writes (with
/// `memlayer settings set`): the tenant's rate limits and storage quota,
/// which it must not lift itself.
fn operator_only(category: &SettingName) -> Result<(), ApiError> {
    if category.as_str() == memlayer_app::LIMITS_CATEGORY {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "settings of category `limits` are the operator's: set them with `memlayer settings set --tenant T limits \
             <credential|tenant|embed_tokens|ingest_spans> '{\"per_second\": N, \"burst\": M}'` or `memlayer settings set \
             --tenant T limits quota '{\"threads\": N, \"messages\": N, \"bytes\": N}'`",
        ));
    }
    Ok(())
}
