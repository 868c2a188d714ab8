//! Thread summaries over HTTP: the current summary with its coverage, a
//! summary on demand, the kept versions, bad input, another tenant's thread,
//! and a summariser that is down (503 with the reason and `Retry-After`, the
//! job kept, done once the fake chat server recovers), on libSQL and
//! Postgres; and the local summariser with the provisioned model.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use memlayer_app::SummarizerKind;
use serde_json::{Value, json};

use crate::support::{Store, TestApp, assert_error, model_ready};

/// A fake chat-completions server: 500 until `healthy` is set, then a
/// summary naming how many messages it was sent.
/// A fake OpenAI-compatible chat server whose summary names how many user
/// messages it was given (500 while `healthy` is false).
pub(crate) async fn chat_server(healthy: Arc<AtomicBool>) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let healthy = healthy.clone();
            async move {
                if !healthy.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
                }
                let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
                let text = format!("summary of {} messages", prompt.matches("] user: ").count());
                axum::Json(json!({"choices": [{"message": {"content": text}}]})).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A test app whose summariser is [`chat_server`].
pub(crate) async fn app_with_chat(store: Store, healthy: Arc<AtomicBool>) -> Option<TestApp> {
    let url = chat_server(healthy).await;
    TestApp::on(store, move |c| {
        c.embedding.enabled = false;
        c.summary.summarizer = SummarizerKind::Openai;
        c.summary.openai.base_url = url;
        c.summary.openai.api_key = Some("sk-summary-secret".into());
        c.summary.openai.model = "gpt-fake".into();
        c.summary.openai.max_retries = 0;
        c.summary.threshold_tokens = 0;
        c.summary.step_messages = 3;
    })
    .await
}

