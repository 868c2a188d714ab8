//! Per-user scoping: a credential bound to a resource sees and creates only
//! that resource's threads, over every list, get, search, context and
//! working-memory route.
//!
//! The credentials here are checked by a stand-in `Verifier` (a fixed map
//! of tokens to principals), so these tests hold the app's and the routes'
//! enforcement to the rule whatever checks the credential; the API keys
//! and JWTs that produce such principals are tested on their own.

use axum::http::StatusCode;
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scope, Scopes, TenantId};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{TestApp, Tokens, assert_error};

const TENANTS: [&str; 2] = ["t0", "t1"];
const RESOURCES: [&str; 2] = ["alice", "bob"];

/// The token of tenant `t` bound to resource `r` (`None`: the whole tenant).
fn token(t: usize, r: Option<usize>) -> String {
    let id = format!("{:016x}", t * 16 + r.map_or(15, |r| r));
    format!("ml_{id}_{}", "0".repeat(64))
}

fn principal(t: usize, r: Option<usize>) -> Principal {
    Principal {
        tenant: TenantId::parse(TENANTS[t]).unwrap(),
        scopes: Scopes::only(Scope::Read).with(Scope::Write).with(Scope::Admin),
        resource: r.map(|r| ResourceId::parse(RESOURCES[r]).unwrap()),
        credential: Credential::ApiKey(KeyId::parse(format!("{:016x}", t * 16 + r.map_or(15, |r| r))).unwrap()),
    }
}

/// An app whose credentials are the tokens of [`token`].
async fn app() -> TestApp {
    let mut t = TestApp::new().await;
    let mut tokens = Tokens::default();
    for tenant in 0..TENANTS.len() {
        for resource in [None, Some(0), Some(1)] {
            tokens.0.insert(token(tenant, resource), principal(tenant, resource));
        }
    }
    t.authenticate_with(tokens);
    t
}

async fn call(t: &TestApp, who: &str, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    t.call_bearer(who, method, uri, body).await
}

/// One stored thread: who owns it, its id and the unique word in its messages.
#[derive(Debug, Clone)]
struct Stored {
    tenant: usize,
    resource: Option<usize>,
    id: String,
    word: String,
}

