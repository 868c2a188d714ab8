//! The catalog service over a mocked store: the read cache serves
//! repeated reads without the store, and writes invalidate it; threads
//! created for an agent in the catalog carry its memory options.

use std::sync::Arc;
use std::time::Duration;

use memlayer_app::{CacheSettings, CatalogService, MemoryService, StoreError};
use memlayer_domain::{
    AgentConfig, AgentId, AgentName, MEMORY_METADATA_KEY, MemoryOptions, Metadata, ModelConfig, ModelId, NewAgent,
    NewModel, NewThread, Page, SettingName, TenantId, Thread, ThreadId, from_micros,
};
use memlayer_ports::{MockCatalogStore, MockMessageStore, MockStateStore, MockThreadStore, MockTokenCounter};
use serde_json::json;

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn service(store: MockCatalogStore) -> CatalogService {
    CatalogService::new(Arc::new(store), CacheSettings { max_entries: 100, ttl: Duration::from_secs(600) })
}

fn new_agent(name: &str, memory: MemoryOptions) -> NewAgent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        model_id: ModelId::from_uuid(uuid_nil()),
        system_prompt: "be brief".into(),
        tool_ids: vec![],
        memory,
        runner: None,
    }
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

fn agent(id: AgentId, prompt: &str) -> AgentConfig {
    let mut spec = new_agent("support", MemoryOptions { last_n: Some(20), top_k: Some(5), ..Default::default() });
    spec.system_prompt = prompt.into();
    AgentConfig { id, tenant: tenant(), spec, created_at: from_micros(0), updated_at: from_micros(0) }
}

fn model(id: ModelId, default: bool) -> ModelConfig {
    ModelConfig {
        id,
        tenant: tenant(),
        spec: NewModel {
            name: "gpt-4o".into(),
            provider: "openai".into(),
            context_window: 128_000,
            max_output_tokens: 4_096,
            input_price: 2.5,
            output_price: 10.0,
            is_default: default,
        },
        created_at: from_micros(0),
        updated_at: from_micros(0),
    }
}

#[tokio::test]
async fn a_cached_agent_read_does_not_reach_the_store() {
    let id = AgentId::new();
    let mut store = MockCatalogStore::new();
    store.expect_get_agent().times(1).returning(move |_, id| Ok(agent(id, "v1")));
    let svc = service(store);
    let first = svc.get_agent(&tenant(), id).await.unwrap();
    for _ in 0..5 {
        assert_eq!(svc.get_agent(&tenant(), id).await.unwrap(), first);
    }
}

#[tokio::test]
async fn an_agent_write_invalidates_the_cache() {
    let id = AgentId::new();
    let mut store = MockCatalogStore::new();
    let mut seq = mockall::Sequence::new();
    store.expect_get_agent().times(1).in_sequence(&mut seq).returning(move |_, id| Ok(agent(id, "v1")));
    store.expect_update_agent().times(1).in_sequence(&mut seq).returning(move |_, id, _| Ok(agent(id, "v2")));
    store.expect_get_agent().times(1).in_sequence(&mut seq).returning(move |_, id| Ok(agent(id, "v2")));
    let svc = service(store);
    assert_eq!(svc.get_agent(&tenant(), id).await.unwrap().spec.system_prompt, "v1");
    svc.update_agent(&tenant(), id, new_agent("support", MemoryOptions::default())).await.unwrap();
    assert_eq!(svc.get_agent(&tenant(), id).await.unwrap().spec.system_prompt, "v2", "re-read after the write");
    assert_eq!(svc.get_agent(&tenant(), id).await.unwrap().spec.system_prompt, "v2", "and cached again");
}

#[tokio::test]
async fn a_failed_read_is_not_cached() {
    let id = AgentId::new();
    let mut store = MockCatalogStore::new();
    let mut seq = mockall::Sequence::new();
    store
        .expect_get_agent()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(StoreError::Unavailable("database is locked".into())));
    store.expect_get_agent().times(1).in_sequence(&mut seq).returning(move |_, id| Ok(agent(id, "v1")));
    let svc = service(store);
    assert!(svc.get_agent(&tenant(), id).await.unwrap_err().is_retryable());
    assert!(svc.get_agent(&tenant(), id).await.is_ok());
}

#[tokio::test]
async fn a_model_write_invalidates_every_cached_model() {
    // Making one model the default clears the flag on another: both re-read.
    let (a, b) = (ModelId::new(), ModelId::new());
    let mut store = MockCatalogStore::new();
    store.expect_get_model().times(2).returning(move |_, id| Ok(model(id, id == a)));
    store.expect_update_model().times(1).returning(move |_, id, _| Ok(model(id, true)));
    let svc = service(store);
    svc.get_model(&tenant(), a).await.unwrap();
    svc.get_model(&tenant(), a).await.unwrap();
    let mut spec = model(b, true).spec;
    spec.name = "o3".into();
    svc.update_model(&tenant(), b, spec).await.unwrap();
    svc.get_model(&tenant(), a).await.unwrap();
}

