//! Tenant isolation enforced by Postgres itself: row-level security on every
//! table, keyed on the transaction's `memlayer.tenant`, for a role that
//! cannot bypass it.

use memlayer_adapters_postgres::testing::{TestDatabase, fresh_database};
use memlayer_domain::{
    AgentName, ApiKey, Embedding, KeyId, MemoryOptions, NewAgent, NewMessage, NewModel, NewSummary, NewThread, NewTool,
    ResourceId, Role, Scopes, SettingName, TenantId, WorkingContent, WorkingScope,
};
use memlayer_ports::{
    CatalogStore, EmbeddingStore, KeyStore, MessageStore, StateStore, SummaryQueue, SummaryStore, ThreadStore,
    WorkingMemoryStore,
};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

async fn raw(db: &TestDatabase) -> Client {
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Tenants of every row of `table` visible with `memlayer.tenant` = `tenant`
/// (`None`: not set), read by a raw query without any tenant filter.
async fn visible(client: &mut Client, tenant: Option<&str>, table: &str) -> Vec<String> {
    let tx = client.transaction().await.unwrap();
    if let Some(t) = tenant {
        tx.execute("SELECT set_config('memlayer.tenant', $1, true)", &[&t]).await.unwrap();
    }
    let rows = tx.query(&format!("SELECT tenant FROM {table}"), &[]).await.unwrap();
    tx.commit().await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn api_key(tenant: &TenantId, n: u64) -> ApiKey {
    ApiKey {
        id: KeyId::parse(format!("{n:016x}")).unwrap(),
        tenant: tenant.clone(),
        name: Some("secret".into()),
        scopes: Scopes::ALL,
        resource: None,
        created_at: memlayer_domain::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_tenant_filter_sees_only_its_tenant() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let (a, b) = (TenantId::parse("tenant-a").unwrap(), TenantId::parse("tenant-b").unwrap());
    for t in [&a, &b] {
        let thread = ThreadStore::create(&store, t, NewThread::default()).await.unwrap().id;
        let stored = store
            .append(
                t,
                thread,
                vec![NewMessage::text(Role::User, "secret").unwrap(), NewMessage::text(Role::User, "x").unwrap()],
            )
            .await
            .unwrap();
        store.save(t, thread, &AgentName::parse("agent").unwrap(), json!({"k": 1}), 0).await.unwrap();
        let e = Embedding::new("m", vec![1.0, 0.0], 2).unwrap();
        store.complete_jobs(vec![(stored[0].id, e)]).await.unwrap();
        // The catalog: the same names in both tenants.
        let model = NewModel {
            name: "gpt-4o".into(),
            provider: "openai".into(),
            context_window: 128_000,
            max_output_tokens: 16_384,
            input_price: 2.5,
            output_price: 10.0,
            is_default: true,
        };
        let model = store.create_model(t, model).await.unwrap();
        let tool =
            NewTool { name: "search".into(), description: "secret".into(), parameters: json!({"type": "object"}) };
        let tool = store.create_tool(t, tool).await.unwrap();
        let agent = NewAgent {
            name: AgentName::parse("support").unwrap(),
            model_id: model.id,
            system_prompt: "secret".into(),
            tool_ids: vec![tool.id],
            memory: MemoryOptions::default(),
        };
        store.create_agent(t, agent).await.unwrap();
        let (cat, key) = (SettingName::category("ui").unwrap(), SettingName::key("theme").unwrap());
        store.put_setting(t, &cat, &key, json!("dark")).await.unwrap();
        store.create_key(&api_key(t, if *t == a { 1 } else { 2 }), &[7; 32]).await.unwrap();
        // Working memory: the same resource id in both tenants, and a thread's.
        let user = WorkingScope::Resource(ResourceId::parse("user-1").unwrap());
        for scope in [user, WorkingScope::Thread(thread)] {
            store.put_working(t, &scope, WorkingContent::Markdown("secret".into()), 0, 10).await.unwrap();
        }
        let summary = NewSummary { text: "secret".into(), covers_through: 2, newly_covered: 2, summarizer: "t".into() };
        store.save_summary(t, thread, summary, 0).await.unwrap();
        store.enqueue_summary(t, thread, memlayer_domain::now()).await.unwrap();
    }
    let mut client = raw(&db).await;
    let role = client
        .query_one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap();
    assert_eq!((role.get::<_, bool>(0), role.get::<_, bool>(1)), (false, false), "the test role must not bypass RLS");
    for table in [
        "threads",
        "messages",
        "agent_state",
        "message_vectors",
        "embedding_jobs",
        "config_models",
        "config_tools",
        "config_agents",
        "config_agent_tools",
        "config_settings",
        "api_keys",
        "working_memory",
        "working_memory_versions",
        "thread_summaries",
        "summary_jobs",
    ] {
        let seen = visible(&mut client, Some("tenant-a"), table).await;
        assert!(!seen.is_empty(), "{table}: tenant-a sees its own rows");
        assert!(seen.iter().all(|t| t == "tenant-a"), "{table}: tenant-a saw {seen:?}");
        assert!(visible(&mut client, None, table).await.is_empty(), "{table}: no tenant set, nothing visible");
        assert!(visible(&mut client, Some("nobody"), table).await.is_empty(), "{table}: unknown tenant sees nothing");
    }
    // Writing a row of another tenant is refused by the policy's check.
    for insert in [
        "INSERT INTO threads (id, tenant, created_at, updated_at) VALUES (gen_random_uuid(), 'tenant-b', now(), now())",
        "INSERT INTO thread_summaries (tenant, thread_id, version, text, covers_through, covered_messages, \
         summarizer, created_at) SELECT 'tenant-b', id, 9, 'x', 0, 0, 't', now() FROM threads",
        "INSERT INTO config_settings (tenant, category, key, value, updated_at) \
         VALUES ('tenant-b', 'ui', 'font', '1', now())",
    ] {
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT set_config('memlayer.tenant', 'tenant-a', true)", &[]).await.unwrap();
        let err = tx.execute(insert, &[]).await.unwrap_err();
        let db = err.as_db_error().expect("a database error");
        assert!(db.message().contains("row-level security"), "{insert}: {db:?}");
        drop(tx);
    }
    // The setting is transaction-local: the connection is clean afterwards.
    let after: Option<String> =
        client.query_one("SELECT nullif(current_setting('memlayer.tenant', true), '')", &[]).await.unwrap().get(0);
    assert_eq!(after, None);
}

/// The one cross-tenant read of API keys, `memlayer_find_api_key(id)`:
/// inside a transaction bound to one tenant it returns another tenant's key
/// by id, that key only, and leaves the transaction bound as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_a_key_by_id_reads_one_row_across_tenants_and_widens_nothing() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let (a, b) = (TenantId::parse("tenant-a").unwrap(), TenantId::parse("tenant-b").unwrap());
    store.create_key(&api_key(&a, 1), &[1; 32]).await.unwrap();
    store.create_key(&api_key(&b, 2), &[2; 32]).await.unwrap();
    store.create_key(&api_key(&b, 3), &[3; 32]).await.unwrap();
    let mut client = raw(&db).await;
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT set_config('memlayer.tenant', 'tenant-a', true)", &[]).await.unwrap();
    let found = tx.query("SELECT tenant, id FROM memlayer_find_api_key($1)", &[&"0000000000000002"]).await.unwrap();
    let found: Vec<(String, String)> = found.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(found, [("tenant-b".to_owned(), "0000000000000002".to_owned())]);
    assert!(tx.query("SELECT 1 FROM memlayer_find_api_key($1)", &[&"00000000000000ff"]).await.unwrap().is_empty());
    let setting: String = tx.query_one("SELECT current_setting('memlayer.tenant')", &[]).await.unwrap().get(0);
    assert_eq!(setting, "tenant-a", "the transaction's tenant is back");
    let seen: Vec<String> = tx.query("SELECT id FROM api_keys", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(seen, ["0000000000000001"], "after the lookup, only the tenant's own keys are visible");
    tx.commit().await.unwrap();
    // Listing and revoking stay within the tenant.
    let listing = memlayer_ports::KeyListing { resource: None, after: None, limit: 100 };
    assert_eq!(store.list_keys(&a, &listing).await.unwrap().len(), 1);
    let revoke = store.revoke_key(&a, &KeyId::parse("0000000000000002").unwrap(), memlayer_domain::now()).await;
    assert!(matches!(revoke, Err(memlayer_ports::StoreError::NotFound { .. })), "{revoke:?}");
}

/// A thread's summaries and summary job go with it: the sweep's last chunk
/// removes the thread row and the foreign keys cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_go_with_their_swept_thread() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("tenant-a").unwrap();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let id = ThreadStore::create(&store, &t, NewThread::default()).await.unwrap().id;
        store.append(&t, id, vec![NewMessage::text(Role::User, "hello").unwrap()]).await.unwrap();
        let summary = NewSummary { text: "s".into(), covers_through: 1, newly_covered: 1, summarizer: "t".into() };
        store.save_summary(&t, id, summary, 0).await.unwrap();
        store.enqueue_summary(&t, id, memlayer_domain::now()).await.unwrap();
        threads.push(id);
    }
    ThreadStore::delete(&store, &t, threads[0]).await.unwrap();
    let mut client = raw(&db).await;
    assert_eq!(visible(&mut client, Some("*"), "thread_summaries").await.len(), 2, "the mark removes nothing");
    while store.sweep_deleted(1).await.unwrap().more {}
    for table in ["thread_summaries", "summary_jobs"] {
        assert_eq!(visible(&mut client, Some("*"), table).await.len(), 1, "{table}: only the live thread's rows");
    }
}
