//! The cost of authentication per request with an API key.
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_auth            # add -- --quick for a smoke run
//! ```
//!
//! Reads the last ten messages of a 1,000-message thread through the
//! in-process router (`memlayer_api::server::app`, every middleware:
//! `GET /api/threads/{id}/messages?direction=backward&limit=10`) through
//! three routers over the same services (one libSQL file in a temp
//! directory, embeddings off) that differ only in authentication:
//! `auth.mode = none` (the anonymous principal), `auth.mode = api_key` with
//! the key cache warm (the default `auth.keys.cache_ttl_secs`), and
//! `api_key` with the cache off (`cache_ttl_secs = 0`: one database read per
//! request, what a cache miss costs). Requests are sequential, one at a
//! time; each round sends `MEMLAYER_BENCH_REQUESTS` (default 500) to each
//! router in turn, starting with a different one each round, so drift from
//! other work on the machine hits all three alike. Printed: each mode's
//! median over `MEMLAYER_BENCH_ROUNDS` (default 60) of the rounds' means,
//! the key's extra time as the median of the per-round differences from
//! `none`, in µs and in % of the read (issue 12's target: under 5% with the
//! cache warm), and `Authenticator::authenticate` alone with the cache warm.
//! Rate limits (`limits.*`, on by default with authentication) are off in
//! those three, so their difference is authentication alone; a fourth
//! router has them on (budgets too large to ever refuse), and its extra
//! over the warm key is the limiter's own cost.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a failure is a panic")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use memlayer_app::{AuthModes, Config, NewKey, Services};
use memlayer_domain::{Scope, Scopes, TenantId};
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn call(
    app: &axum::Router,
    auth: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    match auth {
        Some(key) => req = req.header("authorization", format!("Bearer {key}")),
        None => req = req.header("x-tenant-id", "bench"),
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Mean time of `n` sequential reads of `uri`.
async fn round(app: &axum::Router, auth: Option<&str>, uri: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let (status, v) = call(app, auth, "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    started.elapsed() / u32::try_from(n).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn server(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> (Services, axum::Router) {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.embedding.enabled = false;
    // Authentication alone: rate limits (on by default with authentication)
    // are another layer with its own cost.
    config.limits.enabled = Some(false);
    tweak(&mut config);
    let services = memlayer_app::build(config).await.unwrap();
    let app = memlayer_api::server::app(&services);
    (services, app)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = env_usize("MEMLAYER_BENCH_ROUNDS", if quick { 3 } else { 60 });
    let requests = env_usize("MEMLAYER_BENCH_REQUESTS", if quick { 200 } else { 500 });
    let dir = tempfile::tempdir().unwrap();

    // One set of services (one store, one reader pool) behind three routers
    // that differ only in authentication.
    let key_mode = |c: &mut Config| c.auth.mode = AuthModes::parse("api_key").unwrap();
    let (key_services, keyed) = server(dir.path(), key_mode).await;
    let tenant = TenantId::parse("bench").unwrap();
    let mut anonymous = key_services.clone();
    anonymous.auth = memlayer_app::Authenticator::anonymous(tenant.clone());
    anonymous.config = Arc::new(Config { auth: memlayer_app::AuthConfig::default(), ..(*key_services.config).clone() });
    let none = memlayer_api::server::app(&anonymous);
    // The key cache off: the authenticator of a second server over the same
    // file, with `auth.keys.cache_ttl_secs = 0`.
    let (no_cache_services, _) = server(dir.path(), |c| {
        key_mode(c);
        c.auth.keys.cache_ttl_secs = 0;
    })
    .await;
    let mut no_cache = key_services.clone();
    no_cache.auth = no_cache_services.auth.clone();
    let uncached = memlayer_api::server::app(&no_cache);
    // Rate limits on (the default with authentication), with budgets so
    // large they never refuse: the per-credential and per-tenant checks'
    // own cost, on top of the warm key.
    let (limited_services, _) = server(dir.path(), |c| {
        key_mode(c);
        c.limits.enabled = Some(true);
        let never = memlayer_app::Rate { per_second: 1e9, burst: 1_000_000_000 };
        (c.limits.credential, c.limits.tenant) = (never, never);
    })
    .await;
    let mut limited = key_services.clone();
    limited.limiter = limited_services.limiter.clone();
    let limited = memlayer_api::server::app(&limited);

    let (_, thread) = call(&none, None, "POST", "/api/threads", Some(json!({}))).await;
    let id = thread["id"].as_str().unwrap().to_owned();
    for start in (0..1_000).step_by(250) {
        let batch: Vec<Value> = (start..start + 250)
            .map(|i| {
                json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                            "content": format!("message {i}: where is the refund for order A-{i}?")})
            })
            .collect();
        let uri = format!("/api/threads/{id}/messages");
        let (status, v) = call(&none, None, "POST", &uri, Some(json!({"messages": batch}))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let key = key_services.keys.create(&tenant, NewKey::new(Scopes::only(Scope::Read))).await.unwrap();
    let key = key.secret.reveal();

    let uri = format!("/api/threads/{id}/messages?direction=backward&limit=10");
    let (status, page) = call(&keyed, Some(&key), "GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let modes =
        [(&none, None), (&keyed, Some(key.as_str())), (&uncached, Some(key.as_str())), (&limited, Some(key.as_str()))];
    for (app, auth) in modes {
        round(app, auth, &uri, requests / 2).await; // warm-up: caches, statement caches, readers
    }
    // Each round runs the three in a rotated order, and the key's cost is
    // taken per round (paired with that round's `none`), so drift and the
    // order do not count.
    let mut times: [Vec<Duration>; 4] = Default::default();
    for r in 0..rounds {
        for k in 0..4 {
            let m = (r + k) % 4;
            times[m].push(round(modes[m].0, modes[m].1, &uri, requests).await);
        }
    }
    let paired_with = |m: usize, base: usize| {
        let mut d: Vec<f64> = times[m].iter().zip(&times[base]).map(|(t, n)| micros(*t) - micros(*n)).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    let paired = |m: usize| paired_with(m, 0);
    let none_t = median(times[0].clone());
    let extra = |m: usize| {
        let d = paired(m);
        format!("{d:+.1} µs, {:+.1} % of the read", d / micros(none_t) * 100.0)
    };
    println!("last 10 of 1,000 messages through the router, {rounds} rounds × {requests} sequential reads each;");
    println!("median of the rounds' means, and the median per-round difference from `none`:");
    println!("  auth.mode = none                   {:>8.1} µs per read", micros(none_t));
    println!(
        "  auth.mode = api_key, cache warm    {:>8.1} µs per read ({})",
        micros(median(times[1].clone())),
        extra(1)
    );
    println!(
        "  auth.mode = api_key, no key cache  {:>8.1} µs per read ({})",
        micros(median(times[2].clone())),
        extra(2)
    );
    println!(
        "  api_key, cache warm, rate limits   {:>8.1} µs per read ({}; the limiter alone {:+.1} µs)",
        micros(median(times[3].clone())),
        extra(3),
        paired_with(3, 1)
    );

    let calls = if quick { 10_000 } else { 200_000 };
    let started = Instant::now();
    for _ in 0..calls {
        key_services.auth.authenticate(Some(&key), None).await.unwrap();
    }
    let alone = started.elapsed() / calls;
    println!("Authenticator::authenticate alone, cache warm: {:.2} µs per call ({calls} calls)", micros(alone));
    let principal = key_services.auth.authenticate(Some(&key), None).await.unwrap();
    let started = Instant::now();
    for _ in 0..calls {
        limited_services.limiter.admit(&principal).await.unwrap();
    }
    let alone = started.elapsed() / calls;
    println!("Limiter::admit alone (credential and tenant budgets): {:.2} µs per call ({calls} calls)", micros(alone));
    let share = paired(1) / micros(none_t) * 100.0;
    println!("target (API key, cache warm, under 5 % of the read): {}", if share < 5.0 { "met" } else { "NOT met" });
    let share = paired(3) / micros(none_t) * 100.0;
    println!("the same with rate limits on (the default): {}", if share < 5.0 { "met" } else { "NOT met" });
}
