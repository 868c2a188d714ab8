//! Serving the router: middleware, tracing, limits, admission control
//! (connection cap, header and idle timeouts, a concurrency limit that sheds
//! load with 503 `overloaded`) and a bounded graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use memlayer_app::{ServerConfig, Services};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::idempotency::Idempotency;
use crate::router::router;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` a client may choose; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Seconds a client is told to wait (`Retry-After`) after a request timed out
/// or was shed.
const RETRY_AFTER_SECS: &str = "1";

/// The full application: routes plus `Idempotency-Key` handling, body
/// limit, request ids, per-request tracing spans, a request timeout, a
/// concurrency limit with load shedding and a JSON 500 for a panicking
/// handler.
pub fn app(services: &Services) -> axum::Router {
    let server = &services.config.server;
    let state = AppState {
        memory: services.memory.clone(),
        search: services.search.clone(),
        catalog: services.catalog.clone(),
        keys: services.keys.clone(),
        database: services.database.clone(),
        auth: Auth::new(services.auth.clone(), services.config.auth.clone()),
        limiter: services.limiter.clone(),
        coordinator: services.coordinator.clone(),
        idempotency: Some(Idempotency::new(
            services.idempotency.clone(),
            Duration::from_secs(server.idempotency_ttl_secs),
            server.body_limit_bytes,
        )),
        working: services.working.clone(),
        summaries: services.summaries.clone(),
        context: services.context.clone(),
        retention: services.retention.clone(),
        transfer: services.transfer.clone(),
        workflows: services.workflows.clone(),
        observability: services.observability.clone(),
    };
    let routes = router(state);
    with_middleware(routes, &Limits::from_config(server))
}

/// The per-request limits [`with_middleware`] applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (413 above).
    pub body_limit_bytes: usize,
    /// Slower requests are answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Most requests handled at once (`/health` and `/ready` excepted).
    pub max_concurrent_requests: usize,
    /// How long a request waits for a free slot before a 503 `overloaded`.
    pub queue_timeout: Duration,
}

impl Limits {
    /// The limits `server` configures.
    #[must_use]
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            body_limit_bytes: server.body_limit_bytes,
            request_timeout: Duration::from_secs(server.request_timeout_secs),
            max_concurrent_requests: server.concurrency_limit(),
            queue_timeout: Duration::from_millis(server.queue_timeout_ms),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&ServerConfig::default())
    }
}

/// Wraps `router` in the server's middleware: body limit, request timeout,
/// panic catching, the concurrency limit, tracing spans and sanitised
/// request ids. Public so tests can serve a router of their own (a
/// panicking route) exactly as [`app`] serves the real one.
pub fn with_middleware(router: axum::Router, limits: &Limits) -> axum::Router {
    let timeout = limits.request_timeout;
    let admission = Admission {
        slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        queue_timeout: limits.queue_timeout,
    };
    router
        .layer(middleware::from_fn(refuse_nul_in_query))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn(move |req: Request, next: Next| timeout_after(timeout, req, next)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(admission, admit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // The route (not the path, which holds ids) names the
                    // span memlayer's self-tracing records (`otel.*` as
                    // `tracing-opentelemetry` reads them).
                    let route =
                        req.extensions().get::<axum::extract::MatchedPath>().map(axum::extract::MatchedPath::as_str);
                    // `tenant` is recorded by the `Tenant` extractor once it has parsed the header.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id,
                        tenant = tracing::field::Empty, http.route = route,
                        http.response.status_code = tracing::field::Empty,
                        otel.name = %format_args!("{} {}", req.method(), route.unwrap_or("unmatched")),
                        otel.kind = "server", otel.status_code = tracing::field::Empty)
                })
                .on_response(|res: &Response, latency: Duration, span: &tracing::Span| {
                    span.record("http.response.status_code", res.status().as_u16());
                    if res.status().is_server_error() {
                        span.record("otel.status_code", "error");
                    }
                    // The log line tower-http writes, as before.
                    tower_http::trace::OnResponse::on_response(
                        tower_http::trace::DefaultOnResponse::default(),
                        res,
                        latency,
                        span,
                    );
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unsafe_request_id))
}

/// The concurrency limit: a fair (FIFO) semaphore of request slots.
#[derive(Debug, Clone)]
struct Admission {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

/// Routes that answer whatever the load: probes must tell "busy" from
/// "down", and the document is a static answer.
const UNLIMITED_PATHS: [&str; 3] = ["/health", "/ready", "/api/openapi.json"];

/// Runs the request once a slot is free; a request that waited
/// `queue_timeout` for one is answered 503 `overloaded` with `Retry-After`
/// at once, so overload is refused early instead of queueing without end.
async fn admit(State(admission): State<Admission>, req: Request, next: Next) -> Response {
    if UNLIMITED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let slot = match admission.slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => match tokio::time::timeout(admission.queue_timeout, admission.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                tracing::warn!(queue_timeout = ?admission.queue_timeout, "overloaded: request shed");
                return overloaded(
                    "the server is handling as many requests as it may; retry after `Retry-After` seconds",
                );
            }
        },
    };
    let response = next.run(req).await;
    drop(slot);
    response
}

/// A 400 naming the query parameter whose name or value holds the NUL
/// character (U+0000), for every route: no store keeps NUL (see
/// `memlayer_domain::no_nul`), and the backends would otherwise answer a
/// filter holding it differently (libSQL matches nothing, Postgres refuses
/// the text). A query that does not decode is left to the route's own
/// parsing.
async fn refuse_nul_in_query(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.contains("%00"))
        && let Ok(axum::extract::Query(pairs)) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        && let Some((name, _)) = pairs.iter().find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        let name: String = name.replace('\0', "\\u0000").chars().take(128).collect();
        let refused = memlayer_domain::NUL_REFUSED;
        return ApiError::invalid(format!("query parameter `{name}` {refused}")).into_response();
    }
    next.run(req).await
}

/// 503 `overloaded` with `Retry-After`.
fn overloaded(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    resp
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
/// requests (for at most `server.shutdown_grace_secs`) and stops the
/// background tasks. `on_bound` receives the bound address (useful with
/// port 0).
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve(services: Services, addr: SocketAddr, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    on_bound(bound);
    tracing::info!(%bound, database = %services.database.describe(), index = %services.search.index_kind(), "memlayer listening");
    let background = services.start_background();
    let connections = Connections::from_config(&services.config.server);
    // Background work stops while requests drain, not after, so shutdown
    // takes the longer of the two (each bounded), not their sum.
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown_signal().await;
        let _ = signalled.send(());
    };
    let stop_background = async move {
        let _ = on_signal.await;
        background.stop().await;
    };
    let gauge = Some(services.observability.connection_gauge());
    let serving = serve_counted(listener, app(&services), &connections, signal, gauge);
    let (served, ()) = tokio::join!(serving, stop_background);
    served?;
    tracing::info!("memlayer stopped");
    Ok(())
}

/// How connections are accepted, timed and drained (see [`serve_on`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    /// How long a client may take to send a request's headers (HTTP/1.1;
    /// also the wait for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    /// Most open connections; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Connections {
    /// The settings `server` configures.
    #[must_use]
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
            max_connections: server.max_connections,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self::from_config(&ServerConfig::default())
    }
}

/// Most refused connections lingering at once to read the client's request
/// before the close (so the 503 is not lost to a TCP reset); beyond it a
/// refused connection is closed at once.
const MAX_LINGERING: usize = 64;
/// How long a refused connection lingers.
const LINGER: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` with hyper's HTTP/1.1 and HTTP/2 (by the
/// client's preface) until `shutdown` completes: each connection gets a
/// header-read timeout and an idle timeout; past `max_connections` a new
/// connection is answered 503 and closed (accepting it keeps the refusal
/// quick and visible, where leaving it in the kernel's backlog would leave
/// the client waiting without an answer). On `shutdown` it stops accepting,
/// lets in-flight requests finish for at most `shutdown_grace`, then closes
/// what is left.
///
/// # Errors
/// None yet: accept errors (such as running out of file descriptors) are
/// logged and retried.
pub async fn serve_on(
    listener: TcpListener,
    app: axum::Router,
    settings: &Connections,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_counted(listener, app, settings, shutdown, None).await
}

