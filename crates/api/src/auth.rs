//! Who may enter, over HTTP: the [`layer`] that authenticates every request
//! to a non-public route into a [`Principal`], and the extractors
//! [`Read`], [`Write`] and [`Admin`] through which a handler names the scope
//! it needs, so no handler can reach memory without stating one.
//!
//! - Credentials: `Authorization: Bearer <API key or JWT>`, or
//!   `X-Api-Key: <API key>`.
//! - A missing or bad credential is 401 with `WWW-Authenticate`; a valid one
//!   without the scope, or naming another tenant in `X-Tenant-Id`, is 403.
//! - With `auth.mode = none` (loopback only) every caller holds every scope
//!   in the tenant its `X-Tenant-Id` names, and requests whose `Host` is
//!   not a loopback name (or one of `auth.allowed_hosts`) are refused:
//!   a guard against DNS rebinding.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memlayer_app::{AuthConfig, AuthError, Authenticator};
use memlayer_domain::{Principal, Scope, TenantId};

use crate::error::ApiError;

/// The header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";
/// The header that may carry an API key instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Routes anyone may call: liveness, readiness and the API's description.
pub const PUBLIC_PATHS: [&str; 3] = ["/health", "/ready", "/api/openapi.json"];

/// What the [`layer`] needs.
#[derive(Debug, Clone)]
pub struct Auth {
    authenticator: Authenticator,
    config: Arc<AuthConfig>,
}

impl Auth {
    /// Checks credentials with `authenticator`, under the `auth.*` settings
    /// `config` (the `Host` allowlist).
    #[must_use]
    pub fn new(authenticator: Authenticator, config: AuthConfig) -> Self {
        Self { authenticator, config: Arc::new(config) }
    }

