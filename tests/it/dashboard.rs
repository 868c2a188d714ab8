//! The observability dashboard (`/observability`, issue 17).
//!
//! In process: its files are served public (even with authentication on),
//! with their content types, a strong `ETag` answered by 304, and a
//! Content-Security-Policy that allows this origin only; a path that is not
//! one of its files is 404.
//!
//! In a real browser: the `memlayer` binary with API keys on, seeded through
//! its API with known traces (OTLP/JSON on `POST /v1/traces`: two named
//! traces and a bulk of 2,000 over ten days), catalog prices, and three
//! evaluation runs, while it samples itself every second; headless Chromium
//! (Debian's `chromium` and `chromedriver`) driven over WebDriver by the
//! small client below loads every view, pastes the API key as a person
//! would, and checks that the seeded figures are on the page (names, counts,
//! costs, percentiles, metric values), that paging, sorting and filters
//! work over the 2,002 traces, that every chart was drawn, and that the
//! browser logged no error (console, CSP or failed load). Screenshots of
//! each view go to `target/tmp/dashboard-screenshots/`; with
//! `MEMLAYER_UPDATE_SCREENSHOTS=1` they are also copied to
//! `docs/screenshots/` (the README's).
//!
//! Chromium and chromedriver come from `scripts/provision` (apt), or
//! `MEMLAYER_CHROMIUM` / `MEMLAYER_CHROMEDRIVER` name them. Missing, the
//! browser test prints a `SKIP` line; with `CI` set it fails instead.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::TestApp;

// ------------------------------------------------------------------ in process

