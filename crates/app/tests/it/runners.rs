//! The `http` and `openai` step runners against local fake servers:
//! success (signature, idempotency key, the body; the model, system prompt
//! and usage), an error answer, a malformed reply, a reply slower than the
//! step's timeout, nothing listening.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use memlayer_app::Secret;
use memlayer_app::runners::{HttpRunner, OpenAiRunner, webhook_signature};
use memlayer_domain::{
    AgentName, Metadata, NewStep, NewWorkflow, RunnerSpec, StepName, TenantId, ThreadId, WorkflowState, now,
};
use memlayer_ports::{StepOutcome, StepRun, StepRunner, StoreError};
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Error,
    Malformed,
    Slow,
    ToolCalls,
}

#[derive(Default)]
struct Seen {
    headers: Vec<HeaderMap>,
    bodies: Vec<(Vec<u8>, Value)>,
}

struct Fake {
    mode: Mode,
    seen: Mutex<Seen>,
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut seen = fake.seen.lock().unwrap();
        seen.headers.push(headers);
        seen.bodies.push((body.to_vec(), parsed.clone()));
    }
    match fake.mode {
        Mode::Error => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Malformed => (StatusCode::OK, "{not json").into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, "{}").into_response()
        }
        Mode::ToolCalls => axum::Json(json!({
            "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"rust\"}"}}
            ]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}
        }))
        .into_response(),
        Mode::Ok if parsed.get("messages").is_some() => axum::Json(json!({
            "choices": [{"message": {"role": "assistant", "content": "the summary"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500}
        }))
        .into_response(),
        Mode::Ok => axum::Json(json!({"text": "done", "input_was": parsed["input"]})).into_response(),
    }
}

async fn serve(mode: Mode) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake { mode, seen: Mutex::default() });
    let app = axum::Router::new()
        .route("/hook", post(answer))
        .route("/v1/chat/completions", post(answer))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}"))
}

fn run_for(url: &str, timeout_ms: u64) -> StepRun {
    let mut step =
        NewStep::new(StepName::parse("write").unwrap(), AgentName::parse("writer").unwrap(), json!({"q": 1}));
    let runner = RunnerSpec::Http { url: format!("{url}/hook") };
    step.runner = Some(runner.clone());
    step.timeout_ms = timeout_ms;
    let new = NewWorkflow {
        resource: None,
        name: "wf".into(),
        description: String::new(),
        metadata: Metadata::default(),
        steps: vec![step],
    };
    let (state, _) = WorkflowState::create(TenantId::parse("acme").unwrap(), new, now()).unwrap();
    let step = state.steps[0].clone();
    StepRun {
        workflow: state.workflow,
        idempotency_key: step.idempotency_key(),
        step,
        thread: ThreadId::new(),
        runner,
        context: vec![
            json!({"role": "system", "content": "You write."}),
            json!({"role": "user", "content": "{\"q\":1}"}),
        ],
        assembled: true,
        model: Some("gpt-test".into()),
        system_prompt: Some("You write.".into()),
        tools: vec![lookup_tool()],
        prices: Some((2.0, 8.0)),
    }
}

