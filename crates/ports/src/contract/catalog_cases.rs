//! Contract cases of [`crate::CatalogStore`]. Each `pub async fn` here takes a
//! fresh [`Backend`] and checks one group of "MUST" sentences from the port
//! docs. `contract_suite!` runs them for every backend; adding a case means
//! adding its name to the macro's catalog list (the completeness test fails
//! otherwise).

use std::cmp::Ordering;
use std::time::Duration;

use memlayer_domain::{
    AgentName, CatalogEntity, CatalogRecord, ContextOptions, FieldValue, ListCursor, ListQuery, MODEL_FIELDS,
    MemoryOptions, ModelConfig, ModelId, NewAgent, NewModel, NewTool, PageSize, Priority, ProcessorSpec, RecallOptions,
    RecallScope, SearchMode, Section, SettingName, Shares, TenantId, ToolId,
};
use serde_json::json;

use super::Backend;
use crate::StoreError;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn model(name: &str, provider: &str, window: u32, price: f64, default: bool) -> NewModel {
    NewModel {
        name: name.into(),
        provider: provider.into(),
        context_window: window,
        max_output_tokens: window.min(4096),
        input_price: price,
        output_price: price * 4.0,
        is_default: default,
    }
}

fn tool(name: &str, description: &str) -> NewTool {
    NewTool {
        name: name.into(),
        description: description.into(),
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
    }
}

fn agent(name: &str, model_id: ModelId, tool_ids: Vec<ToolId>) -> NewAgent {
    NewAgent {
        name: AgentName::parse(name).unwrap(),
        model_id,
        system_prompt: format!("You are {name}."),
        tool_ids,
        memory: MemoryOptions {
            last_n: Some(20),
            top_k: Some(5),
            token_budget: None,
            working_memory: None,
            context: Some(context()),
        },
        // Kept by a round trip like every other field (migration 18).
        runner: Some(memlayer_domain::RunnerSpec::Http { url: format!("https://agents.example/{name}") }),
    }
}

/// Context options that differ from the defaults in every part, so a
/// round trip through the store shows each part is kept.
fn context() -> ContextOptions {
    ContextOptions {
        priority: Priority::new(&[Section::Summary, Section::WorkingMemory, Section::Recent]).unwrap(),
        shares: Shares::default().with(Section::Recall, 30).unwrap(),
        recall: RecallOptions {
            disabled: false,
            scope: RecallScope::Resource,
            top_k: Some(3),
            before: 1,
            after: 2,
            mode: SearchMode::Vector,
            min_score: Some(0.5),
        },
        processors: vec![ProcessorSpec::RedactPii, ProcessorSpec::Truncate { max_chars: 500 }],
    }
}

fn query(entity: CatalogEntity, filters: &[&str], sort: Option<&str>, limit: u32) -> ListQuery {
    let mut q = ListQuery::new(entity).limit(PageSize::new(limit).unwrap());
    for f in filters {
        q = q.filter_expr(f).unwrap();
    }
    if let Some(s) = sort {
        q = q.sort_by(s).unwrap();
    }
    q
}

fn assert_kind<T: std::fmt::Debug>(r: Result<T, StoreError>, want: &str, ctx: &str) {
    let got = match &r {
        Err(StoreError::NotFound { .. }) => "not_found",
        Err(StoreError::Conflict(_)) => "conflict",
        Err(StoreError::Invalid(_)) => "invalid",
        Err(_) => "other error",
        Ok(_) => "ok",
    };
    assert_eq!(got, want, "{ctx}: {r:?}");
}

/// Every model of a listing, page by page, checking page sizes and cursors.
async fn all_models(b: &Backend, t: &TenantId, q: &ListQuery) -> Vec<ModelConfig> {
    let mut out = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    loop {
        let page_query = match &cursor {
            Some(c) => q.clone().resume(t, &ListCursor::decode(&c.encode()).unwrap()).unwrap(),
            None => q.clone(),
        };
        let page = b.catalog.list_models(t, &page_query).await.unwrap();
        assert!(page.items.len() <= q.page_size().get() as usize, "page larger than its limit");
        let full = page.items.len() == q.page_size().get() as usize;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => {
                assert!(full, "a cursor after a short page");
                cursor = Some(c);
            }
            None => break,
        }
        assert!(out.len() < 10_000, "paging does not end");
    }
    out
}