async fn get(app: &axum::Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test]
async fn the_dashboard_files_are_public_typed_validated_and_confined_to_this_origin() {
    let app = TestApp::with(|c| c.auth.mode = memlayer_app::AuthModes::parse("api_key").unwrap()).await;
    // The API itself still needs a credential.
    let (status, _, _) = get(&app.app, "/api/threads", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (uri, ty) in [
        ("/observability", "text/html; charset=utf-8"),
        ("/observability/", "text/html; charset=utf-8"),
        ("/observability/app.js", "text/javascript; charset=utf-8"),
        ("/observability/views/trace.js", "text/javascript; charset=utf-8"),
        ("/observability/style.css", "text/css; charset=utf-8"),
        ("/observability/vendor/chart.umd.min.js", "text/javascript; charset=utf-8"),
        ("/observability/favicon.svg", "image/svg+xml"),
    ] {
        let (status, h, body) = get(&app.app, uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri} without a credential");
        assert_eq!(h[header::CONTENT_TYPE], ty, "{uri}");
        assert!(!body.is_empty(), "{uri}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{uri}: {csp}");
        }
        assert!(
            !csp.contains("http") && !csp.contains("unsafe") && !csp.contains('*'),
            "{uri}: no remote origin: {csp}"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "strong tag: {etag}");
        // Revalidation: the same tag is 304 without a body; another is 200.
        let (status, h304, body) = get(&app.app, uri, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(body.is_empty());
        assert_eq!(h304[header::ETAG].to_str().unwrap(), etag);
        let (status, _, _) = get(&app.app, uri, &[("if-none-match", "\"stale\"")]).await;
        assert_eq!(status, StatusCode::OK);
    }
    // HEAD works as GET without a body.
    let req = Request::builder().method("HEAD").uri("/observability/app.js").body(Body::empty()).unwrap();
    let resp = app.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, h, body) = get(&app.app, "/observability/nope.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(h.contains_key(header::CONTENT_SECURITY_POLICY));
    let (status, _, _) = get(&app.app, "/observability/../Cargo.toml", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Not API operations: the document does not list them.
    let (_, _, doc) = get(&app.app, "/api/openapi.json", &[]).await;
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/observability")));

    // The page names nothing outside this origin.
    let (_, _, page) = get(&app.app, "/observability", &[]).await;
    let page = String::from_utf8(page).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "no remote URL in the page");
    assert!(page.contains("/observability/app.js"));

    // Off with the observability API.
    let off = TestApp::with(|c| c.observability.enabled = false).await;
    for uri in ["/observability", "/observability/app.js"] {
        let (status, _, body) = get(&off.app, uri, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"], "not_found");
    }
}

// ------------------------------------------------------------------ WebDriver

/// The few WebDriver commands the test needs (W3C, as chromedriver serves
/// them), over reqwest.
struct Driver {
    http: reqwest::Client,
    base: String,
    session: String,
    _process: Killed,
}

/// chromedriver, in a process group of its own with the browsers it
/// starts: dropped (a test that failed half way included), the whole group
/// is killed, so no browser outlives the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromium and chromedriver, from the environment or `PATH`.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(var).filter(|s| !s.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
    };
    Some((
        find("MEMLAYER_CHROMIUM", &["chromium", "chromium-browser"])?,
        find("MEMLAYER_CHROMEDRIVER", &["chromedriver"])?,
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Driver {
    async fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = free_port();
        let process = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let process = Killed(process);
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await.ok();
            let ready = match ready {
                Some(r) => r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                None => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--force-device-scale-factor=1", "--hide-scrollbars",
                         "--lang=en-US", "--no-first-run", "--disable-extensions", "--disable-breakpad",
                         "--disable-crash-reporter"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("a WebDriver session: {r}")).to_owned();
        Self { http, base, session, _process: process }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(r["value"].get("error").is_none(), "WebDriver {path}: {r}");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    async fn element(&self, css: &str) -> String {
        let v = self.cmd(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    /// Marks the page's render stale, so [`Self::settled`] waits for the
    /// next one (the app sets `data-state` on `<html>`: `loading`, then
    /// `ready` or `error`).
    async fn mark(&self) {
        self.js("document.documentElement.dataset.state = 'stale';").await;
    }

    /// The state (`ready` or `error`) of the first render of `view` since
    /// the last [`Self::mark`] (or since the page loaded).
    async fn settled(&self, view: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.js("const d = document.documentElement.dataset; return [d.view || '', d.state || ''];").await;
            let (name, state) = (v[0].as_str().unwrap(), v[1].as_str().unwrap());
            if name == view && (state == "ready" || state == "error") {
                return state.to_owned();
            }
            assert!(Instant::now() < deadline, "view {view} did not settle: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css` and waits for `view` to render again.
    async fn click_and_wait(&self, css: &str, view: &str) {
        self.mark().await;
        self.click(css).await;
        assert_eq!(self.settled(view).await, "ready", "after clicking {css}: {}", self.text().await);
    }

    /// Goes to `#hash` (rendering again if the page is there already) and
    /// waits until `view` is ready; returns the page's text.
    async fn view(&self, hash: &str, view: &str) -> String {
        self.mark().await;
        let script = format!(
            "const h = {}; if (window.location.hash === h) window.dispatchEvent(new HashChangeEvent('hashchange')); else window.location.hash = h;",
            json!(format!("#{hash}"))
        );
        self.js(&script).await;
        let state = self.settled(view).await;
        let text = self.text().await;
        assert_eq!(state, "ready", "#{hash} rendered an error: {text}");
        text
    }

    async fn text(&self) -> String {
        self.js("return document.body.innerText;").await.as_str().unwrap().to_owned()
    }

    /// The page's table rows matching `css` as cell texts.
    async fn rows(&self, css: &str) -> Vec<Vec<String>> {
        let v = self
            .js(&format!(
                "return [...document.querySelectorAll({})].map(tr => [...tr.cells].map(c => c.innerText.trim()));",
                json!(css)
            ))
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Every canvas of the page holds a drawn chart; returns how many.
    async fn charts_drawn(&self) -> usize {
        let v = self
            .js("return [...document.querySelectorAll('canvas')].map(c => { const ch = window.Chart && window.Chart.getChart(c); return Boolean(ch && c.width > 0 && ch.data.datasets.length); });")
            .await;
        let drawn: Vec<bool> = serde_json::from_value(v).unwrap();
        assert!(drawn.iter().all(|d| *d), "every canvas holds a drawn chart: {drawn:?}");
        drawn.len()
    }

    /// What the browser logged since the last call (console, CSP, loads).
    async fn logs(&self) -> Vec<Value> {
        let v = self.cmd(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Saves a screenshot of the whole page (up to 2,400 pixels high) as
    /// `name.png` in `dir`, through chromedriver's DevTools passthrough
    /// (WebDriver's own screenshot stops at the viewport).
    async fn screenshot(&self, dir: &Path, name: &str) {
        use base64::Engine as _;
        let height = self.js("return document.documentElement.scrollHeight;").await.as_u64().unwrap_or(1000);
        let clip = json!({"x": 0, "y": 0, "width": 1400, "height": height.clamp(600, 2400), "scale": 1});
        let shot = self
            .cmd(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({"cmd": "Page.captureScreenshot",
                            "params": {"format": "png", "captureBeyondViewport": true, "clip": clip}})),
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    async fn quit(&self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
    }
}

/// Fails on any SEVERE browser log entry (a console error, an uncaught
/// exception, a CSP violation or a failed load).
fn assert_no_errors(logs: &[Value], during: &str) {
    let severe: Vec<_> = logs.iter().filter(|l| l["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "browser errors during {during}: {severe:#?}");
}

// ------------------------------------------------------------------ seeding

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T2: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const T3: &str = "6bf92f3577b34da6a3ce929d0e0e4738";
/// Bulk traces besides the three named ones.
const BULK: u64 = 2000;

fn attr(key: &str, value: &Value) -> Value {
    let v = match value {
        Value::String(s) => json!({"stringValue": s}),
        Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        Value::Bool(b) => json!({"boolValue": b}),
        other => panic!("no OTLP value for {other}"),
    };
    json!({"key": key, "value": v})
}

fn attrs(pairs: &[(&str, Value)]) -> Vec<Value> {
    pairs.iter().map(|(k, v)| attr(k, v)).collect()
}

/// One OTLP/JSON span; times in nanoseconds since the epoch.
struct SpanSpec<'a> {
    trace: &'a str,
    id: String,
    parent: Option<&'a str>,
    name: String,
    kind: u8,
    start_ns: u128,
    dur_ms: f64,
    attributes: Vec<Value>,
    events: Vec<(&'a str, f64, Vec<Value>)>,
    error: Option<&'a str>,
}

fn span(s: SpanSpec<'_>) -> Value {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "test durations are small and positive")]
    let end = s.start_ns + (s.dur_ms * 1e6) as u128;
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|(name, at_ms, a)| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "small offsets")]
            let t = s.start_ns + (at_ms * 1e6) as u128;
            json!({"name": name, "timeUnixNano": t.to_string(), "attributes": a})
        })
        .collect();
    let status = match s.error {
        Some(m) => json!({"code": 2, "message": m}),
        None => json!({"code": 1}),
    };
    json!({
        "traceId": s.trace, "spanId": s.id, "parentSpanId": s.parent.unwrap_or(""), "name": s.name, "kind": s.kind,
        "startTimeUnixNano": s.start_ns.to_string(), "endTimeUnixNano": end.to_string(),
        "attributes": s.attributes, "events": events, "status": status,
    })
}

fn export(service: &str, spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": attrs(&[("service.name", json!(service)), ("telemetry.sdk.language", json!("rust"))])},
        "scopeSpans": [{"scope": {"name": "memlayer.dashboard-test", "version": "1.0.0"}, "spans": spans}],
    }]})
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

const MINUTE_NS: u128 = 60 * 1_000_000_000;

/// The three named traces: a support agent's refund (the longest trace, a
/// model call with a time to first token, a tool call, two events), a
/// triage whose model call failed, and a nightly summary on a model the
/// catalog does not price.
fn named_traces(now: u128) -> Value {
    let t1 = now - 5 * MINUTE_NS;
    let t2 = now - 4 * MINUTE_NS;
    let t3 = now - 3 * MINUTE_NS;
    let ms = |t: u128, off: f64| -> u128 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "small offsets")]
        let d = (off * 1e6) as u128;
        t + d
    };
    let spans = vec![
        span(SpanSpec {
            trace: T1,
            id: "00f067aa0ba902b7".into(),
            parent: None,
            name: "invoke_agent refund-desk".into(),
            kind: 2,
            start_ns: t1,
            dur_ms: 1234.5,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("invoke_agent")),
                ("gen_ai.agent.name", json!("support")),
            ]),
            events: vec![("gen_ai.user.message", 5.0, attrs(&[("content", json!("Where is my refund?"))]))],
            error: None,
        }),
        span(SpanSpec {
            trace: T1,
            id: "10f067aa0ba902b7".into(),
            parent: Some("00f067aa0ba902b7"),
            name: "chat gpt-4o".into(),
            kind: 3,
            start_ns: ms(t1, 100.0),
            dur_ms: 800.0,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.request.model", json!("gpt-4o")),
                ("gen_ai.usage.input_tokens", json!(1200)),
                ("gen_ai.usage.output_tokens", json!(450)),
                ("gen_ai.response.time_to_first_chunk", json!(0.21)),
            ]),
            events: vec![("gen_ai.choice", 750.0, attrs(&[("finish_reason", json!("stop"))]))],
            error: None,
        }),
        span(SpanSpec {
            trace: T1,
            id: "20f067aa0ba902b7".into(),
            parent: Some("00f067aa0ba902b7"),
            name: "execute_tool lookup_order".into(),
            kind: 1,
            start_ns: ms(t1, 950.0),
            dur_ms: 200.0,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("execute_tool")),
                ("gen_ai.tool.name", json!("lookup_order")),
            ]),
            events: vec![],
            error: None,
        }),
        span(SpanSpec {
            trace: T2,
            id: "30f067aa0ba902b7".into(),
            parent: None,
            name: "invoke_agent triage".into(),
            kind: 2,
            start_ns: t2,
            dur_ms: 950.0,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("invoke_agent")),
                ("gen_ai.agent.name", json!("triage")),
            ]),
            events: vec![],
            error: None,
        }),
        span(SpanSpec {
            trace: T2,
            id: "40f067aa0ba902b7".into(),
            parent: Some("30f067aa0ba902b7"),
            name: "chat claude-3-5-sonnet".into(),
            kind: 3,
            start_ns: ms(t2, 20.0),
            dur_ms: 900.0,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.request.model", json!("claude-3-5-sonnet")),
                ("gen_ai.usage.input_tokens", json!(300)),
                ("gen_ai.usage.output_tokens", json!(0)),
                ("error.type", json!("rate_limited")),
            ]),
            events: vec![],
            error: Some("rate limited by provider"),
        }),
        span(SpanSpec {
            trace: T3,
            id: "50f067aa0ba902b7".into(),
            parent: None,
            name: "summarize nightly".into(),
            kind: 1,
            start_ns: t3,
            dur_ms: 400.0,
            attributes: attrs(&[
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.request.model", json!("llama3")),
                ("gen_ai.usage.input_tokens", json!(500)),
                ("gen_ai.usage.output_tokens", json!(50)),
            ]),
            events: vec![],
            error: None,
        }),
    ];
    export("support-bot", spans)
}

