//! The memory service over mocked ports.

use std::sync::Arc;

use memlayer_app::{AppendOptions, MemoryService, StoreError};
use memlayer_domain::{AgentName, Metadata, NewMessage, Role, TenantId, Thread, ThreadId, TokenCount, from_micros};
use memlayer_ports::{MockMessageStore, MockStateStore, MockThreadStore, MockTokenCounter};
use serde_json::json;

struct Mocks {
    threads: MockThreadStore,
    messages: MockMessageStore,
    states: MockStateStore,
    tokens: MockTokenCounter,
}

fn mocks() -> Mocks {
    Mocks {
        threads: MockThreadStore::new(),
        messages: MockMessageStore::new(),
        states: MockStateStore::new(),
        tokens: MockTokenCounter::new(),
    }
}

fn service(m: Mocks, count_by_default: bool) -> MemoryService {
    MemoryService::new(
        Arc::new(m.threads),
        Arc::new(m.messages),
        Arc::new(m.states),
        Arc::new(m.tokens),
        TenantId::default_tenant(),
        count_by_default,
    )
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn thread_with_model(id: ThreadId, model: Option<&str>) -> Thread {
    Thread {
        id,
        tenant: tenant(),
        resource_id: None,
        agent_id: None,
        title: None,
        model: model.map(Into::into),
        metadata: Metadata::default(),
        last_seq: 0,
        created_at: from_micros(0),
        updated_at: from_micros(0),
    }
}

fn count(model: &str, n: u32) -> TokenCount {
    TokenCount { count: n, model: model.into(), encoding: "o200k_base".into(), exact: true }
}

fn user(text: &str) -> NewMessage {
    NewMessage::text(Role::User, text).unwrap()
}

#[tokio::test]
async fn unavailable_store_is_reported_as_retryable() {
    let mut m = mocks();
    m.messages.expect_append_within().returning(|_, _, _, _| Err(StoreError::Unavailable("database is locked".into())));
    let svc = service(m, false);
    let err = svc.append_message(&tenant(), ThreadId::new(), user("hi"), AppendOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn state_conflict_reaches_the_caller_unchanged() {
    let mut m = mocks();
    m.states
        .expect_save()
        .returning(|_, _, _, _, _| Err(StoreError::Conflict("agent state version is 3, expected 2".into())));
    let svc = service(m, false);
    let agent = AgentName::parse("planner").unwrap();
    let err = svc.save_state(&tenant(), ThreadId::new(), &agent, json!({"a": 1}), 2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref msg) if msg.contains("version is 3")), "{err:?}");
}

#[tokio::test]
async fn non_object_state_is_rejected_before_the_store() {
    let mut m = mocks();
    m.states.expect_save().times(0);
    let svc = service(m, false);
    let agent = AgentName::parse("planner").unwrap();
    let err = svc.save_state(&tenant(), ThreadId::new(), &agent, json!([1, 2]), 0).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref e) if e.field == "state"), "{err:?}");
}

#[tokio::test]
async fn tokens_are_counted_with_the_threads_model() {
    let id = ThreadId::new();
    let mut m = mocks();
    m.threads
        .expect_get()
        .withf(move |who, got| who.tenant() == &tenant() && who.resource().is_none() && *got == id)
        .times(1)
        .returning(move |_, id| Ok(thread_with_model(id, Some("gpt-4o"))));
    m.tokens
        .expect_count()
        .withf(|model, texts| model == "gpt-4o" && texts == &vec!["hello".to_owned(), "world!".to_owned()])
        .times(1)
        .returning(|model, _| vec![count(model, 1), count(model, 2)]);
    m.messages
        .expect_append_within()
        .withf(|_, _, batch, _| {
            batch.iter().map(|m| m.token_count().map(|c| c.count)).collect::<Vec<_>>() == vec![Some(1), Some(2)]
        })
        .times(1)
        .returning(|_, thread, batch, _| {
            Ok(batch
                .into_iter()
                .enumerate()
                .map(|(i, m)| m.into_message(memlayer_domain::MessageId::new(), thread, i as i64 + 1, from_micros(0)))
                .collect())
        });
    let svc = service(m, false);
    let opts = AppendOptions { count_tokens: Some(true), model: None };
    let stored = svc.append_messages(&tenant(), id, vec![user("hello"), user("world!")], opts).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].token_count.as_ref().map(|c| c.count), Some(2));
}

