//! The `Idempotency-Key` header on the POST routes that create or append.
//!
//! A request with a key is fingerprinted (SHA-256 of method, path with query
//! and body) and claimed in the [`IdempotencyStore`] under its tenant:
//! - a key never seen (or expired, `server.idempotency_ttl_secs`) runs the
//!   handler and records a 2xx response;
//! - the same key with the same fingerprint returns the recorded status and
//!   body, with `Idempotency-Replayed: true`, and writes nothing;
//! - the same key with another fingerprint is a 422, and writes nothing;
//! - a key whose first request has not finished is a 409 with `Retry-After`.
//!
//! The handler runs in its own task, so a request that outlives the
//! server's timeout (answered 503 by the outer timeout layer) or whose
//! client hangs up still finishes and records its outcome: the retry gets
//! that outcome, never a second write. A 4xx or 5xx from the handler means
//! its transaction wrote nothing (every write is one transaction that rolls
//! back on failure), so the claim is released and a retry runs afresh.
//!
//! Known limits, documented rather than hidden: a process that dies between
//! a commit and the recording of its response leaves the claim in progress
//! until it expires (a retry gets 409, "outcome unknown", never a duplicate);
//! so does a handler that panics. A store that reports a failed commit which
//! in fact committed (a connection lost during COMMIT) releases the claim, so
//! a retry may write again, as it would without a key.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memlayer_domain::{Principal, TenantId};
use memlayer_ports::{Claim, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required, ResponseBuilder};

use crate::error::ApiError;

/// The request header carrying the key.
pub const KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header marking a replayed response.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotency-replayed");

/// The routes (as registered) whose POST creates or appends, and so takes an
/// `Idempotency-Key`.
pub const IDEMPOTENT_POSTS: &[&str] = &[
    "/api/threads",
    "/api/threads/{id}/messages",
    // A retried fork gets the first fork instead of making a second one.
    "/api/threads/{id}/fork",
    "/api/models",
    "/api/agents",
    "/api/tools",
    // A restore writes a new working-memory version: a retry with the key
    // gets the first answer instead of writing a second one.
    "/api/resources/{id}/working-memory/versions/{version}/restore",
    "/api/threads/{id}/working-memory/versions/{version}/restore",
    // A summary on demand may store a version: a retry with the key gets
    // the first answer (one without folds in only what is new, if anything).
    "/api/threads/{id}/summary",
    // A retried policy create gets the first policy; a retried prune gets
    // the first run's receipts instead of applying the policies again.
    "/api/retention/policies",
    "/api/retention/prune",
    // Workflows: a retried create gets the first workflow; a retried
    // transition the first answer instead of a 409 naming the new state.
    "/api/workflows",
    "/api/workflows/{id}/steps",
    "/api/workflows/{id}/execute",
    "/api/workflows/{id}/pause",
    "/api/workflows/{id}/resume",
    "/api/workflows/{id}/cancel",
    "/api/workflows/{id}/steps/{step}/retry",
    // A retried evaluation run gets the first run instead of a second one.
    "/api/observability/evaluations",
];

/// The POST routes that write nothing (a key is ignored there). Every POST
/// route is in exactly one of these lists and [`UNRECORDED_POSTS`] (a test
/// checks the document).
/// (`/api/threads/{id}/context` stores only token counts, a cache: what it
/// returns does not depend on whether they were stored.)
pub const READ_ONLY_POSTS: &[&str] = &["/api/search", "/api/embed", "/api/threads/{id}/context"];

/// The POST routes whose response is never stored: a key is ignored there.
/// `/api/keys`: the response holds a secret (a new API key), and a retry
/// creates another key. `/api/import`: the body is streamed, never held for
/// a fingerprint, and the import is idempotent by its records' ids (a retry
/// imports nothing twice).
/// `/v1/traces`: OTLP ingest is idempotent by its spans' ids (a span sent
/// again is not stored twice), and its body may be protobuf and gzipped.
pub const UNRECORDED_POSTS: &[&str] = &["/api/keys", "/api/import", "/v1/traces"];

/// Seconds a client is asked to wait before retrying a key in progress.
const RETRY_AFTER_SECS: u64 = 1;

/// What the middleware needs: the store, how long keys live and the body
/// limit.
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    ttl: Duration,
    body_limit: usize,
}

