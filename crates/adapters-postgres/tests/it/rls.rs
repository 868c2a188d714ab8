//! Tenant isolation enforced by Postgres itself: row-level security on every
//! table, keyed on the transaction's `memlayer.tenant`, for a role that
//! cannot bypass it.

use memlayer_adapters_postgres::testing::{TestDatabase, fresh_database};
use memlayer_domain::{
    AgentName, ApiKey, Embedding, KeyId, MemoryOptions, NewAgent, NewMessage, NewModel, NewSummary, NewThread, NewTool,
    PageSize, ResourceId, Role, Scopes, SettingName, TenantId, WorkingContent, WorkingScope,
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

/// A trace of two spans (one with an event and a link) and an evaluation
/// run with an example, in `t`: a row in every observability table.
async fn observability(store: &memlayer_adapters_postgres::PgBackend, t: &TenantId) {
    use memlayer_domain::observability::{
        Attributes, EventInput, LinkInput, NewEvalExample, NewEvalRun, SpanInput, SpanLimits,
    };
    use memlayer_ports::ObservabilityStore;
    let resource = std::sync::Arc::new(Attributes::new());
    let span = |id: u8, parent: Vec<u8>| {
        SpanInput {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent,
            name: "secret".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            events: vec![EventInput { time_unix_nano: 1_500, name: "secret".into(), ..EventInput::default() }],
            links: vec![LinkInput { trace_id: vec![8; 16], span_id: vec![8; 8], ..LinkInput::default() }],
            ..SpanInput::default()
        }
        .accept(&resource, None, &SpanLimits::default())
        .unwrap()
    };
    store.ingest(t, vec![span(1, vec![]), span(2, vec![1; 8])]).await.unwrap();
    let run = NewEvalRun {
        name: None,
        model: Some("m".into()),
        agent: None,
        dataset: "secret".into(),
        at: memlayer_domain::now(),
        metrics: Default::default(),
        examples: vec![NewEvalExample {
            input: json!("secret"),
            expected: None,
            output: json!("x"),
            scores: Default::default(),
        }],
        metadata: Default::default(),
    };
    store.create_eval_run(t, run).await.unwrap();
}

/// Observability's tables hold a bound caller off by row-level security
/// (migration 21's restrictive policy: observability covers the whole
/// tenant, and the API refuses such callers), and its metric samples are
/// readable by any transaction but written only with `*` access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_rows_are_the_whole_tenant_s_and_samples_the_server_s() {
    use memlayer_domain::observability::{MetricName, MetricSample};
    use memlayer_ports::ObservabilityStore;

    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("tenant-a").unwrap();
    observability(&store, &t).await;
    let sample = MetricSample { name: MetricName::ProcessCpu, instance: "h".into(), at_ns: 5, value: 0.5 };
    store.record_metrics(vec![sample]).await.unwrap();
    let mut client = raw(&db).await;
    let tables = ["obs_traces", "obs_spans", "obs_links", "obs_eval_runs", "obs_eval_examples"];
    for table in tables {
        assert!(!visible(&mut client, Some("tenant-a"), table).await.is_empty(), "{table}: the whole tenant sees it");
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT set_config('memlayer.tenant', 'tenant-a', true)", &[]).await.unwrap();
        tx.execute("SELECT set_config('memlayer.resource', 'user-1', true)", &[]).await.unwrap();
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table}: a transaction bound to a resource sees nothing");
        drop(tx);
    }
    for tenant in ["tenant-a", "nobody"] {
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT set_config('memlayer.tenant', $1, true)", &[&tenant]).await.unwrap();
        let n: i64 = tx.query_one("SELECT count(*) FROM obs_metrics", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "any transaction reads the server's samples");
        let err = tx
            .execute("INSERT INTO obs_metrics (name, instance, at_ns, value) VALUES ('x', 'h', 1, 1)", &[])
            .await
            .unwrap_err();
        assert!(err.as_db_error().unwrap().message().contains("row-level security"), "{err:?}");
        drop(tx);
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT set_config('memlayer.tenant', $1, true)", &[&tenant]).await.unwrap();
        assert_eq!(tx.execute("DELETE FROM obs_metrics", &[]).await.unwrap(), 0, "nor deletes them");
        drop(tx);
    }
    // Without the restrictive policies, the bound transaction would see the rows.
    for table in tables {
        client.batch_execute(&format!("DROP POLICY resource_isolation ON {table}")).await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT set_config('memlayer.tenant', 'tenant-a', true)", &[]).await.unwrap();
        tx.execute("SELECT set_config('memlayer.resource', 'user-1', true)", &[]).await.unwrap();
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert!(n > 0, "{table}: the policy did the work");
        drop(tx);
    }
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
            runner: None,
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
        observability(&store, t).await;
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
        "agent_state_history",
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
        "obs_traces",
        "obs_spans",
        "obs_links",
        "obs_eval_runs",
        "obs_eval_examples",
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

