//! Contract cases of [`crate::WorkingMemoryStore`]: versioned puts per
//! resource and per thread, stale versions, concurrent putters, the kept
//! versions, and a thread's document going with its thread. Each
//! `pub async fn` here takes a fresh [`Backend`]; adding a case means adding
//! its name to `contract_suite!` too (the completeness test fails
//! otherwise).

use memlayer_domain::{
    NewThread, ResourceId, TenantId, ThreadId, WorkingContent, WorkingMemory, WorkingScope, WorkingScopeKind,
};
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, tenant, thread};
use crate::StoreError;

fn resource(id: &str) -> WorkingScope {
    WorkingScope::Resource(ResourceId::parse(id).unwrap())
}

fn doc(v: serde_json::Value) -> WorkingContent {
    WorkingContent::Json(v)
}

async fn put(b: &Backend, t: &TenantId, scope: &WorkingScope, content: WorkingContent, expected: u64) -> WorkingMemory {
    b.working.put_working(t, scope, content, expected, 10).await.unwrap()
}

/// `get_working` is `None` before the first put; a put with the current
/// version (0: absent) stores the document as version `expected + 1` and
/// returns it; JSON and Markdown round-trip; a resource's document, a
/// thread's, and another tenant's same resource are three documents; a
/// thread scope of another tenant is `NotFound`.
pub async fn working_put_then_get_per_scope_and_tenant(b: Backend) {
    let (t, u) = (tenant("acme"), tenant("other"));
    let user = resource("user-1");
    let id = thread(&b, &t).await;
    let on_thread = WorkingScope::Thread(id);
    assert!(b.working.get_working(&t, &user).await.unwrap().is_none(), "a resource needs no prior row");
    assert!(b.working.get_working(&t, &on_thread).await.unwrap().is_none(), "a thread without a document");

    let v1 = put(&b, &t, &user, doc(json!({"name": "Ada", "langs": ["en", "fr"], "n": 1.5})), 0).await;
    assert_eq!((v1.version, &v1.scope), (1, &user));
    assert_eq!(b.working.get_working(&t, &user).await.unwrap(), Some(v1.clone()), "get returns what put returned");
    let text = "# Ada\n- prefers *email*\n\n\u{1F600} ünïcode\n".to_owned();
    let v2 = put(&b, &t, &user, WorkingContent::Markdown(text.clone()), 1).await;
    assert_eq!(v2.version, 2);
    let got = b.working.get_working(&t, &user).await.unwrap().unwrap();
    assert_eq!((got.version, got.content), (2, WorkingContent::Markdown(text)), "the format may change");
    assert!(got.updated_at >= v1.updated_at);

    let t1 = put(&b, &t, &on_thread, doc(json!({"step": 1})), 0).await;
    assert_eq!(t1.version, 1, "a thread's document is its own");
    assert_eq!(b.working.get_working(&t, &on_thread).await.unwrap().map(|w| w.content), Some(doc(json!({"step": 1}))));
    assert_eq!(on_thread.kind(), WorkingScopeKind::Thread);

    assert!(b.working.get_working(&u, &user).await.unwrap().is_none(), "another tenant's resource of the same id");
    put(&b, &u, &user, doc(json!({"name": "other"})), 0).await;
    assert_eq!(b.working.get_working(&t, &user).await.unwrap().unwrap().version, 2, "tenants never share");
    assert_not_found(b.working.get_working(&u, &on_thread).await, "another tenant's thread");
    assert_not_found(b.working.put_working(&u, &on_thread, doc(json!({})), 1, 10).await, "put to another's thread");
    assert_not_found(b.working.working_versions(&u, &on_thread, 10).await, "versions of another's thread");
    assert_eq!(b.working.get_working(&t, &on_thread).await.unwrap().unwrap().version, 1, "nothing changed");
}

/// A put whose `expected` is not the current version is `Conflict` and
/// changes nothing (no lost update); an `expected` past what the store can
/// count is `Invalid`.
pub async fn working_stale_version_conflicts(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    for scope in [resource("user-1"), WorkingScope::Thread(id)] {
        put(&b, &t, &scope, doc(json!({"v": 1})), 0).await;
        put(&b, &t, &scope, doc(json!({"v": 2})), 1).await;
        for stale in [0, 1, 3, 99] {
            let r = b.working.put_working(&t, &scope, doc(json!({"v": "stale"})), stale, 10).await;
            assert!(matches!(r, Err(StoreError::Conflict(_))), "expected {stale} is stale: {r:?}");
        }
        let now = b.working.get_working(&t, &scope).await.unwrap().unwrap();
        assert_eq!((now.version, now.content), (2, doc(json!({"v": 2}))), "no lost update");
        let kept = b.working.working_versions(&t, &scope, 100).await.unwrap();
        assert_eq!(kept.iter().map(|w| w.version).collect::<Vec<_>>(), [2, 1], "a refused put keeps no version");
        for absurd in [u64::MAX, i64::MAX as u64, memlayer_domain::AgentState::MAX_EXPECTED_VERSION + 1] {
            assert_invalid(b.working.put_working(&t, &scope, doc(json!({})), absurd, 10).await, "expected past i64");
        }
    }
}