impl Idempotency {
    /// Records in `store`, remembered for `ttl`, of bodies up to `body_limit` bytes.
    #[must_use]
    pub fn new(store: Arc<dyn IdempotencyStore>, ttl: Duration, body_limit: usize) -> Self {
        Self { store, ttl, body_limit }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`); it must sit
/// inside the timeout layer and the authentication layer (it keys records
/// by the principal's tenant), and as a `Router::layer` it sees the matched
/// route.
pub(crate) async fn layer(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    let applies = req.method() == Method::POST
        && req.extensions().get::<MatchedPath>().is_some_and(|p| IDEMPOTENT_POSTS.contains(&p.as_str()));
    if !applies || !req.headers().contains_key(KEY_HEADER) {
        return next.run(req).await;
    }
    let key = match key_of(&req) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    // The authentication layer, outside this one, put the principal here;
    // without one the handler refuses the request, and writes nothing.
    let Some(tenant) = req.extensions().get::<Principal>().map(|p| p.tenant.clone()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, idem.body_limit).await {
        Ok(bytes) => bytes,
        Err(e) => return body_error(&e, idem.body_limit).into_response(),
    };
    let fingerprint = fingerprint(&parts.method, &parts.uri, &bytes);
    let now = memlayer_domain::now();
    let claim = idem.store.claim(&tenant, &key, fingerprint, now, now + idem.ttl).await;
    match claim {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Claim::Replay(stored)) => replay(stored),
        Ok(Claim::Mismatch) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key was already used with a different request (method, path, query or body); \
             send a new key for a new request",
        )
        .into_response(),
        Ok(Claim::InProgress) => {
            let mut resp = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key has not finished, or its outcome is unknown (the server \
                 stopped before recording it); retry later with the same key",
            )
            .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            resp
        }
        Ok(Claim::New) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let record = Record { store: idem.store, tenant, key, fingerprint };
            // Its own task: dropping this future (timeout, client gone) must
            // not cut the write short or lose its outcome.
            let task = tokio::spawn(record.run(next, req).in_current_span());
            match task.await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!(error = %e, "handler task failed; the idempotency key stays in progress");
                    ApiError::internal().into_response()
                }
            }
        }
    }
}

fn key_of(req: &Request) -> Result<IdempotencyKey, ApiError> {
    let mut values = req.headers().get_all(KEY_HEADER).iter();
    let value = values.next().ok_or_else(|| ApiError::invalid("Idempotency-Key: missing"))?;
    if values.next().is_some() {
        return Err(ApiError::invalid("Idempotency-Key: send it once"));
    }
    let text = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key: must be visible ASCII"))?;
    Ok(IdempotencyKey::parse(text)?)
}

fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let too_large = std::error::Error::source(e)
        .into_iter()
        .chain(std::iter::once(e as &(dyn std::error::Error + 'static)))
        .any(|e| e.is::<http_body_util::LengthLimitError>());
    if too_large {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    } else {
        ApiError::invalid(format!("cannot read the request body: {e}"))
    }
}

/// SHA-256 of method, path with query and body, each length-prefixed so no
/// two different requests run together into one input.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> Fingerprint {
    let target = uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str());
    let mut hash = Sha256::new();
    for part in [method.as_str().as_bytes(), target.as_bytes(), body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    Fingerprint::new(hash.finalize().into())
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Bytes::from(stored.body)).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// A claim this request holds, and where to record its outcome.
struct Record {
    store: Arc<dyn IdempotencyStore>,
    tenant: TenantId,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
}

impl Record {
    /// Runs the handler, then records a 2xx response or releases the claim.
    async fn run(self, next: Next, req: Request) -> Response {
        let resp = next.run(req).await;
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                // The handler finished; what it did is unknown: keep the claim.
                tracing::error!(error = %e, "cannot buffer the response; the idempotency key stays in progress");
                return ApiError::internal().into_response();
            }
        };
        let Self { store, tenant, key, fingerprint } = self;
        let outcome = if parts.status.is_success() {
            let stored = StoredResponse { status: parts.status.as_u16(), body: bytes.to_vec() };
            store.complete(&tenant, &key, fingerprint, stored).await
        } else {
            store.release(&tenant, &key, fingerprint).await
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, status = %parts.status, "cannot record the outcome of an idempotent request; \
                its key stays in progress until it expires");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// Declares the optional `Idempotency-Key` header and the 409 and 422
/// answers on every route of [`IDEMPOTENT_POSTS`] in the document.
pub(crate) fn document(api: &mut OpenApi) {
    for path in IDEMPOTENT_POSTS {
        let Some(op) = api.paths.paths.get_mut(*path).and_then(|item| item.post.as_mut()) else {
            continue;
        };
        op.parameters.get_or_insert_with(Vec::new).push(key_parameter());
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let responses = &mut op.responses.responses;
        responses.entry("409".into()).or_insert_with(|| {
            error("A request with this Idempotency-Key has not finished, or its outcome is unknown; retry later").into()
        });
        responses
            .entry("422".into())
            .or_insert_with(|| error("The Idempotency-Key was already used with a different request").into());
    }
}

fn key_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 visible ASCII characters. A retry with the same key and the same request within \
             `server.idempotency_ttl_secs` (default 24 h) returns the first response (header \
             `Idempotency-Replayed: true`) without writing again; the same key with another request is a 422; \
             while the first request runs, a 409. Keys are per tenant.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(IdempotencyKey::MAX_LEN))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}
