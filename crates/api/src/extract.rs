//! Extractors whose rejections are [`ApiError`]s with JSON bodies.
//!
//! They are generic over the router's state: what they need from it they
//! take through axum's `FromRef` ([`DefaultTenant`]), so this module does not
//! name the application's state and each extractor can be tested alone.

use axum::extract::{FromRef, FromRequest, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use memlayer_domain::TenantId;

use crate::error::ApiError;

/// `axum::Json` with our error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with our error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with our error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The request's tenant: the `X-Tenant-Id` header, or the configured default
/// tenant when absent. Real authentication comes later; this only scopes data.
/// Once parsed, the tenant is recorded in the request's tracing span (its
/// `tenant` field), so every log line of the request names it.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

/// The tenant of a request that names none: what [`Tenant`] needs from the
/// router's state.
#[derive(Debug, Clone)]
pub struct DefaultTenant(pub TenantId);

impl<S> FromRequestParts<S> for Tenant
where
    DefaultTenant: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let DefaultTenant(default) = DefaultTenant::from_ref(state);
        let tenant = tenant_of(&parts.headers, &default)?;
        tracing::Span::current().record("tenant", tracing::field::display(tenant.as_str()));
        Ok(Self(tenant))
    }
}

/// The tenant `headers` name, or `default` when they name none.
pub(crate) fn tenant_of(headers: &HeaderMap, default: &TenantId) -> Result<TenantId, ApiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(default.clone()),
        Some(v) => {
            let s = v.to_str().map_err(|_| ApiError::invalid("X-Tenant-Id: must be ASCII"))?;
            TenantId::parse(s).map_err(|e| ApiError::invalid(format!("X-Tenant-Id: {}", e.reason)))
        }
    }
}
