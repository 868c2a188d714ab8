//! `build` over the real adapters.

use memlayer_app::{AppendOptions, Config, build};
use memlayer_domain::{NewMessage, NewThread, PageSize, Role, TenantId};

fn config_in(dir: &std::path::Path) -> Config {
    Config { data_dir: dir.to_path_buf(), ..Config::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_creates_and_migrates_the_embedded_file_and_data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::default_tenant();
    let id = {
        let services = build(config_in(dir.path())).await.unwrap();
        assert!(dir.path().join("memlayer.db").exists(), "embedded file under data_dir");
        let status = services.database.migration_status().await.unwrap();
        assert!(status.iter().all(|m| m.applied_at.is_some()));
        let thread = services
            .memory
            .create_thread(&tenant, NewThread { model: Some("gpt-4o".into()), ..NewThread::default() })
            .await
            .unwrap();
        let opts = AppendOptions { count_tokens: Some(true), model: None };
        let m = NewMessage::text(Role::User, "hello world").unwrap();
        let stored = services.memory.append_message(&tenant, thread.id, m, opts).await.unwrap();
        let count = stored.token_count.unwrap();
        assert_eq!((count.count, count.exact, count.encoding.as_str()), (2, true, "o200k_base"));
        thread.id
    };
    let services = build(config_in(dir.path())).await.unwrap();
    let last = services.memory.last_messages(&tenant, id, PageSize::new(10).unwrap()).await.unwrap();
    assert_eq!(last.len(), 1, "data persisted across reopen");
    assert_eq!(last[0].content, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_url_works() {
    let config = Config {
        database: memlayer_app::DatabaseConfig { url: Some(":memory:".into()), ..Default::default() },
        ..Config::default()
    };
    let services = build(config).await.unwrap();
    services.database.ping().await.unwrap();
    let t = services.memory.create_thread(&TenantId::default_tenant(), NewThread::default()).await.unwrap();
    assert_eq!(t.last_seq, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = build(config_in(&file)).await.unwrap_err().to_string();
    assert!(err.contains("not-a-dir"), "the error names the location: {err}");
}

/// Library users get the idempotency store; its records survive a restart
/// and the purge removes only expired ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_records_are_durable_and_purged_when_expired() {
    use memlayer_ports::{Claim, Fingerprint, IdempotencyKey};
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.embedding.enabled = false;
    let tenant = TenantId::default_tenant();
    let (live, old) = (IdempotencyKey::parse("live").unwrap(), IdempotencyKey::parse("old").unwrap());
    let fp = Fingerprint::new([1; 32]);
    let now = memlayer_domain::now();
    let hour = time::Duration::hours(1);
    {
        let services = build(config.clone()).await.unwrap();
        assert_eq!(services.idempotency.claim(&tenant, &live, fp, now, now + hour).await.unwrap(), Claim::New);
        let expired = services.idempotency.claim(&tenant, &old, fp, now - hour - hour, now - hour).await.unwrap();
        assert_eq!(expired, Claim::New);
    }
    let services = build(config).await.unwrap();
    assert_eq!(services.purge_expired_idempotency().await.unwrap(), 1, "only the expired record");
    assert_eq!(services.purge_expired_idempotency().await.unwrap(), 0);
    assert_eq!(services.idempotency.claim(&tenant, &live, fp, now, now + hour).await.unwrap(), Claim::InProgress);
}

/// With `auth.mode = api_key`, `build` wires the key verifier: a key made
/// through `Services.keys` authenticates as its tenant, a wrong one does not,
/// and the key's last use is written when the background tasks stop (not
/// per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_mode_authenticates_keys_and_shutdown_writes_their_last_use() {
    use memlayer_app::{AuthError, AuthModes, NewKey};
    use memlayer_domain::{Credential, Scope, Scopes};
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.embedding.enabled = false;
    config.auth.mode = AuthModes::parse("api_key").unwrap();
    config.auth.keys.flush_interval_secs = 3600;
    let services = build(config).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let created = services.keys.create(&acme, NewKey::new(Scopes::only(Scope::Read))).await.unwrap();
    let background = services.start_background();
    let token = created.secret.reveal();
    let principal = services.auth.authenticate(Some(&token), None).await.unwrap();
    assert_eq!((principal.tenant, principal.credential), (acme.clone(), Credential::ApiKey(created.key.id.clone())));
    let wrong = format!("ml_{}_{}", created.key.id, "0".repeat(64));
    assert!(matches!(services.auth.authenticate(Some(&wrong), None).await, Err(AuthError::Invalid(_))));
    assert!(matches!(services.auth.authenticate(None, None).await, Err(AuthError::Missing { .. })));
    let listed = services.keys.list_all(&acme).await.unwrap();
    assert_eq!(listed[0].last_used_at, None, "not written per request");
    background.stop().await;
    let listed = services.keys.list_all(&acme).await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "written at shutdown: {listed:?}");
}