async fn append(t: &TestApp, thread: &str, n: usize) {
    let messages: Vec<Value> = (0..n).map(|i| json!({"role": "user", "content": format!("question {i}")})).collect();
    let (status, v) =
        t.call("POST", &format!("/api/threads/{thread}/messages"), Some(json!({"messages": messages}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_on_demand_with_coverage_and_versions() {
    summaries_on_demand(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_on_demand_with_coverage_and_versions_on_postgres() {
    summaries_on_demand(Store::Postgres).await;
}

async fn summaries_on_demand(store: Store) {
    let Some(t) = app_with_chat(store, Arc::new(AtomicBool::new(true))).await else { return };
    let thread = t.thread(json!({"title": "refund"})).await;
    append(&t, &thread, 5).await;
    let uri = format!("/api/threads/{thread}/summary");
    let (status, v) = t.call("GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["summary"], Value::Null);
    assert_eq!((v["covers_through"].as_i64(), v["unsummarised_messages"].as_u64()), (Some(0), Some(5)), "{v}");
    assert!(v["unsummarised_tokens"].as_u64().unwrap() > 0 && v.get("advanced").is_none(), "{v}");
    // One step of at most summary.step_messages (3); the rest is queued.
    let (status, v) = t.call("POST", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["advanced"], true);
    assert_eq!(v["summary"]["text"], "summary of 3 messages", "{v}");
    assert_eq!((v["summary"]["version"].as_u64(), v["covers_through"].as_i64()), (Some(1), Some(3)));
    assert_eq!((v["covered_messages"].as_u64(), v["unsummarised_messages"].as_u64()), (Some(3), Some(2)));
    assert_eq!(v["summary"]["summarizer"], "openai:gpt-fake");
    assert_eq!(v["job"]["attempts"], 0, "the rest waits for the worker: {v}");
    let (status, v) = t.call("POST", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["covers_through"].as_i64(), v["unsummarised_messages"].as_u64()), (Some(5), Some(0)), "{v}");
    assert_eq!(v["job"], Value::Null, "caught up: the job is done");
    let (_, again) = t.call("POST", &uri, None).await;
    assert_eq!((again["advanced"].as_bool(), again["summary"]["version"].as_u64()), (Some(false), Some(2)));
    let (status, v) = t.call("GET", &format!("{uri}/versions"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let covers: Vec<i64> =
        v["items"].as_array().unwrap().iter().map(|s| s["covers_through"].as_i64().unwrap()).collect();
    assert_eq!(covers, vec![5, 3], "every version, newest first");
    let (_, one) = t.call("GET", &format!("{uri}/versions?limit=1"), None).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert_eq!(one["items"][0]["covers_through"], 5);
    let cursor = one["next_cursor"].as_str().expect("a second page").to_owned();
    let (status, two) = t.call("GET", &format!("{uri}/versions?limit=1&cursor={cursor}"), None).await;
    assert_eq!(status, StatusCode::OK, "{two}");
    assert_eq!(two["items"][0]["covers_through"], 3, "the next version, none skipped or repeated");
    assert_eq!(two["next_cursor"], Value::Null, "the end");
    assert_eq!(v["next_cursor"], Value::Null, "one page held them all");
    // A cursor of another listing (a message page's) is refused naming `cursor`.
    let (_, msgs) = t.call("GET", &format!("/api/threads/{thread}/messages?limit=1"), None).await;
    let foreign = msgs["next_cursor"].as_str().unwrap().to_owned();
    for bad in [format!("cursor={foreign}"), "cursor=not-a-cursor".to_owned()] {
        let got = t.call("GET", &format!("{uri}/versions?{bad}"), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(got.1["error"]["message"].as_str().unwrap().contains("cursor"), "{bad}: {}", got.1);
    }
    // The messages are as they were.
    let (_, page) = t.call("GET", &format!("/api/threads/{thread}/messages"), None).await;
    let contents: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, (0..5).map(|i| format!("question {i}")).collect::<Vec<_>>());
    // Bad input and other tenants.
    assert_error(
        &t.call("GET", "/api/threads/not-a-uuid/summary", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let unknown = "/api/threads/0193a000-0000-7000-8000-000000000000/summary";
    assert_error(&t.call("GET", unknown, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&t.call("POST", unknown, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&t.call_as("other", "GET", &uri, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&t.call_as("other", "POST", &uri, None).await, StatusCode::NOT_FOUND, "not_found");
    for bad in ["limit=0", "limit=1001", "limit=x", "size=3"] {
        let got = t.call("GET", &format!("{uri}/versions?{bad}"), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
        let field = bad.split('=').next().unwrap();
        assert!(got.1["error"]["message"].as_str().unwrap().contains(field), "{bad}: {}", got.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_summariser_is_a_503_with_the_reason_and_the_job_is_retried() {
    summariser_down(Store::Libsql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_summariser_is_a_503_with_the_reason_and_the_job_is_retried_on_postgres() {
    summariser_down(Store::Postgres).await;
}

async fn summariser_down(store: Store) {
    let healthy = Arc::new(AtomicBool::new(false));
    let Some(t) = app_with_chat(store, healthy.clone()).await else { return };
    let thread = t.thread(json!({})).await;
    append(&t, &thread, 2).await;
    let uri = format!("/api/threads/{thread}/summary");
    let (status, headers, body) = t.raw("POST", &uri).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "summarizer_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("openai:gpt-fake") && message.contains("HTTP 500"), "the reason: {message}");
    assert!(message.contains("kept and retried"), "{message}");
    assert!(!message.contains("sk-summary-secret") && !message.contains("127.0.0.1"), "{message}");
    assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let (_, v) = t.call("GET", &uri, None).await;
    assert_eq!((v["job"]["attempts"].as_u64(), v["summary"].clone()), (Some(1), Value::Null), "{v}");
    assert!(v["job"]["last_error"].as_str().unwrap().contains("HTTP 500"), "{v}");
    assert_eq!(v["unsummarised_messages"], 2, "nothing lost");
    healthy.store(true, Ordering::SeqCst);
    let later = memlayer_domain::now() + std::time::Duration::from_secs(60);
    let round = t.services.summaries.run_once_at(later).await.unwrap();
    assert_eq!((round.advanced, round.completed), (1, 1), "{round:?}");
    let (_, v) = t.call("GET", &uri, None).await;
    assert_eq!((v["summary"]["text"].as_str(), v["covers_through"].as_i64()), (Some("summary of 2 messages"), Some(2)));
    assert_eq!(v["job"], Value::Null, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_summariser_works_out_of_the_box() {
    if !model_ready("the_local_summariser_works_out_of_the_box") {
        return;
    }
    let t = TestApp::with(|c| c.summary.threshold_tokens = 0).await;
    let thread = t.thread(json!({})).await;
    let messages = json!({"messages": [
        {"role": "user", "content": "Hello. My kettle order A-17 arrived with a cracked lid and it leaks water."},
        {"role": "assistant", "content": "Sorry about the damaged kettle. I have opened a refund for order A-17."},
        {"role": "user", "content": "Great, thanks. Also the weather in Lisbon is lovely today."},
        {"role": "assistant", "content": "The refund for order A-17 was sent and arrives by Monday."}]});
    let (status, v) = t.call("POST", &format!("/api/threads/{thread}/messages"), Some(messages.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = t.call("POST", &format!("/api/threads/{thread}/summary"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = v["summary"]["text"].as_str().unwrap();
    assert!(text.contains("A-17"), "{text}");
    assert_eq!(v["summary"]["summarizer"], "local:extractive");
    // The same messages in another thread give the same summary.
    let other = t.thread(json!({})).await;
    t.call("POST", &format!("/api/threads/{other}/messages"), Some(messages)).await;
    let (_, w) = t.call("POST", &format!("/api/threads/{other}/summary"), None).await;
    assert_eq!(w["summary"]["text"], v["summary"]["text"], "deterministic");
}

/// `memlayer summary` against the binary on a data directory, with the
/// summariser chosen by environment variables (`MEMLAYER_SUMMARY__…`): a
/// summary now, the current one, the versions, and a summariser that is
/// down (exit 1 with the reason, the job kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_command_reads_and_makes_summaries() {
    let healthy = Arc::new(AtomicBool::new(false));
    let url = chat_server(healthy.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = memlayer_app::Config {
        data_dir: dir.path().to_path_buf(),
        embedding: memlayer_app::EmbeddingConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let thread = {
        let services = memlayer_app::build(config).await.unwrap();
        let tenant = memlayer_domain::TenantId::parse("acme").unwrap();
        let thread = services.memory.create_thread(&tenant, memlayer_domain::NewThread::default()).await.unwrap().id;
        let batch = (0..3)
            .map(|i| memlayer_domain::NewMessage::text(memlayer_domain::Role::User, format!("question {i}")).unwrap())
            .collect();
        services.memory.append_messages(&tenant, thread, batch, memlayer_app::AppendOptions::default()).await.unwrap();
        thread.to_string()
    };
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::BIN)
            .arg("summary")
            .args(args)
            .args(["--tenant", "acme", "--data-dir"])
            .arg(dir.path())
            .env_remove("MEMLAYER_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("LIBSQL_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("MEMLAYER_EMBEDDING__ENABLED", "false")
            .env("MEMLAYER_SUMMARY__SUMMARIZER", "openai")
            .env("MEMLAYER_SUMMARY__OPENAI__BASE_URL", &url)
            .env("MEMLAYER_SUMMARY__OPENAI__MODEL", "gpt-fake")
            .env("MEMLAYER_SUMMARY__OPENAI__API_KEY", "sk-cli-secret")
            .env("MEMLAYER_SUMMARY__OPENAI__MAX_RETRIES", "0")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, out, err) = cli(&[&thread, "--now"]);
    assert!(!ok && out.is_empty(), "{out}{err}");
    assert!(err.contains("HTTP 500") && err.contains("retried"), "{err}");
    assert!(!err.contains("sk-cli-secret"), "{err}");
    let (ok, out, err) = cli(&[&thread]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["job"]["attempts"].as_u64(), v["unsummarised_messages"].as_u64()), (Some(1), Some(3)), "{v}");
    healthy.store(true, Ordering::SeqCst);
    let (ok, out, err) = cli(&[&thread, "--now"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["summary"]["text"].as_str(), v["advanced"].as_bool()), (Some("summary of 3 messages"), Some(true)));
    assert_eq!(v["job"], Value::Null, "{v}");
    let (ok, out, err) = cli(&[&thread, "--versions", "--limit", "5"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["next_cursor"], Value::Null, "{v}");
    let (ok, _, err) = cli(&[&thread, "--versions", "--cursor", "not-a-cursor"]);
    assert!(!ok && err.contains("--cursor"), "{err}");
    let (ok, _, err) = cli(&["not-a-thread"]);
    assert!(!ok && err.contains("THREAD"), "{err}");
    let (ok, _, err) = cli(&[&thread, "--versions", "--limit", "0"]);
    assert!(!ok && err.contains("--limit"), "{err}");
}
