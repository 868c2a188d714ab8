//! The cost of JWT authentication per request, against a last-10-messages
//! read (issue 12: it must stay under 5% of that read).
//!
//! ```sh
//! cargo run --release -p memlayer-api --example bench_jwt
//! ```
//!
//! Three in-process routers (`memlayer_api::server::app`, every middleware)
//! over libSQL files in temp directories, embeddings off, each holding one
//! thread of 50 messages for tenant `acme`: `auth.mode = none` (the
//! baseline, with `X-Tenant-Id`), and `auth.mode = jwt` with the token cache
//! on (the default, `auth.jwt.cache_ttl_secs = 60`) and off (every request
//! checks the signature). The read is `GET
//! /api/threads/{id}/messages?direction=backward&limit=10`, sent with an
//! HS256, RS256 (2048-bit) or ES256 (P-256) token; warm is the same token
//! every time (a client reusing its token), cold is the cache off. The
//! variants run interleaved, `MEMLAYER_BENCH_ROUNDS` (default 10) rounds of
//! `MEMLAYER_BENCH_ITERS` (default 500) requests each, so drift on a shared
//! machine hits them alike. Then the verifier alone
//! (`Authenticator::authenticate`), warm and cold. Printed: mean and p50 per
//! request in microseconds, and the extra cost over the baseline as a share
//! of the baseline read.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a failure is a panic")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use memlayer_app::{AppendOptions, AuthModes, Config, Services};
use memlayer_domain::{NewMessage, NewThread, Role, TenantId};
use serde_json::json;
use tower::ServiceExt as _;

const SECRET: &str = "the HS256 secret of the benchmark, 32+ bytes";
const RSA: &str = include_str!("../../app/tests/fixtures/jwt/rsa-a.pem");
const EC: &str = include_str!("../../app/tests/fixtures/jwt/ec-a.pem");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A router over a fresh file with a 50-message thread of tenant `acme`.
struct Bench {
    _dir: tempfile::TempDir,
    services: Services,
    app: axum::Router,
    uri: String,
}

async fn bench(jwt: Option<u64>, jwks: &std::path::Path) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.embedding.enabled = false;
    if let Some(cache_ttl_secs) = jwt {
        config.auth.mode = AuthModes::parse("jwt").unwrap();
        config.auth.jwt.secret = Some(SECRET.into());
        config.auth.jwt.jwks_file = Some(jwks.to_path_buf());
        config.auth.jwt.cache_ttl_secs = cache_ttl_secs;
    }
    let services = memlayer_app::build(config).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let thread = services.memory.create_thread(&tenant, NewThread::default()).await.unwrap();
    let batch = (0..50)
        .map(|i| NewMessage::text(Role::User, format!("message {i}: where is my refund for order A-{i}?")).unwrap())
        .collect();
    services.memory.append_messages(&tenant, thread.id, batch, AppendOptions::default()).await.unwrap();
    let app = memlayer_api::server::app(&services);
    let uri = format!("/api/threads/{}/messages?direction=backward&limit=10", thread.id);
    Bench { _dir: dir, services, app, uri }
}

/// One last-10 read with `header`; its latency.
async fn read(b: &Bench, header: (&str, &str)) -> Duration {
    let start = Instant::now();
    let req = Request::builder().uri(&b.uri).header(header.0, header.1).body(Body::empty()).unwrap();
    let resp = b.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    took
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "sub": "5f0c7c1e-0d7e-4d4b-9a53-1a2b3c4d5e6f", "tenant_id": "acme", "scope": "read write",
        "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600,
    });
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Mean and p50 in microseconds.
fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e6;
    (mean, v[v.len() / 2].as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_usize("MEMLAYER_BENCH_ROUNDS", 10);
    let iters = env_usize("MEMLAYER_BENCH_ITERS", 500);

    let rsa = EncodingKey::from_rsa_pem(RSA.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(EC.as_bytes()).unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let jwks = keys_dir.path().join("jwks.json");
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("rsa".into());
    let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    ec_jwk.common.key_id = Some("ec".into());
    std::fs::write(&jwks, json!({ "keys": [rsa_jwk, ec_jwk] }).to_string()).unwrap();

    let tokens = [
        ("HS256", sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())),
        ("RS256", sign(Algorithm::RS256, Some("rsa"), &rsa)),
        ("ES256", sign(Algorithm::ES256, Some("ec"), &ec)),
    ];
    let none = bench(None, &jwks).await;
    let warm = bench(Some(60), &jwks).await;
    let cold = bench(Some(0), &jwks).await;

    // Variants: (name, router, header).
    let bearers: Vec<(String, String)> =
        tokens.iter().map(|(alg, t)| (alg.to_string(), format!("Bearer {t}"))).collect();
    let mut variants: Vec<(String, &Bench, (&str, &str))> =
        vec![("none (X-Tenant-Id)".into(), &none, ("x-tenant-id", "acme"))];
    for (alg, bearer) in &bearers {
        variants.push((format!("{alg} warm"), &warm, ("authorization", bearer)));
        variants.push((format!("{alg} cold"), &cold, ("authorization", bearer)));
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds * iters); variants.len()];
    for (_, b, header) in &variants {
        for _ in 0..200 {
            read(b, *header).await;
        }
    }
    for _ in 0..rounds {
        for (i, (_, b, header)) in variants.iter().enumerate() {
            for _ in 0..iters {
                samples[i].push(read(b, *header).await);
            }
        }
    }

    println!("last-10 read through the router, {rounds} × {iters} requests per variant, interleaved:\n");
    println!("| variant | mean µs | p50 µs | extra over none (mean) |");
    println!("|---|---|---|---|");
    let (base_mean, _) = stats(samples[0].clone());
    for ((name, _, _), s) in variants.iter().zip(samples) {
        let (mean, p50) = stats(s);
        let extra = mean - base_mean;
        println!("| {name} | {mean:.1} | {p50:.1} | {extra:+.1} µs ({:+.1}%) |", extra / base_mean * 100.0);
    }

    println!("\nthe verifier alone (Authenticator::authenticate), per call:\n");
    println!("| token | warm (cached) mean µs | cold (signature checked) mean µs | cold as % of the none read |");
    println!("|---|---|---|---|");
    for (alg, token) in &tokens {
        let mut per = Vec::new();
        for (b, n) in [(&warm, 20_000), (&cold, 2_000)] {
            b.services.auth.authenticate(Some(token), None).await.unwrap();
            let start = Instant::now();
            for _ in 0..n {
                b.services.auth.authenticate(Some(token), None).await.unwrap();
            }
            per.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        }
        println!("| {alg} | {:.2} | {:.1} | {:.1}% |", per[0], per[1], per[1] / base_mean * 100.0);
    }
}