fn ids<T: CatalogRecord>(items: &[T]) -> Vec<uuid::Uuid> {
    items.iter().map(CatalogRecord::record_id).collect()
}

fn cmp_values(a: &FieldValue, b: &FieldValue) -> Ordering {
    match (a, b) {
        (FieldValue::Text(x), FieldValue::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (FieldValue::Integer(x), FieldValue::Integer(y)) => x.cmp(y),
        (FieldValue::Float(x), FieldValue::Float(y)) => x.total_cmp(y),
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x.cmp(y),
        (FieldValue::Timestamp(x), FieldValue::Timestamp(y)) => x.cmp(y),
        (FieldValue::Id(x), FieldValue::Id(y)) => x.cmp(y),
        _ => panic!("comparing values of different kinds: {a:?} {b:?}"),
    }
}

/// Ten models with ties on provider, window, price and the default flag.
async fn seed_models(b: &Backend, t: &TenantId) -> Vec<ModelConfig> {
    let specs = [
        ("gpt-4o", "openai", 128_000, 2.5, false),
        ("gpt-4o-mini", "openai", 128_000, 0.15, false),
        ("o3", "openai", 200_000, 2.0, false),
        ("claude-sonnet", "anthropic", 200_000, 3.0, true),
        ("claude-haiku", "anthropic", 200_000, 0.8, false),
        ("gemini-pro", "google", 1_000_000, 1.25, false),
        ("gemini-flash", "google", 1_000_000, 0.15, false),
        ("llama-3", "meta", 8_192, 0.0, false),
        ("Mistral-L", "mistral", 32_000, 2.0, false),
        ("a:b/c", "openai", 8_192, 0.0, false),
    ];
    let mut out = Vec::new();
    for (name, provider, window, price, default) in specs {
        out.push(b.catalog.create_model(t, model(name, provider, window, price, default)).await.unwrap());
    }
    out
}

pub async fn catalog_model_crud_round_trips(b: Backend) {
    let t = tenant("acme");
    let created = b.catalog.create_model(&t, model("gpt-4o", "openai", 128_000, 2.5, false)).await.unwrap();
    assert_eq!(created.tenant, t);
    assert_eq!(created.spec, model("gpt-4o", "openai", 128_000, 2.5, false));
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(b.catalog.get_model(&t, created.id).await.unwrap(), created, "get returns what create returned");
    let second = b.catalog.create_model(&t, model("o3", "openai", 200_000, 2.0, false)).await.unwrap();
    assert!(second.id > created.id, "ids are time-ordered");

    assert_kind(
        b.catalog.create_model(&t, model("gpt-4o", "other", 1, 0.0, false)).await,
        "conflict",
        "duplicate model name",
    );
    assert_kind(
        b.catalog.update_model(&t, second.id, model("gpt-4o", "openai", 1, 0.0, false)).await,
        "conflict",
        "rename onto another model's name",
    );
    let bad = NewModel { max_output_tokens: 0, ..model("bad", "openai", 10, 0.0, false) };
    assert_kind(b.catalog.create_model(&t, bad).await, "invalid", "invalid model");

    tokio::time::sleep(Duration::from_millis(2)).await;
    let changed = model("gpt-4o", "azure", 64_000, 5.0, false);
    let updated = b.catalog.update_model(&t, created.id, changed.clone()).await.unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at > created.updated_at, "updated_at moves forward");
    assert_eq!(b.catalog.get_model(&t, created.id).await.unwrap(), updated);

    let listed = all_models(&b, &t, &query(CatalogEntity::Models, &[], None, 50)).await;
    assert_eq!(ids(&listed), vec![second.id.as_uuid(), created.id.as_uuid()], "default: newest first");

    b.catalog.delete_model(&t, created.id).await.unwrap();
    assert_kind(b.catalog.get_model(&t, created.id).await, "not_found", "deleted model");
    assert_kind(b.catalog.delete_model(&t, created.id).await, "not_found", "deleted twice");
    assert_kind(b.catalog.update_model(&t, created.id, changed).await, "not_found", "update deleted");
    assert_kind(b.catalog.get_model(&t, ModelId::new()).await, "not_found", "missing model");
}

