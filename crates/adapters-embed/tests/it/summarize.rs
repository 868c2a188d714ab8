//! The summarisers against real parts: `ChatSummarizer` against a local fake
//! chat-completions server (success, a 500 then success, 500s throughout, a
//! timeout, malformed replies, a refused key, a 429's `Retry-After`), and `ExtractiveSummarizer`
//! with the provisioned model (deterministic, on topic, within its target).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use memlayer_adapters_embed::{
    ChatConfig, ChatKey, ChatSummarizer, ExtractiveConfig, ExtractiveSummarizer, OnnxEmbedder,
};
use memlayer_domain::{Message, MessageId, Metadata, Role, ThreadId};
use memlayer_ports::{StoreError, Summarizer};
use serde_json::{Value, json};

/// What the fake answers to one request.
#[derive(Debug, Clone)]
enum Reply {
    Summary(&'static str),
    Status(u16),
    /// Answers after this long (past the client's timeout).
    Slow(Duration),
    Raw(&'static str),
    /// 429 with `Retry-After: <seconds>`.
    RateLimited(u64),
}

#[derive(Debug, Default)]
struct Fake {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(Option<String>, Value)>>,
}

async fn completions(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    fake.seen.lock().unwrap().push((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
    let reply = fake.script.lock().unwrap().pop_front().unwrap_or(Reply::Status(599));
    let answer =
        |text: &str| json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]});
    match reply {
        Reply::Summary(text) => axum::Json(answer(text)).into_response(),
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "{\"error\": \"boom\"}").into_response(),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            axum::Json(answer("too late")).into_response()
        }
        Reply::Raw(body) => ([("content-type", "application/json")], body).into_response(),
        Reply::RateLimited(secs) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())], "{\"error\": \"slow down\"}")
                .into_response()
        }
    }
}

