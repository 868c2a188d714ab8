//! Serving the router: middleware, tracing, limits and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use memlayer_app::Services;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::idempotency::Idempotency;
use crate::routes::{AppState, router};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full application: routes plus `Idempotency-Key` handling, body
/// limit, request ids, per-request tracing spans and a request timeout.
pub fn app(services: &Services) -> axum::Router {
    let state = AppState {
        memory: services.memory.clone(),
        search: services.search.clone(),
        configuration: services.configuration.clone(),
        database: services.database.clone(),
    };
    let server = &services.config.server;
    let timeout = Duration::from_secs(server.request_timeout_secs);
    let idempotency = Idempotency {
        store: services.idempotency.clone(),
        ttl: Duration::from_secs(server.idempotency_ttl_secs),
        default_tenant: services.memory.default_tenant().clone(),
        body_limit: server.body_limit_bytes,
    };
    router(state)
        // Inside the timeout: a keyed write that outlives it still finishes
        // and records its outcome for the retry.
        .layer(middleware::from_fn_with_state(idempotency, crate::idempotency::layer))
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(middleware::from_fn(move |req: Request, next: Next| timeout_after(timeout, req, next)))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn timeout_after(limit: Duration, req: Request, next: Next) -> Response {
    let writes = !req.method().is_safe();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            let message = if writes {
                "the request took too long and its outcome is unknown: it may still complete. Retrying with \
                 the same Idempotency-Key is safe and returns its outcome; without a key a retry may write twice"
            } else {
                "the request took too long; retry later"
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message).into_response()
        }
    }
}

/// Binds `addr` and serves until Ctrl-C or SIGTERM, then drains in-flight
/// requests. `on_bound` receives the bound address (useful with port 0).
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve(services: Services, addr: SocketAddr, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    on_bound(bound);
    tracing::info!(%bound, database = %services.database.describe(), index = services.search.index_kind(), "memlayer listening");
    let background = services.start_background();
    let served = axum::serve(listener, app(&services)).with_graceful_shutdown(shutdown_signal()).await;
    background.stop().await;
    served?;
    tracing::info!("memlayer stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received, draining requests");
}
