//! The observability dashboard (issue 17): a static single-page app served
//! at `/observability`, its files embedded in the binary
//! (`crates/api/assets/observability/`, `include_bytes!`), so the server
//! needs nothing at run time and fetches nothing from elsewhere.
//!
//! - The page and its assets hold no data and are public (like `/health`):
//!   the router merges these routes outside the auth and limits layers. Every
//!   figure the page shows comes from `/api/observability/...`, which the page
//!   calls with the credential the user pastes (an API key or JWT kept in the
//!   tab's `sessionStorage`, sent as `Authorization: Bearer`), under the same
//!   rules as any other client.
//! - Not in the OpenAPI document: these are HTML, CSS and JavaScript files,
//!   not API operations (so the fuzz run and the authorization matrix, which
//!   walk the document, do not see them).
//! - Every response carries a content type, `X-Content-Type-Options:
//!   nosniff`, a Content-Security-Policy allowing this origin only (no
//!   inline script or style, no remote origin, no framing) and a strong
//!   `ETag` (a hash of the file) with `Cache-Control: no-cache`: browsers keep
//!   the files and revalidate them, getting 304 until the binary changes.
//! - A path under `/observability/` that is not a file is 404 `not_found`;
//!   with `observability.enabled = false` the dashboard is not served.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Where the dashboard is served.
pub const BASE: &str = "/observability";

/// The policy every dashboard response carries: scripts, styles, images,
/// fonts and API calls from this origin only; no inline script or style, no
/// `eval`, no plugin, no form posting elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/observability/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("charts.js", JS),
    asset!("views/traces.js", JS),
    asset!("views/trace.js", JS),
    asset!("views/performance.js", JS),
    asset!("views/health.js", JS),
    asset!("views/costs.js", JS),
    asset!("views/evaluations.js", JS),
    asset!("vendor/chart.umd.min.js", JS),
    asset!("vendor/LICENSE.chart.js.md", "text/markdown; charset=utf-8"),
];

/// The routes, for the router to merge outside the auth layer; none when
/// `enabled` is false (`observability.enabled = false`: the API it reads is
/// off too, and `/observability` is the router's 404).
pub fn routes<S: Clone + Send + Sync + 'static>(enabled: bool) -> Router<S> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route(BASE, get(index))
        .route("/observability/", get(index))
        .route("/observability/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(i, &headers),
        None => with_policy(ApiError::not_found("no such file of the dashboard").into_response()),
    }
}

/// Strong validators, one per asset, computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
                HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak validators
/// compare by their opaque part, as RFC 9110 asks for this header.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        },
    )
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = etags()[i].clone();
    let mut response = if not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_policy(response)
}

fn with_policy(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_first_asset_and_paths_are_unique() {
        assert_eq!(ASSETS[0].path, "index.html");
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
    }

    #[test]
    fn every_asset_the_page_and_modules_name_is_embedded() {
        // `/observability/x.js` in the page, `./x.js` / `../x.js` in imports.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".html") || a.path.ends_with(".js")) {
            if a.path.starts_with("vendor/") {
                continue;
            }
            let text = std::str::from_utf8(a.body).unwrap();
            for quote in ['"', '\''] {
                for piece in text.split(quote).skip(1).step_by(2) {
                    let named = if let Some(p) = piece.strip_prefix("/observability/") {
                        Some(p.to_owned())
                    } else if piece.ends_with(".js") && (piece.starts_with("./") || piece.starts_with("../")) {
                        let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
                        Some(resolve(dir, piece))
                    } else {
                        None
                    };
                    if let Some(p) = named.filter(|p| !p.is_empty() && !p.contains(['?', '#', '$', '{'])) {
                        assert!(ASSETS.iter().any(|x| x.path == p), "{} names {p}, which is not embedded", a.path);
                    }
                }
            }
        }
    }

    fn resolve(dir: &str, rel: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        for seg in rel.split('/') {
            match seg {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        parts.join("/")
    }

    #[test]
    fn if_none_match_compares_strong_and_weak_tags() {
        let etag = HeaderValue::from_static("\"abc\"");
        let check = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            not_modified(&h, &etag)
        };
        assert!(check("\"abc\""));
        assert!(check("W/\"abc\""));
        assert!(check("\"x\", \"abc\""));
        assert!(check("*"));
        assert!(!check("\"abd\""));
        assert!(!not_modified(&HeaderMap::new(), &etag));
    }
}
