//! `build` on Postgres: selection by URL, a round trip through every use
//! case, and clear errors for an unreachable server or a missing database.
//!
//! The server is `MEMLAYER_TEST_DATABASE_URL` (or the local one
//! `scripts/postgres start` runs); each test gets a fresh migrated database.
//! Without a server a test prints `SKIP:`, and fails when `CI` is set.

use std::time::Duration;

use memlayer_adapters_postgres::testing;
use memlayer_app::{AppendOptions, Config, DatabaseConfig, build};
use memlayer_domain::{
    AgentName, MemoryOptions, NewAgent, NewMessage, NewModel, NewThread, PageSize, Role, SearchMode, SearchQuery,
    SearchScope, TenantId, TopK, Window,
};
use serde_json::json;

fn other_tenant() -> TenantId {
    TenantId::parse("other").unwrap()
}

fn on_postgres(url: &str, dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database: DatabaseConfig { url: Some(url.into()), pool_size: 4, ..DatabaseConfig::default() },
        ..Config::default()
    }
}

fn model_ready(test: &str) -> bool {
    match memlayer_app::probe_embedder(&memlayer_app::default_cache_dir()) {
        Ok(_) => true,
        Err(problem) => {
            testing::skip(&format!("the embedding model, for {test}'s vector part ({problem})"));
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_every_use_case_on_postgres() {
    let Some(db) = testing::fresh_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&db.url, dir.path());
    assert!(config.is_postgres());
    let services = build(config).await.unwrap();
    assert!(services.database.describe().starts_with("postgres://"), "{}", services.database.describe());
    assert_eq!(services.search.index_kind(), memlayer_ports::IndexKind::Pgvector);
    assert!(!dir.path().join("memlayer.db").exists(), "no libSQL file on Postgres");
    let status = services.database.migration_status().await.unwrap();
    assert!(!status.is_empty() && status.iter().all(|m| m.applied_at.is_some()), "{status:?}");

    let tenant = TenantId::parse("acme").unwrap();
    let thread = services
        .memory
        .create_thread(&tenant, NewThread { model: Some("gpt-4o".into()), ..NewThread::default() })
        .await
        .unwrap();
    let texts = ["Where is my refund?", "The refund was sent on Monday.", "What is the weather like?"];
    let batch = texts.iter().map(|t| NewMessage::text(Role::User, *t).unwrap()).collect();
    let opts = AppendOptions { count_tokens: Some(true), model: None };
    let stored = services.memory.append_messages(&tenant, thread.id, batch, opts).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(stored[0].token_count.as_ref().is_some_and(|c| c.exact && c.count > 0));

    let page = services.memory.page_messages(&tenant, thread.id, None, None, PageSize::new(2).unwrap()).await.unwrap();
    assert_eq!(page.items.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), texts[..2]);
    let cursor = page.next_cursor.expect("a second page");
    let rest =
        services.memory.page_messages(&tenant, thread.id, Some(cursor), None, PageSize::new(2).unwrap()).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].content, texts[2]);
    assert!(rest.next_cursor.is_none());

    let agent = AgentName::parse("support").unwrap();
    assert!(services.memory.load_state(&tenant, thread.id, &agent).await.unwrap().is_none());
    let saved = services.memory.save_state(&tenant, thread.id, &agent, json!({"step": 1}), 0).await.unwrap();
    assert_eq!(saved.version, 1);
    let stale = services.memory.save_state(&tenant, thread.id, &agent, json!({"step": 2}), 0).await;
    assert!(matches!(stale, Err(memlayer_app::StoreError::Conflict(_))), "{stale:?}");
    let loaded = services.memory.load_state(&tenant, thread.id, &agent).await.unwrap().unwrap();
    assert_eq!((loaded.state, loaded.version), (json!({"step": 1}), 1));

    // The catalog, stored in Postgres: a thread created for an agent in the
    // catalog carries the agent's memory options.
    let model = NewModel {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        context_window: 128_000,
        max_output_tokens: 16_384,
        input_price: 2.5,
        output_price: 10.0,
        is_default: true,
    };
    let model = services.catalog.create_model(&tenant, model).await.unwrap();
    let memory = MemoryOptions { last_n: Some(20), top_k: Some(5), ..Default::default() };
    let configured = NewAgent {
        name: agent.clone(),
        model_id: model.id,
        system_prompt: "Be brief.".into(),
        tool_ids: vec![],
        memory: memory.clone(),
        runner: None,
    };
    services.catalog.create_agent(&tenant, configured).await.unwrap();
    let direct = memlayer_ports::CatalogStore::get_model(&db.backend().await, &tenant, model.id).await;
    assert_eq!(direct.unwrap(), model, "stored in the Postgres database");
    assert_eq!(services.catalog.default_model(&tenant).await.unwrap().map(|m| m.id), Some(model.id));
    assert_eq!(services.catalog.default_model(&other_tenant()).await.unwrap(), None, "tenant scoped");
    let for_agent =
        services.memory.create_thread(&tenant, NewThread { agent_id: Some(agent.clone()), ..NewThread::default() });
    let for_agent = for_agent.await.unwrap();
    assert_eq!(services.memory.memory_options(&tenant, for_agent.id).await.unwrap(), memory);

    let query = |text: &str, mode| {
        SearchQuery::new(text, SearchScope::Tenant, mode, TopK::new(2).unwrap(), Window::default(), None).unwrap()
    };
    let lexical = services.search.search(&tenant, &query("refund", SearchMode::Lexical)).await.unwrap();
    assert_eq!(lexical.hits.len(), 2, "{:?}", lexical.hits);
    assert!(lexical.hits.iter().all(|h| h.message.content.contains("refund")));
    let other = TenantId::parse("other").unwrap();
    let foreign = services.search.search(&other, &query("refund", SearchMode::Lexical)).await.unwrap();
    assert!(foreign.hits.is_empty(), "another tenant sees nothing");

    if !model_ready("the_app_runs_every_use_case_on_postgres") {
        return;
    }
    let background = services.start_background();
    let mut counts = services.search.thread_embeddings(&tenant, thread.id).await.unwrap();
    for _ in 0..600 {
        if counts.embedded == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        counts = services.search.thread_embeddings(&tenant, thread.id).await.unwrap();
    }
    background.stop().await;
    assert_eq!((counts.embedded, counts.pending, counts.failing), (3, 0, 0), "the worker embedded everything");
    let vector = services.search.search(&tenant, &query("reimbursement status", SearchMode::Vector)).await.unwrap();
    assert_eq!(vector.plan.pending, 0);
    assert_eq!(vector.hits.len(), 2);
    let found: Vec<_> = vector.hits.iter().map(|h| h.message.content.as_str()).collect();
    assert!(found.iter().all(|c| c.contains("refund")), "by meaning, no word in common: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_start_up_error() {
    // Port 1 on loopback: nothing listens there.
    let dir = tempfile::tempdir().unwrap();
    let err = build(on_postgres("postgres://memlayer@127.0.0.1:1/memlayer", dir.path())).await.unwrap_err();
    let text = anyhow_chain(&err);
    assert!(text.contains("postgres://memlayer@127.0.0.1:1/memlayer"), "names the server: {text}");
    assert!(text.to_lowercase().contains("refused"), "says why: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_a_clear_start_up_error() {
    let Some(server) = testing::server_url() else { return };
    let url = testing::with_database(&server, "memlayer_no_such_database");
    let dir = tempfile::tempdir().unwrap();
    let err = build(on_postgres(&url, dir.path())).await.unwrap_err();
    let text = anyhow_chain(&err);
    assert!(text.contains(r#"database "memlayer_no_such_database" does not exist"#), "says why: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_is_refused_unless_database_allow_rls_bypass() {
    let Some(db) = testing::fresh_database().await else { return };
    let Some(superuser) = testing::superuser_url().await else { return };
    let db_name = db.url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let url = testing::with_database(&superuser, db_name);
    let dir = tempfile::tempdir().unwrap();
    let err = build(on_postgres(&url, dir.path())).await.unwrap_err();
    let text = anyhow_chain(&err);
    for part in ["role `postgres` is a superuser", "row-level security", "database.allow_rls_bypass = true"] {
        assert!(text.contains(part), "says {part:?}: {text}");
    }
    let mut config = on_postgres(&url, dir.path());
    config.database.allow_rls_bypass = true;
    let services = build(config).await.unwrap();
    let warnings = memlayer_ports::Database::warnings(&*services.database).await.unwrap();
    assert!(warnings.iter().any(|w| w.contains("is a superuser")), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_reaches_postgres() {
    let Some(db) = testing::fresh_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_postgres(&db.url, dir.path());
    config.database.statement_timeout_ms = 150;
    config.embedding.enabled = false;
    let services = build(config).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let thread = services.memory.create_thread(&tenant, NewThread::default()).await.unwrap();
    // Another session holds the thread row: the append waits past 150 ms.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN; SELECT set_config('memlayer.tenant', 'acme', true)").await.unwrap();
    client.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", &[&thread.id.as_uuid()]).await.unwrap();
    let append = services.memory.append_messages(
        &tenant,
        thread.id,
        vec![NewMessage::text(Role::User, "late").unwrap()],
        AppendOptions::default(),
    );
    let err = append.await.unwrap_err();
    assert!(matches!(err, memlayer_ports::StoreError::Unavailable(_)), "a 503: {err}");
    client.batch_execute("ROLLBACK").await.unwrap();
}

#[test]
fn a_password_never_shows_in_debug_output() {
    let config = on_postgres("postgres://app:s3cret@db.example/mem", std::path::Path::new("."));
    assert!(!format!("{config:?}").contains("s3cret"));
}

/// The error and its sources, as a binary would print them.
fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
