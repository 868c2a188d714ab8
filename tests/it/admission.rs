//! Admission control over real sockets and in process: the header-read
//! timeout, the connection cap, the concurrency limit that sheds load with
//! 503 `overloaded`, and the bounded graceful shutdown.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use memlayer_api::server::{Connections, Limits, serve_on, with_middleware};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

use crate::support::TestApp;

/// A server on a free loopback port serving `app` with `settings`, stopped
/// by sending on the returned channel; the join handle yields when it stopped.
async fn start(
    app: axum::Router,
    settings: Connections,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_on(listener, app, &settings, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop, server)
}

/// Whether the server closed `stream`: a read returns end of file or a
/// reset (anything it sent before is read and returned too). A read
/// timeout (the connection is still open) is `false`.
fn closed(stream: &mut TcpStream, read: &mut Vec<u8>) -> bool {
    let mut buf = [0_u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_byte_by_byte_is_disconnected() {
    let t = TestApp::new().await;
    let settings = Connections { header_read_timeout: Duration::from_secs(1), ..Connections::default() };
    let (addr, stop, server) = start(t.app.clone(), settings).await;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut read = Vec::new();
        // One header byte a second (each read waits up to a second); the
        // request is never completed, so it is never served.
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*byte]).is_err() || closed(&mut stream, &mut read) {
                return Some(read);
            }
        }
        None
    })
    .await
    .unwrap();
    let read = outcome.expect("the server closed the slow connection before the headers were complete");
    let text = String::from_utf8_lossy(&read);
    assert!(!text.contains("200 OK"), "the slow request was not served: {text}");

    // The server itself still serves.
    let ok = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_answered_503_and_closed() {
    let t = TestApp::new().await;
    let settings = Connections { max_connections: 1, ..Connections::default() };
    let (addr, stop, server) = start(t.app.clone(), settings).await;
    let refused = tokio::task::spawn_blocking(move || {
        // The first connection holds the one slot (served, then kept alive).
        let mut first = TcpStream::connect(addr).unwrap();
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        first.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0_u8; 1024];
        let n = first.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "the first is served");

        // A second one is answered 503 and closed.
        let mut second = TcpStream::connect(addr).unwrap();
        second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = second.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut read = Vec::new();
        assert!(closed(&mut second, &mut read), "the connection past the cap is closed");
        drop(first);
        String::from_utf8_lossy(&read).into_owned()
    })
    .await
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");
    let body: Value = serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{refused}");

    // Once the first connection is gone its slot is free again (the server
    // notices the close asynchronously: a few attempts).
    let mut served = false;
    for _ in 0..50 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        if client.get(format!("http://{addr}/health")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a new connection is served once a slot is free");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A router whose `/busy` waits for `release` (telling `entered` it runs),
/// plus `/ok` and `/health`, with the real middleware and `limits`.
fn busy_app(limits: &Limits, entered: Arc<Notify>, release: Arc<Notify>) -> axum::Router {
    let busy = move || {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        async move {
            entered.notify_one();
            release.notified().await;
            "done"
        }
    };
    let router = axum::Router::new()
        .route("/busy", axum::routing::get(busy))
        .route("/ok", axum::routing::get(|| async { "fine" }))
        .route("/health", axum::routing::get(|| async { "up" }));
    with_middleware(router, limits)
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let req = axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_a_request_is_shed_with_503_and_retry_after() {
    let limits = Limits { max_concurrent_requests: 1, queue_timeout: Duration::from_millis(50), ..Limits::default() };
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = busy_app(&limits, Arc::clone(&entered), Arc::clone(&release));
    let held = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/busy").await.0 }
    });
    entered.notified().await;

    let (status, headers, body) = get(&app, "/ok").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(headers.get("x-request-id").is_some(), "a shed request still carries its request id");
    assert_eq!(get(&app, "/health").await.0, StatusCode::OK, "health bypasses the limit");

    release.notify_one();
    assert_eq!(held.await.unwrap(), StatusCode::OK, "the held request completes");
    assert_eq!(get(&app, "/ok").await.0, StatusCode::OK, "after the release requests are served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_is_bounded_by_the_grace() {
    // A request in flight when the shutdown starts still gets its answer.
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = busy_app(&Limits::default(), Arc::clone(&entered), Arc::clone(&release));
    let settings = Connections { shutdown_grace: Duration::from_secs(30), ..Connections::default() };
    let (addr, stop, server) = start(app, settings).await;
    let request = tokio::spawn(reqwest::get(format!("http://{addr}/busy")));
    entered.notified().await;
    stop.send(()).unwrap();
    release.notify_one();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
    server.await.unwrap().unwrap();

    // A request that never finishes does not hold the shutdown past the grace.
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = busy_app(&Limits::default(), Arc::clone(&entered), release);
    let settings = Connections { shutdown_grace: Duration::from_millis(200), ..Connections::default() };
    let (addr, stop, server) = start(app, settings).await;
    let request = tokio::spawn(reqwest::get(format!("http://{addr}/busy")));
    entered.notified().await;
    stop.send(()).unwrap();
    // Only a guard against a hang: the grace is 200 ms.
    tokio::time::timeout(Duration::from_secs(60), server).await.expect("serve_on returned").unwrap().unwrap();
    assert!(request.await.unwrap().is_err(), "the stuck request's connection was closed");
}
