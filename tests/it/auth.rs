//! Who may enter, with API keys (`auth.mode = api_key`).
//!
//! - The authorization matrix: every operation of the served OpenAPI
//!   document (so a new route is covered without touching this file) with
//!   no credential, a malformed, unknown, wrong-secret, revoked or expired
//!   key (401 with `WWW-Authenticate`), a key lacking the operation's
//!   declared scope (403 `insufficient_scope`), a key holding only that
//!   scope (neither 401 nor 403), and an `X-Tenant-Id` naming another tenant
//!   (403); no response contains the other tenant's data, and afterwards the
//!   other tenant's data is intact. On libSQL and on Postgres.
//! - `/api/keys`: a key creates keys only within its own scopes and
//!   resource, lists and revokes within its tenant; a revoked key is refused
//!   at once.
//! - The README's tour with a key, against the real binary on `0.0.0.0`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_app::{AuthModes, NewKey};
use memlayer_domain::{ResourceId, Scope, Scopes, TenantId};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{BIN, Server, Store, TestApp, assert_error};

/// What the other tenant stores: no response to the caller may contain it.
const MARKERS: [&str; 5] =
    ["victim-secret-content", "victim-model", "victim-tool-secret", "victim-setting-value", "victim-key-name"];

/// A response: status, `WWW-Authenticate`, body text.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `method uri` with `headers` and, for a body-taking method, `body`.
async fn send(app: &axum::Router, method: &str, uri: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Reply { status, challenge, body }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn scopes(list: &str) -> Scopes {
    Scopes::parse_list(list).unwrap()
}

/// An app with `auth.mode = api_key`, embeddings off.
async fn keyed_app(store: Store) -> Option<TestApp> {
    TestApp::on(store, |c| {
        c.embedding.enabled = false;
        c.auth.mode = AuthModes::parse("api_key").unwrap();
    })
    .await
}

async fn create_key(t: &TestApp, tenant: &str, new: NewKey) -> (String, String) {
    let created = t.services.keys.create(&TenantId::parse(tenant).unwrap(), new).await.unwrap();
    (created.key.id.to_string(), created.secret.reveal())
}

/// Stores the other tenant's data through the API with its own key, and
/// returns the values of the path parameters that name it, by
/// `(first path segment after /api/, parameter)`.
async fn victim_data(t: &TestApp, key: &str) -> BTreeMap<(&'static str, &'static str), String> {
    let auth = bearer(key);
    let h = [("authorization", auth.as_str())];
    let created = |r: Reply| {
        assert!(r.status.is_success(), "{}", r.body);
        r.json()
    };
    let thread = created(send(&t.app, "POST", "/api/threads", &h, Some(&json!({"title": "victim"}))).await);
    let thread = thread["id"].as_str().unwrap().to_owned();
    let body = json!({"role": "user", "content": "victim-secret-content"});
    let message = created(send(&t.app, "POST", &format!("/api/threads/{thread}/messages"), &h, Some(&body)).await);
    let state = json!({"state": {"note": "victim-secret-content"}, "expected_version": 0});
    created(send(&t.app, "PUT", &format!("/api/threads/{thread}/state/support"), &h, Some(&state)).await);
    let model = json!({"name": "victim-model", "provider": "openai", "context_window": 128_000,
                       "max_output_tokens": 4096, "input_price": 2.5, "output_price": 10.0});
    let model = created(send(&t.app, "POST", "/api/models", &h, Some(&model)).await);
    let tool = json!({"name": "lookup", "description": "victim-tool-secret", "parameters": {"type": "object"}});
    let tool = created(send(&t.app, "POST", "/api/tools", &h, Some(&tool)).await);
    let agent = json!({"name": "support", "model_id": model["id"], "system_prompt": "victim-secret-content",
                       "tool_ids": [tool["id"]]});
    let agent = created(send(&t.app, "POST", "/api/agents", &h, Some(&agent)).await);
    let setting = json!({"value": "victim-setting-value"});
    created(send(&t.app, "PUT", "/api/settings/ui/theme", &h, Some(&setting)).await);
    let doc = json!({"content": {"note": "victim-secret-content"}, "expected_version": 0});
    for path in
        ["/api/resources/victim-user/working-memory".to_owned(), format!("/api/threads/{thread}/working-memory")]
    {
        created(send(&t.app, "PUT", &path, &h, Some(&doc)).await);
    }
    let key = json!({"scopes": ["read"], "name": "victim-key-name"});
    let key = created(send(&t.app, "POST", "/api/keys", &h, Some(&key)).await);
    let policy = json!({"resource_id": "victim-user", "max_thread_age_secs": 86400});
    let policy = created(send(&t.app, "POST", "/api/retention/policies", &h, Some(&policy)).await);
    let workflow = json!({"name": "victim-workflow", "steps": [{"name": "s", "agent": "support", "input": "victim-secret-content"}]});
    let workflow = created(send(&t.app, "POST", "/api/workflows", &h, Some(&workflow)).await);
    // Observability: a trace whose span says the marker, and an evaluation run.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let spans = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": trace_id,
        "spanId": "00f067aa0ba902b7", "name": "victim-secret-content", "startTimeUnixNano": "1000",
        "endTimeUnixNano": "2000"}]}]}]});
    let stored = send(&t.app, "POST", "/v1/traces", &h, Some(&spans)).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    let run = json!({"model": "victim-model", "dataset": "victim-secret-content", "metrics": {"accuracy": 1}});
    let run = created(send(&t.app, "POST", "/api/observability/evaluations", &h, Some(&run)).await);
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    BTreeMap::from([
        (("observability/traces", "id"), trace_id.to_owned()),
        (("observability/evaluations", "id"), id(&run)),
        (("threads", "id"), thread),
        (("threads", "message_id"), id(&message)),
        (("threads", "agent_id"), "support".to_owned()),
        (("threads", "version"), "1".to_owned()),
        (("resources", "id"), "victim-user".to_owned()),
        (("resources", "version"), "1".to_owned()),
        (("models", "id"), id(&model)),
        (("tools", "id"), id(&tool)),
        (("agents", "id"), id(&agent)),
        (("settings", "category"), "ui".to_owned()),
        (("settings", "key"), "theme".to_owned()),
        (("keys", "id"), id(&key)),
        (("retention", "id"), id(&policy)),
        (("workflows", "id"), id(&workflow)),
        (("workflows", "step"), "s".to_owned()),
    ])
}