/// A fake server answering with `script`, in order, and the client for it.
async fn serve(script: Vec<Reply>) -> (Arc<Fake>, ChatSummarizer) {
    let fake = Arc::new(Fake { script: Mutex::new(script.into()), seen: Mutex::default() });
    let app = axum::Router::new().route("/v1/chat/completions", post(completions)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = ChatConfig {
        api_key: Some(ChatKey::new("sk-test-secret-key")),
        timeout: Duration::from_millis(300),
        max_retries: 2,
        backoff: Duration::from_millis(10),
        ..ChatConfig::new(format!("http://{addr}/v1"), "gpt-test")
    };
    (fake, ChatSummarizer::new(config).unwrap())
}

fn message(seq: i64, role: Role, content: &str) -> Message {
    Message {
        id: MessageId::new(),
        thread_id: ThreadId::new(),
        seq,
        role,
        content: content.into(),
        tool_call_id: None,
        tool_name: None,
        tool_calls: Vec::new(),
        metadata: Metadata::default(),
        token_count: None,
        created_at: memlayer_domain::now(),
    }
}

fn thread() -> Vec<Message> {
    vec![
        message(7, Role::User, "My kettle order A-17 arrived broken."),
        message(8, Role::Assistant, "I have refunded order A-17; the money arrives on Monday."),
    ]
}

fn unavailable(r: Result<String, StoreError>) -> String {
    match r {
        Err(StoreError::Unavailable(reason)) => {
            assert!(!reason.contains("sk-test-secret-key"), "the key leaked into {reason}");
            assert!(!reason.contains("127.0.0.1"), "the URL leaked into {reason}");
            reason
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reply_is_the_summary_and_the_request_carries_key_model_and_messages() {
    let (fake, s) = serve(vec![Reply::Summary("  The user's kettle A-17 was refunded.  ")]).await;
    let out = s.summarize(Some("Earlier: order placed.".into()), thread(), 200).await.unwrap();
    assert_eq!(out, "The user's kettle A-17 was refunded.");
    assert_eq!(s.name(), "openai:gpt-test");
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (auth, body) = &seen[0];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret-key"));
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["temperature"], 0);
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("Earlier: order placed."), "{prompt}");
    assert!(prompt.contains("[7] user: My kettle order A-17 arrived broken."), "{prompt}");
    assert!(prompt.contains("[8] assistant: I have refunded"), "{prompt}");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("200 tokens"));
}

#[tokio::test]
async fn a_500_is_retried_and_the_retry_answers() {
    let (fake, s) = serve(vec![Reply::Status(500), Reply::Status(503), Reply::Summary("recovered")]).await;
    assert_eq!(s.summarize(None, thread(), 100).await.unwrap(), "recovered");
    assert_eq!(fake.seen.lock().unwrap().len(), 3, "two retries");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    // The configured backoff is 10 ms; the server asks for a second.
    let (fake, s) = serve(vec![Reply::RateLimited(1), Reply::Summary("Refunded.")]).await;
    let started = std::time::Instant::now();
    assert_eq!(s.summarize(None, thread(), 100).await.unwrap(), "Refunded.");
    assert!(started.elapsed() >= Duration::from_secs(1), "retried after {:?}", started.elapsed());
    assert_eq!(fake.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_max_backoff_is_not_waited_for() {
    // 120 s asked, 30 s at most waited inline: the caller's queue retries.
    let (fake, s) = serve(vec![Reply::RateLimited(120), Reply::Summary("too soon")]).await;
    let reason = unavailable(s.summarize(None, thread(), 100).await);
    assert!(reason.contains("HTTP 429") && reason.contains("retry after 120 s"), "{reason}");
    assert!(reason.contains("1 attempt"), "{reason}");
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn persistent_500s_are_unavailable_after_bounded_retries() {
    let (fake, s) = serve(vec![Reply::Status(500); 10]).await;
    let reason = unavailable(s.summarize(None, thread(), 100).await);
    assert!(reason.contains("HTTP 500") && reason.contains("3 attempts") && reason.contains("gpt-test"), "{reason}");
    assert_eq!(fake.seen.lock().unwrap().len(), 3, "1 + max_retries, no more");
}

#[tokio::test]
async fn a_timeout_is_retried_then_unavailable() {
    let slow = Reply::Slow(Duration::from_secs(3));
    let (fake, s) = serve(vec![slow.clone(), slow.clone(), slow]).await;
    let reason = unavailable(s.summarize(None, thread(), 100).await);
    assert!(reason.contains("no answer within 300 ms") && reason.contains("3 attempts"), "{reason}");
    assert_eq!(fake.seen.lock().unwrap().len(), 3);
    let (_, s) = serve(vec![Reply::Slow(Duration::from_secs(3)), Reply::Summary("second try")]).await;
    assert_eq!(s.summarize(None, thread(), 100).await.unwrap(), "second try", "a timeout then an answer");
}

#[tokio::test]
async fn malformed_replies_are_unavailable_without_retrying() {
    for (raw, what) in [
        ("not json at all", "not JSON"),
        ("{\"choices\": []}", "no choices[0].message.content"),
        ("{\"choices\": [{\"message\": {\"content\": 42}}]}", "no choices[0].message.content"),
        ("{\"choices\": [{\"message\": {\"content\": \"   \"}}]}", "an empty summary"),
    ] {
        let (fake, s) = serve(vec![Reply::Raw(raw), Reply::Summary("never asked")]).await;
        let reason = unavailable(s.summarize(None, thread(), 100).await);
        assert!(reason.contains("malformed reply") && reason.contains(what), "{raw}: {reason}");
        assert_eq!(fake.seen.lock().unwrap().len(), 1, "{raw}: not retried");
    }
}

#[tokio::test]
async fn a_refused_key_is_unavailable_at_once_and_never_named() {
    let (fake, s) = serve(vec![Reply::Status(401), Reply::Summary("never asked")]).await;
    let reason = unavailable(s.summarize(None, thread(), 100).await);
    assert!(reason.contains("HTTP 401") && reason.contains("1 attempt"), "{reason}");
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = ChatConfig { backoff: Duration::from_millis(1), ..ChatConfig::new(format!("http://{addr}/v1"), "m") };
    let reason = unavailable(ChatSummarizer::new(config).unwrap().summarize(None, thread(), 50).await);
    assert!(reason.contains("could not connect"), "{reason}");
}

/// The provisioned embedder, or `None` after a skip line (a failure with `CI`).
fn local() -> Option<ExtractiveSummarizer> {
    let config = super::onnx::provisioned()?;
    Some(ExtractiveSummarizer::new(Arc::new(OnnxEmbedder::new(config)), ExtractiveConfig::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_summary_is_deterministic_on_topic_and_within_its_target() {
    let Some(s) = local() else { return };
    let mut messages = vec![
        message(1, Role::User, "Hello! My kettle order A-17 arrived with a cracked lid and it leaks."),
        message(2, Role::Assistant, "I am sorry about the damaged kettle. I will open a refund for order A-17."),
        message(3, Role::User, "Thanks. By the way, the weather in Lisbon is lovely today."),
        message(4, Role::Assistant, "The refund for order A-17 has been sent and should arrive by Monday."),
        message(5, Role::User, "ok"),
    ];
    let first = s.summarize(None, messages.clone(), 48).await.unwrap();
    for _ in 0..3 {
        assert_eq!(s.summarize(None, messages.clone(), 48).await.unwrap(), first, "deterministic");
    }
    let tokens: usize = first.lines().map(|l| l.len().div_ceil(4) + 1).sum();
    assert!(tokens <= 48, "{tokens}: {first}");
    assert!(first.contains("A-17"), "{first}");
    assert!(!first.contains("Lisbon"), "off topic: {first}");
    messages.push(message(6, Role::User, "The refund for A-17 arrived today, thank you."));
    let folded = s.summarize(Some(first.clone()), messages.split_off(5), 64).await.unwrap();
    assert!(folded.contains("arrived today"), "{folded}");
    assert_eq!(
        s.summarize(Some(first), vec![message(6, Role::User, "The refund for A-17 arrived today, thank you.")], 64)
            .await
            .unwrap(),
        folded
    );
}