#[tokio::test]
async fn the_requests_model_wins_over_the_threads() {
    let mut m = mocks();
    m.threads.expect_get().times(0);
    m.tokens.expect_count().withf(|model, _| model == "gpt-4").times(1).returning(|model, _| vec![count(model, 3)]);
    m.messages.expect_append_within().times(1).returning(|_, thread, batch, _| {
        Ok(batch
            .into_iter()
            .map(|m| m.into_message(memlayer_domain::MessageId::new(), thread, 1, from_micros(0)))
            .collect())
    });
    let svc = service(m, false);
    let opts = AppendOptions { count_tokens: Some(true), model: Some("gpt-4".into()) };
    let stored = svc.append_message(&tenant(), ThreadId::new(), user("x"), opts).await.unwrap();
    assert_eq!(stored.token_count.map(|c| c.model), Some("gpt-4".to_owned()));
}

#[tokio::test]
async fn counting_without_a_model_stores_nothing() {
    let id = ThreadId::new();
    let mut m = mocks();
    m.threads.expect_get().returning(move |_, id| Ok(thread_with_model(id, None)));
    m.tokens.expect_count().times(0);
    m.messages.expect_append_within().times(0);
    let svc = service(m, true);
    let err = svc.append_message(&tenant(), id, user("x"), AppendOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref e) if e.field == "model"), "{err:?}");
}

#[tokio::test]
async fn counting_on_a_missing_thread_is_not_found_and_stores_nothing() {
    let mut m = mocks();
    m.threads.expect_get().returning(|_, id| Err(StoreError::not_found("thread", id)));
    m.messages.expect_append_within().times(0);
    let svc = service(m, true);
    let err = svc.append_message(&tenant(), ThreadId::new(), user("x"), AppendOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn empty_and_oversized_batches_never_reach_the_store() {
    let mut m = mocks();
    m.messages.expect_append_within().times(0);
    let svc = service(m, false);
    for n in [0, memlayer_domain::MAX_BATCH + 1] {
        let batch = (0..n).map(|i| user(&format!("m{i}"))).collect();
        let err = svc.append_messages(&tenant(), ThreadId::new(), batch, AppendOptions::default()).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(ref e) if e.field == "messages"), "{n}: {err:?}");
    }
}

#[tokio::test]
async fn invalid_model_names_are_rejected() {
    let mut m = mocks();
    m.tokens.expect_count().times(0);
    let svc = service(m, false);
    let err = svc.count_tokens("has space", vec!["x".into()]).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(ref e) if e.field == "model"), "{err:?}");
}

#[tokio::test]
async fn tokens_are_counted_with_the_agents_model_when_the_thread_has_none() {
    use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
    use memlayer_app::{CacheSettings, CatalogService};
    use memlayer_domain::{MemoryOptions, NewAgent, NewModel};
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let catalog = CatalogService::new(store, CacheSettings::default());
    let model = NewModel {
        name: "gpt-4".into(),
        provider: "openai".into(),
        context_window: 8_192,
        max_output_tokens: 1_000,
        input_price: 0.0,
        output_price: 0.0,
        is_default: false,
    };
    let model = catalog.create_model(&tenant(), model).await.unwrap();
    let agent = NewAgent {
        name: AgentName::parse("helper").unwrap(),
        model_id: model.id,
        system_prompt: "help".into(),
        tool_ids: vec![],
        memory: MemoryOptions::default(),
        runner: None,
    };
    catalog.create_agent(&tenant(), agent).await.unwrap();
    let id = ThreadId::new();
    let mut m = mocks();
    m.threads.expect_get().times(1).returning(move |_, id| {
        Ok(Thread { agent_id: Some(AgentName::parse("helper").unwrap()), ..thread_with_model(id, None) })
    });
    m.tokens.expect_count().withf(|model, _| model == "gpt-4").times(1).returning(|model, _| vec![count(model, 4)]);
    m.messages.expect_append_within().times(1).returning(|_, thread, batch, _| {
        Ok(batch
            .into_iter()
            .map(|m| m.into_message(memlayer_domain::MessageId::new(), thread, 1, from_micros(0)))
            .collect())
    });
    let svc = service(m, false).with_catalog(catalog);
    let opts = AppendOptions { count_tokens: Some(true), model: None };
    let stored = svc.append_message(&tenant(), id, user("x"), opts).await.unwrap();
    assert_eq!(stored.token_count.map(|c| c.model), Some("gpt-4".to_owned()), "the agent's model, as context uses");
}