/// One operation of the document: method, path template, declared scope.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    scope: Option<Scope>,
}

/// Every operation of the served document, with the scope its `security`
/// declares (`None`: public).
async fn operations(t: &TestApp) -> Vec<Operation> {
    let doc = send(&t.app, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(doc.status, StatusCode::OK, "the document is public");
    let doc = doc.json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let declared: Vec<&str> = op["security"]
                .as_array()
                .map(|s| s.iter().flat_map(|r| r["bearer"].as_array().unwrap().iter()).map(|v| v.as_str().unwrap()))
                .into_iter()
                .flatten()
                .collect();
            assert!(declared.len() <= 1, "{method} {path}: one scope per operation, got {declared:?}");
            let scope = declared.first().map(|s| s.parse::<Scope>().unwrap());
            ops.push(Operation { method: method.to_uppercase(), path: path.clone(), scope });
        }
    }
    ops
}

/// `path` with each `{param}` replaced by the other tenant's value for it.
fn fill(path: &str, values: &BTreeMap<(&'static str, &'static str), String>) -> String {
    let mut parts = path.trim_start_matches("/api/").split('/');
    let family = match (parts.next().unwrap_or_default(), parts.next()) {
        // Observability's families are one level down: traces and evaluations.
        ("observability", Some(kind)) => &path["/api/".len().."/api/observability/".len() + kind.len()],
        (first, _) => first,
    };
    let mut out = String::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(param) => {
                let key = values.keys().find(|(f, p)| *f == family && *p == param);
                let key =
                    key.unwrap_or_else(|| panic!("the matrix cannot fill `{param}` of {path}: add it to victim_data"));
                out.push_str(&values[key]);
            }
            None => out.push_str(segment),
        }
    }
    out
}