pub async fn catalog_agent_and_tool_crud_round_trips(b: Backend) {
    let t = tenant("acme");
    let m = b.catalog.create_model(&t, model("gpt-4o", "openai", 128_000, 2.5, true)).await.unwrap();
    let search = b.catalog.create_tool(&t, tool("search", "searches the web")).await.unwrap();
    let lookup = b.catalog.create_tool(&t, tool("lookup_order", "finds an order")).await.unwrap();
    assert_eq!(search.spec, tool("search", "searches the web"));
    assert_eq!(b.catalog.get_tool(&t, search.id).await.unwrap(), search);
    assert_kind(b.catalog.create_tool(&t, tool("search", "again")).await, "conflict", "duplicate tool name");
    let not_schema = NewTool { parameters: json!({"type": "array"}), ..tool("x", "") };
    assert_kind(b.catalog.create_tool(&t, not_schema).await, "invalid", "non-object schema");

    let new = agent("support", m.id, vec![lookup.id, search.id]);
    let a = b.catalog.create_agent(&t, new.clone()).await.unwrap();
    assert_eq!(a.spec, new, "stored whole, tools in order");
    assert_eq!(b.catalog.get_agent(&t, a.id).await.unwrap(), a);
    let tools = b.catalog.agent_tools(&t, a.id).await.unwrap();
    assert_eq!(tools, vec![lookup.clone(), search.clone()], "the agent's tools, whole, in its order");
    assert_kind(b.catalog.create_agent(&t, agent("support", m.id, vec![])).await, "conflict", "duplicate agent");

    assert_kind(b.catalog.delete_tool(&t, search.id).await, "conflict", "tool in use");
    assert_kind(b.catalog.delete_model(&t, m.id).await, "conflict", "model in use");

    tokio::time::sleep(Duration::from_millis(2)).await;
    let renamed =
        NewAgent { system_prompt: "Be brief.".into(), tool_ids: vec![search.id], ..agent("helper", m.id, vec![]) };
    let updated = b.catalog.update_agent(&t, a.id, renamed.clone()).await.unwrap();
    assert_eq!(updated.spec, renamed);
    assert!(updated.updated_at > a.updated_at);
    assert_eq!(updated.created_at, a.created_at);
    assert_eq!(b.catalog.agent_tools(&t, a.id).await.unwrap(), vec![search.clone()]);

    let new_tool = tool("lookup_order", "finds an order by number");
    let tool_updated = b.catalog.update_tool(&t, lookup.id, new_tool.clone()).await.unwrap();
    assert_eq!(tool_updated.spec, new_tool);
    assert_kind(b.catalog.update_tool(&t, lookup.id, tool("search", "")).await, "conflict", "rename onto another tool");
    b.catalog.delete_tool(&t, lookup.id).await.unwrap();
    assert_kind(b.catalog.get_tool(&t, lookup.id).await, "not_found", "deleted tool");

    b.catalog.delete_agent(&t, a.id).await.unwrap();
    assert_kind(b.catalog.get_agent(&t, a.id).await, "not_found", "deleted agent");
    assert_kind(b.catalog.agent_tools(&t, a.id).await, "not_found", "tools of a deleted agent");
    assert_kind(b.catalog.delete_agent(&t, a.id).await, "not_found", "deleted twice");
    b.catalog.delete_tool(&t, search.id).await.unwrap();
    b.catalog.delete_model(&t, m.id).await.unwrap();
}

