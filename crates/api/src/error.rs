//! The one mapping from errors to HTTP responses.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use memlayer_domain::DomainError;
use memlayer_ports::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_request`, `malformed_json`,
    /// `unsupported_media_type`, `payload_too_large`, `not_found`,
    /// `method_not_allowed`, `conflict`, `idempotency_in_progress`,
    /// `idempotency_key_reused`, `unavailable`, `model_unavailable`,
    /// `timeout`, `overloaded` (shed under load; retry after `Retry-After`),
    /// `unauthenticated` (401), `insufficient_scope`, `tenant_mismatch`,
    /// `host_not_allowed`, `forbidden`, `resource_mismatch`, `resource_bound` (403), `invalid_otlp`
    /// (400: an OTLP body that does not decode), `invalid_import` (400) and
    /// `import_conflict` (409) with `line`, `field` and `imported`, `rate_limited` (429, with
    /// `Retry-After` and the `RateLimit` headers), `quota_exceeded` (403, or
    /// 413 for a write larger than the quota itself; with `quota`), `internal`.
    pub code: &'static str,
    /// Human-readable explanation; for 5xx it reveals nothing internal.
    pub message: String,
    /// With `quota_exceeded`: the storage quota the write would pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaErrorDto>,
    /// With an import's error: the line (1-based) of the record at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// With an import's error: the field at fault (`json`, `type`, `version`, `tenant`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With an import's error: what was imported before it (threads before the line are stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub imported: Option<serde_json::Value>,
}

/// The storage quota a refused write would pass.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaErrorDto {
    /// `threads`, `messages` or `bytes` (of messages, as `Message::approx_bytes` counts them).
    pub name: &'static str,
    /// The tenant's limit.
    pub limit: u64,
    /// What the tenant stores now.
    pub usage: u64,
    /// What the refused write would add.
    pub requested: u64,
}

/// The body's message for `StoreError::Unprovisioned`: how to fix it, with
/// no path or detail of the server (those are logged).
pub const MODEL_UNAVAILABLE: &str = "the embedding model is not available (not provisioned, disabled by \
     `embedding.enabled = false`, or corrupt); the server log says which. Fix: run scripts/provision on the \
     server, or enable embeddings, then retry; `memlayer doctor` checks the set-up";

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
    quota: Option<QuotaErrorDto>,
    import: Option<Box<(u64, String, serde_json::Value)>>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, quota: None, import: None }
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).with_retry_after(retry_after)
    }

    /// The same error with a `Retry-After` header (whole seconds, at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: std::time::Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`: says nothing about the cause (the caller logs it).
    #[must_use]
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The same error naming an import's line and field, with what was
    /// imported before it.
    #[must_use]
    pub fn with_import(mut self, line: u64, field: String, imported: serde_json::Value) -> Self {
        self.import = Some(Box::new((line, field, imported)));
        self
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Puts `prefix` before the message.
    pub fn prefix_message(&mut self, prefix: &str) {
        self.message.insert_str(0, prefix);
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(e.to_string()),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::PreconditionFailed(m) => Self::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", m),
            StoreError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            StoreError::RateLimited { message, retry_after, .. } => Self::rate_limited(message, retry_after),
            StoreError::QuotaExceeded { quota, limit, usage, requested } => {
                let status = if requested > limit { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::FORBIDDEN };
                let message = if requested > limit {
                    format!(
                        "quota `{quota}` exceeded: this write adds {requested} {quota}, more than the tenant's \
                         quota of {limit} allows at all"
                    )
                } else {
                    format!(
                        "quota `{quota}` exceeded: the tenant stores {usage} of at most {limit} {quota} and this \
                         write adds {requested}; delete some, or ask the operator for a larger quota"
                    )
                };
                let mut e = Self::new(status, "quota_exceeded", message);
                e.quota = Some(QuotaErrorDto { name: quota.as_str(), limit, usage, requested });
                e
            }
            StoreError::Invalid(d) => d.into(),
            StoreError::Unprovisioned(m) => {
                // The adapter's message may name files of the server (the
                // model's path): it goes to the log, the body gets the fix.
                tracing::warn!(problem = %m, "required resource not provisioned");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", MODEL_UNAVAILABLE)
            }
            StoreError::Unavailable(ref m) => {
                tracing::warn!(error = %m, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable; retry later")
            }
            other => {
                tracing::error!(error = %other, source = ?std::error::Error::source(&other), "internal error");
                Self::internal()
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_request",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
        Self::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (line, field, imported) = match self.import.map(|b| *b) {
            Some((line, field, imported)) => (Some(line), Some(field), Some(imported)),
            None => (None, None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail { code: self.code, message: self.message, quota: self.quota, line, field, imported },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        resp
    }
}