/// Stores a thread per `(tenant, resource)` in `layout`, each with
/// `messages` messages holding the shared word `common` and its own word.
async fn store(t: &TestApp, layout: &[(usize, Option<usize>, usize)]) -> Vec<Stored> {
    let mut stored = Vec::new();
    for (i, &(tenant, resource, messages)) in layout.iter().enumerate() {
        let owner = token(tenant, None);
        let body = match resource {
            Some(r) => json!({"resource_id": RESOURCES[r], "title": format!("thread {i}")}),
            None => json!({"title": format!("thread {i}")}),
        };
        let (status, v) = call(t, &owner, "POST", "/api/threads", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let word = format!("marker{i}x");
        for m in 0..messages {
            let body = json!({"role": "user", "content": format!("common {word} number {m}")});
            let (status, v) = call(t, &owner, "POST", &format!("/api/threads/{id}/messages"), Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
        }
        let (status, v) = call(
            t,
            &owner,
            "PUT",
            &format!("/api/threads/{id}/state/agent"),
            Some(json!({"state": {"w": word}, "expected_version": 0})),
        )
        .await;
        assert!(status.is_success(), "{v}");
        // Working memory of the thread and, merged in, of its resource.
        let notes = json!({"content": {"w": word}, "expected_version": 0});
        let (status, v) = call(t, &owner, "PUT", &format!("/api/threads/{id}/working-memory"), Some(notes)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if let Some(r) = resource {
            let uri = format!("/api/resources/{}/working-memory", RESOURCES[r]);
            let (status, v) = call(t, &owner, "PATCH", &uri, Some(json!({format!("k{i}"): word}))).await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        stored.push(Stored { tenant, resource, id, word });
    }
    stored
}

/// Every route a bound caller may use to read, checked against `stored`:
/// what it gets is its own resource's and nothing else.
async fn check_bound_caller(t: &TestApp, stored: &[Stored], tenant: usize, resource: usize) {
    let who = token(tenant, Some(resource));
    let mine = |s: &Stored| s.tenant == tenant && s.resource == Some(resource);
    let leaks = |body: &Value| -> Vec<String> {
        let text = body.to_string();
        stored
            .iter()
            .filter(|s| !mine(s))
            .filter(|s| text.contains(&s.id) || text.contains(&s.word))
            .map(|s| s.id.clone())
            .collect()
    };
    // Listings: every page, with and without naming a resource.
    for query in ["", "?resource_id=alice", "?resource_id=bob", "?limit=1"] {
        let (status, v) = call(t, &who, "GET", &format!("/api/threads{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(leaks(&v).is_empty(), "GET /api/threads{query} leaked {:?}: {v}", leaks(&v));
        for item in v["items"].as_array().unwrap() {
            assert_eq!(item["resource_id"], RESOURCES[resource], "{item}");
        }
    }
    let (_, all) = call(t, &who, "GET", "/api/threads?limit=1000", None).await;
    let listed: Vec<&str> = all["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = stored.iter().filter(|s| mine(s)).map(|s| s.id.as_str()).collect();
    assert_eq!(listed.len(), expected.len(), "listed {listed:?}, own {expected:?}");
    // Each thread's routes: own ones answer, every other is 404 and says nothing.
    for s in stored {
        for uri in [
            format!("/api/threads/{}", s.id),
            format!("/api/threads/{}/messages", s.id),
            format!("/api/threads/{}/messages?direction=backward&limit=5", s.id),
            format!("/api/threads/{}/state/agent", s.id),
            format!("/api/threads/{}/embeddings", s.id),
            format!("/api/threads/{}/summary", s.id),
            format!("/api/threads/{}/summary/versions", s.id),
            format!("/api/threads/{}/working-memory", s.id),
            format!("/api/threads/{}/working-memory/versions", s.id),
        ] {
            let got = call(t, &who, "GET", &uri, None).await;
            if mine(s) {
                assert_eq!(got.0, StatusCode::OK, "{uri}: {}", got.1);
            } else {
                assert_error(&got, StatusCode::NOT_FOUND, "not_found");
                assert!(
                    leaks(&got.1).iter().all(|id| *id == s.id) && !got.1.to_string().contains(&s.word),
                    "{uri}: {}",
                    got.1
                );
            }
        }
        // The context route: own threads assemble, with recall over the
        // resource finding own words only; others are 404.
        let body = json!({"budget": 100_000, "query": "common", "recall": {"scope": "resource", "mode": "lexical", "top_k": 100}});
        let got = call(t, &who, "POST", &format!("/api/threads/{}/context", s.id), Some(body)).await;
        if mine(s) {
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
            assert!(leaks(&got.1).is_empty(), "context of {} leaked {:?}: {}", s.id, leaks(&got.1), got.1);
        } else {
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
            assert!(!got.1.to_string().contains(&s.word), "context of another's thread: {}", got.1);
        }
        let search = json!({"query": format!("common {}", s.word), "mode": "lexical", "scope": {"thread_id": s.id}});
        let got = call(t, &who, "POST", "/api/search", Some(search)).await;
        if mine(s) {
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        } else {
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
        }
    }
    // Working memory of each resource: its own answers with own words only;
    // another resource's is a 404.
    for (r, name) in RESOURCES.iter().enumerate() {
        let got = call(t, &who, "GET", &format!("/api/resources/{name}/working-memory"), None).await;
        if r == resource {
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
            assert!(leaks(&got.1).is_empty(), "working memory of {name} leaked {:?}: {}", leaks(&got.1), got.1);
        } else {
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
        }
    }
    // Searches over the tenant and over each resource find own messages only.
    for scope in [json!({"tenant": true}), json!({"resource_id": "alice"}), json!({"resource_id": "bob"})] {
        let body = json!({"query": "common", "mode": "lexical", "scope": scope, "top_k": 100});
        let (status, v) = call(t, &who, "POST", "/api/search", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(leaks(&v).is_empty(), "search {scope} leaked {:?}: {v}", leaks(&v));
    }
}

fn layouts() -> impl Strategy<Value = Vec<(usize, Option<usize>, usize)>> {
    prop::collection::vec((0..TENANTS.len(), prop::option::of(0..RESOURCES.len()), 0..3usize), 1..7)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For random threads of two tenants and two resources (and none), a
    /// caller bound to one resource never receives anything of the others.
    #[test]
    fn a_bound_caller_never_receives_other_resources_data(layout in layouts()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = app().await;
            let stored = store(&t, &layout).await;
            for tenant in 0..TENANTS.len() {
                for resource in 0..RESOURCES.len() {
                    check_bound_caller(&t, &stored, tenant, resource).await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_creates_and_moves_threads_within_its_resource_only() {
    let t = app().await;
    let alice = token(0, Some(0));
    // No resource named: the thread gets the caller's.
    let (status, v) = call(&t, &alice, "POST", "/api/threads", Some(json!({"title": "mine"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["resource_id"], "alice");
    let id = v["id"].as_str().unwrap().to_owned();
    // Naming its own resource is fine; another is refused and stores nothing.
    let (status, v) = call(&t, &alice, "POST", "/api/threads", Some(json!({"resource_id": "alice"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let got = call(&t, &alice, "POST", "/api/threads", Some(json!({"resource_id": "bob"}))).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("alice"), "{}", got.1);
    let (_, all) = call(&t, &token(0, None), "GET", "/api/threads", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    // Moving a thread out of the resource is refused; the thread is unchanged.
    let uri = format!("/api/threads/{id}");
    for patch in [json!({"resource_id": "bob"}), json!({"resource_id": null})] {
        let got = call(&t, &alice, "PATCH", &uri, Some(patch)).await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    }
    let (_, v) = call(&t, &alice, "PATCH", &uri, Some(json!({"title": "renamed", "resource_id": "alice"}))).await;
    assert_eq!((v["title"].as_str(), v["resource_id"].as_str()), (Some("renamed"), Some("alice")), "{v}");
    // Bob's thread cannot be written to, deleted or have state saved by Alice.
    let (_, bob) = call(&t, &token(0, Some(1)), "POST", "/api/threads", Some(json!({}))).await;
    let bob = bob["id"].as_str().unwrap().to_owned();
    for (method, uri, body) in [
        ("POST", format!("/api/threads/{bob}/messages"), Some(json!({"role": "user", "content": "x"}))),
        ("PATCH", format!("/api/threads/{bob}"), Some(json!({"title": "mine now"}))),
        ("PUT", format!("/api/threads/{bob}/state/agent"), Some(json!({"state": {}, "expected_version": 0}))),
        ("DELETE", format!("/api/threads/{bob}"), None),
    ] {
        let got = call(&t, &alice, method, &uri, body).await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, v) = call(&t, &token(0, Some(1)), "GET", &format!("/api/threads/{bob}/messages"), None).await;
    assert_eq!((status, v["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{v}");
    // A bound admin may not manage the tenant's catalog.
    let got = call(&t, &alice, "GET", "/api/models", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = call(&t, &token(0, None), "GET", "/api/models", None).await;
    assert_eq!(status, StatusCode::OK);
}
