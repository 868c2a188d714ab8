//! The application's router: every route module's routes, the OpenAPI
//! document completed once and served at `/api/openapi.json`, and the JSON
//! fallbacks for unknown routes and methods.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::dto::{AppendBody, MessageBatchDto, MessagesDto, NewMessageDto};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The OpenAPI document's root; paths are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "memlayer", description = "Memory and persistence layer for AI agents"),
    components(schemas(ErrorBody, AppendBody, NewMessageDto, MessageBatchDto, MessagesDto)),
    tags((name = "threads"), (name = "messages"), (name = "state"), (name = "search"), (name = "catalog"), (name = "keys"), (name = "working-memory"), (name = "summaries"), (name = "context"), (name = "ops"), (name = "retention"), (name = "transfer"), (name = "workflows"), (name = "observability"))
)]
pub struct ApiDoc;

/// The application's router with its OpenAPI document served at
/// `/api/openapi.json`.
pub fn router(state: AppState) -> axum::Router {
    let router = crate::routes::register(OpenApiRouter::with_openapi(ApiDoc::openapi()));
    let router = crate::key_routes::register(router);
    let router = crate::working_routes::register(router);
    let router = crate::summary_routes::register(router);
    let router = crate::context_routes::register(router);
    let router = crate::retention_routes::register(router);
    let router = crate::transfer_routes::register(router);
    let router = crate::workflow_routes::register(router);
    let router = crate::observability_routes::register(router);
    let (router, mut api) = crate::catalog_routes::register(router).split_for_parts();
    crate::idempotency::document(&mut api);
    let document = match serde_json::to_value(&api) {
        Ok(mut doc) => {
            crate::openapi::complete(&mut doc);
            serde_json::to_vec(&doc).map(Bytes::from)
        }
        Err(e) => Err(e),
    };
    let document = Arc::new(document.map_err(|e| e.to_string()));
    let auth = state.auth.clone();
    let dashboard = state.observability.config().enabled;
    let mut router = router.layer(axum::Extension(document));
    if let Some(idempotency) = state.idempotency.clone() {
        router = router.layer(middleware::from_fn_with_state(idempotency, crate::idempotency::layer));
    }
    // Outermost: the limits and idempotency layers need the principal.
    router
        .layer(middleware::from_fn_with_state(state.limiter.clone(), crate::limits::layer))
        .layer(middleware::from_fn_with_state(auth, crate::auth::layer))
        // The dashboard's public files: outside the auth and limits layers.
        .merge(crate::dashboard_routes::routes(dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}