    /// No authentication (`auth.mode = none`): every caller acts for the
    /// tenant it names, or `default_tenant`, with every scope.
    #[must_use]
    pub fn anonymous(default_tenant: TenantId) -> Self {
        Self::new(Authenticator::anonymous(default_tenant), AuthConfig::default())
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`), as a
/// `Router::layer` so it sees the matched route; it must sit outside the
/// idempotency layer, which keys records by the principal's tenant.
pub(crate) async fn layer(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let public = req.extensions().get::<MatchedPath>().is_some_and(|p| PUBLIC_PATHS.contains(&p.as_str()));
    if public {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if !auth.config.host_allowed(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this server has no authentication (auth.mode = none) and answers only requests addressed to a \
             loopback name; add the host to auth.allowed_hosts, or turn authentication on",
        )
        .into_response();
    }
    match principal_of(&auth.authenticator, req.headers()).await {
        Ok(principal) => {
            tracing::Span::current().record("tenant", tracing::field::display(principal.tenant.as_str()));
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => refusal(&auth.authenticator, e),
    }
}

/// Authenticates the credential in `headers`.
async fn principal_of(authenticator: &Authenticator, headers: &HeaderMap) -> Result<Principal, Refused> {
    let named = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => {
            let s = v.to_str().map_err(|_| Refused::Request(ApiError::invalid("X-Tenant-Id: must be ASCII")))?;
            let tenant = TenantId::parse(s)
                .map_err(|e| Refused::Request(ApiError::invalid(format!("X-Tenant-Id: {}", e.reason))))?;
            Some(tenant)
        }
    };
    let bearer = bearer_of(headers).map_err(Refused::Auth)?;
    authenticator.authenticate(bearer, named.as_ref()).await.map_err(Refused::Auth)
}

enum Refused {
    Request(ApiError),
    Auth(AuthError),
}

/// The token of `Authorization: Bearer …` or `X-Api-Key`, if any.
fn bearer_of(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let invalid = |m: &str| AuthError::Invalid(m.to_owned());
    let authorization = headers.get(header::AUTHORIZATION);
    let api_key = headers.get(API_KEY_HEADER);
    if authorization.is_some() && api_key.is_some() {
        return Err(invalid("send one credential: Authorization or X-Api-Key, not both"));
    }
    if let Some(v) = api_key {
        return v.to_str().map(Some).map_err(|_| invalid("X-Api-Key: must be ASCII"));
    }
    let Some(v) = authorization else { return Ok(None) };
    let v = v.to_str().map_err(|_| invalid("Authorization: must be ASCII"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(invalid("Authorization: expected `Bearer <token>`")),
    }
}

fn refusal(authenticator: &Authenticator, refused: Refused) -> Response {
    let e = match refused {
        Refused::Request(e) => return e.into_response(),
        Refused::Auth(e) => e,
    };
    let (challenge, error) = match &e {
        AuthError::Missing { .. } => (r#"Bearer realm="memlayer""#.to_owned(), None),
        AuthError::Invalid(m) => {
            (format!(r#"Bearer realm="memlayer", error="invalid_token", error_description="{}""#, quoted(m)), None)
        }
        AuthError::TenantMismatch => {
            (String::new(), Some(ApiError::new(StatusCode::FORBIDDEN, "tenant_mismatch", e.to_string())))
        }
        AuthError::Unavailable(store) => {
            tracing::warn!(error = %store, "cannot check a credential");
            (
                String::new(),
                Some(
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "cannot check the credential now")
                        .with_retry_after(std::time::Duration::from_secs(1)),
                ),
            )
        }
    };
    if let Some(error) = error {
        return error.into_response();
    }
    let message = match &e {
        AuthError::Missing { .. } => format!("{e}; this server accepts {}", authenticator.accepted()),
        _ => e.to_string(),
    };
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `m` made safe inside a quoted-string of a header.
fn quoted(m: &str) -> String {
    m.chars().filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\').collect()
}

/// The principal the [`layer`] put on `parts`, if it holds `scope`.
fn authorized(parts: &Parts, scope: Scope) -> Result<Principal, ApiError> {
    let Some(principal) = parts.extensions.get::<Principal>() else {
        // The layer is missing from this router: a wiring mistake, never the caller's.
        tracing::error!("a handler that needs a principal is served without the authentication layer");
        return Err(ApiError::internal());
    };
    if !principal.may(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this route needs the `{scope}` scope; the credential has `{}`", principal.scopes),
        ));
    }
    Ok(principal.clone())
}

macro_rules! scoped_extractor {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
                authorized(parts, $scope).map(Self)
            }
        }
    };
}

scoped_extractor!(
    /// A caller holding the `read` scope: GET routes, search, embedding.
    Read,
    Scope::Read
);
scoped_extractor!(
    /// A caller holding the `write` scope: creating, appending, saving
    /// state, deleting memory.
    Write,
    Scope::Write
);
scoped_extractor!(
    /// A caller holding the `admin` scope: the catalog, keys, retention.
    Admin,
    Scope::Admin
);

/// A caller holding the `admin` scope for its whole tenant, not bound to a
/// resource: what managing the tenant's catalog needs. Yields the tenant.
#[derive(Debug, Clone)]
pub struct TenantAdmin(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for TenantAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let principal = authorized(parts, Scope::Admin)?;
        if let Some(resource) = &principal.resource {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this credential is bound to resource `{resource}` and cannot manage the tenant's catalog; \
                     use a credential of the whole tenant"
                ),
            ));
        }
        Ok(Self(principal.tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_come_from_authorization_or_x_api_key() {
        assert_eq!(bearer_of(&headers(&[])).unwrap(), None);
        assert_eq!(bearer_of(&headers(&[("authorization", "Bearer abc")])).unwrap(), Some("abc"));
        assert_eq!(bearer_of(&headers(&[("authorization", "bearer  abc ")])).unwrap(), Some("abc"));
        assert_eq!(bearer_of(&headers(&[("x-api-key", "ml_x")])).unwrap(), Some("ml_x"));
        assert!(bearer_of(&headers(&[("authorization", "Basic abc")])).is_err());
        assert!(bearer_of(&headers(&[("authorization", "Bearer a"), ("x-api-key", "b")])).is_err());
    }

    #[test]
    fn refusals_carry_their_status_challenge_and_retry_time() {
        let auth = Authenticator::anonymous(TenantId::default_tenant());
        let resp = refusal(&auth, Refused::Auth(AuthError::Invalid("the API key has expired".into())));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let challenge = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains(r#"error="invalid_token""#) && challenge.contains("expired"), "{challenge}");
        let resp =
            refusal(&auth, Refused::Auth(AuthError::Unavailable(memlayer_ports::StoreError::Unavailable("x".into()))));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let resp = refusal(&auth, Refused::Auth(AuthError::TenantMismatch));
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!resp.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn header_messages_lose_what_would_break_the_quoted_string() {
        assert_eq!(quoted("a \"b\" \\ c\n"), "a b  c");
    }
}