/// Bulk trace `i`: a batch job with one model call, every 7 minutes back
/// over about ten days; even ones on gpt-4o (1,000 in, 500 out, 100 to 500
/// ms), odd ones on claude-3-5-sonnet (2,000 in, 100 out, 150 to 550 ms).
fn bulk_duration(i: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "small numbers")]
    let d = 100.0 + (i % 10) as f64 * 50.0;
    d
}

fn bulk_traces(now: u128) -> Value {
    let spans = (0..BULK)
        .flat_map(|i| {
            let start = now - (10 + u128::from(i) * 7) * MINUTE_NS;
            let trace = format!("{:032x}", 0xa000_0000_0000_0000_0000_0000_0000_0000_u128 + u128::from(i));
            let (model, input, output) =
                if i % 2 == 0 { ("gpt-4o", 1000, 500) } else { ("claude-3-5-sonnet", 2000, 100) };
            let dur = bulk_duration(i);
            let root = format!("{:016x}", 0x1000_0000_0000_0000_u64 + i);
            let child = format!("{:016x}", 0x2000_0000_0000_0000_u64 + i);
            let root_span = span(SpanSpec {
                trace: &trace,
                id: root.clone(),
                parent: None,
                name: format!("batch job {i}"),
                kind: 1,
                start_ns: start,
                dur_ms: dur + 20.0,
                attributes: attrs(&[
                    ("gen_ai.agent.name", json!("batch")),
                    ("gen_ai.operation.name", json!("invoke_agent")),
                ]),
                events: vec![],
                error: None,
            });
            let child_span = span(SpanSpec {
                trace: &trace,
                id: child,
                parent: Some(&root),
                name: format!("chat {model}"),
                kind: 3,
                start_ns: start + 10_000_000,
                dur_ms: dur,
                attributes: attrs(&[
                    ("gen_ai.operation.name", json!("chat")),
                    ("gen_ai.request.model", json!(model)),
                    ("gen_ai.usage.input_tokens", json!(input)),
                    ("gen_ai.usage.output_tokens", json!(output)),
                ]),
                events: vec![],
                error: None,
            });
            [root_span, child_span]
        })
        .collect();
    export("batch-worker", spans)
}

