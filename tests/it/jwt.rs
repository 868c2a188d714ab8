//! JWT authentication over HTTP (`auth.mode = jwt`), in process on libSQL:
//! the tenant comes from the token, never from `X-Tenant-Id`; a missing,
//! expired or forged token is 401 with `WWW-Authenticate`; a token without
//! the route's scope is 403. The verifier's own rules are unit-tested in
//! `crates/app/src/jwt.rs`; this holds the HTTP layer to them.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use memlayer_app::AuthModes;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::TestApp;

const SECRET: &str = "the HS256 secret of a test project, 32+ bytes";
const RSA_A: &str = include_str!("../../crates/app/tests/fixtures/jwt/rsa-a.pem");
const RSA_B: &str = include_str!("../../crates/app/tests/fixtures/jwt/rsa-b.pem");

/// An app with `auth.mode = jwt`: the shared secret, and a JWKS file
/// holding the RSA key `a`.
struct JwtApp {
    app: TestApp,
    _jwks: tempfile::TempDir,
}

async fn jwt_app() -> JwtApp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let mut jwk = Jwk::from_encoding_key(&rsa(RSA_A), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("a".into());
    std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).unwrap();
    let app = TestApp::with(|c| {
        c.auth.mode = AuthModes::parse("jwt").unwrap();
        c.auth.jwt.secret = Some(SECRET.into());
        c.auth.jwt.jwks_file = Some(path);
        c.auth.jwt.audience = Some("authenticated".into());
    })
    .await;
    JwtApp { app, _jwks: dir }
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn claims(tenant: &str, scope: &str, exp: i64) -> Value {
    json!({"sub": "user-1", "tenant_id": tenant, "scope": scope, "aud": "authenticated", "exp": exp})
}

/// An HS256 token for `tenant` with `scope`, valid for ten minutes.
fn token(tenant: &str, scope: &str) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &claims(tenant, scope, now() + 600),
    )
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// What a response says: status, its `WWW-Authenticate` header, body.
struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

impl JwtApp {
    /// Sends `method uri` with `Authorization: Bearer <token>` (when given)
    /// and `headers`, `body` as JSON.
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
        let resp = self.app.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, challenge, body }
    }

    async fn get(&self, uri: &str, token: &str) -> Reply {
        self.send("GET", uri, Some(token), &[], None).await
    }
}

#[track_caller]
fn assert_reply(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
}

#[tokio::test]
async fn a_token_acts_for_its_own_tenant_only() {
    let app = jwt_app().await;
    let a = token("tenant-a", "read write");
    let b = token("tenant-b", "read write");
    let created = app.send("POST", "/api/threads", Some(&a), &[], Some(json!({"title": "a's"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["tenant"], "tenant-a", "the tenant comes from the token");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let appended = app
        .send(
            "POST",
            &format!("/api/threads/{id}/messages"),
            Some(&a),
            &[],
            Some(json!({"role": "user", "content": "hi"})),
        )
        .await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.body);

    let last = app.get(&format!("/api/threads/{id}/messages?direction=backward&limit=10"), &a).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    assert_eq!(last.body["items"][0]["content"], "hi");

    for uri in [format!("/api/threads/{id}"), format!("/api/threads/{id}/messages")] {
        assert_reply(&app.get(&uri, &b).await, StatusCode::NOT_FOUND, "not_found");
    }
    let listed = app.get("/api/threads", &b).await;
    assert_eq!(listed.body["items"], json!([]), "tenant b sees none of a's threads");

    let named_other =
        app.send("GET", &format!("/api/threads/{id}"), Some(&a), &[("x-tenant-id", "tenant-b")], None).await;
    assert_reply(&named_other, StatusCode::FORBIDDEN, "tenant_mismatch");
    let named_own =
        app.send("GET", &format!("/api/threads/{id}"), Some(&a), &[("x-tenant-id", "tenant-a")], None).await;
    assert_eq!(named_own.status, StatusCode::OK, "{}", named_own.body);
}

#[tokio::test]
async fn a_missing_expired_or_forged_token_is_401_with_a_challenge() {
    let app = jwt_app().await;
    let none = app.send("GET", "/api/threads", None, &[], None).await;
    assert_reply(&none, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(none.challenge.as_deref(), Some(r#"Bearer realm="memlayer""#));

    let secret = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let expired = sign(Algorithm::HS256, None, &secret, &claims("tenant-a", "read", now() - 3600));
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&[1; 32]).unwrap(),
        &claims("tenant-a", "read", now() + 600),
    );
    let other_key = sign(Algorithm::RS256, Some("a"), &rsa(RSA_B), &claims("tenant-a", "read", now() + 600));
    let no_tenant =
        sign(Algorithm::HS256, None, &secret, &json!({"scope": "read", "aud": "authenticated", "exp": now() + 600}));
    for (case, token, says) in [
        ("expired", expired, "the token has expired"),
        ("wrong secret", forged, "signature does not verify"),
        ("wrong RSA key", other_key, "signature does not verify"),
        ("no tenant claim", no_tenant, "no `tenant_id` claim"),
    ] {
        let r = app.get("/api/threads", &token).await;
        assert_reply(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
        let challenge = r.challenge.unwrap_or_default();
        assert!(challenge.starts_with(r#"Bearer realm="memlayer", error="invalid_token""#), "{case}: {challenge}");
        assert!(
            challenge.contains(says) && r.body["error"]["message"].as_str().unwrap().contains(says),
            "{case}: {challenge}"
        );
    }
}

#[tokio::test]
async fn a_read_only_token_cannot_write() {
    let app = jwt_app().await;
    let reader = token("tenant-a", "read");
    let r = app.send("POST", "/api/threads", Some(&reader), &[], Some(json!({}))).await;
    assert_reply(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("`write`"), "{}", r.body);
    assert_eq!(app.get("/api/threads", &reader).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_rs256_token_is_checked_against_the_jwks() {
    let app = jwt_app().await;
    let token = sign(Algorithm::RS256, Some("a"), &rsa(RSA_A), &claims("tenant-a", "read", now() + 600));
    let r = app.get("/api/threads", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
