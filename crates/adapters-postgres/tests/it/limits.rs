//! Bounds every caller gets on Postgres: the per-transaction statement
//! timeout, a statement cache that does not grow with varying SQL, full-text
//! entries that never fail a write, and no role that escapes row-level
//! security unless allowed.

use std::time::Duration;

use memlayer_adapters_postgres::testing::{
    fresh_database, pooled_setting, run_in_transaction, statement_cache_size, superuser_url, with_database, with_user,
};
use memlayer_adapters_postgres::{PgBackend, PgConfig};
use memlayer_domain::{
    AgentName, MAX_CONTENT_BYTES, MAX_FILTERS, MetadataFilter, NewMessage, NewThread, PageSize, ResourceId, Role,
    TenantId, ThreadFilter, ThreadPatch, Title,
};
use memlayer_ports::{Database, EmbeddingStore, MessageStore, SearchFilter, StoreError, ThreadStore};
use serde_json::json;
use tokio_postgres::NoTls;

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_timeout_is_unavailable_and_says_so() {
    let Some(db) = fresh_database().await else { return };
    // The default: every transaction the adapter opens carries 30 s.
    let store = db.backend().await;
    run_in_transaction(
        &store,
        "DO $$ BEGIN IF current_setting('statement_timeout') <> '30s' THEN \
         RAISE EXCEPTION 'statement_timeout is %', current_setting('statement_timeout'); END IF; END $$",
    )
    .await
    .unwrap();

    let config =
        PgConfig { pool_size: 1, statement_timeout: Some(Duration::from_millis(200)), ..PgConfig::new(db.url.clone()) };
    let store = PgBackend::open(config).await.unwrap();
    let err = run_in_transaction(&store, "SELECT pg_sleep(30)").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("database.statement_timeout_ms"), "names the setting: {err}");

    // Through a public call: an append waits for the thread row another
    // session holds, past the timeout.
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    let mut holder = raw(&db.url).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT set_config('memlayer.tenant', 'acme', true)", &[]).await.unwrap();
    tx.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", &[&thread.as_uuid()]).await.unwrap();
    let err = store.append(&t, thread, vec![NewMessage::text(Role::User, "late").unwrap()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "a retryable 503, not a 500: {err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    tx.rollback().await.unwrap();
    assert_eq!(ThreadStore::get(&store, &t, thread).await.unwrap().last_seq, 0, "the cancelled append stored nothing");

    // SET LOCAL: the pooled connection keeps the server's default.
    assert_eq!(pooled_setting(&store, "statement_timeout").await.as_deref(), Some("0"));
    store.append(&t, thread, vec![NewMessage::text(Role::User, "now").unwrap()]).await.unwrap();

    // None sets nothing: the same sleep, longer than 200 ms, completes.
    let unbounded =
        PgBackend::open(PgConfig { pool_size: 1, statement_timeout: None, ..PgConfig::new(db.url.clone()) })
            .await
            .unwrap();
    run_in_transaction(&unbounded, "SELECT pg_sleep(0.3)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_patches_with_varying_filters_do_not_grow_the_statement_cache() {
    let Some(db) = fresh_database().await else { return };
    let store = PgBackend::open(PgConfig { pool_size: 1, ..PgConfig::new(db.url.clone()) }).await.unwrap();
    let t = TenantId::parse("acme").unwrap();
    let page = PageSize::new(10).unwrap();
    let id = store.create(&t, NewThread::default()).await.unwrap().id;
    // Warm every fixed statement the loop uses.
    store.list(&t, &ThreadFilter::default(), None, page).await.unwrap();
    store
        .update(&t, id, ThreadPatch { title: Some(Some(Title::parse("t").unwrap())), ..Default::default() })
        .await
        .unwrap();
    let warm = statement_cache_size(&store).await;
    for n in 0..=MAX_FILTERS {
        let filter = ThreadFilter {
            resource_id: (n % 2 == 0).then(|| ResourceId::parse("r").unwrap()),
            agent_id: (n % 3 == 0).then(|| AgentName::parse("a").unwrap()),
            metadata: (0..n).map(|i| MetadataFilter::new(format!("k{i}"), json!(i)).unwrap()).collect(),
        };
        store.list(&t, &filter, None, page).await.unwrap();
        let patch = ThreadPatch {
            title: (n % 2 == 1).then(|| Some(Title::parse(format!("title {n}")).unwrap())),
            resource_id: (n % 3 == 1).then(|| Some(ResourceId::parse("r").unwrap())),
            agent_id: (n % 4 == 1).then_some(None),
            model: (n % 5 == 1).then(|| Some("gpt".to_owned())),
            metadata: None,
            pinned: (n % 6 == 1).then_some(true),
        };
        if !patch.is_empty() {
            store.update(&t, id, patch).await.unwrap();
        }
    }
    assert_eq!(statement_cache_size(&store).await, warm, "varying SQL is never cached");
}

/// Words whose full-text entry is over Postgres's 1 MiB tsvector limit
/// (distinct words, each with its position) while the text stays within
/// `MAX_CONTENT_BYTES`.
fn too_many_distinct_words() -> String {
    let mut text = String::with_capacity(MAX_CONTENT_BYTES);
    let mut i = 0u64;
    while text.len() + 40 < MAX_CONTENT_BYTES {
        // 32 hex digits: a distinct lexeme per word.
        text.push_str(&format!("w{:031x} ", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        i += 1;
    }
    text.push_str("lastword");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_full_text_limit_is_stored_whole_and_found_by_its_prefix() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    let text = too_many_distinct_words();
    // What migration 2's definition does with it.
    let client = raw(&db.url).await;
    let err = client.query_one("SELECT to_tsvector('simple', $1::text)", &[&text]).await.unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("too long for tsvector"), "the input is over the limit: {err:?}");

    let first_word = text.split(' ').next().unwrap().to_owned();
    let big = NewMessage::text(Role::User, text.clone()).unwrap();
    // Alone (one INSERT) and in a batch (binary COPY).
    let stored = store.append(&t, thread, vec![big.clone()]).await.unwrap();
    let batch = vec![NewMessage::text(Role::User, "small").unwrap(), big];
    store.append(&t, thread, batch).await.unwrap();
    assert_eq!(MessageStore::get(&store, &t, stored[0].id).await.unwrap().content, text, "stored whole");

    let filter = SearchFilter::these_threads(t.clone(), vec![thread]);
    let hits = store.lexical_search(&filter, first_word, 10).await.unwrap();
    assert_eq!(hits.len(), 2, "both found by a word of the indexed prefix: {hits:?}");
    let hits = store.lexical_search(&filter, "lastword".into(), 10).await.unwrap();
    assert!(hits.is_empty(), "a word past the indexed prefix is not: {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_bypasses_row_level_security_is_refused_unless_allowed() {
    let Some(db) = fresh_database().await else { return };
    // The application role opens, without warnings.
    let store = db.backend().await;
    assert_eq!(Database::warnings(&store).await.unwrap(), Vec::<String>::new());

    let Some(superuser) = superuser_url().await else { return };
    let superuser = with_database(&superuser, &db_name(&db.url));
    let err = PgBackend::open(PgConfig { pool_size: 1, ..PgConfig::new(superuser.clone()) }).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Invalid(_)), "{text}");
    for part in ["role `postgres`", "is a superuser", "row-level security", "database.allow_rls_bypass = true"] {
        assert!(text.contains(part), "says {part:?}: {text}");
    }
    let allowed = PgConfig { pool_size: 1, allow_rls_bypass: true, ..PgConfig::new(superuser.clone()) };
    let store = PgBackend::open(allowed).await.unwrap();
    let warnings = Database::warnings(&store).await.unwrap();
    assert!(warnings.len() == 1 && warnings[0].contains("role `postgres` is a superuser"), "{warnings:?}");

    // An ordinary role with BYPASSRLS.
    let role = format!("memlayer_bypass_{}", uuid_suffix());
    let admin = raw(&superuser).await;
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN BYPASSRLS")).await.unwrap();
    let as_role = with_user(&db.url, &role);
    let err = PgBackend::open(PgConfig { pool_size: 1, ..PgConfig::new(as_role.clone()) }).await.unwrap_err();
    let refused = err.to_string();
    let allowed = PgBackend::open(PgConfig { pool_size: 1, allow_rls_bypass: true, ..PgConfig::new(as_role) }).await;
    let allowed = allowed.map(|_| ()).map_err(|e| e.to_string());
    drop(admin.batch_execute(&format!("DROP ROLE {role}")).await);
    assert!(refused.contains(&format!("role `{role}` has BYPASSRLS")), "{refused}");
    assert!(refused.contains("database.allow_rls_bypass"), "{refused}");
    allowed.unwrap();
}

fn db_name(url: &str) -> String {
    let path = url.rsplit_once('/').map_or(url, |(_, p)| p);
    path.split_once('?').map_or(path, |(p, _)| p).to_owned()
}

fn uuid_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}