/// [`serve_on`], keeping `open` at the number of connections being served
/// (the system metrics' `memlayer.server.connections`).
///
/// # Errors
/// As [`serve_on`].
pub async fn serve_counted(
    listener: TcpListener,
    app: axum::Router,
    settings: &Connections,
    shutdown: impl Future<Output = ()>,
    open: Option<Arc<std::sync::atomic::AtomicI64>>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: give the process a moment to free some.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refuse(stream, &lingering);
                    continue;
                };
                let conn = serve_connection(Arc::clone(&builder), stream, app.clone(), settings.idle_timeout,
                    settings.shutdown_grace, stopping.clone());
                let open = open.clone();
                if let Some(open) = &open {
                    open.fetch_add(1, Ordering::Relaxed);
                }
                tasks.spawn(async move {
                    conn.await;
                    if let Some(open) = open {
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let open = tasks.len();
    let drained = tokio::time::timeout(settings.shutdown_grace, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(open, still_open = tasks.len(), grace = ?settings.shutdown_grace,
            "connections still busy after the shutdown grace; closing them");
        tasks.shutdown().await;
    }
    Ok(())
}

/// When a connection last started or finished a request, and how many it
/// has in flight.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.last.lock().map_or_else(|_| Instant::now(), |l| *l))
    }

    /// Completes once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = match self.idle_since() {
                Some(since) if since.elapsed() >= idle => return,
                Some(since) => idle - since.elapsed(),
                None => idle,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection: served until the client closes it, it stays idle for
/// `idle`, or the server stops (then gracefully: a request in flight
/// finishes, for at most `grace`).
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    app: axum::Router,
    idle: Duration,
    grace: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity { in_flight: AtomicUsize::new(0), last: std::sync::Mutex::new(Instant::now()) });
    let tracked = Arc::clone(&activity);
    let service = tower::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let in_flight = InFlight::new(&tracked);
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(in_flight);
            response
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let reason = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = activity.idle_for(idle) => "idle",
        _ = stopping.wait_for(|stop| *stop) => "shutdown",
    };
    tracing::debug!(reason, "closing connection gracefully");
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(grace, conn).await.is_err() {
        tracing::debug!(reason, "connection did not close within the grace; dropped");
    }
}

/// Answers a connection past `server.max_connections` with a 503 and closes
/// it. It lingers (at most [`MAX_LINGERING`] at once, each for [`LINGER`])
/// reading what the client sent, so that closing does not reset the
/// connection before the client has read the answer.
fn refuse(stream: tokio::net::TcpStream, lingering: &Arc<Semaphore>) {
    const BODY: &str = r#"{"error":{"code":"overloaded","message":"the server has as many connections open as it may; retry after `Retry-After` seconds"}}"#;
    tracing::warn!("overloaded: connection refused at server.max_connections");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECS}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    // A fresh socket's send buffer takes the whole answer at once.
    let _ = stream.try_write(response.as_bytes());
    let Ok(permit) = Arc::clone(lingering).try_acquire_owned() else { return };
    tokio::spawn(async move {
        let drain = async {
            let mut buf = [0_u8; 4096];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(permit);
    });
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