fn lookup_tool() -> Value {
    json!({"type": "function", "function": {"name": "lookup", "description": "Looks up", "parameters": {"type": "object"}}})
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn http() -> HttpRunner {
    HttpRunner::new(Some(Secret::new(SECRET))).unwrap()
}

fn openai(url: &str) -> OpenAiRunner {
    OpenAiRunner::new(&format!("{url}/v1"), Some(Secret::new("sk-test-secret-key")), "fallback").unwrap()
}

fn unavailable(r: Result<StepOutcome, StoreError>) -> String {
    match r {
        Err(StoreError::Unavailable(reason)) => {
            assert!(!reason.contains("sk-test-secret-key") && !reason.contains("127.0.0.1"), "{reason}");
            reason
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn invalid(r: Result<StepOutcome, StoreError>) -> String {
    match r {
        Err(StoreError::Invalid(e)) => {
            assert_eq!(e.field, "reply");
            e.reason
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn http_posts_the_signed_step_and_takes_the_reply_as_output() {
    let (fake, url) = serve(Mode::Ok).await;
    let run = run_for(&url, 5_000);
    let key = run.idempotency_key.clone();
    let out = http().run(run.clone()).await.unwrap();
    assert_eq!(out.output, json!({"text": "done", "input_was": {"q": 1}}));
    let seen = fake.seen.lock().unwrap();
    let (raw, body) = &seen.bodies[0];
    assert_eq!(body["idempotency_key"], json!(key));
    assert_eq!(body["step"], json!("write"));
    assert_eq!(body["thread_id"], json!(run.thread));
    assert_eq!(body["context"], json!(run.context));
    assert_eq!(body["context_assembled"], json!(true));
    assert_eq!(body["tools"], json!([lookup_tool()]));
    assert_eq!(body["model"], json!("gpt-test"));
    let h = &seen.headers[0];
    let header = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("idempotency-key"), key);
    assert_eq!(header("webhook-id"), key);
    let ts: u64 = header("webhook-timestamp").parse().unwrap();
    assert_eq!(header("webhook-signature"), webhook_signature(SECRET, &key, ts, raw), "signed over id, time and body");
}

#[tokio::test]
async fn http_errors_malformed_replies_and_slow_answers_fail_the_attempt() {
    let (_, url) = serve(Mode::Error).await;
    assert!(unavailable(http().run(run_for(&url, 5_000)).await).contains("HTTP 500"));
    let (_, url) = serve(Mode::Malformed).await;
    assert!(invalid(http().run(run_for(&url, 5_000)).await).contains("malformed JSON"));
    let (_, url) = serve(Mode::Slow).await;
    assert!(unavailable(http().run(run_for(&url, 100)).await).contains("no answer within 100 ms"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    assert!(unavailable(http().run(run_for(&format!("http://{addr}"), 5_000)).await).contains("cannot connect"));
}

#[tokio::test]
async fn openai_sends_the_agents_model_prompt_and_thread_and_records_usage() {
    let (fake, url) = serve(Mode::Ok).await;
    let out = openai(&url).run(run_for(&url, 5_000)).await.unwrap();
    assert_eq!(out.output["text"], json!("the summary"));
    assert_eq!(out.output["usage"], json!({"prompt_tokens": 1000, "completion_tokens": 500, "cost": 0.006}));
    assert_eq!(out.messages, vec!["the summary".to_owned()], "appended to the step's thread");
    let seen = fake.seen.lock().unwrap();
    let body = &seen.bodies[0].1;
    assert_eq!(body["model"], json!("gpt-test"));
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "You write."}));
    assert_eq!(body["messages"][1], json!({"role": "user", "content": "{\"q\":1}"}));
    assert_eq!(body["messages"].as_array().unwrap().len(), 2, "the system prompt is sent once");
    assert_eq!(body["tools"], json!([lookup_tool()]), "the agent's tools");
    assert_eq!(seen.headers[0].get("authorization").unwrap(), "Bearer sk-test-secret-key");
}

#[tokio::test]
async fn openai_errors_malformed_replies_and_slow_answers_fail_the_attempt() {
    let (_, url) = serve(Mode::Error).await;
    assert!(unavailable(openai(&url).run(run_for(&url, 5_000)).await).contains("HTTP 500"));
    let (_, url) = serve(Mode::Malformed).await;
    assert!(invalid(openai(&url).run(run_for(&url, 5_000)).await).contains("malformed JSON"));
    let (_, url) = serve(Mode::Slow).await;
    assert!(unavailable(openai(&url).run(run_for(&url, 100)).await).contains("no answer within 100 ms"));
}

#[tokio::test]
async fn openai_tool_calls_are_kept_as_calls_and_no_tools_means_no_tools_field() {
    let (fake, url) = serve(Mode::ToolCalls).await;
    let out = openai(&url).run(run_for(&url, 5_000)).await.unwrap();
    assert_eq!(out.tool_calls.len(), 1);
    assert_eq!(out.tool_calls[0].id, "call_1");
    assert_eq!(out.tool_calls[0].name, "lookup");
    assert_eq!(out.tool_calls[0].arguments, json!({"q": "rust"}), "arguments parsed from their JSON text");
    assert_eq!(out.output["tool_calls"][0]["function"]["name"], json!("lookup"));
    let mut run = run_for(&url, 5_000);
    run.tools.clear();
    openai(&url).run(run).await.unwrap();
    let seen = fake.seen.lock().unwrap();
    assert!(seen.bodies[1].1.get("tools").is_none(), "an agent without tools sends no `tools`");
}

#[tokio::test]
async fn the_http_runner_refuses_a_run_whose_runner_is_not_http() {
    let (_, url) = serve(Mode::Ok).await;
    let mut run = run_for(&url, 5_000);
    run.runner = RunnerSpec::Openai;
    match http().run(run).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "runner"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
