//! TLS to the database, as `sslmode` says, against a second local server
//! that accepts TLS connections only (`scripts/postgres-tls`), with a
//! certificate for `localhost` signed by a CA made here; and `prefer`
//! against the shared plain server.

use std::path::{Path, PathBuf};
use std::process::Command;

use memlayer_adapters_postgres::testing::{connection_encrypted, fresh_database};
use memlayer_adapters_postgres::{PgBackend, PgConfig};
use memlayer_ports::{Database, StoreError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres-tls");

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

/// The TLS-only server; stopped (and its directory removed) when dropped.
struct TlsServer {
    dir: PathBuf,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(SCRIPT).arg("stop").arg(&self.dir).status();
    }
}

/// Starts the server with a certificate for `localhost` (DNS name only)
/// signed by `ca`, or `None` after a `SKIP:` line when the Postgres binaries
/// are not installed (failing instead with `CI` set).
fn start(ca: &Ca, files: &Path) -> Option<TlsServer> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (cert_file, key_file) = (files.join("server.crt"), files.join("server.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let dir = std::env::temp_dir().join(format!("memlayer-tls-pg-{}-{}", std::process::id(), nanos()));
    let out = Command::new("bash").arg(SCRIPT).arg("start").arg(&dir).arg(&cert_file).arg(&key_file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let _ = Command::new("bash").arg(SCRIPT).arg("stop").arg(&dir).status();
        assert!(out.status.code() == Some(3), "scripts/postgres-tls start failed: {stderr}");
        memlayer_adapters_postgres::testing::skip(&format!("no TLS test server ({})", stderr.trim()));
        return None;
    }
    let port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Some(TlsServer { dir, port })
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn open(url: String) -> Result<PgBackend, StoreError> {
    PgBackend::open(PgConfig { pool_size: 1, ..PgConfig::new(url) }).await
}

/// The error of opening `url`, which must fail `Unavailable`.
async fn refused(url: String) -> String {
    match open(url.clone()).await {
        Ok(_) => panic!("{url} opened"),
        Err(e @ StoreError::Unavailable(_)) => e.to_string(),
        Err(other) => panic!("{url}: not Unavailable: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_tls_only_server_and_a_plain_one() {
    // `prefer` falls back to plain on the shared server, which has no TLS;
    // `require` refuses it.
    let Some(db) = fresh_database().await else { return };
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let plain = open(format!("{}{sep}sslmode=prefer", db.url)).await.unwrap();
    assert!(!connection_encrypted(&plain).await);
    let err = refused(format!("{}{sep}sslmode=require", db.url)).await;
    assert!(err.contains("TLS"), "{err}");

    let files = tempfile_dir();
    let (ca, other_ca) = (ca("memlayer test CA"), ca("some other CA"));
    let (ca_file, other_file) = (files.join("ca.crt"), files.join("other.crt"));
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    std::fs::write(&other_file, other_ca.cert.pem()).unwrap();
    let Some(server) = start(&ca, &files) else { return };
    let port = server.port;
    let (ca_path, other_path) = (ca_file.display(), other_file.display());
    // `localhost` for the certificate, 127.0.0.1 for the socket (no DNS).
    let named = format!("postgres://memlayer@localhost:{port}/postgres?hostaddr=127.0.0.1");
    let by_ip = format!("postgres://memlayer@127.0.0.1:{port}/postgres");

    // require: encrypted, the certificate unchecked (libpq's meaning).
    let store = open(format!("{by_ip}?sslmode=require")).await.unwrap();
    assert!(connection_encrypted(&store).await);
    // prefer and the default take TLS when the server offers it.
    assert!(connection_encrypted(&open(format!("{by_ip}?sslmode=prefer")).await.unwrap()).await);
    assert!(connection_encrypted(&open(by_ip.clone()).await.unwrap()).await);

    // verify-full with the CA: the chain and the name check out.
    let store = open(format!("{named}&sslmode=verify-full&sslrootcert={ca_path}")).await.unwrap();
    assert!(connection_encrypted(&store).await);
    assert!(store.describe().contains("sslmode=verify-full"), "{}", store.describe());

    // verify-full against another CA: refused, saying why.
    let err = refused(format!("{named}&sslmode=verify-full&sslrootcert={other_path}")).await;
    assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{err}");
    // require with a root certificate checks the chain too (as libpq does).
    let err = refused(format!("{by_ip}?sslmode=require&sslrootcert={other_path}")).await;
    assert!(err.contains("UnknownIssuer"), "{err}");

    // verify-full to a host the certificate does not name: refused.
    let err = refused(format!("{by_ip}?sslmode=verify-full&sslrootcert={ca_path}")).await;
    assert!(err.contains("certificate") && err.contains("not valid for name"), "{err}");
    // verify-ca checks the chain only, so the same connection opens.
    let store = open(format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca_path}")).await.unwrap();
    assert!(connection_encrypted(&store).await);

    // disable against a server that admits TLS only: the server's refusal.
    let err = refused(format!("{by_ip}?sslmode=disable")).await;
    assert!(err.contains("no encryption"), "{err}");

    // An unreadable root file is a configuration error naming it.
    let missing = files.join("missing.crt");
    let err = open(format!("{named}&sslmode=verify-full&sslrootcert={}", missing.display())).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)) && err.to_string().contains("missing.crt"), "{err}");
    drop(server);
    std::fs::remove_dir_all(&files).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memlayer-tls-certs-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
