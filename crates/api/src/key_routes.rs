//! Handlers of `/api/keys`: API keys of the caller's own tenant, for a
//! caller with the `admin` scope.
//!
//! - `POST /api/keys` creates a key and returns it whole, once (only a hash
//!   of its secret is stored; the `Idempotency-Key` layer never records
//!   this response). A credential may create only keys within its own
//!   scopes and, when bound to a resource, bound to the same one (403).
//! - `GET /api/keys` lists the tenant's keys a page at a time (`limit`,
//!   `cursor`, `resource`), never a secret or hash.
//! - `DELETE /api/keys/{id}` revokes a key: refused by this server at once,
//!   by others within `auth.keys.cache_ttl_secs`; another tenant's key (or,
//!   for a credential bound to a resource, another resource's) is a 404.

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_app::{GrantError, NewKey, check_grant};
use memlayer_domain::{DomainError, KeyId, PageSize, Principal, ResourceId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::dto::{ApiKeyDto, CreatedKeyDto, KeysDto, NewKeyDto};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the key routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

/// Create an API key in the caller's tenant. The response holds the whole
/// key (`key`), shown this once.
#[utoipa::path(post, path = "/api/keys", security(("bearer" = ["admin"])), tag = "keys",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = NewKeyDto,
    responses((status = 201, body = CreatedKeyDto), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "`insufficient_scope`: the credential lacks this route's \
                scope, or the new key asks for a scope the credential lacks; `resource_mismatch`: the credential is \
                bound to a resource and the new key is not bound to it; `tenant_mismatch`: `X-Tenant-Id` names \
                another tenant than the credential's")))]
async fn create_key(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Json(body): Json<NewKeyDto>,
) -> Result<(StatusCode, Json<CreatedKeyDto>), ApiError> {
    let new = NewKey::try_from(body)?;
    check_grant(&principal, &new).map_err(|e| {
        let code = match e {
            GrantError::Scopes { .. } => "insufficient_scope",
            GrantError::Resource(_) => "resource_mismatch",
        };
        ApiError::new(StatusCode::FORBIDDEN, code, e.to_string())
    })?;
    let created = s.keys.create(&principal.tenant, new).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Query of `GET /api/keys`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Only the keys bound to this resource.
    pub resource: Option<String>,
}

/// List the caller's tenant's API keys, newest first, revoked ones
/// included, a page at a time (a credential bound to a resource sees only
/// keys bound to it).
#[utoipa::path(get, path = "/api/keys", security(("bearer" = ["admin"])), tag = "keys",
    params(ListKeysQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = KeysDto), (status = 400, body = ErrorBody)))]
async fn list_keys(
    State(s): State<AppState>,
    Admin(Principal { tenant, resource: bound, .. }): Admin,
    Query(q): Query<ListKeysQuery>,
) -> Result<Json<KeysDto>, ApiError> {
    let limit = PageSize::new(q.limit.unwrap_or(100))?;
    let cursor = q
        .cursor
        .filter(|c| !c.is_empty())
        .map(KeyId::parse)
        .transpose()
        .map_err(|e| DomainError::new("cursor", e.reason))?;
    let resource = q.resource.map(ResourceId::parse).transpose()?;
    let page = s.keys.list(&tenant, bound.as_ref(), resource.as_ref(), cursor, limit).await?;
    Ok(Json(KeysDto {
        items: page.items.into_iter().map(ApiKeyDto::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Revoke an API key; revoking a revoked key keeps its first time.
#[utoipa::path(delete, path = "/api/keys/{id}", security(("bearer" = ["admin"])), tag = "keys",
    params(("id" = String, Path, description = "The key's id: 16 lowercase hex digits"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = ApiKeyDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<AppState>,
    Admin(Principal { tenant, resource, .. }): Admin,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyDto>, ApiError> {
    let id = KeyId::parse(id)?;
    Ok(Json(s.keys.revoke(&tenant, resource.as_ref(), &id).await?.into()))
}