pub async fn catalog_unknown_model_or_tool_is_rejected(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let m = b.catalog.create_model(&t, model("gpt-4o", "openai", 128_000, 2.5, false)).await.unwrap();
    let foreign_model = b.catalog.create_model(&other, model("gpt-4o", "openai", 128_000, 2.5, false)).await.unwrap();
    let foreign_tool = b.catalog.create_tool(&other, tool("search", "")).await.unwrap();
    let agents = query(CatalogEntity::Agents, &[], None, 50);

    for (ctx, new) in [
        ("missing model", agent("a1", ModelId::new(), vec![])),
        ("another tenant's model", agent("a2", foreign_model.id, vec![])),
        ("missing tool", agent("a3", m.id, vec![ToolId::new()])),
        ("another tenant's tool", agent("a4", m.id, vec![foreign_tool.id])),
    ] {
        assert_kind(b.catalog.create_agent(&t, new).await, "invalid", ctx);
    }
    assert!(b.catalog.list_agents(&t, &agents).await.unwrap().items.is_empty(), "nothing stored");

    let a = b.catalog.create_agent(&t, agent("ok", m.id, vec![])).await.unwrap();
    assert_kind(b.catalog.update_agent(&t, a.id, agent("ok", ModelId::new(), vec![])).await, "invalid", "update");
    assert_eq!(b.catalog.get_agent(&t, a.id).await.unwrap(), a, "a failed update changes nothing");
}

pub async fn catalog_default_model_is_unique_per_tenant(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let defaults = query(CatalogEntity::Models, &["is_default:eq:true"], None, 50);
    let theirs = b.catalog.create_model(&other, model("x", "openai", 10, 0.0, true)).await.unwrap();
    let a = b.catalog.create_model(&t, model("a", "openai", 10, 0.0, true)).await.unwrap();
    let c = b.catalog.create_model(&t, model("c", "openai", 10, 0.0, false)).await.unwrap();
    let bm = b.catalog.create_model(&t, model("b", "openai", 10, 0.0, true)).await.unwrap();
    assert!(bm.spec.is_default);
    assert!(!b.catalog.get_model(&t, a.id).await.unwrap().spec.is_default, "previous default cleared");
    assert_eq!(ids(&b.catalog.list_models(&t, &defaults).await.unwrap().items), vec![bm.id.as_uuid()]);

    let c2 = b.catalog.update_model(&t, c.id, model("c", "openai", 10, 0.0, true)).await.unwrap();
    assert!(c2.spec.is_default);
    assert!(!b.catalog.get_model(&t, bm.id).await.unwrap().spec.is_default, "update moves the default");
    assert_eq!(ids(&b.catalog.list_models(&t, &defaults).await.unwrap().items), vec![c.id.as_uuid()]);
    assert!(b.catalog.get_model(&other, theirs.id).await.unwrap().spec.is_default, "other tenant untouched");

    let c3 = b.catalog.update_model(&t, c.id, model("c", "openai", 10, 0.0, false)).await.unwrap();
    assert!(!c3.spec.is_default);
    assert!(b.catalog.list_models(&t, &defaults).await.unwrap().items.is_empty(), "no default is allowed");
}