#[tokio::test]
async fn settings_cache_absence_return_the_default_and_invalidate_on_write() {
    let (cat, key) = (SettingName::category("retrieval").unwrap(), SettingName::key("top_k").unwrap());
    let mut store = MockCatalogStore::new();
    let mut seq = mockall::Sequence::new();
    store.expect_get_setting().times(1).in_sequence(&mut seq).returning(|_, _, _| Ok(None));
    store.expect_put_setting().times(1).in_sequence(&mut seq).returning(|t, c, k, v| {
        Ok(memlayer_domain::Setting {
            tenant: t.clone(),
            category: c.clone(),
            key: k.clone(),
            value: v,
            updated_at: from_micros(0),
        })
    });
    store.expect_get_setting().times(1).in_sequence(&mut seq).returning(|t, c, k| {
        Ok(Some(memlayer_domain::Setting {
            tenant: t.clone(),
            category: c.clone(),
            key: k.clone(),
            value: json!(8),
            updated_at: from_micros(0),
        }))
    });
    let svc = service(store);
    assert_eq!(svc.setting_or(&tenant(), &cat, &key, json!(5)).await.unwrap(), json!(5), "absent: the default");
    assert_eq!(svc.setting_or(&tenant(), &cat, &key, json!(6)).await.unwrap(), json!(6), "absence is cached");
    svc.put_setting(&tenant(), &cat, &key, json!(8)).await.unwrap();
    assert_eq!(svc.setting_or(&tenant(), &cat, &key, json!(5)).await.unwrap(), json!(8));
    assert_eq!(svc.setting_or(&tenant(), &cat, &key, json!(5)).await.unwrap(), json!(8));
}

#[tokio::test]
async fn an_oversized_setting_never_reaches_the_store() {
    let mut store = MockCatalogStore::new();
    store.expect_put_setting().times(0);
    let svc = service(store);
    let (cat, key) = (SettingName::category("a").unwrap(), SettingName::key("b").unwrap());
    let big = json!("x".repeat(memlayer_domain::MAX_CATALOG_JSON_BYTES));
    let err = svc.put_setting(&tenant(), &cat, &key, big).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref e) if e.field == "value"), "{err:?}");
}

fn memory_with(catalog: MockCatalogStore, threads: MockThreadStore) -> MemoryService {
    MemoryService::new(
        Arc::new(threads),
        Arc::new(MockMessageStore::new()),
        Arc::new(MockStateStore::new()),
        Arc::new(MockTokenCounter::new()),
        TenantId::default_tenant(),
        false,
    )
    .with_catalog(service(catalog))
}

fn created(new: NewThread) -> Thread {
    Thread {
        id: ThreadId::new(),
        tenant: tenant(),
        resource_id: new.resource_id,
        agent_id: new.agent_id,
        title: new.title,
        model: new.model,
        metadata: new.metadata,
        last_seq: 0,
        created_at: from_micros(0),
        updated_at: from_micros(0),
    }
}

#[tokio::test]
async fn a_thread_for_a_configured_agent_carries_its_memory_options() {
    let mut catalog = MockCatalogStore::new();
    catalog.expect_list_agents().returning(|_, q| {
        let named_support = format!("{:?}", q.filters()).contains("support");
        let items = if named_support { vec![agent(AgentId::new(), "p")] } else { vec![] };
        Ok(Page { items, next_cursor: None })
    });
    let mut threads = MockThreadStore::new();
    threads.expect_create_within().returning(|_, new, _| Ok(created(new)));
    let svc = memory_with(catalog, threads);
    let for_agent = |name: &str, metadata: serde_json::Value| NewThread {
        agent_id: Some(AgentName::parse(name).unwrap()),
        metadata: Metadata::from_value(metadata).unwrap(),
        ..NewThread::default()
    };

    let t = svc.create_thread(&tenant(), for_agent("support", json!({"lang": "en"}))).await.unwrap();
    assert_eq!(t.metadata.as_map()[MEMORY_METADATA_KEY], json!({"last_n": 20, "top_k": 5}));
    assert_eq!(t.metadata.as_map()["lang"], json!("en"), "the caller's metadata stays");
    assert_eq!(MemoryOptions::from_metadata(&t.metadata).top_k, Some(5));

    let own = json!({MEMORY_METADATA_KEY: {"last_n": 3}});
    let t = svc.create_thread(&tenant(), for_agent("support", own.clone())).await.unwrap();
    assert_eq!(t.metadata.as_map()[MEMORY_METADATA_KEY], own[MEMORY_METADATA_KEY], "the request's own key wins");

    let t = svc.create_thread(&tenant(), for_agent("external-bot", json!({}))).await.unwrap();
    assert!(t.metadata.as_map().is_empty(), "an agent memlayer does not know adds nothing");
    assert_eq!(t.agent_id.map(|a| a.to_string()), Some("external-bot".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_write_does_not_cache_the_old_value() {
    let id = AgentId::new();
    let mut store = MockCatalogStore::new();
    // The first read is held inside the store until the write has finished:
    // an ordering by handshake, not by sleeps that a loaded machine can
    // reorder.
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let first = std::sync::Mutex::new(Some((started_tx, release_rx)));
    store.expect_get_agent().times(2).returning(move |_, id| {
        if let Some((started_tx, release_rx)) = first.lock().unwrap().take() {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            Ok(agent(id, "old"))
        } else {
            Ok(agent(id, "new"))
        }
    });
    store.expect_update_agent().times(1).returning(move |_, id, _| Ok(agent(id, "new")));
    let svc = service(store);
    let reader = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.get_agent(&tenant(), id).await.unwrap() })
    };
    started.await.unwrap();
    svc.update_agent(&tenant(), id, new_agent("support", MemoryOptions::default())).await.unwrap();
    release.send(()).unwrap();
    assert_eq!(reader.await.unwrap().spec.system_prompt, "old", "the racing read saw the old row");
    assert_eq!(svc.get_agent(&tenant(), id).await.unwrap().spec.system_prompt, "new", "but did not cache it");
}
