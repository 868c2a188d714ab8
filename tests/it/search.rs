//! Semantic, lexical and hybrid search over HTTP with the real model.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error, model_ready};

async fn app(index: &str) -> TestApp {
    let index = index.to_owned();
    TestApp::with(move |c| {
        c.embedding.mode = memlayer_app::EmbeddingMode::Inline;
        c.search.index = Some(serde_json::from_value(json!(index)).unwrap());
    })
    .await
}

async fn seed(t: &TestApp, body: Value, texts: &[&str]) -> (String, Vec<String>) {
    let id = t.thread(body).await;
    let messages: Vec<Value> = texts.iter().map(|s| json!({"role": "user", "content": s})).collect();
    let (status, v) = t.call("POST", &format!("/api/threads/{id}/messages"), Some(json!({"messages": messages}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let ids = v["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    (id, ids)
}

const TEXTS: &[&str] = &[
    "I adopted a small kitten from the shelter last week",
    "The quarterly tax report is due on Friday",
    "We should repaint the kitchen walls a lighter colour",
    "My flight to Lisbon got cancelled because of the storm",
    "Remember to water the tomato plants every evening",
];

fn first_content(v: &Value) -> &str {
    v["hits"][0]["message"]["content"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_a_message_by_meaning_with_no_shared_words_on_every_index() {
    if !model_ready("finds_a_message_by_meaning") {
        return;
    }
    for index in ["hnsw", "exact", "libsql"] {
        let t = app(index).await;
        let (thread, _) = seed(&t, json!({"resource_id": "u1"}), TEXTS).await;
        let (status, v) =
            t.call("POST", "/api/search", Some(json!({"query": "new pet cat", "mode": "vector", "top_k": 3}))).await;
        assert_eq!(status, StatusCode::OK, "{index}: {v}");
        assert_eq!(first_content(&v), TEXTS[0], "{index}: {v}");
        assert_eq!(v["hits"][0]["thread_id"], thread.as_str());
        assert_eq!(v["hits"][0]["mode"], "vector");
        assert_eq!(v["hits"].as_array().unwrap().len(), 3);
        let score = v["hits"][0]["score"].as_f64().unwrap();
        assert!(score > 0.3 && score <= 1.0001, "{index}: cosine {score}");
        assert_eq!(v["plan"]["model"], "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(v["plan"]["pending"], 0, "inline mode embedded everything: {v}");
        assert!(v["plan"]["vector_index"].is_string());
        let (_, v) = t
            .call(
                "POST",
                "/api/search",
                Some(json!({"query": "airline trip disrupted by bad weather", "mode": "vector"})),
            )
            .await;
        assert_eq!(first_content(&v), TEXTS[3], "{index}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_scopes_windows_and_scores() {
    if !model_ready("modes_scopes_windows_and_scores") {
        return;
    }
    let t = app("hnsw").await;
    let (a, _) = seed(&t, json!({"resource_id": "u1"}), TEXTS).await;
    let (b, _) =
        seed(&t, json!({"resource_id": "u2"}), &["the kitten chased a ball of yarn", "tax forms are confusing"]).await;

    let (_, lexical) = t.call("POST", "/api/search", Some(json!({"query": "tax report", "mode": "lexical"}))).await;
    assert_eq!(first_content(&lexical), TEXTS[1], "{lexical}");
    assert_eq!(lexical["plan"]["vector_index"], "none");
    assert_eq!(lexical["plan"]["stages"][0]["stage"], "lexical", "{lexical}");
    assert_eq!(lexical["plan"]["stages"].as_array().unwrap().len(), 1);

    let (_, hybrid) = t.call("POST", "/api/search", Some(json!({"query": "kitten", "top_k": 2}))).await;
    assert_eq!(hybrid["mode"], "hybrid");
    let contents: Vec<_> =
        hybrid["hits"].as_array().unwrap().iter().map(|h| h["message"]["content"].as_str().unwrap()).collect();
    assert!(contents.iter().all(|c| c.contains("kitten")), "{hybrid}");
    let stages: Vec<_> = hybrid["plan"]["stages"].as_array().unwrap().iter().map(|s| s["stage"].clone()).collect();
    assert_eq!(stages, [json!("vector"), json!("lexical"), json!("fusion")], "{hybrid}");
    assert!(hybrid["plan"]["stages"][2]["candidates"].as_u64().unwrap() >= 2, "{hybrid}");

    let scoped = |scope: Value| json!({"query": "kitten", "mode": "vector", "scope": scope, "top_k": 10});
    let (_, in_b) = t.call("POST", "/api/search", Some(scoped(json!({"thread_id": b})))).await;
    assert!(in_b["hits"].as_array().unwrap().iter().all(|h| h["thread_id"] == b.as_str()));
    assert_eq!(in_b["hits"].as_array().unwrap().len(), 2);
    let (_, in_u1) = t.call("POST", "/api/search", Some(scoped(json!({"resource_id": "u1"})))).await;
    assert!(in_u1["hits"].as_array().unwrap().iter().all(|h| h["thread_id"] == a.as_str()));
    let (_, all) = t.call("POST", "/api/search", Some(scoped(json!({"tenant": true})))).await;
    assert_eq!(all["hits"].as_array().unwrap().len(), 7);
    let (_, nobody) = t.call("POST", "/api/search", Some(scoped(json!({"resource_id": "nobody"})))).await;
    assert_eq!(nobody["hits"], json!([]));
    let (_, other_tenant) = t.call_as("tenant-z", "POST", "/api/search", Some(json!({"query": "kitten"}))).await;
    assert_eq!(other_tenant["hits"], json!([]), "another tenant sees nothing");

    let (_, windowed) = t
        .call(
            "POST",
            "/api/search",
            Some(json!({"query": "kitchen walls paint", "mode": "vector", "top_k": 1, "scope": {"thread_id": a}, "window": {"before": 1, "after": 2}})),
        )
        .await;
    let hit = &windowed["hits"][0];
    assert_eq!(hit["message"]["content"], TEXTS[2]);
    assert_eq!(hit["before"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect::<Vec<_>>(), vec![json!(2)]);
    assert_eq!(
        hit["after"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(4), json!(5)]
    );

    let (_, strict) =
        t.call("POST", "/api/search", Some(json!({"query": "new pet cat", "mode": "vector", "min_score": 0.99}))).await;
    assert_eq!(strict["hits"], json!([]), "min_score drops weak hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_messages_and_threads_are_never_returned() {
    if !model_ready("deleted_messages_and_threads_are_never_returned") {
        return;
    }
    for index in ["hnsw", "exact", "libsql"] {
        let t = app(index).await;
        let (a, ids) = seed(&t, json!({}), TEXTS).await;
        let (b, _) = seed(&t, json!({}), &["a fluffy kitten sleeping on the sofa"]).await;
        let search = || t.call("POST", "/api/search", Some(json!({"query": "kitten", "top_k": 10})));
        let (status, _) = t.call("DELETE", &format!("/api/threads/{a}/messages/{}", ids[0]), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, v) = search().await;
        assert!(v["hits"].as_array().unwrap().iter().all(|h| h["message"]["id"] != ids[0].as_str()), "{index}: {v}");
        let (status, _) = t.call("DELETE", &format!("/api/threads/{b}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, v) = search().await;
        assert!(v["hits"].as_array().unwrap().iter().all(|h| h["thread_id"] != b.as_str()), "{index}: {v}");
        assert_error(
            &t.call("DELETE", &format!("/api/threads/{b}/messages/{}", ids[1]), None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_endpoint_and_truncation() {
    if !model_ready("embed_endpoint_and_truncation") {
        return;
    }
    let t = app("exact").await;
    let long = "word ".repeat(5_000);
    let (status, v) = t.call("POST", "/api/embed", Some(json!({"texts": ["hello world", long, ""]}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["dim"], 384);
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    for vec in vectors {
        let norm: f64 = vec.as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit length: {norm}");
    }
    let (status, _) = t
        .call(
            "POST",
            &format!("/api/threads/{}/messages", t.thread(json!({})).await),
            Some(json!({"role": "user", "content": long})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "an over-long message is stored and embedded truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_search_input_gets_a_clear_4xx() {
    bad_search_input(Store::Libsql, "exact").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_search_input_gets_a_clear_4xx_on_postgres() {
    bad_search_input(Store::Postgres, "pgvector").await;
}

async fn bad_search_input(store: Store, index: &str) {
    let index = index.to_owned();
    let Some(t) = TestApp::on(store, move |c| {
        c.embedding.mode = memlayer_app::EmbeddingMode::Inline;
        c.search.index = Some(serde_json::from_value(json!(index)).unwrap());
    })
    .await
    else {
        return;
    };
    let (id, _) = {
        let id = t.thread(json!({})).await;
        (id, ())
    };
    let (_, foreign) = t.call_as("tenant-b", "POST", "/api/threads", Some(json!({}))).await;
    let foreign = foreign["id"].as_str().unwrap().to_owned();
    let bad = StatusCode::BAD_REQUEST;
    let cases = vec![
        (json!({"query": ""}), bad),
        (json!({"query": "   "}), bad),
        (json!({"query": "x", "top_k": 0}), bad),
        (json!({"query": "x", "top_k": 101}), bad),
        (json!({"query": "x", "mode": "fuzzy"}), bad),
        (json!({"query": "x", "scope": {"galaxy": "far"}}), bad),
        (json!({"query": "x", "scope": {"thread_id": id, "resource_id": "u1"}}), bad),
        (json!({"query": "x", "scope": {"tenant": false}}), bad),
        (json!({"query": "x", "scope": {"thread_id": "nope"}}), bad),
        (json!({"query": "x", "scope": {"thread_id": foreign}, "mode": "lexical"}), StatusCode::NOT_FOUND),
        (json!({"query": "x", "window": {"before": 21}}), bad),
        (json!({"query": "x", "min_score": "high"}), bad),
        (json!({"query": "x", "colour": "red"}), bad),
        (json!({"query": "x".repeat(9000)}), bad),
        (json!({"texts": ["x"]}), bad),
    ];
    for (body, status) in cases {
        let got = t.call("POST", "/api/search", Some(body.clone())).await;
        assert_eq!(got.0, status, "{body}: {}", got.1);
        assert!(got.1["error"]["message"].is_string(), "{body}: {}", got.1);
    }
    let too_many: Vec<String> = (0..257).map(|i| i.to_string()).collect();
    assert_error(&t.call("POST", "/api/embed", Some(json!({"texts": too_many}))).await, bad, "invalid_request");
    assert_error(&t.call("POST", "/api/embed", Some(json!({"texts": []}))).await, bad, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_a_503_with_the_fix_and_loses_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let cache = empty.path().to_path_buf();
    let secret = cache.to_string_lossy().into_owned();
    let t = TestApp::with(move |c| {
        c.embedding.cache_dir = Some(cache);
        c.embedding.mode = memlayer_app::EmbeddingMode::Inline;
    })
    .await;
    let id = t.thread(json!({})).await;
    let (status, v) = t
        .call(
            "POST",
            &format!("/api/threads/{id}/messages"),
            Some(json!({"role": "user", "content": "the kitten is asleep"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "the message is stored even though it cannot be embedded: {v}");
    let got = t.call("POST", "/api/search", Some(json!({"query": "cat", "mode": "vector"}))).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("scripts/provision"), "{}", got.1);
    assert!(!got.1.to_string().contains(&secret), "the 503 names no path of the server: {}", got.1);
    let got = t.call("POST", "/api/embed", Some(json!({"texts": ["x"]}))).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable");
    assert!(!got.1.to_string().contains(&secret), "the 503 names no path of the server: {}", got.1);
    let (_, lexical) = t.call("POST", "/api/search", Some(json!({"query": "kitten", "mode": "lexical"}))).await;
    assert_eq!(first_content(&lexical), "the kitten is asleep", "lexical search still works: {lexical}");
    let (status, counts) = t.call("GET", &format!("/api/threads/{id}/embeddings"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (counts["pending"].clone(), counts["failing"].clone()),
        (json!(1), json!(1)),
        "visible as pending: {counts}"
    );
}