/// Nearest-rank percentile of `values`.
fn nearest_rank(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "small counts"
    )]
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    values[rank - 1]
}

/// `fmtMs` of the page for durations under a second.
fn ms_text(ms: f64) -> String {
    format!("{ms:.1} ms")
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: &Value) -> Value {
    let r = http.post(url).bearer_auth(key).json(body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn api(http: &reqwest::Client, base: &str, key: &str, path: &str) -> Value {
    let r = http.get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

fn create_key(dir: &Path) -> String {
    let out = Command::new(crate::support::BIN)
        .args(["keys", "create", "--tenant", "default", "--scopes", "read,write,admin", "--name", "dashboard"])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        // The test's own settings are not the binary's configuration.
        .env_remove("MEMLAYER_CHROMIUM")
        .env_remove("MEMLAYER_CHROMEDRIVER")
        .env_remove("MEMLAYER_UPDATE_SCREENSHOTS")
        .env("RUST_LOG", "error")
        .output()
        .expect("memlayer keys create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// Seeds prices, traces and evaluations; returns the evaluation runs made.
async fn seed(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    for (name, provider, input, output) in
        [("gpt-4o", "openai", 2.5, 10.0), ("claude-3-5-sonnet", "anthropic", 3.0, 15.0)]
    {
        let model = json!({"name": name, "provider": provider, "context_window": 128_000, "max_output_tokens": 4096,
                           "input_price": input, "output_price": output});
        post(http, &format!("{base}/api/models"), key, &model).await;
    }
    let now = now_ns();
    for batch in [named_traces(now), bulk_traces(now)] {
        let answer = post(http, &format!("{base}/v1/traces"), key, &batch).await;
        assert!(answer.get("partialSuccess").is_none(), "every span stored: {answer}");
    }
    let hours_ago = |h: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::hours(h))
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let examples = json!([
        {"input": "Where is my refund?", "expected": "sent Monday", "output": "It was sent on Monday.", "scores": {"accuracy": 1}},
        {"input": "Cancel order 1042", "expected": "cancelled", "output": "Order 1042 is cancelled.", "scores": {"accuracy": 1}},
    ]);
    let mut runs = Vec::new();
    for (model, accuracy, latency, faithfulness, dataset, at) in [
        ("gpt-4o", 0.85, 870.0, 0.8, "refunds-v1", 5),
        ("gpt-4o", 0.92, 840.0, 0.88, "refunds-v2", 3),
        ("claude-3-5-sonnet", 0.89, 910.0, 0.93, "refunds-v2", 2),
        ("llama3", 0.81, 400.0, 0.75, "refunds-v2", 1),
    ] {
        let run = json!({"name": "nightly", "model": model, "agent": "support", "dataset": dataset, "at": hours_ago(at),
                         "metrics": {"accuracy": accuracy, "latency_ms": latency, "faithfulness": faithfulness},
                         "examples": examples, "metadata": {"commit": "abc123"}});
        runs.push(post(http, &format!("{base}/api/observability/evaluations"), key, &run).await);
    }
    runs
}

// ------------------------------------------------------------------ the browser test

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one walk through every view, in order")]
async fn every_view_shows_the_seeded_figures_in_chromium_without_errors() {
    let Some((chromium, chromedriver)) = browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are required in CI: run scripts/provision (it installs Debian's chromium and chromium-driver)"
        );
        eprintln!(
            "SKIP every_view_shows_the_seeded_figures_in_chromium_without_errors: chromium or chromedriver missing (run scripts/provision)"
        );
        return;
    };
    if !crate::support::model_ready("every_view_shows_the_seeded_figures_in_chromium_without_errors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path());
    let (child, base) = crate::support::spawn_server(
        dir.path(),
        &[
            ("RUST_LOG", "error"),
            ("MEMLAYER_AUTH__MODE", "api_key"),
            ("MEMLAYER_OBSERVABILITY__METRICS__INTERVAL_SECS", "1"),
            ("MEMLAYER_OBSERVABILITY__METRICS__INSTANCE", "dash-test-host"),
        ],
        &["MEMLAYER_CHROMIUM", "MEMLAYER_CHROMEDRIVER", "MEMLAYER_UPDATE_SCREENSHOTS"],
        Duration::from_secs(60),
    );
    let _server = crate::support::Server { child, base: base.clone() };
    let http = reqwest::Client::new();
    let runs = seed(&http, &base, &key).await;
    let shots = screenshot_dir();

    let driver = Driver::start(&chromium, &chromedriver).await;

    // 1. Without a credential the page asks for one; pasting it loads the view.
    driver.goto(&format!("{base}/observability#/traces")).await;
    assert_eq!(driver.settled("traces").await, "error");
    let text = driver.text().await;
    assert!(text.contains("requires a credential"), "asks for a key: {text}");
    // The refused calls are the only errors so far (401s logged as failed loads).
    let logs = driver.logs().await;
    assert!(
        logs.iter().filter(|l| l["level"] == "SEVERE").all(|l| l["message"].as_str().unwrap_or("").contains("401")),
        "only the 401s: {logs:#?}"
    );
    driver.type_into("#api-key", &key).await;
    driver.click_and_wait("#credentials button[type=submit]", "traces").await;
    let stored = driver.js("return [sessionStorage.getItem('memlayer.dashboard.key'), localStorage.length];").await;
    assert_eq!(stored, json!([key, 0]), "the key is kept in this tab's sessionStorage only");

    // 2. Traces: one page of 50 of the 2,003, newest first; paging; sorting; filters.
    let started = Instant::now();
    let text = driver.view("/traces", "traces").await;
    let first_page_ms = started.elapsed().as_millis();
    let rows = driver.rows("table.traces tbody tr").await;
    assert_eq!(rows.len(), 50, "one page, not every trace");
    assert_eq!(rows[0][1], "summarize nightly", "newest first: {:?}", rows[0]);
    assert_eq!(rows[1][1], "invoke_agent triage");
    assert_eq!(rows[2][1], "invoke_agent refund-desk");
    assert_eq!(rows[2][7], "1.23 s", "duration of the refund trace: {:?}", rows[2]);
    assert_eq!(rows[2][8], "1,200 / 450", "its tokens");
    assert!(text.contains("Page 1 · 50 traces"), "{text}");
    driver.screenshot(&shots, "traces").await;
    driver.click_and_wait("#next-page", "traces").await;
    let page2 = driver.rows("table.traces tbody tr").await;
    assert_eq!(page2.len(), 50);
    assert_eq!(page2[0][1], "batch job 47", "page 2 continues where page 1 ended");
    assert!(driver.text().await.contains("Page 2 · 50 traces"));
    driver.click_and_wait("#prev-page", "traces").await;
    assert_eq!(driver.rows("table.traces tbody tr").await[0][1], "summarize nightly");
    // Sorting by duration (the header), longest first.
    driver.mark().await;
    driver.js("[...document.querySelectorAll('table.traces th')].find(th => th.innerText.startsWith('Duration')).click();").await;
    assert_eq!(driver.settled("traces").await, "ready");
    let sorted = driver.rows("table.traces tbody tr").await;
    assert_eq!(sorted[0][1], "invoke_agent refund-desk", "{:?}", sorted[0]);
    assert_eq!(sorted[1][1], "invoke_agent triage");
    // Filters: status, model and minimum duration, text.
    driver.view("/traces?status=error", "traces").await;
    let errors = driver.rows("table.traces tbody tr").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0][1], "invoke_agent triage");
    assert!(errors[0][6].contains("1 err"), "{:?}", errors[0]);
    driver.view("/traces?model=claude-3-5-sonnet&min_duration_ms=900", "traces").await;
    let slow = driver.rows("table.traces tbody tr").await;
    assert_eq!(slow.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["invoke_agent triage"]);
    driver.view("/traces?q=refund-desk", "traces").await;
    let found = driver.rows("table.traces tbody tr").await;
    assert_eq!(found.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["invoke_agent refund-desk"]);
    assert_no_errors(&driver.logs().await, "the traces view");

    // 3. Trace details: the waterfall, the events, the model call's figures.
    let text = driver.view(&format!("/trace/{T1}"), "trace").await;
    for want in ["invoke_agent refund-desk", "chat gpt-4o", "execute_tool lookup_order", T1, "1.23 s"] {
        assert!(text.contains(want), "trace view shows {want}: {text}");
    }
    let spans = driver.js("return [...document.querySelectorAll('.span-row')].map(r => r.dataset.spanId);").await;
    assert_eq!(spans, json!(["00f067aa0ba902b7", "10f067aa0ba902b7", "20f067aa0ba902b7"]), "depth-first, by start");
    let events = driver.js("return document.querySelectorAll('.wf-event').length;").await;
    assert_eq!(events, json!(2), "both events on the timeline");
    assert!(text.contains("gen_ai.user.message") && text.contains("Where is my refund?"), "the root's event: {text}");
    driver.click(".span-row[data-span-id='10f067aa0ba902b7']").await;
    let text = driver.text().await;
    assert!(
        text.contains("1,200 / 450") && text.contains("210.0 ms") && text.contains("800.0 ms"),
        "the model call: {text}"
    );
    assert!(text.contains("gen_ai.choice") && text.contains("finish_reason=stop"), "its event: {text}");
    driver.screenshot(&shots, "trace").await;
    assert_no_errors(&driver.logs().await, "the trace view");

    // 4. Model performance over 30 days: the figures of each model and agent.
    driver.view("/performance?range=30d", "performance").await;
    assert_eq!(driver.charts_drawn().await, 4);
    let perf = driver.rows("table.perf-totals tbody tr").await;
    let row = |model: &str, agent: &str| -> Vec<String> {
        perf.iter()
            .find(|r| r[0] == model && r[1] == agent)
            .unwrap_or_else(|| panic!("{model} · {agent} in {perf:?}"))
            .clone()
    };
    let mut gpt: Vec<f64> = (0..BULK).filter(|i| i % 2 == 0).map(bulk_duration).collect();
    let mut claude: Vec<f64> = (0..BULK).filter(|i| i % 2 == 1).map(bulk_duration).collect();
    let gpt_batch = row("gpt-4o", "batch");
    assert_eq!(gpt_batch[2], "1,000", "calls: {gpt_batch:?}");
    assert_eq!(gpt_batch[5], ms_text(nearest_rank(&mut gpt, 50.0)), "p50: {gpt_batch:?}");
    assert_eq!(gpt_batch[8], ms_text(nearest_rank(&mut gpt, 99.0)), "p99: {gpt_batch:?}");
    assert_eq!(gpt_batch[9], "1,000,000 / 500,000");
    let claude_batch = row("claude-3-5-sonnet", "batch");
    assert_eq!(claude_batch[5], ms_text(nearest_rank(&mut claude, 50.0)), "{claude_batch:?}");
    let triage = row("claude-3-5-sonnet", "triage");
    assert_eq!((triage[2].as_str(), triage[3].as_str(), triage[4].as_str()), ("1", "1", "100.0%"), "{triage:?}");
    let support = row("gpt-4o", "support");
    assert_eq!((support[5].as_str(), support[11].as_str()), ("800.0 ms", "210.0 ms"), "{support:?}");
    driver.screenshot(&shots, "performance").await;
    assert_no_errors(&driver.logs().await, "the performance view");

    // 5. Costs: the catalog's prices over the seeded tokens, the projection.
    let costs = api(&http, &base, &key, "/api/observability/costs").await;
    // 1,000 × gpt-4o at 0.0075, the refund's 0.0075, 1,000 × claude at 0.0075, the triage's 0.0009.
    let expected = 1001.0 * 0.0075 + 1000.0 * 0.0075 + 0.0009;
    let total = costs["total"]["cost"].as_f64().unwrap();
    assert!((total - expected).abs() < 1e-6, "the API's total {total} is the seeded {expected}");
    let text = driver.view("/costs", "costs").await;
    assert!(text.contains(&format!("${expected:.2}")), "total cost shown: {text}");
    assert!(text.contains("2,003 calls"), "{text}");
    let projected = costs["projection"]["total"].as_f64().unwrap();
    let projected = if projected.abs() < 1.0 { format!("${projected:.4}") } else { format!("${projected:.2}") };
    assert!(text.contains(&projected) && text.contains("Projected next 30 days"), "projection {projected}: {text}");
    assert!(text.contains("least-squares line through the last 14 day(s)"), "its method: {text}");
    assert!(text.contains("No price in the catalog for: llama3"), "{text}");
    let by_model = driver.rows("table.by-model tbody tr").await;
    assert_eq!(by_model.len(), 3, "{by_model:?}");
    let llama = by_model.iter().find(|r| r[0] == "llama3").unwrap();
    assert_eq!(&llama[1..], ["—", "—", "1", "500", "50", "—"], "unpriced: {llama:?}");
    let gpt_cost = by_model.iter().find(|r| r[0] == "gpt-4o").unwrap();
    assert_eq!(&gpt_cost[1..], ["$2.50", "$10.00", "1,001", "1,001,200", "500,450", "$7.51"], "{gpt_cost:?}");
    assert_eq!(driver.charts_drawn().await, 1);
    driver.screenshot(&shots, "costs").await;
    assert_no_errors(&driver.logs().await, "the costs view");

    // 6. Evaluations: the newest run per model on refunds-v2, compared; examples.
    let text = driver.view("/evaluations", "evaluations").await;
    assert!(text.contains("Comparison on refunds-v2"), "{text}");
    let cmp = driver.rows("table.compare tbody tr").await;
    let accuracy = cmp.iter().find(|r| r[0] == "accuracy").unwrap_or_else(|| panic!("{cmp:?}"));
    let mut shown: Vec<&str> = accuracy[1..].iter().map(String::as_str).collect();
    shown.sort_unstable();
    assert_eq!(shown, ["0.81", "0.89", "0.92"], "the three models' accuracy on refunds-v2: {cmp:?}");
    assert!(cmp.iter().any(|r| r[0] == "latency_ms" && r.contains(&"840".to_owned())), "{cmp:?}");
    assert_eq!(driver.rows("table.runs tbody tr").await.len(), 4, "every run listed");
    assert_eq!(driver.charts_drawn().await, 1, "the radar");
    let gpt_run = runs.iter().find(|r| r["model"] == "gpt-4o" && r["dataset"] == "refunds-v2").unwrap();
    let text = driver.view(&format!("/evaluations?run={}", gpt_run["id"].as_str().unwrap()), "evaluations").await;
    assert!(text.contains("Examples of gpt-4o · support (nightly) on refunds-v2"), "{text}");
    assert!(text.contains("Where is my refund?") && text.contains("It was sent on Monday."), "{text}");
    driver.view("/evaluations", "evaluations").await;
    driver.screenshot(&shots, "evaluations").await;
    assert_no_errors(&driver.logs().await, "the evaluations view");

    // 7. System health: the server's own samples (every second here). The
    // view draws a series' history once it spans two buckets of the range
    // it shows (15 minutes: buckets of about 16 s), so wait until every
    // series does, asked as the view asks, or its canvases stay empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let from = (time::OffsetDateTime::now_utc() - time::Duration::minutes(15))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let m = api(&http, &base, &key, &format!("/api/observability/metrics?from={from}")).await;
        let series = m["series"].as_array().cloned().unwrap_or_default();
        let buckets = |name: &str| {
            series
                .iter()
                .filter(|s| s["name"] == name)
                .map(|s| s["points"].as_array().map_or(0, Vec::len))
                .max()
                .unwrap_or(0)
        };
        let names =
            ["process.cpu.utilization", "process.memory.usage", "memlayer.database.size", "memlayer.data_dir.usage"];
        if names.iter().all(|n| buckets(n) >= 2)
            && series.iter().all(|s| s["points"].as_array().map_or(0, Vec::len) >= 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server samples itself into two buckets: {m}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = driver.view("/health?range=15m", "health").await;
    assert!(text.contains("dash-test-host"), "the instance: {text}");
    let cards = driver
        .js("return Object.fromEntries([...document.querySelectorAll('[data-metric]')].map(c => [c.dataset.metric, (c.querySelector('.gauge-value, .metric-value') || {}).innerText]));")
        .await;
    for name in [
        "process.cpu.utilization",
        "system.cpu.utilization",
        "system.memory.usage",
        "process.memory.usage",
        "memlayer.database.size",
        "memlayer.data_dir.usage",
    ] {
        let v = cards[name].as_str().unwrap_or("—");
        assert!(v != "—" && !v.is_empty(), "{name} shown: {cards}");
    }
    assert!(cards["process.cpu.utilization"].as_str().unwrap().ends_with('%'), "{cards}");
    assert!(cards["memlayer.database.size"].as_str().unwrap().ends_with('B'), "{cards}");
    assert!(driver.charts_drawn().await >= 3, "the gauges");
    driver.screenshot(&shots, "health").await;
    assert_no_errors(&driver.logs().await, "the health view");
    driver.quit().await;

    eprintln!("dashboard: first page of traces rendered in {first_page_ms} ms; screenshots in {}", shots.display());
    if std::env::var_os("MEMLAYER_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for name in ["traces", "trace", "performance", "costs", "evaluations", "health"] {
            std::fs::copy(shots.join(format!("{name}.png")), docs.join(format!("dashboard-{name}.png"))).unwrap();
        }
    }
}
