//! Observability over HTTP on both backends: OTLP/HTTP ingest in both
//! encodings (gzip, partial success, idempotent retries, every kind of bad
//! input), the trace listing and tree, performance, costs, evaluations and
//! system metrics, tenant scoping, bound callers and the switch.

use std::io::Write as _;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_domain::observability::{MetricName, MetricSample, time_to_ns};
use memlayer_domain::{Credential, KeyId, Principal, ResourceId, Scope, Scopes, TenantId};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{Store, TestApp, Tokens, assert_error};

const SEC: u64 = 1_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn int(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn trace_id(n: u8) -> Vec<u8> {
    vec![0x40 + n; 16]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn span(trace: u8, id: u8, parent: Option<u8>, start: u64, len: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span {id}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + len,
        attributes,
        status: Some(Status { message: String::new(), code: 1 }),
        ..Span::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", service)], ..Resource::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test-lib".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Posts a raw body to `/v1/traces`.
async fn post(t: &TestApp, tenant: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method("POST").uri("/v1/traces").header("x-tenant-id", tenant);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = t.app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.into_body().collect().await.unwrap().to_bytes())
}

fn json_of(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

/// The JSON form of a request, as an OTLP/JSON exporter writes it.
fn otlp_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(req).unwrap()
}

async fn scenario(t: TestApp) {
    let now = u64::try_from(time_to_ns(memlayer_domain::now())).unwrap();
    let start = now - 600 * SEC;
    // Trace 1, protobuf and gzip: an agent's run with a model call and a tool call.
    let agent = span(
        1,
        1,
        None,
        start,
        3 * SEC,
        vec![text("gen_ai.operation.name", "invoke_agent"), text("gen_ai.agent.name", "support")],
    );
    let mut chat = span(
        1,
        2,
        Some(1),
        start + SEC / 10,
        SEC,
        vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", "gpt-4o"),
            int("gen_ai.usage.input_tokens", 1_000_000),
            int("gen_ai.usage.output_tokens", 500),
        ],
    );
    chat.events.push(span::Event {
        time_unix_nano: start + SEC / 5,
        name: "gen_ai.choice".into(),
        attributes: vec![text("content", "Your refund was sent.")],
        dropped_attributes_count: 0,
    });
    let tool = span(1, 3, Some(1), start + 2 * SEC, SEC / 2, vec![text("gen_ai.operation.name", "execute_tool")]);
    let first = request("support-bot", vec![agent, chat, tool]).encode_to_vec();
    let (status, headers, body) =
        post(&t, "acme", gzip(&first), &[("content-type", "application/x-protobuf"), ("content-encoding", "gzip")])
            .await;
    assert_eq!(status, StatusCode::OK, "{}", json_of(&body));
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(body).unwrap();
    assert_eq!(answer.partial_success, None, "everything stored as sent");

    // Trace 2, OTLP/JSON: an end before its start (rejected), an orphan, a
    // value past the attribute limit (cut with the marker).
    let mut backwards = span(2, 7, None, start + 10 * SEC, 0, vec![]);
    backwards.end_time_unix_nano = start;
    let orphan = span(2, 8, Some(9), start + 11 * SEC, SEC, vec![text("big", &"x".repeat(9000))]);
    let mut failed = span(2, 10, Some(8), start + 11 * SEC, SEC / 2, vec![text("note", "needle in a haystack")]);
    failed.status = Some(Status { message: "upstream 503".into(), code: 2 });
    let second = request("triage-bot", vec![backwards, orphan, failed]);
    let (status, headers, body) = post(&t, "acme", otlp_json(&second), &[("content-type", "application/json")]).await;
    let answer = json_of(&body);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("end_time_unix_nano is before start_time_unix_nano"), "{message}");
    assert!(message.contains("1 string values truncated to 8192 bytes"), "{message}");

    // A retried export stores nothing twice.
    let (status, _, _) = post(&t, "acme", first.clone(), &[("content-type", "application/x-protobuf")]).await;
    assert_eq!(status, StatusCode::OK);

    // The listing, newest first, and its filters.
    let (status, list) = t.call_as("acme", "GET", "/api/observability/traces", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["trace_id"], hex(&trace_id(2)), "newest first");
    let one = &items[1];
    assert_eq!(one["name"], "span 1");
    assert_eq!((&one["span_count"], &one["status"], &one["service"]), (&json!(3), &json!("ok"), &json!("support-bot")));
    assert_eq!((&one["model"], &one["agent"]), (&json!("gpt-4o"), &json!("support")));
    assert_eq!((&one["input_tokens"], &one["output_tokens"]), (&json!(1_000_000), &json!(500)));
    assert_eq!(one["duration_ms"], 3000.0);
    let two = &items[0];
    assert_eq!((&two["status"], &two["root_span_id"], &two["span_count"]), (&json!("error"), &Value::Null, &json!(2)));
    for (query, want) in [
        ("model=gpt-4o", vec![1]),
        ("status=error", vec![2]),
        ("q=needle", vec![2]),
        ("service=support-bot", vec![1]),
        ("agent=support", vec![1]),
        ("min_duration_ms=2000", vec![1]),
        ("sort=duration", vec![2, 1]),
    ] {
        let (status, list) = t.call_as("acme", "GET", &format!("/api/observability/traces?{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        let got: Vec<String> =
            list["items"].as_array().unwrap().iter().map(|i| i["trace_id"].as_str().unwrap().into()).collect();
        let want: Vec<String> = want.into_iter().map(|n| hex(&trace_id(n))).collect();
        assert_eq!(got, want, "{query}");
    }
    let (_, page) = t.call_as("acme", "GET", "/api/observability/traces?limit=1", None).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = t.call_as("acme", "GET", &format!("/api/observability/traces?limit=1&cursor={cursor}"), None).await;
    assert_eq!(next["items"][0]["trace_id"], hex(&trace_id(1)));
    assert_eq!(next["next_cursor"], Value::Null);
    let r = t
        .call_as("acme", "GET", &format!("/api/observability/traces?limit=1&model=gpt-4o&cursor={cursor}"), None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    // The tree of each trace.
    let (status, detail) =
        t.call_as("acme", "GET", &format!("/api/observability/traces/{}", hex(&trace_id(1))), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let spans = detail["spans"].as_array().unwrap();
    let shape: Vec<(String, u64)> =
        spans.iter().map(|s| (s["name"].as_str().unwrap().into(), s["depth"].as_u64().unwrap())).collect();
    assert_eq!(shape, [("span 1".into(), 0), ("span 2".into(), 1), ("span 3".into(), 1)]);
    assert_eq!(spans[1]["gen_ai"]["model"], "gpt-4o");
    assert_eq!(spans[1]["events"][0]["attributes"]["content"], "Your refund was sent.");
    assert_eq!(spans[0]["resource"]["service.name"], "support-bot");
    assert_eq!(spans[0]["scope"]["name"], "test-lib");
    assert_eq!(spans[0]["kind"], "server");
    let (_, detail) = t.call_as("acme", "GET", &format!("/api/observability/traces/{}", hex(&trace_id(2))), None).await;
    assert_eq!(detail["orphans"], 1);
    let spans = detail["spans"].as_array().unwrap();
    assert_eq!((&spans[0]["orphan"], &spans[0]["span_id"]), (&json!(true), &json!("0808080808080808")));
    assert_eq!((&spans[1]["depth"], &spans[1]["status"]["message"]), (&json!(1), &json!("upstream 503")));
    let big = spans[0]["attributes"]["big"].as_str().unwrap();
    assert!(big.starts_with(&"x".repeat(8192)) && big.ends_with("…[truncated 808 bytes]"), "{}", &big[8180..]);
    assert_eq!(spans[0]["truncated_attributes"], 1);

    // Another tenant sees none of it.
    let path = format!("/api/observability/traces/{}", hex(&trace_id(1)));
    assert_error(&t.call_as("other", "GET", &path, None).await, StatusCode::NOT_FOUND, "not_found");
    let (_, list) = t.call_as("other", "GET", "/api/observability/traces", None).await;
    assert_eq!(list["items"], json!([]));
    assert_error(
        &t.call_as("acme", "GET", "/api/observability/traces/xyz", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let zeros = format!("/api/observability/traces/{}", "0".repeat(32));
    assert_error(&t.call_as("acme", "GET", &zeros, None).await, StatusCode::NOT_FOUND, "not_found");

    // Performance and costs of the model call.
    let (status, perf) = t.call_as("acme", "GET", "/api/observability/performance", None).await;
    assert_eq!(status, StatusCode::OK, "{perf}");
    let series = perf["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "the agent's and the tool's spans are not model calls: {perf}");
    assert_eq!((&series[0]["model"], &series[0]["agent"]), (&json!("gpt-4o"), &json!("support")));
    assert_eq!(series[0]["total"]["calls"], 1);
    assert_eq!(series[0]["total"]["latency_ms"]["p50"], 1000.0);
    assert_eq!(series[0]["total"]["tokens_per_second"], 500.0);
    assert_eq!(perf["bucket_secs"], 1440);
    let model = json!({"name": "gpt-4o", "provider": "openai", "context_window": 128000, "max_output_tokens": 16384,
                       "input_price": 2.5, "output_price": 10});
    let (status, _) = t.call_as("acme", "POST", "/api/models", Some(model)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, costs) = t.call_as("acme", "GET", "/api/observability/costs", None).await;
    assert_eq!(status, StatusCode::OK, "{costs}");
    assert_eq!(costs["daily"].as_array().unwrap().len(), 30);
    let total = costs["total"]["cost"].as_f64().unwrap();
    assert!((total - 2.505).abs() < 1e-9, "1M input tokens at 2.5, 500 output at 10 per million: {costs}");
    assert_eq!(costs["rows"][0]["agent"], "support");
    assert_eq!(costs["by_model"][0]["input_price"], 2.5);
    assert_eq!(costs["projection"]["method"], "linear_least_squares");
    assert_eq!(costs["projection"]["daily"].as_array().unwrap().len(), 30);
    assert_eq!(costs["unpriced_models"], json!([]));

    // Evaluations.
    let run = |model: &str, acc: Value| {
        json!({"name": "nightly", "model": model, "dataset": "refunds", "metrics": {"accuracy": acc, "latency_ms": 840},
               "examples": [{"input": "Where is my refund?", "expected": "Monday", "output": "Monday", "scores": {"accuracy": 1}},
                            {"input": {"q": 2}, "output": null}],
               "metadata": {"commit": "abc"}})
    };
    let (status, a) =
        t.call_as("acme", "POST", "/api/observability/evaluations", Some(run("gpt-4o", json!(0.92)))).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!((&a["example_count"], &a["metrics"]["accuracy"]), (&json!(2), &json!(0.92)));
    let (_, b) = t.call_as("acme", "POST", "/api/observability/evaluations", Some(run("claude", json!(0.88)))).await;
    let bad = t.call_as("acme", "POST", "/api/observability/evaluations", Some(run("x", json!("high")))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(bad.1["error"]["message"], "metrics.accuracy: must be a number, found \"high\"");
    let none = json!({"dataset": "d", "metrics": {}});
    assert_error(
        &t.call_as("acme", "POST", "/api/observability/evaluations", Some(none)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let (_, list) = t.call_as("acme", "GET", "/api/observability/evaluations?dataset=refunds&limit=1", None).await;
    assert_eq!(list["items"][0]["id"], b["id"], "newest first");
    let cursor = list["next_cursor"].as_str().unwrap();
    let (_, rest) = t
        .call_as(
            "acme",
            "GET",
            &format!("/api/observability/evaluations?dataset=refunds&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["id"], a["id"]);
    let id = a["id"].as_str().unwrap();
    let (_, got) = t.call_as("acme", "GET", &format!("/api/observability/evaluations/{id}"), None).await;
    assert_eq!(got, a);
    let (_, ex) =
        t.call_as("acme", "GET", &format!("/api/observability/evaluations/{id}/examples?limit=1"), None).await;
    assert_eq!((&ex["items"][0]["index"], &ex["items"][0]["expected"]), (&json!(0), &json!("Monday")));
    let cursor = ex["next_cursor"].as_str().unwrap();
    let (_, ex) =
        t.call_as("acme", "GET", &format!("/api/observability/evaluations/{id}/examples?cursor={cursor}"), None).await;
    assert_eq!(
        (&ex["items"][0]["output"], &ex["items"][0]["expected"], &ex["next_cursor"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let ids = format!("{},{}", a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (status, cmp) =
        t.call_as("acme", "GET", &format!("/api/observability/evaluations/compare?ids={ids}"), None).await;
    assert_eq!(status, StatusCode::OK, "{cmp}");
    assert_eq!(cmp["metrics"][0], json!({"name": "accuracy", "values": [0.92, 0.88], "min": 0.88, "max": 0.92}));
    let (_, by_dataset) =
        t.call_as("acme", "GET", "/api/observability/evaluations/compare?dataset=refunds", None).await;
    assert_eq!(by_dataset["runs"].as_array().unwrap().len(), 2);
    assert_error(
        &t.call_as("other", "GET", &format!("/api/observability/evaluations/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let r = t.call_as("other", "GET", &format!("/api/observability/evaluations/compare?ids={ids}"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // System metrics, bucketed.
    let at = time_to_ns(memlayer_domain::now());
    let sample = |at_ns, value| MetricSample { name: MetricName::ProcessCpu, instance: "host-1".into(), at_ns, value };
    t.services
        .observability
        .store()
        .record_metrics(vec![sample(at - 30 * 1_000_000_000, 0.2), sample(at - 20 * 1_000_000_000, 0.4)])
        .await
        .unwrap();
    let (status, m) = t
        .call_as("acme", "GET", "/api/observability/metrics?name=process.cpu.utilization&bucket_secs=3600", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["series"][0]["unit"], "1");
    let points = m["series"][0]["points"].as_array().unwrap();
    let samples: i64 = points.iter().map(|p| p["samples"].as_i64().unwrap()).sum();
    assert_eq!(samples, 2, "{m}");
    let r = t.call_as("acme", "GET", "/api/observability/metrics?name=cpu", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
}

async fn bad_input(t: &TestApp) {
    let pb = [("content-type", "application/x-protobuf")];
    let (status, _, body) = post(t, "acme", vec![0xff, 0xff, 0xff], &pb).await;
    assert_eq!((status, &json_of(&body)["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_otlp")));
    let (status, _, body) =
        post(t, "acme", b"{\"resourceSpans\": [".to_vec(), &[("content-type", "application/json")]).await;
    assert_eq!((status, &json_of(&body)["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_otlp")));
    let wrong = br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#.to_vec();
    let (status, _, body) = post(t, "acme", wrong, &[("content-type", "application/json")]).await;
    let e = json_of(&body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{e}");
    let (status, _, body) = post(
        t,
        "acme",
        b"not gzip".to_vec(),
        &[("content-type", "application/x-protobuf"), ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!((status, &json_of(&body)["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_otlp")));
    let (status, _, body) = post(t, "acme", b"x".to_vec(), &[("content-type", "text/plain")]).await;
    assert_eq!(
        (status, &json_of(&body)["error"]["code"]),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, &json!("unsupported_media_type"))
    );
    let (status, _, _) =
        post(t, "acme", b"x".to_vec(), &[("content-type", "application/x-protobuf"), ("content-encoding", "br")]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Past observability.max_spans_per_request (4 in this app): nothing stored.
    let many = request("s", (1..=5).map(|i| span(9, i, None, 5 * SEC, SEC, vec![])).collect()).encode_to_vec();
    let (status, _, body) = post(t, "acme", many, &pb).await;
    let e = json_of(&body);
    assert_eq!((status, &e["error"]["code"]), (StatusCode::PAYLOAD_TOO_LARGE, &json!("payload_too_large")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("observability.max_spans_per_request"));
    // Past observability.max_request_bytes once inflated.
    let huge = gzip(&vec![0_u8; 70_000]);
    let (status, _, body) =
        post(t, "acme", huge, &[("content-type", "application/x-protobuf"), ("content-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", json_of(&body));
    let (_, list) = t.call_as("acme", "GET", &format!("/api/observability/traces/{}", hex(&trace_id(9))), None).await;
    assert_eq!(list["error"]["code"], "not_found");
}

fn limited(c: &mut memlayer_app::Config) {
    c.embedding.enabled = false;
    c.observability.max_spans_per_request = 4;
    c.observability.max_request_bytes = 65_536;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_over_http() {
    let t = TestApp::with(limited).await;
    bad_input(&t).await;
    scenario(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_over_http_on_postgres() {
    if let Some(t) = TestApp::on(Store::Postgres, limited).await {
        bad_input(&t).await;
        scenario(t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_is_refused_and_a_disabled_server_answers_404() {
    let mut t = TestApp::with(|c| c.embedding.enabled = false).await;
    let key = "ml_00000000000000a1_".to_owned() + &"0".repeat(64);
    let bound = Principal {
        tenant: TenantId::parse("acme").unwrap(),
        scopes: Scopes::only(Scope::Read).with(Scope::Write).with(Scope::Admin),
        resource: Some(ResourceId::parse("alice").unwrap()),
        credential: Credential::ApiKey(KeyId::parse("00000000000000a1").unwrap()),
    };
    t.authenticate_with(Tokens([(key.clone(), bound)].into_iter().collect()));
    for path in ["/api/observability/traces", "/api/observability/costs", "/api/observability/metrics"] {
        assert_error(&t.call_bearer(&key, "GET", path, None).await, StatusCode::FORBIDDEN, "resource_bound");
    }
    let auth = format!("Bearer {key}");
    let body = request("s", vec![span(1, 1, None, 5 * SEC, SEC, vec![])]).encode_to_vec();
    let (status, _, body) =
        post(&t, "acme", body, &[("content-type", "application/x-protobuf"), ("authorization", &auth)]).await;
    assert_eq!((status, &json_of(&body)["error"]["code"]), (StatusCode::FORBIDDEN, &json!("resource_bound")));

    let off = TestApp::with(|c| {
        c.embedding.enabled = false;
        c.observability.enabled = false;
    })
    .await;
    let r = off.call_as("acme", "GET", "/api/observability/traces", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let body = request("s", vec![span(1, 1, None, 5 * SEC, SEC, vec![])]).encode_to_vec();
    let (status, _, _) = post(&off, "acme", body, &[("content-type", "application/x-protobuf")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---- memlayer tracing itself (the real binary: the layer is the process's) ----

const NO_MODEL: (&str, &str) = ("MEMLAYER_EMBEDDING__ENABLED", "false");

async fn send(http: &reqwest::Client, req: reqwest::RequestBuilder) -> Value {
    let r = req.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    let _ = http;
    body
}

/// A thread with two messages, then a lexical search of them: the requests
/// whose traces the tests look for.
async fn traced_requests(http: &reqwest::Client, base: &str) {
    let model = json!({"name": "gpt-4o", "provider": "openai", "context_window": 128_000, "max_output_tokens": 4096});
    let model = send(http, http.post(format!("{base}/api/models")).json(&model)).await;
    send(http, http.post(format!("{base}/api/agents")).json(&json!({"name": "support", "model_id": model["id"]})))
        .await;
    let thread = send(http, http.post(format!("{base}/api/threads")).json(&json!({"agent_id": "support"}))).await;
    let thread = thread["id"].as_str().unwrap();
    let batch =
        json!({"messages": [{"role": "user", "content": "refund one"}, {"role": "user", "content": "refund two"}]});
    send(http, http.post(format!("{base}/api/threads/{thread}/messages")).json(&batch)).await;
    let search = json!({"query": "refund", "mode": "lexical", "scope": {"thread_id": thread}});
    send(http, http.post(format!("{base}/api/search")).json(&search)).await;
}

/// The traces of `tenant` on the server at `base`, polled until one is
/// named `name` (or 20 s passed: then the last listing).
async fn wait_for_trace(http: &reqwest::Client, base: &str, tenant: &str, name: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for _ in 0..200 {
        let list =
            send(http, http.get(format!("{base}/api/observability/traces?limit=100")).header("x-tenant-id", tenant))
                .await;
        items = list["items"].as_array().unwrap().clone();
        if items.iter().any(|t| t["name"] == name) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    items
}

async fn spans_of(http: &reqwest::Client, base: &str, tenant: &str, traces: &[Value], name: &str) -> Vec<Value> {
    let trace = traces.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("a trace {name} in {traces:#?}"));
    let id = trace["trace_id"].as_str().unwrap();
    let detail =
        send(http, http.get(format!("{base}/api/observability/traces/{id}")).header("x-tenant-id", tenant)).await;
    detail["spans"].as_array().unwrap().clone()
}

fn span_named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("a span {name} in {spans:#?}"))
}

/// With `observability.self_tracing.ratio = 1`, the trace of a request is
/// in the server's own store under the configured tenant: the request's
/// span (kind server, its route and status) with the operations it ran as
/// children (append; search with its lexical leg and hydration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_traces_its_own_requests_into_its_observability_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        NO_MODEL,
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__ENABLED", "true"),
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__RATIO", "1.0"),
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__TENANT", "ops"),
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__LINGER_MS", "20"),
    ];
    let (child, base) = crate::support::spawn_server(dir.path(), &env, &[], std::time::Duration::from_secs(60));
    let server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    traced_requests(&http, &server.base).await;

    let append = "POST /api/threads/{id}/messages";
    let traces = wait_for_trace(&http, &server.base, "ops", append).await;
    let spans = spans_of(&http, &server.base, "ops", &traces, append).await;
    let root = span_named(&spans, append);
    assert_eq!((root["kind"].as_str(), root["depth"].as_u64()), (Some("server"), Some(0)), "{root:#}");
    assert_eq!(root["attributes"]["http.route"], "/api/threads/{id}/messages");
    assert_eq!(root["attributes"]["http.response.status_code"], 201);
    assert_eq!(root["attributes"]["tenant"], "default", "the caller's tenant, recorded on the span");
    assert_eq!(root["resource"]["service.name"], "memlayer");
    let append_span = span_named(&spans, "memory.append");
    assert_eq!(append_span["parent_span_id"], root["span_id"]);
    assert_eq!(append_span["attributes"]["messages"], 2);

    let search = "POST /api/search";
    let traces = wait_for_trace(&http, &server.base, "ops", search).await;
    let spans = spans_of(&http, &server.base, "ops", &traces, search).await;
    let search_span = span_named(&spans, "search");
    assert_eq!(search_span["parent_span_id"], span_named(&spans, search)["span_id"]);
    for leg in ["search.lexical", "search.hydrate"] {
        assert_eq!(span_named(&spans, leg)["parent_span_id"], search_span["span_id"], "{leg}");
    }
    // The caller's own tenant holds none of it.
    let theirs = send(&http, http.get(format!("{}/api/observability/traces", server.base))).await;
    assert_eq!(theirs["items"], json!([]));
}

/// With `ratio = 0` the same requests write no trace. The server is then
/// stopped (its writer writes what is queued on the way out) and read
/// back with self-tracing off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_ratio_0_traces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        NO_MODEL,
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__ENABLED", "true"),
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__RATIO", "0"),
        ("MEMLAYER_OBSERVABILITY__SELF_TRACING__TENANT", "ops"),
    ];
    let (child, base) = crate::support::spawn_server(dir.path(), &env, &[], std::time::Duration::from_secs(60));
    let mut server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    traced_requests(&http, &server.base).await;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(server.child.wait().unwrap().success());
    drop(server);
    let (child, base) = crate::support::spawn_server(dir.path(), &[NO_MODEL], &[], std::time::Duration::from_secs(60));
    let server = crate::support::Server { child, base };
    let list =
        send(&http, http.get(format!("{}/api/observability/traces", server.base)).header("x-tenant-id", "ops")).await;
    assert_eq!(list["items"], json!([]), "ratio 0 writes no trace");
}

/// `observability.self_tracing.otlp_endpoint`: the spans are exported over
/// OTLP/HTTP (protobuf, the OpenTelemetry SDK's exporter) to a collector,
/// here a second memlayer server's own `POST /v1/traces` on loopback, with
/// the configured headers; with `store = false` the first server keeps none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_exports_its_own_spans_to_an_otlp_collector() {
    let collector_dir = tempfile::tempdir().unwrap();
    let (child, collector) =
        crate::support::spawn_server(collector_dir.path(), &[NO_MODEL], &[], std::time::Duration::from_secs(60));
    let collector = crate::support::Server { child, base: collector };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("memlayer.toml");
    std::fs::write(
        &config,
        format!(
            "[observability.self_tracing]\nenabled = true\nratio = 1.0\nstore = false\nlinger_ms = 20\n\
             otlp_endpoint = \"{}/v1/traces\"\notlp_headers = {{ \"x-tenant-id\" = \"collected\" }}\n",
            collector.base
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (child, base) = crate::support::spawn_server(
        dir.path(),
        &[NO_MODEL, ("MEMLAYER_CONFIG", config)],
        &[],
        std::time::Duration::from_secs(60),
    );
    let server = crate::support::Server { child, base };
    let http = reqwest::Client::new();
    traced_requests(&http, &server.base).await;

    let append = "POST /api/threads/{id}/messages";
    let traces = wait_for_trace(&http, &collector.base, "collected", append).await;
    let spans = spans_of(&http, &collector.base, "collected", &traces, append).await;
    let root = span_named(&spans, append);
    assert_eq!(root["kind"], "server");
    assert_eq!(root["resource"]["service.name"], "memlayer");
    assert_eq!(root["scope"]["name"], "memlayer");
    assert_eq!(span_named(&spans, "memory.append")["parent_span_id"], root["span_id"]);
    let kept =
        send(&http, http.get(format!("{}/api/observability/traces", server.base)).header("x-tenant-id", "memlayer"))
            .await;
    assert_eq!(kept["items"], json!([]), "store = false: nothing in the first server's store");
}
