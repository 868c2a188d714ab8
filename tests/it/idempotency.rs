//! `Idempotency-Key` on the creating POSTs: replay without a second write,
//! 422 for a reused key, 400 for a bad key, per-tenant keys, released
//! claims after a failure, and a write that outlives the request timeout
//! (made slow by a gate the test opens, never by timing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_domain::{Cursor, Direction, Message, MessageId, NewMessage, Page, PageSize, Quota, TenantId, ThreadId};
use memlayer_ports::{MessageStore, StoreError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::support::{Store, TestApp, assert_error};

/// A response with its headers and raw body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    fn replayed(&self) -> bool {
        self.headers.get("idempotency-replayed").is_some_and(|v| v == "true")
    }
}

async fn send(app: &axum::Router, tenant: Option<&str>, uri: &str, key: Option<&[u8]>, body: &Value) -> Reply {
    let mut req = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", axum::http::HeaderValue::from_bytes(key).unwrap());
    }
    if let Some(tenant) = tenant {
        req = req.header("x-tenant-id", tenant);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, bytes }
}

async fn count(t: &TestApp, uri: &str) -> usize {
    let (status, v) = t.call("GET", uri, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().len()
}

async fn count_as(t: &TestApp, tenant: &str, uri: &str) -> usize {
    let (status, v) = t.call_as(tenant, "GET", uri, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().len()
}

fn model(name: &str) -> Value {
    json!({"name": name, "provider": "openai", "context_window": 128_000, "max_output_tokens": 4096,
           "input_price": 2.5, "output_price": 10.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_replays_without_writing() {
    replays(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_replays_without_writing_on_postgres() {
    replays(Store::Postgres).await;
}

/// Every creating route: the same key and body twice answer identically,
/// the second marked replayed, and one record exists; another body with the
/// same key is a 422 that writes nothing.
async fn replays(store: Store) {
    let Some(t) = TestApp::on(store, |c| c.embedding.enabled = false).await else {
        return;
    };
    let thread = t.thread(json!({})).await;
    let (_, m) = t.call("POST", "/api/models", Some(model("base"))).await;
    let cases = [
        ("/api/threads".to_owned(), json!({"title": "a"}), json!({"title": "b"}), "/api/threads".to_owned()),
        (
            format!("/api/threads/{thread}/messages"),
            json!({"role": "user", "content": "hello"}),
            json!({"role": "user", "content": "hello!"}),
            format!("/api/threads/{thread}/messages"),
        ),
        (
            format!("/api/threads/{thread}/messages"),
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
            json!({"messages": [{"role": "user", "content": "a"}]}),
            format!("/api/threads/{thread}/messages"),
        ),
        ("/api/models".to_owned(), model("gpt-4o"), model("gpt-4o-mini"), "/api/models".to_owned()),
        (
            "/api/tools".to_owned(),
            json!({"name": "lookup", "parameters": {"type": "object"}}),
            json!({"name": "lookup2", "parameters": {"type": "object"}}),
            "/api/tools".to_owned(),
        ),
        (
            "/api/agents".to_owned(),
            json!({"name": "support", "model_id": m["id"], "system_prompt": "Be kind."}),
            json!({"name": "support", "model_id": m["id"], "system_prompt": "Be brief."}),
            "/api/agents".to_owned(),
        ),
    ];
    for (i, (uri, body, other, list)) in cases.iter().enumerate() {
        let key = format!("key-{i}");
        let before = count(&t, list).await;
        let first = send(&t.app, None, uri, Some(key.as_bytes()), body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{uri}: {}", first.json());
        assert!(!first.replayed(), "{uri}: the first answer is not a replay");
        let added = count(&t, list).await - before;
        assert!(added >= 1, "{uri}: written");
        for _ in 0..2 {
            let again = send(&t.app, None, uri, Some(key.as_bytes()), body).await;
            assert_eq!((again.status, &again.bytes), (first.status, &first.bytes), "{uri}: the same answer");
            assert!(again.replayed(), "{uri}: marked as a replay");
            assert_eq!(again.headers.get("content-type").unwrap(), "application/json");
        }
        assert_eq!(count(&t, list).await - before, added, "{uri}: no second write");

        let reused = send(&t.app, None, uri, Some(key.as_bytes()), other).await;
        assert_error(&(reused.status, reused.json()), StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
        assert!(!reused.replayed());
        assert_eq!(count(&t, list).await - before, added, "{uri}: a reused key writes nothing");
    }
    // The same key on another route or with another query is another request.
    let reused = send(&t.app, None, "/api/threads", Some(b"key-1"), &json!({"role": "user", "content": "hello"})).await;
    assert_error(&(reused.status, reused.json()), StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let uri = format!("/api/threads/{thread}/messages?count_tokens=false");
    let reused = send(&t.app, None, &uri, Some(b"key-1"), &json!({"role": "user", "content": "hello"})).await;
    assert_error(&(reused.status, reused.json()), StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(count(&t, &format!("/api/threads/{thread}/messages")).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_every_post_writes() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let thread = t.thread(json!({})).await;
    let uri = format!("/api/threads/{thread}/messages");
    let body = json!({"role": "user", "content": "hello"});
    for _ in 0..2 {
        let r = send(&t.app, None, &uri, None, &body).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(!r.replayed());
    }
    assert_eq!(count(&t, &uri).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_a_400_and_writes_nothing() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let thread = t.thread(json!({})).await;
    let uri = format!("/api/threads/{thread}/messages");
    let body = json!({"role": "user", "content": "hello"});
    let long = "k".repeat(256);
    for key in [long.as_bytes(), b"", b"two words", b"tab\there", "caf\u{e9}".as_bytes()] {
        let r = send(&t.app, None, &uri, Some(key), &body).await;
        assert_error(&(r.status, r.json()), StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{}", r.json());
    }
    assert_eq!(count(&t, &uri).await, 0);
    let longest = "k".repeat(255);
    assert_eq!(send(&t.app, None, &uri, Some(longest.as_bytes()), &body).await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_tenant() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let a = send(&t.app, Some("tenant-a"), "/api/threads", Some(b"same"), &json!({"title": "a"})).await;
    let b = send(&t.app, Some("tenant-b"), "/api/threads", Some(b"same"), &json!({"title": "b"})).await;
    assert_eq!((a.status, b.status), (StatusCode::CREATED, StatusCode::CREATED), "{} {}", a.json(), b.json());
    assert!(!a.replayed() && !b.replayed(), "another tenant's key is another key");
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert_eq!(b.json()["tenant"], "tenant-b");
    let again = send(&t.app, Some("tenant-a"), "/api/threads", Some(b"same"), &json!({"title": "a"})).await;
    assert!(again.replayed(), "each tenant's own key replays");
    assert_eq!(again.json()["id"], a.json()["id"]);
    assert_eq!(
        (count_as(&t, "tenant-a", "/api/threads").await, count_as(&t, "tenant-b", "/api/threads").await),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_releases_its_key() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let missing = format!("/api/threads/{}/messages", uuid::Uuid::now_v7());
    let body = json!({"role": "user", "content": "hello"});
    for _ in 0..2 {
        let r = send(&t.app, None, &missing, Some(b"k"), &body).await;
        assert_error(&(r.status, r.json()), StatusCode::NOT_FOUND, "not_found");
        assert!(!r.replayed(), "a failure is not recorded: the retry runs again");
    }
    let r = send(&t.app, None, "/api/models", Some(b"k"), &json!({"name": ""})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json());
    // Released, so the key is free for another request, which is recorded.
    let r = send(&t.app, None, "/api/threads", Some(b"k"), &json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let again = send(&t.app, None, "/api/threads", Some(b"k"), &json!({})).await;
    assert!(again.replayed() && again.bytes == r.bytes, "{}", again.json());
    assert_eq!(count(&t, "/api/threads").await, 1);
}

/// A [`MessageStore`] whose appends wait for `gate`, and then run to their
/// end in their own task even when the caller stops waiting, as libSQL's
/// operations do on the blocking pool.
#[derive(Debug)]
struct GatedAppends {
    inner: Arc<LibsqlBackend>,
    gate: Arc<Semaphore>,
    appended: Arc<AtomicUsize>,
}

#[async_trait]
impl MessageStore for GatedAppends {
    async fn append_within(
        &self,
        who: &(dyn memlayer_domain::Reach + 'static),
        thread: ThreadId,
        batch: Vec<NewMessage>,
        quota: &Quota,
    ) -> Result<Vec<Message>, StoreError> {
        let (inner, gate, appended, tenant, quota) =
            (self.inner.clone(), self.gate.clone(), self.appended.clone(), who.tenant().clone(), *quota);
        tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let stored = inner.append_within(&tenant, thread, batch, &quota).await;
            appended.fetch_add(1, Ordering::SeqCst);
            stored
        })
        .await
        .unwrap()
    }

    async fn page_within(
        &self,
        who: &(dyn memlayer_domain::Reach + 'static),
        thread: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: PageSize,
        max_bytes: usize,
    ) -> Result<Page<Message>, StoreError> {
        self.inner.page_within(who, thread, cursor, direction, limit, max_bytes).await
    }

    async fn read_windows(
        &self,
        who: &(dyn memlayer_domain::Reach + 'static),
        windows: Vec<memlayer_ports::SeqRange>,
        max_bytes: usize,
    ) -> Result<memlayer_ports::Windows, StoreError> {
        self.inner.read_windows(who, windows, max_bytes).await
    }

    async fn last(
        &self,
        who: &(dyn memlayer_domain::Reach + 'static),
        thread: ThreadId,
        n: PageSize,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.last(who, thread, n).await
    }

    async fn get(&self, who: &(dyn memlayer_domain::Reach + 'static), id: MessageId) -> Result<Message, StoreError> {
        MessageStore::get(self.inner.as_ref(), who, id).await
    }

    async fn get_many(
        &self,
        who: &(dyn memlayer_domain::Reach + 'static),
        ids: Vec<MessageId>,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.get_many(who, ids).await
    }

    async fn delete(&self, who: &(dyn memlayer_domain::Reach + 'static), id: MessageId) -> Result<(), StoreError> {
        MessageStore::delete(self.inner.as_ref(), who, id).await
    }

    async fn token_counts(
        &self,
        tenant: &(dyn memlayer_domain::Reach + 'static),
        encoding: &str,
        ids: Vec<MessageId>,
    ) -> Result<Vec<(MessageId, u32)>, StoreError> {
        self.inner.token_counts(tenant, encoding, ids).await
    }

    async fn save_token_counts(
        &self,
        tenant: &(dyn memlayer_domain::Reach + 'static),
        encoding: &str,
        counts: Vec<(MessageId, u32)>,
    ) -> Result<(), StoreError> {
        self.inner.save_token_counts(tenant, encoding, counts).await
    }
}

/// The defect: a write that times out may still commit. With a key
/// the timeout does not cut the write off, its outcome is recorded, and the
/// retry returns it: exactly one message. Without a key (the old behaviour,
/// kept) the retry writes a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_times_out_is_committed_once_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = memlayer_app::Config { data_dir: dir.path().to_path_buf(), ..memlayer_app::Config::default() };
    config.embedding.enabled = false;
    config.server.request_timeout_secs = 1;
    let file = config.database_file();
    let mut services = memlayer_app::build(config).await.unwrap();
    let backend = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::file(file)).await.unwrap());
    let gate = Arc::new(Semaphore::new(0));
    let appended = Arc::new(AtomicUsize::new(0));
    let messages = GatedAppends { inner: backend.clone(), gate: gate.clone(), appended: appended.clone() };
    services.memory = memlayer_app::MemoryService::new(
        backend.clone(),
        Arc::new(messages),
        backend.clone(),
        Arc::new(memlayer_ports::MockTokenCounter::new()),
        TenantId::default_tenant(),
        false,
    );
    services.idempotency = backend.clone();
    let app = memlayer_api::server::app(&services);

    let created = send(&app, None, "/api/threads", None, &json!({})).await;
    let thread = created.json()["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/threads/{thread}/messages");
    let list = || async {
        let req = Request::builder().uri(&uri).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        v["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let body = json!({"role": "user", "content": "hello"});

    // The write cannot finish before the gate opens: the timeout answers.
    let first = send(&app, None, &uri, Some(b"retry-me"), &body).await;
    assert_error(&(first.status, first.json()), StatusCode::SERVICE_UNAVAILABLE, "timeout");
    let message = first.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("outcome is unknown") && message.contains("Idempotency-Key"), "{message}");
    // Still running: a retry is told so, and does not start a second write.
    let early = send(&app, None, &uri, Some(b"retry-me"), &body).await;
    assert_error(&(early.status, early.json()), StatusCode::CONFLICT, "idempotency_in_progress");
    assert_eq!(early.headers.get("retry-after").unwrap(), "1");

    gate.add_permits(1_000);
    // The first request's task commits and records; retry until it has.
    let mut waited = Duration::ZERO;
    let retry = loop {
        let r = send(&app, None, &uri, Some(b"retry-me"), &body).await;
        if r.status != StatusCode::CONFLICT || waited > Duration::from_secs(60) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    };
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.json());
    assert!(retry.replayed(), "the committed result, not a new write");
    assert_eq!(retry.json()["seq"], 1);
    assert_eq!(list().await, vec!["hello"], "exactly one message");
    assert_eq!(appended.load(Ordering::SeqCst), 1);

    // Without a key the same timeout leaves the client no safe retry.
    let open = gate.available_permits();
    gate.acquire_many(u32::try_from(open).unwrap()).await.unwrap().forget();
    let body = json!({"role": "user", "content": "unkeyed"});
    let first = send(&app, None, &uri, None, &body).await;
    assert_error(&(first.status, first.json()), StatusCode::SERVICE_UNAVAILABLE, "timeout");
    gate.add_permits(1_000);
    let mut waited = Duration::ZERO;
    while appended.load(Ordering::SeqCst) < 2 {
        assert!(waited < Duration::from_secs(60), "the dropped write never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(send(&app, None, &uri, None, &body).await.status, StatusCode::CREATED);
    assert_eq!(list().await, vec!["hello", "unkeyed", "unkeyed"], "unkeyed retries write twice, as before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_declares_the_key_on_every_creating_post() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let (_, doc) = t.call("GET", "/api/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    let creating = memlayer_api::idempotency::IDEMPOTENT_POSTS;
    let read_only = memlayer_api::idempotency::READ_ONLY_POSTS;
    let unrecorded = memlayer_api::idempotency::UNRECORDED_POSTS;
    for (path, item) in paths {
        let Some(post) = item.get("post") else {
            continue;
        };
        let lists = [creating, read_only, unrecorded].iter().filter(|l| l.contains(&path.as_str())).count();
        assert_eq!(
            lists, 1,
            "POST {path} must be classified as creating, read-only or unrecorded in memlayer_api::idempotency"
        );
        let params = post["parameters"].as_array().cloned().unwrap_or_default();
        let declared = params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
        assert_eq!(declared, creating.contains(&path.as_str()), "POST {path}: Idempotency-Key declared");
        if declared {
            for status in ["409", "422"] {
                assert!(post["responses"].get(status).is_some(), "POST {path} documents {status}");
            }
        }
    }
    for path in creating.iter().chain(read_only).chain(unrecorded) {
        assert!(paths.get(*path).and_then(|i| i.get("post")).is_some(), "{path} is a POST route");
    }
}