/// Writes that move the default flag, run at once from many tasks, all
/// succeed and leave exactly one default: each clears the old default and
/// sets its own as one serial step (the Postgres adapter's advisory lock).
pub async fn catalog_concurrent_default_moves_leave_one_default(b: Backend) {
    let t = tenant("acme");
    let defaults = query(CatalogEntity::Models, &["is_default:eq:true"], None, 50);
    let mut existing = Vec::new();
    for i in 0..8 {
        existing.push(b.catalog.create_model(&t, model(&format!("old{i}"), "openai", 10, 0.0, false)).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, old) in existing.iter().enumerate() {
        let (catalog, tid) = (b.catalog.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            catalog.create_model(&tid, model(&format!("new{i}"), "openai", 10, 0.0, true)).await.map(|m| m.id)
        }));
        let (catalog, tid, id) = (b.catalog.clone(), t.clone(), old.id);
        tasks.push(tokio::spawn(async move {
            catalog.update_model(&tid, id, model(&format!("old{i}"), "openai", 10, 0.0, true)).await.map(|m| m.id)
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.push(task.await.unwrap().expect("a concurrent default move failed").as_uuid());
    }
    let now_default = ids(&b.catalog.list_models(&t, &defaults).await.unwrap().items);
    assert_eq!(now_default.len(), 1, "exactly one default after 16 concurrent moves: {now_default:?}");
    assert!(written.contains(&now_default[0]), "the default is one of the models written");
    assert_eq!(all_models(&b, &t, &query(CatalogEntity::Models, &[], None, 50)).await.len(), 16, "nothing lost");
}

pub async fn catalog_is_tenant_scoped(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let m = b.catalog.create_model(&t, model("gpt-4o", "openai", 128_000, 2.5, true)).await.unwrap();
    let tl = b.catalog.create_tool(&t, tool("search", "")).await.unwrap();
    let a = b.catalog.create_agent(&t, agent("support", m.id, vec![tl.id])).await.unwrap();
    let (cat, key) = (SettingName::category("ui").unwrap(), SettingName::key("theme").unwrap());
    b.catalog.put_setting(&t, &cat, &key, json!("dark")).await.unwrap();

    assert_kind(b.catalog.get_model(&other, m.id).await, "not_found", "foreign model get");
    assert_kind(b.catalog.update_model(&other, m.id, model("z", "z", 1, 0.0, false)).await, "not_found", "update");
    assert_kind(b.catalog.delete_model(&other, m.id).await, "not_found", "foreign model delete");
    assert_kind(b.catalog.get_tool(&other, tl.id).await, "not_found", "foreign tool get");
    assert_kind(b.catalog.update_tool(&other, tl.id, tool("z", "")).await, "not_found", "foreign tool update");
    assert_kind(b.catalog.delete_tool(&other, tl.id).await, "not_found", "foreign tool delete");
    assert_kind(b.catalog.get_agent(&other, a.id).await, "not_found", "foreign agent get");
    assert_kind(b.catalog.agent_tools(&other, a.id).await, "not_found", "foreign agent tools");
    assert_kind(b.catalog.delete_agent(&other, a.id).await, "not_found", "foreign agent delete");
    assert_kind(b.catalog.delete_setting(&other, &cat, &key).await, "not_found", "foreign setting delete");
    assert!(b.catalog.get_setting(&other, &cat, &key).await.unwrap().is_none(), "foreign setting");
    for entity in [CatalogEntity::Models, CatalogEntity::Agents, CatalogEntity::Tools] {
        let q = query(entity, &[], None, 50);
        let n = match entity {
            CatalogEntity::Models => b.catalog.list_models(&other, &q).await.unwrap().items.len(),
            CatalogEntity::Agents => b.catalog.list_agents(&other, &q).await.unwrap().items.len(),
            CatalogEntity::Tools => b.catalog.list_tools(&other, &q).await.unwrap().items.len(),
        };
        assert_eq!(n, 0, "{entity:?} of another tenant listed");
    }
    // The same names are free in another tenant.
    let m2 = b.catalog.create_model(&other, model("gpt-4o", "openai", 1, 0.0, true)).await.unwrap();
    b.catalog.create_agent(&other, agent("support", m2.id, vec![])).await.unwrap();
    assert!(b.catalog.get_model(&t, m.id).await.unwrap().spec.is_default, "owner's default untouched");
    assert_eq!(b.catalog.get_agent(&t, a.id).await.unwrap(), a);
}

/// Checks one model filter against the same predicate evaluated here.
async fn check_filter(b: &Backend, t: &TenantId, all: &[ModelConfig], expr: &str, keep: impl Fn(&ModelConfig) -> bool) {
    let got = all_models(b, t, &query(CatalogEntity::Models, &[expr], Some("name"), 3)).await;
    let mut want: Vec<_> = all.iter().filter(|m| keep(m)).collect();
    want.sort_by(|x, y| x.spec.name.as_bytes().cmp(y.spec.name.as_bytes()));
    let want: Vec<_> = want.iter().map(|m| m.spec.name.clone()).collect();
    let got: Vec<_> = got.iter().map(|m| m.spec.name.clone()).collect();
    assert_eq!(got, want, "filter {expr}");
}

pub async fn catalog_filters_apply_each_operator_to_each_kind(b: Backend) {
    let t = tenant("acme");
    let all = seed_models(&b, &t).await;
    // Noise in another tenant that no filter may return.
    b.catalog.create_model(&tenant("other"), model("gpt-4o", "openai", 128_000, 2.5, false)).await.unwrap();

    // Text.
    check_filter(&b, &t, &all, "provider:eq:openai", |m| m.spec.provider == "openai").await;
    check_filter(&b, &t, &all, "provider:ne:openai", |m| m.spec.provider != "openai").await;
    check_filter(&b, &t, &all, "name:lt:gemini-flash", |m| m.spec.name.as_str() < "gemini-flash").await;
    check_filter(&b, &t, &all, "name:lte:gemini-flash", |m| m.spec.name.as_str() <= "gemini-flash").await;
    check_filter(&b, &t, &all, "name:gt:gpt-4o", |m| m.spec.name.as_str() > "gpt-4o").await;
    check_filter(&b, &t, &all, "name:gte:gpt-4o", |m| m.spec.name.as_str() >= "gpt-4o").await;
    check_filter(&b, &t, &all, "provider:in:google,meta,nobody", |m| {
        ["google", "meta"].contains(&m.spec.provider.as_str())
    })
    .await;
    check_filter(&b, &t, &all, "name:contains:4o", |m| m.spec.name.contains("4o")).await;
    check_filter(&b, &t, &all, "name:contains:a:b/", |m| m.spec.name.contains("a:b/")).await;
    check_filter(&b, &t, &all, "name:contains:mistral", |m| m.spec.name.contains("mistral")).await;
    check_filter(&b, &t, &all, "name:contains:%", |_| false).await;
    check_filter(&b, &t, &all, "name:contains:_", |m| m.spec.name.contains('_')).await;
    check_filter(&b, &t, &all, "name:eq:x';DROP TABLE models--", |_| false).await;
    // Integer.
    let w = |m: &ModelConfig| m.spec.context_window;
    check_filter(&b, &t, &all, "context_window:eq:200000", |m| w(m) == 200_000).await;
    check_filter(&b, &t, &all, "context_window:ne:200000", |m| w(m) != 200_000).await;
    check_filter(&b, &t, &all, "context_window:lt:128000", |m| w(m) < 128_000).await;
    check_filter(&b, &t, &all, "context_window:lte:128000", |m| w(m) <= 128_000).await;
    check_filter(&b, &t, &all, "context_window:gt:128000", |m| w(m) > 128_000).await;
    check_filter(&b, &t, &all, "context_window:gte:128000", |m| w(m) >= 128_000).await;
    check_filter(&b, &t, &all, "context_window:in:8192,1000000", |m| [8_192, 1_000_000].contains(&w(m))).await;
    // Float.
    let p = |m: &ModelConfig| m.spec.input_price;
    check_filter(&b, &t, &all, "input_price:eq:0.15", |m| p(m) == 0.15).await;
    check_filter(&b, &t, &all, "input_price:ne:0.15", |m| p(m) != 0.15).await;
    check_filter(&b, &t, &all, "input_price:lt:2", |m| p(m) < 2.0).await;
    check_filter(&b, &t, &all, "input_price:lte:2", |m| p(m) <= 2.0).await;
    check_filter(&b, &t, &all, "input_price:gt:2", |m| p(m) > 2.0).await;
    check_filter(&b, &t, &all, "input_price:gte:2.0", |m| p(m) >= 2.0).await;
    check_filter(&b, &t, &all, "input_price:in:0,3", |m| p(m) == 0.0 || p(m) == 3.0).await;
    // Bool.
    check_filter(&b, &t, &all, "is_default:eq:true", |m| m.spec.is_default).await;
    check_filter(&b, &t, &all, "is_default:ne:true", |m| !m.spec.is_default).await;
    check_filter(&b, &t, &all, "is_default:eq:false", |m| !m.spec.is_default).await;
    // Timestamp: around the fifth model's creation time.
    let pivot = all[4].created_at;
    let at = pivot.format(&time::format_description::well_known::Rfc3339).unwrap();
    let c = |m: &ModelConfig| m.created_at;
    check_filter(&b, &t, &all, &format!("created_at:eq:{at}"), |m| c(m) == pivot).await;
    check_filter(&b, &t, &all, &format!("created_at:ne:{at}"), |m| c(m) != pivot).await;
    check_filter(&b, &t, &all, &format!("created_at:lt:{at}"), |m| c(m) < pivot).await;
    check_filter(&b, &t, &all, &format!("created_at:lte:{at}"), |m| c(m) <= pivot).await;
    check_filter(&b, &t, &all, &format!("created_at:gt:{at}"), |m| c(m) > pivot).await;
    check_filter(&b, &t, &all, &format!("created_at:gte:{at}"), |m| c(m) >= pivot).await;
    let first = all[0].created_at;
    let at0 = first.format(&time::format_description::well_known::Rfc3339).unwrap();
    check_filter(&b, &t, &all, &format!("created_at:in:{at0},{at}"), |m| c(m) == first || c(m) == pivot).await;
    // Several filters: all must hold.
    let got = all_models(
        &b,
        &t,
        &query(CatalogEntity::Models, &["provider:eq:openai", "context_window:gte:128000"], Some("name"), 50),
    )
    .await;
    let names: Vec<_> = got.iter().map(|m| m.spec.name.as_str()).collect();
    assert_eq!(names, vec!["gpt-4o", "gpt-4o-mini", "o3"]);

    // Id and text list, on agents.
    let search = b.catalog.create_tool(&t, tool("search", "searches the web")).await.unwrap();
    let calc = b.catalog.create_tool(&t, tool("calc", "adds numbers")).await.unwrap();
    let (m0, m1) = (all[0].id, all[1].id);
    let a = b.catalog.create_agent(&t, agent("a", m0, vec![search.id, calc.id])).await.unwrap();
    let bb = b.catalog.create_agent(&t, agent("b", m1, vec![calc.id])).await.unwrap();
    let c_ = b.catalog.create_agent(&t, agent("c", m1, vec![])).await.unwrap();
    let agents = |filters: Vec<String>| {
        let b = b.clone();
        let t = t.clone();
        async move {
            let f: Vec<&str> = filters.iter().map(String::as_str).collect();
            let q = query(CatalogEntity::Agents, &f, Some("name"), 50);
            b.catalog.list_agents(&t, &q).await.unwrap().items.into_iter().map(|a| a.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(agents(vec![format!("model_id:eq:{m1}")]).await, vec![bb.id, c_.id]);
    assert_eq!(agents(vec![format!("model_id:ne:{m1}")]).await, vec![a.id]);
    assert_eq!(agents(vec![format!("model_id:in:{m0},{}", ModelId::new())]).await, vec![a.id]);
    assert_eq!(agents(vec![format!("tool_ids:contains:{}", calc.id)]).await, vec![a.id, bb.id]);
    assert_eq!(agents(vec![format!("tool_ids:contains:{}", search.id)]).await, vec![a.id]);
    assert_eq!(agents(vec!["tool_ids:contains:%".to_owned()]).await, vec![]);
    let tools = b.catalog.list_tools(&t, &query(CatalogEntity::Tools, &["description:contains:web"], None, 50)).await;
    assert_eq!(tools.unwrap().items.into_iter().map(|x| x.id).collect::<Vec<_>>(), vec![search.id]);
}

pub async fn catalog_sorting_pages_without_skips_or_repeats(b: Backend) {
    let t = tenant("acme");
    let all = seed_models(&b, &t).await;
    for spec in MODEL_FIELDS.iter().filter(|f| f.sortable) {
        for descending in [false, true] {
            let sort = if descending { format!("-{}", spec.name) } else { spec.name.to_owned() };
            let mut want: Vec<_> = all.iter().collect();
            want.sort_by(|x, y| {
                let o = cmp_values(&x.sort_value(spec.name).unwrap(), &y.sort_value(spec.name).unwrap())
                    .then(x.id.cmp(&y.id));
                if descending { o.reverse() } else { o }
            });
            let want: Vec<_> = want.iter().map(|m| m.id.as_uuid()).collect();
            for limit in [1, 3, 4, 10, 11] {
                let got = all_models(&b, &t, &query(CatalogEntity::Models, &[], Some(&sort), limit)).await;
                assert_eq!(ids(&got), want, "sort {sort}, pages of {limit}");
            }
        }
    }
    // Paging a filtered listing with ties on the sort field.
    let got =
        all_models(&b, &t, &query(CatalogEntity::Models, &["provider:ne:meta"], Some("-context_window"), 2)).await;
    let mut want: Vec<_> = all.iter().filter(|m| m.spec.provider != "meta").collect();
    want.sort_by(|x, y| y.spec.context_window.cmp(&x.spec.context_window).then(y.id.cmp(&x.id)));
    assert_eq!(ids(&got), want.iter().map(|m| m.id.as_uuid()).collect::<Vec<_>>());
    // A record written between pages appears at most once.
    let q = query(CatalogEntity::Models, &[], Some("provider"), 4);
    let first = b.catalog.list_models(&t, &q).await.unwrap();
    b.catalog.create_model(&t, model("zz-late", "anthropic", 1, 0.0, false)).await.unwrap();
    let rest = all_models(&b, &t, &q.clone().resume(&t, first.next_cursor.as_ref().unwrap()).unwrap()).await;
    let mut seen = ids(&first.items);
    seen.extend(ids(&rest));
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    assert_eq!(seen.len(), all.len(), "the late anthropic model sorts before the cursor and is not seen");
}

pub async fn catalog_settings_round_trip_and_absent_is_none(b: Backend) {
    let (t, other) = (tenant("acme"), tenant("other"));
    let (cat, key) = (SettingName::category("retrieval").unwrap(), SettingName::key("top_k").unwrap());
    assert!(b.catalog.get_setting(&t, &cat, &key).await.unwrap().is_none(), "absent");
    let put = b.catalog.put_setting(&t, &cat, &key, json!({"value": 5, "list": [1, "a", null]})).await.unwrap();
    assert_eq!(put.value, json!({"value": 5, "list": [1, "a", null]}));
    assert_eq!((&put.category, &put.key, &put.tenant), (&cat, &key, &t));
    assert_eq!(b.catalog.get_setting(&t, &cat, &key).await.unwrap(), Some(put.clone()));
    for value in [json!(7), json!("text"), json!(null), json!(false), json!([1.5])] {
        let again = b.catalog.put_setting(&t, &cat, &key, value.clone()).await.unwrap();
        assert_eq!(b.catalog.get_setting(&t, &cat, &key).await.unwrap().map(|s| s.value), Some(value));
        assert!(again.updated_at >= put.updated_at);
    }
    let other_key = SettingName::key("mode").unwrap();
    assert!(b.catalog.get_setting(&t, &cat, &other_key).await.unwrap().is_none(), "keys are separate");
    let big = json!("x".repeat(memlayer_domain::MAX_CATALOG_JSON_BYTES));
    assert_kind(b.catalog.put_setting(&t, &cat, &other_key, big).await, "invalid", "oversized value");
    assert!(b.catalog.get_setting(&t, &cat, &other_key).await.unwrap().is_none(), "nothing stored");
    assert!(b.catalog.get_setting(&other, &cat, &key).await.unwrap().is_none(), "tenant scoped");
    b.catalog.delete_setting(&t, &cat, &key).await.unwrap();
    assert!(b.catalog.get_setting(&t, &cat, &key).await.unwrap().is_none(), "deleted");
    assert_kind(b.catalog.delete_setting(&t, &cat, &key).await, "not_found", "deleted twice");
}
