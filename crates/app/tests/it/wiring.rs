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