/// Of concurrent putters that all read the same version (0 included: the
/// first write), exactly one wins and the others get `Conflict`.
pub async fn working_concurrent_putters_exactly_one_wins(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    for scope in [resource("user-1"), WorkingScope::Thread(id)] {
        for expected in [0, 1] {
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (b, t, scope) = (b.clone(), t.clone(), scope.clone());
                tasks.push(tokio::spawn(async move {
                    b.working.put_working(&t, &scope, doc(json!({"writer": i})), expected, 10).await
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    Ok(w) => winners.push(w),
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "exactly one writer of version {expected} wins");
            let current = b.working.get_working(&t, &scope).await.unwrap().unwrap();
            assert_eq!((current.version, &current.content), (expected + 1, &winners[0].content), "the winner's");
            let kept = b.working.working_versions(&t, &scope, 100).await.unwrap();
            assert_eq!(kept.len() as u64, expected + 1, "one version per win");
        }
    }
}

/// Content over [`WorkingContent::MAX_BYTES`] and a `keep` of 0 are
/// `Invalid`; a missing or deleted thread is `NotFound` for every method;
/// nothing is stored by a refused put.
pub async fn working_rejects_bad_input_and_missing_threads(b: Backend) {
    let t = tenant("acme");
    let user = resource("user-1");
    let big = "x".repeat(WorkingContent::MAX_BYTES + 1);
    assert_invalid(b.working.put_working(&t, &user, WorkingContent::Markdown(big.clone()), 0, 10).await, "big text");
    assert_invalid(b.working.put_working(&t, &user, doc(json!({ "k": big })), 0, 10).await, "big JSON");
    assert_invalid(b.working.put_working(&t, &user, doc(json!({})), 0, 0).await, "keep 0");
    assert!(b.working.get_working(&t, &user).await.unwrap().is_none(), "nothing stored");
    assert!(b.working.working_versions(&t, &user, 10).await.unwrap().is_empty(), "never written: no versions");
    let fits = "y".repeat(WorkingContent::MAX_BYTES);
    assert_eq!(put(&b, &t, &user, WorkingContent::Markdown(fits), 0).await.version, 1, "the limit itself fits");

    let missing = WorkingScope::Thread(ThreadId::new());
    assert_not_found(b.working.get_working(&t, &missing).await, "get, missing thread");
    assert_not_found(b.working.put_working(&t, &missing, doc(json!({})), 0, 10).await, "put, missing thread");
    assert_not_found(b.working.working_versions(&t, &missing, 10).await, "versions, missing thread");
    let deleted = thread(&b, &t).await;
    b.threads.delete(&t, deleted).await.unwrap();
    let deleted = WorkingScope::Thread(deleted);
    assert_not_found(b.working.get_working(&t, &deleted).await, "get, deleted thread");
    assert_not_found(b.working.put_working(&t, &deleted, doc(json!({})), 0, 10).await, "put, deleted thread");
    assert_not_found(b.working.working_versions(&t, &deleted, 10).await, "versions, deleted thread");
}

/// A put keeps the newest `keep` versions, the new one included, and
/// deletes older ones; `working_versions` lists them newest first, at most
/// `limit`; a smaller `keep` later trims at the next put.
pub async fn working_versions_keep_the_newest(b: Backend) {
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    for scope in [resource("user-1"), WorkingScope::Thread(id)] {
        let versions = |kept: Vec<WorkingMemory>| kept.iter().map(|w| w.version).collect::<Vec<_>>();
        for v in 0..7 {
            b.working.put_working(&t, &scope, doc(json!({ "v": v + 1 })), v, 3).await.unwrap();
        }
        let kept = b.working.working_versions(&t, &scope, 100).await.unwrap();
        assert_eq!(versions(kept.clone()), [7, 6, 5]);
        for w in &kept {
            assert_eq!((&w.scope, &w.content), (&scope, &doc(json!({ "v": w.version }))), "each version's own");
        }
        assert_eq!(kept[0], b.working.get_working(&t, &scope).await.unwrap().unwrap(), "the newest is the current");
        assert_eq!(versions(b.working.working_versions(&t, &scope, 2).await.unwrap()), [7, 6], "at most limit");
        assert!(b.working.working_versions(&t, &scope, 0).await.unwrap().is_empty(), "limit 0");
        b.working.put_working(&t, &scope, doc(json!({"v": 8})), 7, 5).await.unwrap();
        b.working.put_working(&t, &scope, doc(json!({"v": 9})), 8, 5).await.unwrap();
        assert_eq!(versions(b.working.working_versions(&t, &scope, 100).await.unwrap()), [9, 8, 7, 6, 5]);
        b.working.put_working(&t, &scope, doc(json!({"v": 10})), 9, 1).await.unwrap();
        assert_eq!(versions(b.working.working_versions(&t, &scope, 100).await.unwrap()), [10], "keep 1");
    }
}

/// A thread's document is missing once its thread is deleted, and the
/// sweep removes the thread with it; the resource's document stays.
pub async fn working_thread_document_goes_with_its_thread(b: Backend) {
    let t = tenant("acme");
    let user = ResourceId::parse("user-1").unwrap();
    let new = NewThread { resource_id: Some(user.clone()), ..Default::default() };
    let (gone, keep) =
        (b.threads.create(&t, new.clone()).await.unwrap().id, b.threads.create(&t, new).await.unwrap().id);
    for id in [gone, keep] {
        for v in 0..3 {
            put(&b, &t, &WorkingScope::Thread(id), doc(json!({ "v": v })), v).await;
        }
    }
    put(&b, &t, &WorkingScope::Resource(user.clone()), doc(json!({"name": "Ada"})), 0).await;
    b.threads.delete(&t, gone).await.unwrap();
    assert_not_found(b.working.get_working(&t, &WorkingScope::Thread(gone)).await, "deleted thread's document");
    loop {
        let sweep = b.threads.sweep_deleted(100).await.unwrap();
        if !sweep.more {
            break;
        }
    }
    assert_not_found(b.threads.get(&t, gone).await, "swept");
    assert_not_found(b.working.working_versions(&t, &WorkingScope::Thread(gone), 10).await, "swept thread's versions");
    let kept = b.working.working_versions(&t, &WorkingScope::Thread(keep), 100).await.unwrap();
    assert_eq!(kept.len(), 3, "the other thread's document is whole");
    let mine = b.working.get_working(&t, &WorkingScope::Resource(user)).await.unwrap().unwrap();
    assert_eq!(mine.content, doc(json!({"name": "Ada"})), "the resource's document stays");
}

/// An agent's working-memory options (`MemoryOptions::working_memory`,
/// migration 13) round-trip through the catalog on create, get, listing and
/// update, schema and template included; an agent without them reads back
/// `None`.
pub async fn working_agent_options_round_trip(b: Backend) {
    use memlayer_domain::{
        AgentName, CatalogEntity, ListQuery, MemoryOptions, NewAgent, NewModel, WorkingFormat, WorkingMemoryOptions,
    };

    let t = tenant("acme");
    let model = NewModel {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        context_window: 128_000,
        max_output_tokens: 16_384,
        input_price: 2.5,
        output_price: 10.0,
        is_default: false,
    };
    let model = b.catalog.create_model(&t, model).await.unwrap().id;
    let json_options = WorkingMemoryOptions {
        scope: WorkingScopeKind::Thread,
        format: WorkingFormat::Json {
            schema: Some(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})),
        },
        versions: 3,
    };
    let agent = |name: &str, working_memory: Option<WorkingMemoryOptions>| NewAgent {
        name: AgentName::parse(name).unwrap(),
        model_id: model,
        system_prompt: String::new(),
        tool_ids: Vec::new(),
        memory: MemoryOptions { last_n: Some(5), working_memory, ..MemoryOptions::default() },
        runner: None,
    };
    let with = b.catalog.create_agent(&t, agent("with", Some(json_options.clone()))).await.unwrap();
    let without = b.catalog.create_agent(&t, agent("without", None)).await.unwrap();
    assert_eq!(with.spec.memory.working_memory, Some(json_options.clone()));
    assert_eq!(b.catalog.get_agent(&t, with.id).await.unwrap(), with);
    assert_eq!(b.catalog.get_agent(&t, without.id).await.unwrap().spec.memory.working_memory, None);
    let listed = b.catalog.list_agents(&t, &ListQuery::new(CatalogEntity::Agents)).await.unwrap();
    assert!(listed.items.contains(&with) && listed.items.contains(&without), "listings read the options too");
    let markdown = WorkingMemoryOptions {
        format: WorkingFormat::Markdown { template: Some("# User\n- name:\n".into()) },
        ..WorkingMemoryOptions::default()
    };
    let updated = b.catalog.update_agent(&t, with.id, agent("with", Some(markdown.clone()))).await.unwrap();
    assert_eq!(b.catalog.get_agent(&t, with.id).await.unwrap().spec.memory.working_memory, Some(markdown));
    assert_eq!(updated.spec.memory.last_n, Some(5));
    b.catalog.update_agent(&t, with.id, agent("with", None)).await.unwrap();
    assert_eq!(b.catalog.get_agent(&t, with.id).await.unwrap().spec.memory.working_memory, None, "cleared");
}