/// A caller bound to a resource, calling the adapter directly (none of the
/// memory services' own checks), reaches only its resource's threads: the
/// others, with their messages, states, vectors and full text, are missing
/// from every read, listing and search, and every write into them fails.
/// Then the policies of migrations 12 and 16 are dropped, and the same calls see
/// the other resource: the isolation above is row-level security's, not a
/// filter of the adapter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_bound_to_a_resource_reaches_only_its_resource() {
    use memlayer_adapters_postgres::{HnswConfig, PgVectorIndex};
    use memlayer_domain::{Credential, Principal, ResourceId, ThreadFilter, ThreadPatch};
    use memlayer_ports::{SearchFilter, SeqRange, StoreError, VectorIndex};

    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let tenant = TenantId::parse("acme").unwrap();
    let resource = |r: &str| ResourceId::parse(r).unwrap();
    let agent = AgentName::parse("agent").unwrap();
    let index =
        PgVectorIndex::open(store.clone(), 2, HnswConfig { exact_below: 0, ..Default::default() }).await.unwrap();
    // Threads of resources a and b, and one of no resource, each with two
    // messages (one embedded) and a state; written for the whole tenant.
    let mut threads = Vec::new();
    let mut messages = Vec::new();
    for r in [Some("a"), Some("b"), None] {
        let new = NewThread { resource_id: r.map(resource), ..NewThread::default() };
        let thread = ThreadStore::create(&store, &tenant, new).await.unwrap().id;
        let batch = vec![
            NewMessage::text(Role::User, format!("kettle {}", r.unwrap_or("none"))).unwrap(),
            NewMessage::text(Role::User, "second").unwrap(),
        ];
        let stored = store.append(&tenant, thread, batch).await.unwrap();
        store.save(&tenant, thread, &agent, json!({"r": r}), 0).await.unwrap();
        let summary = NewSummary { text: "s".into(), covers_through: 1, newly_covered: 1, summarizer: "t".into() };
        store.save_summary(&tenant, thread, summary, 0).await.unwrap();
        let notes = WorkingContent::Markdown("notes".into());
        store.put_working(&tenant, &WorkingScope::Thread(thread), notes.clone(), 0, 10).await.unwrap();
        if let Some(r) = r {
            store.put_working(&tenant, &WorkingScope::Resource(resource(r)), notes, 0, 10).await.unwrap();
        }
        let e = Embedding::new("m", vec![1.0, 0.0], 2).unwrap();
        let entries = store.complete_jobs(vec![(stored[0].id, e)]).await.unwrap();
        index.upsert(entries).await.unwrap();
        threads.push(thread);
        messages.push(stored);
    }
    let (a, b, none) = (threads[0], threads[1], threads[2]);
    let bound = Principal {
        tenant: tenant.clone(),
        scopes: Scopes::ALL,
        resource: Some(resource("a")),
        credential: Credential::Anonymous,
    };
    let whole = SearchFilter::all_threads(tenant.clone());
    let bound_search = whole.clone().within(Some(resource("a")));
    let query = Embedding::new("m", vec![1.0, 0.0], 2).unwrap();

    // What the bound caller reaches, through every port the services use.
    let reached = |policies: &'static str| {
        let (store, index, bound, bound_search, query, agent) =
            (store.clone(), index.clone(), bound.clone(), bound_search.clone(), query.clone(), agent.clone());
        let (messages, threads) = (messages.clone(), threads.clone());
        async move {
            let mut seen = std::collections::BTreeSet::new();
            let listed = store.list(&bound, &ThreadFilter::default(), None, PageSize::new(100).unwrap()).await.unwrap();
            seen.extend(listed.items.iter().map(|t| ("list", t.id)));
            for (thread, stored) in threads.iter().zip(&messages) {
                if ThreadStore::get(&store, &bound, *thread).await.is_ok() {
                    seen.insert(("get", *thread));
                }
                if store.page(&bound, *thread, None, None, PageSize::new(10).unwrap()).await.is_ok() {
                    seen.insert(("page", *thread));
                }
                if store.last(&bound, *thread, PageSize::new(10).unwrap()).await.is_ok() {
                    seen.insert(("last", *thread));
                }
                if MessageStore::get(&store, &bound, stored[1].id).await.is_ok() {
                    seen.insert(("message", *thread));
                }
                if store.load(&bound, *thread, &agent).await.is_ok() {
                    seen.insert(("state", *thread));
                }
                if store.current_summary(&bound, *thread).await.is_ok_and(|s| s.is_some()) {
                    seen.insert(("summary", *thread));
                }
                if store.summary_versions(&bound, *thread, 10).await.is_ok_and(|v| !v.is_empty()) {
                    seen.insert(("summary-versions", *thread));
                }
                if store.get_working(&bound, &WorkingScope::Thread(*thread)).await.is_ok_and(|w| w.is_some()) {
                    seen.insert(("wm-thread", *thread));
                }
            }
            for (r, thread) in ["a", "b"].into_iter().zip(&threads) {
                let listed = store.resource_threads(&bound, &ResourceId::parse(r).unwrap()).await.unwrap();
                seen.extend(listed.into_iter().map(|t| ("resource", t)));
                let scope = WorkingScope::Resource(ResourceId::parse(r).unwrap());
                if store.get_working(&bound, &scope).await.is_ok_and(|w| w.is_some()) {
                    seen.insert(("wm-resource", *thread));
                }
            }
            let ids = messages.iter().flatten().map(|m| m.id).collect();
            seen.extend(store.get_many(&bound, ids).await.unwrap().iter().map(|m| ("many", m.thread_id)));
            let windows = threads.iter().map(|t| SeqRange { thread: *t, from: 1, to: 2 }).collect();
            let read = store.read_windows(&bound, windows, usize::MAX).await.unwrap();
            seen.extend(read.messages.iter().map(|m| ("windows", m.thread_id)));
            let hits = store.lexical_search(&bound_search, "kettle".into(), 10).await.unwrap();
            seen.extend(hits.iter().map(|h| ("lexical", h.thread)));
            let found = index.search(&bound_search, &query, 10).await.unwrap();
            seen.extend(found.matches.iter().map(|h| ("vector", h.thread)));
            let counts = store.embedding_counts(&bound_search, "m".into()).await.unwrap();
            let _ = policies;
            (seen, counts.embedded + counts.pending)
        }
    };
    let (seen, counted) = reached("on").await;
    let of = |thread| seen.iter().filter(move |(_, t)| *t == thread).map(|(what, _)| *what).collect::<Vec<_>>();
    assert_eq!(
        of(a),
        [
            "get",
            "last",
            "lexical",
            "list",
            "many",
            "message",
            "page",
            "resource",
            "state",
            "summary",
            "summary-versions",
            "vector",
            "windows",
            "wm-resource",
            "wm-thread"
        ],
        "its own resource, everywhere"
    );
    assert_eq!(of(b), Vec::<&str>::new(), "another resource's thread, nowhere");
    assert_eq!(of(none), Vec::<&str>::new(), "a thread of no resource, nowhere");
    assert_eq!(counted, 2, "counts cover its resource's messages only");

    // Writes into another resource fail, and store nothing.
    assert!(matches!(
        store.append(&bound, b, vec![NewMessage::text(Role::User, "x").unwrap()]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(store.save(&bound, b, &agent, json!({}), 1).await, Err(StoreError::NotFound { .. })));
    let other_notes = WorkingScope::Resource(resource("b"));
    let overwrite = WorkingContent::Markdown("overwritten".into());
    assert!(store.put_working(&bound, &other_notes, overwrite, 1, 10).await.is_err(), "resource b's document");
    let summary = NewSummary { text: "x".into(), covers_through: 2, newly_covered: 1, summarizer: "t".into() };
    assert!(store.save_summary(&bound, b, summary, 1).await.is_err(), "a summary of resource b's thread");
    let kept = store.get_working(&tenant, &other_notes).await.unwrap().unwrap();
    assert_eq!(kept.content, WorkingContent::Markdown("notes".into()), "resource b's document is unchanged");
    assert_eq!(store.current_summary(&tenant, b).await.unwrap().unwrap().version, 1, "its summary too");
    assert!(matches!(MessageStore::delete(&store, &bound, messages[1][0].id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(ThreadStore::delete(&store, &bound, b).await, Err(StoreError::NotFound { .. })));
    let patch = ThreadPatch { title: Some(None), ..ThreadPatch::default() };
    assert!(matches!(store.update(&bound, b, patch).await, Err(StoreError::NotFound { .. })));
    let elsewhere = NewThread { resource_id: Some(resource("b")), ..NewThread::default() };
    assert!(ThreadStore::create(&store, &bound, elsewhere).await.is_err(), "creating a thread of resource b");
    let away = ThreadPatch { resource_id: Some(Some(resource("b"))), ..ThreadPatch::default() };
    assert!(store.update(&bound, a, away).await.is_err(), "moving its thread to resource b");
    let all = store.list(&tenant, &ThreadFilter::default(), None, PageSize::new(100).unwrap()).await.unwrap();
    assert_eq!(all.items.len(), 3, "the whole tenant still sees all three, and nothing was added");
    assert_eq!(store.page(&tenant, b, None, None, PageSize::new(10).unwrap()).await.unwrap().items.len(), 2);
    assert_eq!(ThreadStore::get(&store, &tenant, a).await.unwrap().resource_id, Some(resource("a")));
    let (whole_seen, whole_counted) = {
        let hits = store.lexical_search(&whole, "kettle".into(), 10).await.unwrap();
        (hits.len(), store.embedding_counts(&whole, "m".into()).await.unwrap().embedded)
    };
    assert_eq!((whole_seen, whole_counted), (3, 3), "an unbound search covers the tenant");

    // Without the policies, the same calls reach resource b: the isolation
    // above is row-level security's.
    let client = raw(&db).await;
    let tables = client
        .query("SELECT tablename::text FROM pg_policies WHERE policyname = 'resource_isolation' ORDER BY 1", &[])
        .await
        .unwrap();
    let tables: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        tables.len(),
        16,
        "ten tables (migrations 12, 16 and 25), the vector index's and five of observability (21, 26): {tables:?}"
    );
    for table in tables.into_iter().filter(|t| !t.starts_with("obs_")) {
        client.batch_execute(&format!("DROP POLICY resource_isolation ON {table}")).await.unwrap();
    }
    let (seen, _) = reached("off").await;
    for what in ["get", "list", "page", "many", "lexical", "vector", "state", "summary", "wm-thread", "wm-resource"] {
        assert!(seen.contains(&(what, b)), "without the policies, {what} reaches resource b: {seen:?}");
    }
}
