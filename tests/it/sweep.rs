//! Deleting a thread: the request only marks it (404 everywhere at once)
//! and a sweeper removes its rows in chunks, while other tenants keep
//! writing (issue 10). On libSQL and Postgres.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error};

/// A thread of `n` messages (`kettle {i}`) in resource `r1`, as `tenant`.
async fn big_thread(t: &TestApp, tenant: &str, n: usize) -> String {
    let (status, v) = t.call_as(tenant, "POST", "/api/threads", Some(json!({"resource_id": "r1"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    for start in (0..n).step_by(1_000) {
        let batch: Vec<Value> =
            (start..n.min(start + 1_000)).map(|i| json!({"role": "user", "content": format!("kettle {i}")})).collect();
        let (status, v) =
            t.call_as(tenant, "POST", &format!("/api/threads/{id}/messages"), Some(json!({"messages": batch}))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    id
}

fn lexical(scope: Value) -> Value {
    json!({"query": "kettle", "mode": "lexical", "scope": scope, "top_k": 100})
}

/// Every way to reach the deleted thread answers as for a missing one.
async fn assert_gone(t: &TestApp, gone: &str, live: &str, message: &str) {
    let th = format!("/api/threads/{gone}");
    for (method, uri, body) in [
        ("GET", th.clone(), None),
        ("PATCH", th.clone(), Some(json!({"title": "again"}))),
        ("DELETE", th.clone(), None),
        ("GET", format!("{th}/messages"), None),
        ("GET", format!("{th}/messages?direction=backward"), None),
        ("POST", format!("{th}/messages"), Some(json!({"messages": [{"role": "user", "content": "late"}]}))),
        ("DELETE", format!("{th}/messages/{message}"), None),
        ("GET", format!("{th}/state/a1"), None),
        ("PUT", format!("{th}/state/a1"), Some(json!({"state": {"x": 2}, "expected_version": 1}))),
        ("GET", format!("{th}/embeddings"), None),
        ("POST", "/api/search".to_owned(), Some(lexical(json!({"thread_id": gone})))),
    ] {
        let got = t.call(method, &uri, body).await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, list) = t.call("GET", "/api/threads?resource_id=r1", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![live], "listing");
    for scope in [json!({"tenant": true}), json!({"resource_id": "r1"})] {
        let (status, found) = t.call("POST", "/api/search", Some(lexical(scope.clone()))).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        let hits = found["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2, "only the live thread's messages in {scope}: {found}");
        assert!(hits.iter().all(|h| h["thread_id"] == live), "{found}");
    }
}

async fn big_delete(store: Store) {
    // A chunk of 100: the 3,000 messages take 30 sweep transactions, which
    // the DELETE does not wait for (no background task runs here at all).
    let tweak = |c: &mut memlayer_app::Config| {
        c.embedding.enabled = false;
        c.memory.sweep_chunk = 100;
    };
    let Some(t) = TestApp::on(store, tweak).await else { return };
    let gone = big_thread(&t, "default", 3_000).await;
    let live = big_thread(&t, "default", 2).await;
    let (status, v) = t
        .call("PUT", &format!("/api/threads/{gone}/state/a1"), Some(json!({"state": {"x": 1}, "expected_version": 0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, page) = t.call("GET", &format!("/api/threads/{gone}/messages?limit=1"), None).await;
    let message = page["items"][0]["id"].as_str().unwrap().to_owned();

    let (status, body) = t.call("DELETE", &format!("/api/threads/{gone}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_gone(&t, &gone, &live, &message).await;

    // Part of the sweep, as a crash would leave it: still gone everywhere.
    let first = t.services.sweeper.run_once().await.unwrap();
    assert_eq!((first.messages, first.threads, first.more), (100, 0, true));
    assert_gone(&t, &gone, &live, &message).await;
    let rest = t.services.sweeper.drain().await.unwrap();
    assert_eq!((rest.messages, rest.threads, rest.more), (2_900, 1, false));
    assert_gone(&t, &gone, &live, &message).await;
    let (_, page) = t.call("GET", &format!("/api/threads/{live}/messages"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "the live thread is whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_delete_answers_before_its_sweep_and_the_thread_is_404_at_once() {
    big_delete(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_delete_answers_before_its_sweep_and_the_thread_is_404_at_once_on_postgres() {
    big_delete(Store::Postgres).await;
}

/// Appends one message as `tenant`; its sequence number.
async fn append_one(t: &TestApp, tenant: &str, thread: &str, i: usize) -> i64 {
    let body = json!({"messages": [{"role": "user", "content": format!("other {i}")}]});
    let (status, v) = t.call_as(tenant, "POST", &format!("/api/threads/{thread}/messages"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["items"][0]["seq"].as_i64().or_else(|| v[0]["seq"].as_i64()).unwrap_or_else(|| panic!("a seq in {v}"))
}

async fn appends_during_sweep(store: Store) {
    let tweak = |c: &mut memlayer_app::Config| {
        c.embedding.enabled = false;
        c.memory.sweep_chunk = 50;
    };
    let Some(t) = TestApp::on(store, tweak).await else { return };
    let gone = big_thread(&t, "acme", 3_000).await;
    let (_, other) = t.call_as("other", "POST", "/api/threads", Some(json!({}))).await;
    let other = other["id"].as_str().unwrap().to_owned();
    let (status, _) = t.call_as("acme", "DELETE", &format!("/api/threads/{gone}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Between chunks, deterministically: the sweep is under way (the thread's
    // rows are half there) and another tenant's append goes through.
    let mut appended = 0;
    for _ in 0..10 {
        let round = t.services.sweeper.run_once().await.unwrap();
        assert!(round.more, "the sweep is still in progress");
        appended += 1;
        assert_eq!(append_one(&t, "other", &other, appended).await, i64::try_from(appended).unwrap());
    }
    // Concurrently: the background sweeper runs while the other tenant
    // appends; every append succeeds, in order, and the sweep completes.
    let background = t.services.start_background();
    for _ in 0..40 {
        appended += 1;
        assert_eq!(append_one(&t, "other", &other, appended).await, i64::try_from(appended).unwrap());
    }
    loop {
        // Sweeping alongside the background task is safe (each call is one
        // transaction over whatever is left); it ends when nothing is.
        if !t.services.sweeper.run_once().await.unwrap().more {
            break;
        }
    }
    background.stop().await;
    let (_, page) = t.call_as("other", "GET", &format!("/api/threads/{other}/messages?limit=1000"), None).await;
    let seqs: Vec<i64> = page["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=i64::try_from(appended).unwrap()).collect::<Vec<_>>(), "every append stored once");
    let got = t.call_as("acme", "GET", &format!("/api/threads/{gone}"), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(t.services.sweeper.run_once().await.unwrap(), memlayer_ports::Sweep::default(), "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_appends_go_through_while_a_big_thread_is_swept() {
    appends_during_sweep(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_appends_go_through_while_a_big_thread_is_swept_on_postgres() {
    appends_during_sweep(Store::Postgres).await;
}
