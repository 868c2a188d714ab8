//! Bounded requests and responses: the caps that answer a 400 naming their
//! limit, and the response byte budget of message pages and searches.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tool_arguments_and_embed_input_are_a_400_naming_the_limit() {
    let t = TestApp::with(|c| c.embedding.enabled = false).await;
    let id = t.thread(json!({})).await;
    let msgs = format!("/api/threads/{id}/messages");
    let call = |i: usize, n: usize| json!({"id": format!("c{i}"), "name": "t", "arguments": {"blob": "x".repeat(n)}});
    // Two calls of 130 KiB each: each fits, together they pass 256 KiB.
    let body = json!({"role": "assistant", "tool_calls": [call(1, 130 * 1024), call(2, 130 * 1024)]});
    let got = t.call("POST", &msgs, Some(body)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("tool_calls") && message.contains("262144"), "{message}");
    let fits = json!({"role": "assistant", "tool_calls": [call(1, 100 * 1024), call(2, 100 * 1024)]});
    assert_eq!(t.call("POST", &msgs, Some(fits)).await.0, StatusCode::CREATED);
    let (_, page) = t.call("GET", &msgs, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "only the message within the cap was stored");

    // Embed: 256 texts at most (already), and 1 MiB of text together.
    let texts: Vec<String> = (0..5).map(|_| "y".repeat(300 * 1024)).collect();
    let got = t.call("POST", "/api/embed", Some(json!({"texts": texts}))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("texts") && message.contains("1048576"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_huge_messages_stops_at_the_budget_and_paging_on_returns_each_once() {
    const BUDGET: usize = 4 * 1024 * 1024;
    let t = TestApp::with(|c| {
        c.embedding.enabled = false;
        c.memory.max_response_bytes = BUDGET;
        c.server.body_limit_bytes = 8 * 1024 * 1024;
    })
    .await;
    let id = t.thread(json!({})).await;
    let msgs = format!("/api/threads/{id}/messages");
    let content = "z".repeat(memlayer_domain::MAX_CONTENT_BYTES);
    for _ in 0..4 {
        let batch: Vec<Value> = (0..5).map(|_| json!({"role": "user", "content": content})).collect();
        let (status, v) = t.call("POST", &msgs, Some(json!({"messages": batch}))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    for direction in ["forward", "backward"] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        let mut pages = 0;
        loop {
            let uri = format!("{msgs}?limit=1000&direction={direction}&cursor={cursor}");
            let (status, page) = t.call("GET", &uri, None).await;
            assert_eq!(status, StatusCode::OK);
            let items = page["items"].as_array().unwrap();
            assert!(!items.is_empty(), "never an empty page while messages remain");
            assert!(page.to_string().len() <= BUDGET, "{direction}: a page of {} bytes", page.to_string().len());
            seen.extend(items.iter().map(|m| m["seq"].as_i64().unwrap()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
        let mut want: Vec<i64> = (1..=20).collect();
        if direction == "backward" {
            want.reverse();
        }
        assert_eq!(seen, want, "{direction}: every message exactly once");
        assert!(pages >= 5, "{direction}: 20 MiB in pages of at most 4 MiB ({pages} pages)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_with_wide_windows_stays_within_the_budget_and_says_it_was_cut() {
    const BUDGET: usize = 1024 * 1024;
    let t = TestApp::with(|c| {
        c.embedding.enabled = false;
        c.memory.max_response_bytes = BUDGET;
    })
    .await;
    let id = t.thread(json!({})).await;
    let msgs = format!("/api/threads/{id}/messages");
    // 300 messages: every 3rd a short "needle" (100 hits), the others 32 KiB of filler.
    let filler = "filler ".repeat(32 * 1024 / 7);
    for chunk in 0..6 {
        let batch: Vec<Value> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                let content = if n % 3 == 0 { format!("needle {n}") } else { filler.clone() };
                json!({"role": "user", "content": content})
            })
            .collect();
        assert_eq!(t.call("POST", &msgs, Some(json!({"messages": batch}))).await.0, StatusCode::CREATED);
    }
    let search = |top_k: u32, window: u32| {
        json!({"query": "needle", "mode": "lexical", "top_k": top_k, "window": {"before": window, "after": window},
               "scope": {"thread_id": id}})
    };
    let (status, wide) = t.call("POST", "/api/search", Some(search(100, 20))).await;
    assert_eq!(status, StatusCode::OK, "{wide}");
    assert_eq!(wide["truncated"], true, "20 + 20 neighbours of 100 hits pass 1 MiB");
    assert!(wide.to_string().len() <= BUDGET + 64 * 1024, "{} bytes", wide.to_string().len());
    let hits = wide["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 100, "the hits are small: all fit, the windows are cut");
    let mut ids = HashSet::new();
    let mut neighbours = 0;
    for hit in hits {
        assert!(ids.insert(hit["message"]["id"].as_str().unwrap().to_owned()), "a hit twice");
        for side in ["before", "after"] {
            for m in hit[side].as_array().unwrap() {
                assert!(ids.insert(m["id"].as_str().unwrap().to_owned()), "a message twice: {}", m["seq"]);
                assert!(!m["content"].as_str().unwrap().starts_with("needle"), "a hit is never a neighbour");
                neighbours += 1;
            }
        }
    }
    assert!(neighbours > 0, "what fits of the windows is returned");
    // The best hit's window comes first: its neighbours are all there.
    let best = &hits[0];
    let seq = best["message"]["seq"].as_i64().unwrap();
    let before: Vec<i64> = best["before"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let want: Vec<i64> = (seq.saturating_sub(20).max(1)..seq).filter(|s| (s - 1) % 3 != 0).collect();
    assert_eq!(before, want, "the best hit's whole window, minus the hits in it");

    let (_, narrow) = t.call("POST", "/api/search", Some(search(10, 1))).await;
    assert_eq!(narrow["truncated"], false, "10 hits with a neighbour each side fit: {}", narrow.to_string().len());
    let hits = narrow["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h["before"].as_array().unwrap().len() == 1 || h["message"]["seq"] == 1), "{narrow}");

    // The document declares the field (schemathesis holds responses to it).
    let (_, doc) = t.call("GET", "/api/openapi.json", None).await;
    let response = &doc["components"]["schemas"]["SearchResponseDto"];
    assert_eq!(response["properties"]["truncated"]["type"], "boolean", "{response}");
    assert!(response["required"].as_array().unwrap().contains(&json!("truncated")), "{response}");
}
