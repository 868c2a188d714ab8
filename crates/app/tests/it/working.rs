//! The working-memory service: whose options apply, schema checks naming
//! the JSON path, formats, reach, restores, and merge patches retried on
//! conflict (with a mocked store for failure injection, the real libSQL
//! store otherwise).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{CacheSettings, CatalogService, MAX_MERGE_ATTEMPTS, StoreError, WorkingMemoryService};
use memlayer_domain::{
    AgentName, Credential, MemoryOptions, NewAgent, NewModel, NewThread, Principal, ResourceId, Scopes, TenantId,
    WorkingContent, WorkingFormat, WorkingFormatKind, WorkingMemory, WorkingMemoryOptions, WorkingScope,
    WorkingScopeKind,
};
use memlayer_ports::{MockThreadStore, MockWorkingMemoryStore, ThreadStore};
use serde_json::{Value, json};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn user(id: &str) -> WorkingScope {
    WorkingScope::Resource(ResourceId::parse(id).unwrap())
}

fn invalid_field(r: Result<impl std::fmt::Debug, StoreError>) -> (String, String) {
    match r {
        Err(StoreError::Invalid(e)) => (e.field.to_owned(), e.reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

struct Fixture {
    working: WorkingMemoryService,
    catalog: CatalogService,
    threads: Arc<dyn ThreadStore>,
}

async fn fixture() -> Fixture {
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let catalog = CatalogService::new(store.clone(), CacheSettings::default());
    let working = WorkingMemoryService::new(store.clone(), store.clone()).with_catalog(catalog.clone());
    Fixture { working, catalog, threads: store }
}

impl Fixture {
    async fn agent(&self, name: &str, options: Option<WorkingMemoryOptions>) -> Result<(), StoreError> {
        let model = NewModel {
            name: format!("model-{name}"),
            provider: "openai".into(),
            context_window: 1000,
            max_output_tokens: 100,
            input_price: 0.0,
            output_price: 0.0,
            is_default: false,
        };
        let model = self.catalog.create_model(&tenant(), model).await?.id;
        let agent = NewAgent {
            name: AgentName::parse(name).unwrap(),
            model_id: model,
            system_prompt: String::new(),
            tool_ids: Vec::new(),
            memory: MemoryOptions { working_memory: options, ..MemoryOptions::default() },
            runner: None,
        };
        self.catalog.create_agent(&tenant(), agent).await.map(|_| ())
    }

    async fn thread(&self, agent: Option<&str>, resource: Option<&str>) -> WorkingScope {
        let new = NewThread {
            agent_id: agent.map(|a| AgentName::parse(a).unwrap()),
            resource_id: resource.map(|r| ResourceId::parse(r).unwrap()),
            ..NewThread::default()
        };
        WorkingScope::Thread(self.threads.create(&tenant(), new).await.unwrap().id)
    }
}

fn profile_schema() -> WorkingMemoryOptions {
    WorkingMemoryOptions {
        scope: WorkingScopeKind::Resource,
        format: WorkingFormat::Json {
            schema: Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 0},
                    "prefs": {"type": "object", "properties": {"tone": {"enum": ["formal", "casual"]}}}
                },
                "additionalProperties": false
            })),
        },
        versions: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_written_documents_read_as_the_template_or_an_empty_object() {
    let f = fixture().await;
    let template = "# User\n- name:\n- preferences:\n";
    let notes = WorkingMemoryOptions {
        scope: WorkingScopeKind::Thread,
        format: WorkingFormat::Markdown { template: Some(template.into()) },
        versions: 5,
    };
    f.agent("notes", Some(notes)).await.unwrap();
    let t = tenant();
    let on_thread = f.thread(Some("notes"), None).await;
    let doc = f.working.get(&t, &on_thread, None).await.unwrap();
    assert_eq!((doc.version, doc.updated_at, &doc.content), (0, None, &WorkingContent::Markdown(template.into())));
    assert_eq!(doc.agent, Some(AgentName::parse("notes").unwrap()), "the thread's agent applied");
    let plain = f.working.get(&t, &user("u1"), None).await.unwrap();
    assert_eq!((plain.version, plain.content, plain.agent), (0, WorkingContent::Json(json!({})), None));
    // The template is what a first write starts from, not a stored version.
    assert!(f.working.versions(&t, &on_thread).await.unwrap().is_empty());
    let written = f.working.put(&t, &on_thread, None, None, json!("# User\n- name: Ada\n"), 0).await.unwrap();
    assert_eq!((written.version, written.content), (1, WorkingContent::Markdown("# User\n- name: Ada\n".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_failures_name_the_json_path_and_store_nothing() {
    let f = fixture().await;
    f.agent("profiler", Some(profile_schema())).await.unwrap();
    let (t, u1, agent) = (tenant(), user("u1"), AgentName::parse("profiler").unwrap());
    let ok = f.working.put(&t, &u1, Some(&agent), None, json!({"name": "Ada", "age": 36}), 0).await.unwrap();
    assert_eq!(ok.version, 1);
    let cases = [
        (json!({"name": "Ada", "age": -1}), "`/age`"),
        (json!({"name": 7}), "`/name`"),
        (json!({"prefs": {"tone": "rude"}}), "`/prefs/tone`"),
        (json!({"nickname": "A"}), "the top level"),
        (json!([1]), "the top level"),
    ];
    for (doc, path) in cases {
        let (field, reason) = invalid_field(f.working.put(&t, &u1, Some(&agent), None, doc.clone(), 1).await);
        assert_eq!(field, "content", "{doc}");
        assert!(reason.starts_with(&format!("at {path}: ")), "{doc}: {reason}");
        assert!(reason.contains("(schema `/"), "names the schema keyword: {reason}");
    }
    // A merge patch that breaks the schema is refused whole.
    let (_, reason) = invalid_field(f.working.patch(&t, &u1, Some(&agent), &json!({"age": "old"})).await);
    assert!(reason.starts_with("at `/age`: "), "{reason}");
    let (_, reason) = invalid_field(f.working.put(&t, &u1, Some(&agent), None, json!({"age": -1, "name": 1}), 1).await);
    assert!(reason.ends_with(", and 1 more"), "counts the rest: {reason}");
    let now = f.working.get(&t, &u1, Some(&agent)).await.unwrap();
    assert_eq!((now.version, now.content), (1, WorkingContent::Json(json!({"name": "Ada", "age": 36}))));
    // Without the agent, the resource's document takes any JSON: the schema
    // belongs to the agent, not the document.
    f.working.put(&t, &u1, None, None, json!({"age": "any"}), 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_unusable_schemas_or_options_are_refused() {
    let f = fixture().await;
    let schema = |s: Value| WorkingMemoryOptions {
        format: WorkingFormat::Json { schema: Some(s) },
        ..WorkingMemoryOptions::default()
    };
    let cases = [
        (schema(json!({"type": "no-such-type"})), "memory.working_memory.schema"),
        (schema(json!({"$ref": "https://example.invalid/schema.json"})), "memory.working_memory.schema"),
        (schema(json!({"$ref": "file:///etc/passwd"})), "memory.working_memory.schema"),
        (schema(json!("object")), "memory.working_memory.schema"),
        (WorkingMemoryOptions { versions: 0, ..WorkingMemoryOptions::default() }, "memory.working_memory.versions"),
        (WorkingMemoryOptions { versions: 101, ..WorkingMemoryOptions::default() }, "memory.working_memory.versions"),
    ];
    for (i, (options, field)) in cases.into_iter().enumerate() {
        let (got, reason) = invalid_field(f.agent(&format!("a{i}"), Some(options)).await);
        assert_eq!(got, field, "{reason}");
    }
    f.agent("fine", Some(schema(json!({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_follow_the_agent_or_the_request() {
    let f = fixture().await;
    let md =
        WorkingMemoryOptions { format: WorkingFormat::Markdown { template: None }, ..WorkingMemoryOptions::default() };
    f.agent("writer", Some(md)).await.unwrap();
    let (t, u1, writer) = (tenant(), user("u1"), AgentName::parse("writer").unwrap());
    let (field, _) = invalid_field(f.working.put(&t, &u1, Some(&writer), None, json!({"a": 1}), 0).await);
    assert_eq!(field, "content", "a Markdown agent's document is a string");
    let (field, _) =
        invalid_field(f.working.put(&t, &u1, Some(&writer), Some(WorkingFormatKind::Json), json!("x"), 0).await);
    assert_eq!(field, "format", "another format than the agent's");
    let r = f.working.patch(&t, &u1, Some(&writer), &json!({"a": 1})).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("Markdown")), "a Markdown agent: {r:?}");
    f.working.put(&t, &u1, Some(&writer), None, json!("# notes"), 0).await.unwrap();
    let r = f.working.patch(&t, &u1, None, &json!({"a": 1})).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("Markdown")), "a Markdown document: {r:?}");
    // Without options, the request's format decides, JSON by default.
    let u2 = user("u2");
    let doc = f.working.put(&t, &u2, None, Some(WorkingFormatKind::Markdown), json!("# hi"), 0).await.unwrap();
    assert_eq!(doc.content, WorkingContent::Markdown("# hi".into()));
    let doc = f.working.put(&t, &u2, None, None, json!("# hi"), 1).await.unwrap();
    assert_eq!(doc.content, WorkingContent::Json(json!("# hi")), "a JSON string");
    let (field, _) = invalid_field(f.working.put(&t, &u1, None, None, json!("x".repeat(300 * 1024)), 1).await);
    assert_eq!(field, "content", "over the size limit");
    let unknown = AgentName::parse("nobody").unwrap();
    let r = f.working.get(&t, &u1, Some(&unknown)).await;
    assert!(matches!(r, Err(StoreError::NotFound { what: "agent", .. })), "{r:?}");
    let on_thread = f.thread(None, None).await;
    assert_eq!(invalid_field(f.working.get(&t, &on_thread, Some(&writer)).await).0, "agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_reaches_only_its_resource_and_its_threads() {
    let f = fixture().await;
    let t = tenant();
    let bound = Principal {
        tenant: t.clone(),
        scopes: Scopes::ALL,
        resource: Some(ResourceId::parse("u1").unwrap()),
        credential: Credential::Anonymous,
    };
    let (own, other) = (f.thread(None, Some("u1")).await, f.thread(None, Some("u2")).await);
    let unowned = f.thread(None, None).await;
    f.working.put(&bound, &user("u1"), None, None, json!({"a": 1}), 0).await.unwrap();
    f.working.put(&bound, &own, None, None, json!({"a": 1}), 0).await.unwrap();
    for scope in [user("u2"), other.clone(), unowned] {
        let r = f.working.get(&bound, &scope, None).await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{scope:?}: {r:?}");
        let r = f.working.put(&bound, &scope, None, None, json!({}), 0).await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{scope:?}: {r:?}");
        let r = f.working.patch(&bound, &scope, None, &json!({})).await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{scope:?}: {r:?}");
        assert!(matches!(f.working.versions(&bound, &scope).await, Err(StoreError::NotFound { .. })));
        let r = f.working.restore(&bound, &scope, None, 1).await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{scope:?}: {r:?}");
    }
    assert!(f.working.get(&t, &other, None).await.is_ok(), "the tenant reaches them all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_makes_a_kept_version_current_as_a_new_one() {
    let f = fixture().await;
    f.agent("profiler", Some(profile_schema())).await.unwrap();
    let (t, u1, agent) = (tenant(), user("u1"), AgentName::parse("profiler").unwrap());
    for (v, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
        f.working.put(&t, &u1, Some(&agent), None, json!({ "name": name }), v as u64).await.unwrap();
    }
    let kept: Vec<u64> = f.working.versions(&t, &u1).await.unwrap().iter().map(|w| w.version).collect();
    assert_eq!(kept, [4, 3, 2], "the agent keeps 3");
    let restored = f.working.restore(&t, &u1, Some(&agent), 2).await.unwrap();
    assert_eq!((restored.version, restored.content), (5, WorkingContent::Json(json!({"name": "B"}))));
    let kept: Vec<u64> = f.working.versions(&t, &u1).await.unwrap().iter().map(|w| w.version).collect();
    assert_eq!(kept, [5, 4, 3]);
    let r = f.working.restore(&t, &u1, Some(&agent), 1).await;
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "no longer kept: {r:?}");
    assert!(matches!(f.working.restore(&t, &user("u9"), None, 1).await, Err(StoreError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merge_patches_of_different_fields_all_stay() {
    let f = fixture().await;
    let (t, u1) = (tenant(), user("u1"));
    f.working.put(&t, &u1, None, None, json!({"base": true, "drop": 1}), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (w, t, u1) = (f.working.clone(), t.clone(), u1.clone());
        tasks.push(tokio::spawn(async move { w.patch(&t, &u1, None, &json!({ format!("f{i}"): i })).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let doc = f.working.patch(&t, &u1, None, &json!({"drop": null})).await.unwrap();
    assert_eq!(doc.version, 18, "one version per patch");
    let WorkingContent::Json(Value::Object(fields)) = doc.content else { panic!("a JSON object") };
    for i in 0..16 {
        assert_eq!(fields.get(&format!("f{i}")), Some(&json!(i)), "patch {i} kept");
    }
    assert_eq!(fields.get("base"), Some(&json!(true)));
    assert!(!fields.contains_key("drop"), "null removes a field (RFC 7396)");
}

fn stored(version: u64, content: Value) -> WorkingMemory {
    WorkingMemory {
        scope: user("u1"),
        content: WorkingContent::Json(content),
        version,
        updated_at: memlayer_domain::now(),
    }
}

/// A service over a mocked store, its threads never read (resource scopes).
fn mocked(store: MockWorkingMemoryStore) -> WorkingMemoryService {
    WorkingMemoryService::new(Arc::new(store), Arc::new(MockThreadStore::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_loses_a_race_merges_again_onto_what_won() {
    let mut store = MockWorkingMemoryStore::new();
    let reads = Arc::new(AtomicU32::new(0));
    let r = reads.clone();
    // First read: version 1; by the put, another writer made version 2.
    store.expect_get_working().returning(move |_, _| {
        Ok(Some(match r.fetch_add(1, Ordering::SeqCst) {
            0 => stored(1, json!({"a": 1})),
            _ => stored(2, json!({"a": 1, "b": 2})),
        }))
    });
    store.expect_put_working().times(2).returning(|_, _, content, expected, keep| {
        assert_eq!(keep, WorkingMemoryOptions::DEFAULT_VERSIONS);
        if expected == 1 {
            return Err(StoreError::Conflict("working memory version is 2, expected 1".into()));
        }
        assert_eq!(content, WorkingContent::Json(json!({"a": 1, "b": 2, "c": 3})), "merged onto the winner");
        Ok(stored(expected + 1, json!({"a": 1, "b": 2, "c": 3})))
    });
    let doc = mocked(store).patch(&tenant(), &user("u1"), None, &json!({"c": 3})).await.unwrap();
    assert_eq!(doc.version, 3);
    assert_eq!(reads.load(Ordering::SeqCst), 2, "read again after the conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_gives_up_after_bounded_attempts_and_never_retries_other_errors() {
    let mut store = MockWorkingMemoryStore::new();
    store.expect_get_working().returning(|_, _| Ok(Some(stored(1, json!({})))));
    store
        .expect_put_working()
        .times(MAX_MERGE_ATTEMPTS as usize)
        .returning(|_, _, _, _, _| Err(StoreError::Conflict("moved".into())));
    let r = mocked(store).patch(&tenant(), &user("u1"), None, &json!({"c": 3})).await;
    assert!(matches!(&r, Err(StoreError::Conflict(m)) if m.contains("retry")), "{r:?}");

    let mut store = MockWorkingMemoryStore::new();
    store.expect_get_working().times(1).returning(|_, _| Ok(None));
    store
        .expect_put_working()
        .times(1)
        .returning(|_, _, _, _, _| Err(StoreError::Unavailable("database is locked".into())));
    let r = mocked(store).patch(&tenant(), &user("u1"), None, &json!({"c": 3})).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}
