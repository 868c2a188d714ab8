//! Serving the router: middleware, tracing, limits and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use memlayer_app::Services;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::idempotency::Idempotency;
use crate::routes::{AppState, router};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` a client may choose; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Seconds a client is told to wait (`Retry-After`) after a request timed out.
const RETRY_AFTER_SECS: &str = "1";

/// The full application: routes plus `Idempotency-Key` handling, body
/// limit, request ids, per-request tracing spans, a request timeout and a
/// JSON 500 for a panicking handler.
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
    // Inside the timeout (added by `with_middleware`): a keyed write that
    // outlives it still finishes and records its outcome for the retry.
    let routes = router(state).layer(middleware::from_fn_with_state(idempotency, crate::idempotency::layer));
    with_middleware(routes, server.body_limit_bytes, timeout)
}

/// Wraps `router` in the server's middleware: body limit, request timeout,
/// panic catching, tracing spans and sanitised request ids. Public so tests
/// can serve a router of their own (a panicking route) exactly as [`app`]
/// serves the real one.
pub fn with_middleware(router: axum::Router, body_limit_bytes: usize, timeout: Duration) -> axum::Router {
    router
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(middleware::from_fn(move |req: Request, next: Next| timeout_after(timeout, req, next)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            // `tenant` is recorded by the `Tenant` extractor once it has parsed the header.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id,
                tenant = tracing::field::Empty)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unsafe_request_id))
}

/// Whether a client's `x-request-id` may reach the logs and the response:
/// 1 to [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`.
#[must_use]
pub fn is_safe_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Removes an unsafe `x-request-id` (and any repeated one), so that
/// `SetRequestIdLayer` generates a fresh UUID in its place.
async fn drop_unsafe_request_id(mut req: Request) -> Request {
    let headers = req.headers_mut();
    let mut values = headers.get_all(&REQUEST_ID).iter();
    let keep = matches!((values.next(), values.next()), (Some(v), None) if is_safe_request_id(v.as_bytes()));
    if !keep {
        headers.remove(&REQUEST_ID);
    }
    req
}

/// A handler panicked: the JSON 500 every other internal error gets. The
/// panic itself is logged, inside the request span, never sent.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::internal().into_response()
}

async fn timeout_after(limit: Duration, req: Request, next: Next) -> Response {
    let write = !req.method().is_safe();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(?limit, write, "request timed out");
            let message = if write {
                "the request took too long and its outcome is unknown: the write may or may not have been applied, \
                 and may still complete. Retrying with the same Idempotency-Key header is safe and returns its \
                 outcome; without a key, read the data back before retrying, or a retry may write twice"
            } else {
                "the request took too long; retry later"
            };
            let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message).into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            resp
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
