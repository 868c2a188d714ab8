//! Rate limits over HTTP: the [`layer`] that charges every authenticated
//! request to its credential's and tenant's budgets, answering 429 with
//! `Retry-After` when one is spent, and the IETF `RateLimit-Policy` and
//! `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers) on every
//! answer a budget applied to.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memlayer_app::{Budget, Limiter, Rate};
use memlayer_domain::Principal;

use crate::error::ApiError;

/// `RateLimit-Policy`: the budget's quota and window.
pub const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of it and when it is whole again.
pub const RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The middleware (`axum::middleware::from_fn_with_state`): inside the
/// authentication layer, whose principal it charges; a request without one
/// (a public route) is not charged.
pub(crate) async fn layer(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    if !limiter.is_enabled() {
        return next.run(req).await;
    }
    let admitted = match req.extensions().get::<Principal>() {
        Some(principal) => limiter.admit(principal).await,
        None => return next.run(req).await,
    };
    match admitted {
        Ok(standing) => {
            let mut resp = next.run(req).await;
            if let Some(s) = standing {
                set_headers(resp.headers_mut(), s.budget, s.rate, s.remaining, 0);
            }
            resp
        }
        Err(exceeded) => {
            let mut resp = ApiError::rate_limited(exceeded.to_string(), exceeded.retry_after).into_response();
            let reset = exceeded.retry_after.as_secs() + u64::from(exceeded.retry_after.subsec_nanos() > 0);
            set_headers(resp.headers_mut(), exceeded.budget, exceeded.rate, 0, reset.max(1));
            resp
        }
    }
}

/// `RateLimit-Policy: "<budget>";q=<burst>;w=<window>` and
/// `RateLimit: "<budget>";r=<remaining>;t=<seconds until more>`.
fn set_headers(headers: &mut HeaderMap, budget: Budget, rate: Rate, remaining: u32, reset: u64) {
    let name = budget.as_str();
    let policy = format!("\"{name}\";q={};w={}", rate.burst, rate.window_secs());
    let state = format!("\"{name}\";r={remaining};t={reset}");
    for (header, value) in [(POLICY, policy), (RATE_LIMIT, state)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header, v);
        }
    }
}