fn assert_no_victim_data(reply: &Reply, what: &str) {
    for marker in MARKERS {
        assert!(!reply.body.contains(marker), "{what}: the body reveals `{marker}`: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_admits_exactly_its_declared_scope() {
    let Some(t) = keyed_app(Store::Libsql).await else { return };
    matrix(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_admits_exactly_its_declared_scope_on_postgres() {
    let Some(t) = keyed_app(Store::Postgres).await else { return };
    matrix(t).await;
}

async fn matrix(t: TestApp) {
    // First, so its second of life passes while the rest is set up.
    let expires = memlayer_domain::now() + Duration::from_secs(1);
    let (_, expired) = create_key(&t, "acme", NewKey { expires_at: Some(expires), ..NewKey::new(Scopes::ALL) }).await;
    let (_, victim) = create_key(&t, "victim", NewKey::new(Scopes::ALL)).await;
    let values = victim_data(&t, &victim).await;

    let (all_id, all) = create_key(&t, "acme", NewKey::new(Scopes::ALL)).await;
    let (revoked_id, revoked) = create_key(&t, "acme", NewKey::new(Scopes::ALL)).await;
    let acme = TenantId::parse("acme").unwrap();
    t.services.keys.revoke(&acme, None, &revoked_id.parse().unwrap()).await.unwrap();
    let mut only = BTreeMap::new();
    let mut lacking = BTreeMap::new();
    for scope in Scope::ALL {
        only.insert(scope, create_key(&t, "acme", NewKey::new(Scopes::only(scope))).await.1);
        let rest: Scopes = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
        lacking.insert(scope, create_key(&t, "acme", NewKey::new(rest)).await.1);
    }
    let unknown = format!("ml_{}_{}", "f0".repeat(8), "ab".repeat(32));
    let wrong_secret = format!("ml_{all_id}_{}", "0".repeat(64));
    while memlayer_domain::now() <= expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ops = operations(&t).await;
    let public: Vec<&str> = ops.iter().filter(|o| o.scope.is_none()).map(|o| o.path.as_str()).collect();
    let public: BTreeSet<&str> = public.into_iter().collect();
    let expected: BTreeSet<&str> = memlayer_api::auth::PUBLIC_PATHS.into_iter().collect();
    assert_eq!(public, expected, "exactly the public paths declare no scope");
    let secured: Vec<&Operation> = ops.iter().filter(|o| o.scope.is_some()).collect();
    for needed in [
        ("POST", "/api/keys"),
        ("DELETE", "/api/keys/{id}"),
        ("GET", "/api/threads/{id}/messages"),
        ("POST", "/api/threads/{id}/context"),
    ] {
        assert!(secured.iter().any(|o| (o.method.as_str(), o.path.as_str()) == needed), "{needed:?} is covered");
    }
    for path in memlayer_api::auth::PUBLIC_PATHS {
        let r = send(&t.app, "GET", path, &[], None).await;
        assert!(!matches!(r.status.as_u16(), 401 | 403), "{path} is public: {r:?}");
    }

    let (malformed_key, no_scheme) = (bearer("ml_0123_abc"), format!("Basic {all}"));
    let (unknown, wrong_secret, revoked, expired) =
        (bearer(&unknown), bearer(&wrong_secret), bearer(&revoked), bearer(&expired));
    let refused: [(&str, Vec<(&str, &str)>); 7] = [
        ("no credential", vec![]),
        ("a malformed key", vec![("authorization", malformed_key.as_str())]),
        ("another scheme", vec![("authorization", no_scheme.as_str())]),
        ("an unknown key", vec![("authorization", unknown.as_str())]),
        ("a wrong secret", vec![("x-api-key", wrong_secret.trim_start_matches("Bearer "))]),
        ("a revoked key", vec![("authorization", revoked.as_str())]),
        ("an expired key", vec![("authorization", expired.as_str())]),
    ];
    let all_bearer = bearer(&all);
    for op in &secured {
        let scope = op.scope.unwrap();
        let uri = fill(&op.path, &values);
        let body = matches!(op.method.as_str(), "POST" | "PUT" | "PATCH").then(|| json!({}));
        let what = |case: &str| format!("{} {} with {case}", op.method, op.path);
        for (case, headers) in &refused {
            let r = send(&t.app, &op.method, &uri, headers, body.as_ref()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}: {}", what(case), r.body);
            assert!(r.challenge.as_deref().is_some_and(|c| c.starts_with("Bearer ")), "{}: {r:?}", what(case));
            assert_eq!(r.json()["error"]["code"], "unauthenticated", "{}", what(case));
            assert_no_victim_data(&r, &what(case));
            for victim_value in values.values().filter(|v| v.len() > 8) {
                assert!(!r.body.contains(victim_value.as_str()), "{}: the body names {victim_value}", what(case));
            }
        }
        let r = send(&t.app, &op.method, &uri, &[("x-api-key", &lacking[&scope])], body.as_ref()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {}", what(&format!("a key lacking `{scope}`")), r.body);
        assert_eq!(r.json()["error"]["code"], "insufficient_scope", "{}", r.body);
        assert_no_victim_data(&r, &what("a key lacking the scope"));

        let r =
            send(&t.app, &op.method, &uri, &[("x-tenant-id", "victim"), ("authorization", &all_bearer)], body.as_ref())
                .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {}", what("another tenant named"), r.body);
        assert_eq!(r.json()["error"]["code"], "tenant_mismatch", "{}", r.body);
        assert_no_victim_data(&r, &what("another tenant named"));

        let only_key = bearer(&only[&scope]);
        let r = send(&t.app, &op.method, &uri, &[("authorization", &only_key)], body.as_ref()).await;
        assert!(
            !matches!(r.status.as_u16(), 401 | 403),
            "{}: {} {}",
            what(&format!("a key holding only `{scope}`")),
            r.status,
            r.body
        );
        assert_no_victim_data(&r, &what("the caller's own key"));
    }

    // The other tenant's data is intact: nothing above reached it.
    let h = bearer(&victim);
    let thread = &values[&("threads", "id")];
    let r = send(&t.app, "GET", &format!("/api/threads/{thread}/messages"), &[("authorization", &h)], None).await;
    assert_eq!(r.json()["items"][0]["content"], "victim-secret-content", "{}", r.body);
    for (family, _) in [("models", "id"), ("tools", "id"), ("agents", "id")] {
        let id = &values[&(family, "id")];
        let r = send(&t.app, "GET", &format!("/api/{family}/{id}"), &[("authorization", &h)], None).await;
        assert_eq!(r.status, StatusCode::OK, "{family} {id}: {}", r.body);
    }
    let r = send(&t.app, "GET", "/api/keys", &[("authorization", &h)], None).await;
    assert!(r.json()["items"].as_array().unwrap().iter().all(|k| k["revoked_at"].is_null()), "{}", r.body);
    for path in
        ["/api/resources/victim-user/working-memory".to_owned(), format!("/api/threads/{thread}/working-memory")]
    {
        let r = send(&t.app, "GET", &path, &[("authorization", &h)], None).await;
        assert_eq!(
            (r.json()["version"].as_u64(), &r.json()["content"]["note"]),
            (Some(1), &json!("victim-secret-content")),
            "{path}: {}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_listed_and_revoked_within_the_callers_tenant_and_scopes() {
    let Some(t) = keyed_app(Store::Libsql).await else { return };
    keys_route(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_listed_and_revoked_within_the_callers_tenant_and_scopes_on_postgres() {
    let Some(t) = keyed_app(Store::Postgres).await else { return };
    keys_route(t).await;
}

async fn keys_route(t: TestApp) {
    let (_, admin_read) = create_key(&t, "acme", NewKey::new(scopes("admin,read"))).await;
    let admin_read = bearer(&admin_read);
    let h = [("authorization", admin_read.as_str())];
    let post = |body: Value| {
        let app = t.app.clone();
        let auth = admin_read.clone();
        async move { send(&app, "POST", "/api/keys", &[("authorization", &auth)], Some(&body)).await }
    };

    // Created: the key once, the record, no hash.
    let r = post(json!({"scopes": ["read"], "name": " ci ", "expires_in": "90d", "resource_id": "user-42"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("ml_{}_", created["id"].as_str().unwrap())) && key.len() == 84, "{key}");
    assert_eq!((created["name"].as_str(), created["tenant"].as_str()), (Some("ci"), Some("acme")));
    assert_eq!(created["scopes"], json!(["read"]));
    assert_eq!(created["resource_id"], "user-42");
    assert!(created["expires_at"].is_string() && created["revoked_at"].is_null(), "{created}");
    let new_key = bearer(&key);
    let r = send(&t.app, "GET", "/api/threads", &[("authorization", &new_key)], None).await;
    assert_eq!(r.status, StatusCode::OK, "the new key works: {}", r.body);

    // Never beyond the grantor's scopes; bad input names its field.
    let r = post(json!({"scopes": ["read", "write"]})).await;
    assert_error(&(r.status, r.json()), StatusCode::FORBIDDEN, "insufficient_scope");
    for (body, field) in [
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": ["owner"]}), "scopes"),
        (json!({"scopes": ["read"], "expires_in": "90"}), "expires_in"),
        (json!({"scopes": ["read"], "name": "a\u{7}b"}), "name"),
        (json!({"scopes": ["read"], "resource_id": "a b"}), "resource_id"),
        (json!({"scopes": ["read"], "secret": "mine"}), "secret"),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(field), "{body}: {}", r.body);
    }

    // A key bound to a resource creates only keys bound to it, and sees only those.
    let (_, bound) = create_key(
        &t,
        "acme",
        NewKey { resource: Some(ResourceId::parse("user-7").unwrap()), ..NewKey::new(scopes("admin,read")) },
    )
    .await;
    let bound = bearer(&bound);
    let hb = [("authorization", bound.as_str())];
    for body in [json!({"scopes": ["read"]}), json!({"scopes": ["read"], "resource_id": "user-8"})] {
        let r = send(&t.app, "POST", "/api/keys", &hb, Some(&body)).await;
        assert_error(&(r.status, r.json()), StatusCode::FORBIDDEN, "resource_mismatch");
    }
    let r = send(&t.app, "POST", "/api/keys", &hb, Some(&json!({"scopes": ["read"], "resource_id": "user-7"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let listed = send(&t.app, "GET", "/api/keys", &hb, None).await.json();
    let listed = listed["items"].as_array().unwrap();
    assert!(listed.iter().all(|k| k["resource_id"] == "user-7") && listed.len() == 2, "{listed:?}");

    // Listing: the tenant's keys, newest first, never a secret or a hash.
    let r = send(&t.app, "GET", "/api/keys", &h, None).await;
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "{}", r.body);
    assert!(!r.body.contains(&key[20..]) && !r.body.contains("hash") && !r.body.contains("\"key\""), "{}", r.body);
    let created_at: Vec<&str> = items.iter().map(|k| k["created_at"].as_str().unwrap()).collect();
    assert!(created_at.windows(2).all(|w| w[0] >= w[1]), "newest first: {created_at:?}");
    // A page at a time: pages of 3 walk the same list; a bad cursor or limit names itself.
    let mut paged = Vec::new();
    let mut uri = "/api/keys?limit=3".to_owned();
    loop {
        let page = send(&t.app, "GET", &uri, &h, None).await.json();
        paged.extend(page["items"].as_array().unwrap().iter().map(|k| k["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/keys?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, items.iter().map(|k| k["id"].clone()).collect::<Vec<_>>());
    let only = send(&t.app, "GET", "/api/keys?resource=user-42", &h, None).await.json();
    assert_eq!(only["items"].as_array().unwrap().len(), 1, "{only}");
    for (query, field) in
        [("cursor=zz", "cursor"), ("cursor=00000000000000ff", "cursor"), ("limit=0", "limit"), ("color=red", "color")]
    {
        let r = send(&t.app, "GET", &format!("/api/keys?{query}"), &h, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert!(r.body.contains(field), "{query}: {}", r.body);
    }

    // Another tenant's key is not there to revoke; revoking ours refuses it at once.
    let (other_id, other) = create_key(&t, "other", NewKey::new(Scopes::ALL)).await;
    let r = send(&t.app, "DELETE", &format!("/api/keys/{other_id}"), &h, None).await;
    assert_error(&(r.status, r.json()), StatusCode::NOT_FOUND, "not_found");
    let r = send(&t.app, "GET", "/api/threads", &[("authorization", &bearer(&other))], None).await;
    assert_eq!(r.status, StatusCode::OK, "the other tenant's key still works: {}", r.body);
    let r = send(&t.app, "DELETE", "/api/keys/not-an-id", &h, None).await;
    assert_error(&(r.status, r.json()), StatusCode::BAD_REQUEST, "invalid_request");
    let id = created["id"].as_str().unwrap();
    let r = send(&t.app, "DELETE", &format!("/api/keys/{id}"), &h, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.json()["revoked_at"].is_string(), "{}", r.body);
    let r = send(&t.app, "GET", "/api/threads", &[("authorization", &new_key)], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
}

/// `memlayer serve` with `args` and `env` over `dir`: the child and its
/// announced address, or its failure output.
fn serve(dir: &std::path::Path, addr: &str, env: &[(&str, &str)]) -> Result<(std::process::Child, String), String> {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", addr, "--data-dir"])
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("MEMLAYER_EMBEDDING__ENABLED", "false")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("memlayer listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => Ok((child, base)),
        Err(_) => {
            let _ = child.kill();
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let status = child.wait().unwrap();
            Err(format!("{status}: {err}"))
        }
    }
}

fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The README's "With API keys" section, step by step, against the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_with_a_key_works_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    // Without authentication, a public address is refused, saying what to set.
    let refused = serve(dir.path(), "0.0.0.0:0", &[]).unwrap_err();
    assert!(refused.contains("auth.mode") && refused.contains("memlayer keys create"), "{refused}");

    // memlayer keys create --tenant acme --scopes read,write --name tour --expires 90d
    let (ok, out, err) = cli(
        dir.path(),
        &["keys", "create", "--tenant", "acme", "--scopes", "read,write", "--name", "tour", "--expires", "90d"],
    );
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ml_") && err.contains("shown only now"), "{out}{err}");
    let (ok, out, err) = cli(dir.path(), &["keys", "create", "--tenant", "acme", "--scopes", "read,owner"]);
    assert!(!ok && err.contains("--scopes") && err.contains("owner"), "{out}{err}");
    let (ok, out, err) = cli(dir.path(), &["keys", "list"]);
    assert!(!ok && err.contains("--tenant is required"), "{out}{err}");

    // MEMLAYER_AUTH__MODE=api_key memlayer serve --addr 0.0.0.0:8080
    let env = [("MEMLAYER_AUTH__MODE", "api_key"), ("MEMLAYER_AUTH__KEYS__CACHE_TTL_SECS", "1")];
    let (child, base) = serve(dir.path(), "0.0.0.0:0", &env).unwrap();
    let base = base.replace("0.0.0.0", "127.0.0.1");
    let server = Server { child, base };
    let http = reqwest::Client::new();
    let threads = format!("{}/api/threads", server.base);
    let r = http.post(&threads).bearer_auth(&key).json(&json!({"title": "Refund"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let r = http.get(&threads).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http.get(&threads).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = http.get(&threads).bearer_auth(&key).header("x-tenant-id", "other").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http.get(format!("{}/api/models", server.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "read,write is not admin");

    // memlayer keys list --tenant acme: the record, never the secret.
    let (ok, out, err) = cli(dir.path(), &["keys", "list", "--tenant", "acme"]);
    assert!(ok && out.contains(created["id"].as_str().unwrap()) && !out.contains(&key[20..]), "{out}{err}");
    // memlayer keys revoke --tenant acme ID: the server refuses it within the cache TTL.
    let (ok, out, err) = cli(dir.path(), &["keys", "revoke", "--tenant", "acme", created["id"].as_str().unwrap()]);
    assert!(ok && out.contains("revoked_at"), "{out}{err}");
    let mut status = 0;
    for _ in 0..100 {
        status = http.get(&threads).bearer_auth(&key).send().await.unwrap().status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "a revoked key is refused once the cache entry expires");
}
