//! Context assembly over the real libSQL store and tokenizer, with mocked
//! working memory and summaries: each rule of the issue, checked on what
//! `ContextService::assemble` returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use memlayer_adapters_embed::{ExactIndex, TiktokenCounter};
use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{
    CacheSettings, CatalogService, ContextError, ContextRequest, ContextService, RECALL_HEADER, SearchService,
};
use memlayer_domain::{
    Budget, ContextOptions, Credential, MemoryOptions, Message, Metadata, NewAgent, NewMessage, NewModel, NewThread,
    Principal, ProcessorSpec, RecallOptions, RecallScope, ResourceId, Role, Scopes, SearchMode, Section, StateVersion,
    Summary, TenantId, ThreadId, TokenCount, TokenEncoding, ToolCall, WorkingContent, WorkingMemory, WorkingScope,
    from_micros,
};
use memlayer_ports::{
    EmbedderInfo, MessageStore, MockEmbedder, MockSummaryStore, MockWorkingMemoryStore, StoreError, ThreadStore,
    TokenCounter, WorkingMemoryStore as _,
};
use serde_json::json;

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// The real tokenizer, counting how many texts it was asked to count.
#[derive(Debug, Default)]
struct Counted {
    inner: TiktokenCounter,
    texts: AtomicUsize,
}

#[async_trait]
impl TokenCounter for Counted {
    async fn count(&self, model: &str, texts: Vec<String>) -> Vec<TokenCount> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.count(model, texts).await
    }

    fn encoding(&self, model: &str) -> TokenEncoding {
        self.inner.encoding(model)
    }
}

struct Fixture {
    store: Arc<LibsqlBackend>,
    catalog: CatalogService,
    counter: Arc<Counted>,
    context: ContextService,
}

async fn fixture() -> Fixture {
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let catalog = CatalogService::new(store.clone(), CacheSettings::default());
    let counter = Arc::new(Counted::default());
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(|| EmbedderInfo { model: "m".into(), dim: 2, max_tokens: 8 });
    let search = SearchService::new(
        Arc::new(embedder),
        Arc::new(ExactIndex::new()),
        store.clone(),
        store.clone(),
        store.clone(),
    );
    let context =
        ContextService::new(store.clone(), store.clone(), counter.clone(), catalog.clone()).with_search(search);
    Fixture { store, catalog, counter, context }
}

impl Fixture {
    async fn thread(&self, model: Option<&str>, resource: Option<&str>, agent: Option<&str>) -> ThreadId {
        let new = NewThread {
            model: model.map(Into::into),
            resource_id: resource.map(|r| ResourceId::parse(r).unwrap()),
            agent_id: agent.map(|a| memlayer_domain::AgentName::parse(a).unwrap()),
            ..NewThread::default()
        };
        self.store.create(&tenant(), new).await.unwrap().id
    }

    /// Appends `texts` as alternating user and assistant messages, counted
    /// for gpt-4o as an append with `count_tokens` would.
    async fn say(&self, thread: ThreadId, texts: &[String]) -> Vec<Message> {
        let counts = self.counter.inner.count("gpt-4o", texts.to_vec()).await;
        let batch = texts
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(i, (t, c))| {
                let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
                NewMessage::text(role, t.clone()).unwrap().with_token_count(c)
            })
            .collect();
        self.store.append(&tenant(), thread, batch).await.unwrap()
    }

    async fn agent(&self, name: &str, prompt: &str, memory: MemoryOptions) {
        let model = self
            .catalog
            .create_model(
                &tenant(),
                NewModel {
                    name: format!("gpt-4o-{name}"),
                    provider: "openai".into(),
                    context_window: 4_000,
                    max_output_tokens: 1_000,
                    input_price: 0.0,
                    output_price: 0.0,
                    is_default: false,
                },
            )
            .await
            .unwrap();
        let spec = NewAgent {
            name: memlayer_domain::AgentName::parse(name).unwrap(),
            model_id: model.id,
            system_prompt: prompt.into(),
            tool_ids: vec![],
            memory,
            runner: None,
        };
        self.catalog.create_agent(&tenant(), spec).await.unwrap();
    }
}

fn texts(n: usize, what: &str) -> Vec<String> {
    (0..n).map(|i| format!("{what} number {i}: the quick brown fox jumps over the lazy dog")).collect()
}

fn budget(n: i64) -> Option<Budget> {
    Some(Budget::new(n).unwrap())
}

fn no_recall() -> Option<RecallOptions> {
    Some(RecallOptions { disabled: true, ..RecallOptions::default() })
}

/// Counts a context as OpenAI's cookbook does: 3 tokens per message plus
/// the role's, a name's tokens plus 1, 3 for the reply's priming.
async fn cookbook_total(ctx: &memlayer_app::AssembledContext) -> u32 {
    let counter = TiktokenCounter::new();
    let mut total = 3;
    for m in &ctx.messages {
        let mut texts = vec![m.content().to_owned(), m.role.as_str().to_owned()];
        if let Some(n) = &m.name {
            texts.push(n.clone());
            total += 1;
        }
        total += 3;
        total += counter.count("gpt-4o", texts).await.iter().map(|c| c.count).sum::<u32>();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_fills_the_budget_newest_first_and_the_total_is_the_tokenizers() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    let stored = f.say(id, &texts(300, "fact")).await;
    let ctx = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(700), recall: no_recall(), ..Default::default() })
        .await
        .unwrap();
    assert!(ctx.tokens.total <= 700, "{}", ctx.tokens.total);
    assert!(ctx.exact, "gpt-4o and plain text: exact");
    assert_eq!((ctx.encoding.as_str(), ctx.format), ("o200k_base", "openai-chat"));
    assert_eq!(ctx.tokens.total, cookbook_total(&ctx).await, "the total is what the tokenizer and framing give");
    let seqs: Vec<i64> =
        ctx.sections.iter().find(|s| s.section == Section::Recent).unwrap().messages.iter().map(|s| s.seq).collect();
    let n = seqs.len();
    assert!(n > 10, "{n}");
    assert_eq!(seqs, (301 - n as i64..=300).collect::<Vec<_>>(), "the newest, oldest first, without a gap");
    assert_eq!(ctx.messages.last().unwrap().content(), stored[299].content);
    let next = ctx.dropped.iter().find(|d| d.section == Section::Recent && d.reason == "budget").unwrap();
    assert_eq!(next.messages[0].seq, 300 - n as i64, "the next older message is named");
    assert!(ctx.tokens.total + next.tokens.unwrap() > 700, "and it really did not fit");
    // Identical state, identical output.
    let again = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(700), recall: no_recall(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(again, ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_their_results_are_kept_or_dropped_together() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    let call = |i: usize| {
        NewMessage::new(
            Role::Assistant,
            "",
            None,
            None,
            vec![
                ToolCall { id: format!("a{i}"), name: "lookup".into(), arguments: json!({"order": i}) },
                ToolCall { id: format!("b{i}"), name: "lookup".into(), arguments: json!({"order": i + 1}) },
            ],
            Metadata::default(),
        )
        .unwrap()
    };
    let answer = |id: String| {
        NewMessage::new(
            Role::Tool,
            "found it: shipped on Monday",
            Some(id),
            Some("lookup".into()),
            vec![],
            Metadata::default(),
        )
        .unwrap()
    };
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(NewMessage::text(Role::User, format!("where is order {i}?")).unwrap());
        batch.push(call(i));
        batch.push(answer(format!("a{i}")));
        batch.push(answer(format!("b{i}")));
        batch.push(NewMessage::text(Role::Assistant, format!("order {i} shipped")).unwrap());
    }
    // An orphan: a tool result whose call was deleted.
    batch.push(NewMessage::new(Role::Tool, "stale", Some("gone".into()), None, vec![], Metadata::default()).unwrap());
    batch.push(NewMessage::text(Role::User, "thanks").unwrap());
    f.store.append(&tenant(), id, batch).await.unwrap();
    for b in 60..400 {
        let ctx = f
            .context
            .assemble(&tenant(), id, ContextRequest { budget: budget(b), recall: no_recall(), ..Default::default() })
            .await
            .unwrap();
        assert!(ctx.tokens.total <= u32::try_from(b).unwrap());
        let tools = ctx.messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls().is_empty());
        assert_eq!(ctx.exact, !tools, "budget {b}: tool framing is not documented");
        let mut open: Vec<String> = Vec::new();
        for m in &ctx.messages {
            for c in m.tool_calls() {
                open.push(c.id.clone());
            }
            if m.role == Role::Tool {
                let id = m.tool_call_id.clone().unwrap();
                assert!(open.contains(&id), "budget {b}: result {id} without its call");
                assert_ne!(id, "gone", "the orphan is never sent");
            }
        }
        if let Some(first) = ctx.messages.iter().find(|m| m.section == Section::Recent) {
            assert_ne!(first.role, Role::Tool, "budget {b}: recent starts inside an exchange");
        }
        // Every call sent has its results sent.
        for m in ctx.messages.iter().filter(|m| !m.tool_calls().is_empty()) {
            for c in m.tool_calls() {
                assert!(
                    ctx.messages.iter().any(|r| r.tool_call_id.as_deref() == Some(&c.id)),
                    "budget {b}: {} unanswered",
                    c.id
                );
            }
        }
        if b == 399 {
            assert!(ctx.dropped.iter().any(|d| d.reason == "orphan_tool_result"), "{:?}", ctx.dropped);
        }
    }
}

fn working(scope: WorkingScope, text: &str) -> WorkingMemory {
    WorkingMemory {
        scope,
        content: WorkingContent::Markdown(text.into()),
        version: StateVersion::from(3u64),
        updated_at: from_micros(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_changes_only_when_it_does() {
    let f = fixture().await;
    f.agent("support", "You are a careful support agent.", MemoryOptions::default()).await;
    let id = f.thread(Some("gpt-4o"), Some("user-1"), Some("support")).await;
    f.say(id, &texts(50, "chat")).await;
    let mut wm = MockWorkingMemoryStore::new();
    wm.expect_get_working().returning(|_, scope| Ok(Some(working(scope.clone(), "- prefers e-mail\n- lives in Lyon"))));
    let mut sums = MockSummaryStore::new();
    sums.expect_current_summary().returning(move |_, thread| {
        Ok(Some(Summary {
            thread_id: thread,
            version: 2,
            text: "The user asked about an order; it shipped.".into(),
            covers_through: 30,
            covered_messages: 30,
            summarizer: "local:extractive".into(),
            created_at: from_micros(0),
        }))
    });
    let context = f.context.clone().with_working_memory(Arc::new(wm)).with_summaries(Arc::new(sums));
    let request = || ContextRequest { budget: budget(400), recall: no_recall(), ..Default::default() };
    let before = context.assemble(&tenant(), id, request()).await.unwrap();
    let prefix: Vec<_> = before.messages.iter().take_while(|m| m.section.is_prefix()).cloned().collect();
    assert_eq!(
        prefix.iter().map(|m| m.section).collect::<Vec<_>>(),
        [Section::System, Section::WorkingMemory, Section::Summary]
    );
    assert_eq!(prefix[1].name.as_deref(), Some("working_memory"));
    assert!(prefix[1].content().contains("lives in Lyon"));
    assert_eq!(prefix[2].name.as_deref(), Some("summary"));
    let summary = before.sections.iter().find(|s| s.section == Section::Summary).unwrap();
    assert_eq!((summary.version, summary.covers_through), (Some(2), Some(30)));
    assert_eq!(before.tokens.total, cookbook_total(&before).await);
    // A long new message pushes old ones out; the prefix stays byte for byte.
    f.say(id, &["x ".repeat(120)]).await;
    let after = context.assemble(&tenant(), id, request()).await.unwrap();
    assert_eq!(after.messages[..3], prefix[..]);
    assert_ne!(after.messages, before.messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_the_system_prompt_names_the_minimum() {
    let f = fixture().await;
    f.agent("talker", &"Always answer in full sentences. ".repeat(20), MemoryOptions::default()).await;
    let id = f.thread(Some("gpt-4o"), None, Some("talker")).await;
    f.say(id, &texts(3, "hi")).await;
    let err = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(50), ..Default::default() })
        .await
        .unwrap_err();
    let ContextError::BudgetTooSmall { minimum, budget: asked } = err else { panic!("{err:?}") };
    assert_eq!(asked, 50);
    assert!(minimum > 50);
    let ok = f
        .context
        .assemble(
            &tenant(),
            id,
            ContextRequest { budget: budget(i64::from(minimum)), recall: no_recall(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(ok.tokens.total, minimum, "exactly the system prompt and the priming");
    assert_eq!(ok.messages.len(), 1);
    assert!(ok.dropped.iter().any(|d| d.section == Section::Recent && d.reason == "budget"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_and_model_come_from_the_agent_and_the_catalog() {
    let f = fixture().await;
    f.agent("defaults", "Be brief.", MemoryOptions::default()).await;
    // No model on the thread: the agent's model (gpt-4o-defaults), whose
    // window of 4000 minus 1000 output tokens is the budget.
    let id = f.thread(None, None, Some("defaults")).await;
    f.say(id, &texts(400, "long")).await;
    let ctx =
        f.context.assemble(&tenant(), id, ContextRequest { recall: no_recall(), ..Default::default() }).await.unwrap();
    assert_eq!((ctx.model.as_deref(), ctx.budget), (Some("gpt-4o-defaults"), 3_000));
    assert!(ctx.exact);
    // A token_budget option wins over the catalog; the request over both.
    let opts = MemoryOptions { token_budget: Some(900), ..MemoryOptions::default() };
    let meta = Metadata::from_value(json!({"_memory": opts.to_value()})).unwrap();
    let with_budget = f
        .store
        .create(
            &tenant(),
            NewThread {
                metadata: meta,
                agent_id: Some(memlayer_domain::AgentName::parse("defaults").unwrap()),
                ..NewThread::default()
            },
        )
        .await
        .unwrap()
        .id;
    let ctx = f
        .context
        .assemble(&tenant(), with_budget, ContextRequest { recall: no_recall(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ctx.budget, 900);
    let ctx = f
        .context
        .assemble(
            &tenant(),
            with_budget,
            ContextRequest { budget: budget(100), recall: no_recall(), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(ctx.budget, 100);
    // Neither budget nor a known model: an error saying what to pass.
    let bare = f.thread(Some("my-local-model"), None, None).await;
    let err = f.context.assemble(&tenant(), bare, ContextRequest::default()).await.unwrap_err();
    let ContextError::BudgetUnknown { model } = &err else { panic!("{err:?}") };
    assert_eq!(model, "my-local-model");
    assert!(err.to_string().contains("pass budget"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_estimated_with_a_margin_and_flagged() {
    let f = fixture().await;
    let id = f.thread(Some("claude-sonnet-4"), None, None).await;
    f.say(id, &texts(40, "note")).await;
    let ctx = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(600), recall: no_recall(), ..Default::default() })
        .await
        .unwrap();
    assert!(!ctx.exact);
    assert_eq!((ctx.encoding.as_str(), ctx.format), ("estimate:chars/4", "estimate"));
    assert!(ctx.tokens.total <= 600);
    // The estimate is above the plain chars/4 figure: the margin and framing.
    let plain: u32 = ctx.messages.iter().map(|m| u32::try_from(m.content().chars().count().div_ceil(4)).unwrap()).sum();
    assert!(
        ctx.tokens.total > plain + 8 * u32::try_from(ctx.messages.len()).unwrap(),
        "{} vs {plain}",
        ctx.tokens.total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_for_another_encoding_are_stored_once() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    let stored = f.say(id, &texts(120, "entry")).await;
    let request = || ContextRequest {
        model: Some("gpt-4".into()),
        budget: budget(100_000),
        recall: no_recall(),
        ..Default::default()
    };
    let first = f.context.assemble(&tenant(), id, request()).await.unwrap();
    assert_eq!(first.encoding, "cl100k_base");
    let ids: Vec<_> = stored.iter().map(|m| m.id).collect();
    let cached = f.store.token_counts(&tenant(), "cl100k_base", ids).await.unwrap();
    assert_eq!(cached.len(), 120, "every message counted for cl100k_base is stored");
    let counted = f.counter.texts.load(Ordering::SeqCst);
    let second = f.context.assemble(&tenant(), id, request()).await.unwrap();
    assert_eq!(f.counter.texts.load(Ordering::SeqCst), counted, "the second assembly tokenises nothing");
    assert_eq!(first, second);
    // For the thread's own encoding the append's counts serve: nothing stored.
    let own = ContextRequest { model: None, ..request() };
    f.context.assemble(&tenant(), id, own).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|m| m.id).collect();
    assert!(f.store.token_counts(&tenant(), "o200k_base", ids).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_is_kept_or_reported() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    f.say(id, &texts(30, "line")).await;
    let ctx = f
        .context
        .assemble(
            &tenant(),
            id,
            ContextRequest { budget: budget(60), last_n: Some(10), recall: no_recall(), ..Default::default() },
        )
        .await
        .unwrap();
    let d = ctx.dropped.iter().find(|d| d.reason == "last_n_unmet").unwrap();
    assert!(d.detail.contains("last_n is 10"), "{}", d.detail);
    assert!(ctx.tokens.total <= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_never_repeats_recent_messages_and_is_marked() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    let mut lines = texts(60, "filler");
    lines[4] = "my kettle broke and leaks water".into();
    lines[58] = "is the kettle refund approved?".into();
    f.say(id, &lines).await;
    let recall =
        RecallOptions { mode: SearchMode::Lexical, top_k: Some(5), before: 1, after: 0, ..RecallOptions::default() };
    let ctx = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(300), recall: Some(recall), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ctx.query.as_deref(), Some("is the kettle refund approved?"), "the newest user message");
    let recalled = ctx.sections.iter().find(|s| s.section == Section::Recall).expect("recall ran");
    let recent = ctx.sections.iter().find(|s| s.section == Section::Recent).unwrap();
    assert!(recalled.messages.iter().any(|s| s.seq == 5), "the old kettle message: {recalled:?}");
    assert!(recalled.messages.iter().any(|s| s.seq == 4), "with its neighbour before it");
    for s in &recalled.messages {
        assert!(recent.messages.iter().all(|r| r.message_id != s.message_id), "seq {} repeated", s.seq);
    }
    let header = ctx.messages.iter().position(|m| m.content() == RECALL_HEADER).unwrap();
    assert_eq!(ctx.messages[header].name.as_deref(), Some("recall"));
    let first = &ctx.messages[header + 1];
    assert_eq!((first.role, first.section), (Role::System, Section::Recall));
    assert!(first.name.as_deref().unwrap().starts_with("recalled_"));
    assert_eq!(ctx.tokens.total, cookbook_total(&ctx).await);
    assert!(ctx.tokens.total <= 300);
    // A query given up front is searched while the recent messages are read;
    // the result is filtered the same way.
    let given = ContextRequest {
        budget: budget(300),
        recall: Some(recall),
        query: Some("kettle refund".into()),
        ..Default::default()
    };
    let ctx = f.context.assemble(&tenant(), id, given).await.unwrap();
    assert_eq!(ctx.query.as_deref(), Some("kettle refund"));
    let recalled = ctx.sections.iter().find(|s| s.section == Section::Recall).expect("recall ran");
    let recent = ctx.sections.iter().find(|s| s.section == Section::Recent).unwrap();
    assert!(recalled.messages.iter().any(|s| s.seq == 5), "{recalled:?}");
    assert!(recalled.messages.iter().all(|s| recent.messages.iter().all(|r| r.seq != s.seq)), "no repeat");
}

fn bound(resource: &str) -> Principal {
    Principal {
        tenant: tenant(),
        scopes: Scopes::ALL,
        resource: Some(ResourceId::parse(resource).unwrap()),
        credential: Credential::Anonymous,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_caller_reaches_its_resource_only() {
    let f = fixture().await;
    let mine = f.thread(Some("gpt-4o"), Some("u1"), None).await;
    let sibling = f.thread(Some("gpt-4o"), Some("u1"), None).await;
    let theirs = f.thread(Some("gpt-4o"), Some("u2"), None).await;
    f.say(sibling, &["the kettle was bought in May".into()]).await;
    f.say(theirs, &["another kettle secret".into()]).await;
    f.say(mine, &["tell me about my kettle".into()]).await;
    let who = bound("u1");
    let err = f.context.assemble(&who, theirs, ContextRequest { budget: budget(500), ..Default::default() }).await;
    assert!(matches!(err, Err(ContextError::Store(StoreError::NotFound { .. }))), "{err:?}");
    let recall = RecallOptions { mode: SearchMode::Lexical, scope: RecallScope::Resource, ..RecallOptions::default() };
    let ctx = f
        .context
        .assemble(&who, mine, ContextRequest { budget: budget(500), recall: Some(recall), ..Default::default() })
        .await
        .unwrap();
    let recalled = &ctx.sections.iter().find(|s| s.section == Section::Recall).expect("recall ran").messages;
    assert_eq!(recalled.iter().map(|s| s.thread_id).collect::<Vec<_>>(), vec![sibling], "{recalled:?}");
    assert!(!ctx.messages.iter().any(|m| m.content().contains("secret")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_run_before_packing_and_report() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    let batch = ["mail me at ann@example.com", "sure", "sure", "card 4111 1111 1111 1111"]
        .map(|t| NewMessage::text(Role::User, t).unwrap())
        .to_vec();
    f.store.append(&tenant(), id, batch).await.unwrap();
    let processors = Some(vec![ProcessorSpec::Dedupe, ProcessorSpec::RedactPii]);
    let ctx = f
        .context
        .assemble(
            &tenant(),
            id,
            ContextRequest { budget: budget(500), processors, recall: no_recall(), ..Default::default() },
        )
        .await
        .unwrap();
    let sent: Vec<&str> = ctx.messages.iter().map(|m| m.content()).collect();
    assert_eq!(sent, ["mail me at [redacted email]", "sure", "card [redacted card]"]);
    assert_eq!(ctx.processors[0].stats.removed, 1);
    assert_eq!(ctx.processors[1].stats.redacted.get("email"), Some(&1));
    assert_eq!(ctx.processors[1].stats.redacted.get("card"), Some(&1));
    assert_eq!(ctx.tokens.total, cookbook_total(&ctx).await, "redacted texts are counted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_context_options_apply() {
    let f = fixture().await;
    let options = ContextOptions {
        processors: vec![ProcessorSpec::RoleFilter { roles: vec![Role::Assistant] }],
        ..ContextOptions::default()
    };
    f.agent(
        "quiet",
        "Be brief.",
        MemoryOptions { context: Some(options), last_n: Some(2), ..MemoryOptions::default() },
    )
    .await;
    let id = f.thread(Some("gpt-4o"), None, Some("quiet")).await;
    f.say(id, &texts(6, "turn")).await;
    let ctx = f
        .context
        .assemble(&tenant(), id, ContextRequest { budget: budget(800), recall: no_recall(), ..Default::default() })
        .await
        .unwrap();
    assert!(ctx.messages.iter().all(|m| m.role != Role::Assistant), "the agent's role filter ran");
    assert_eq!(ctx.processors[0].name, "role_filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_embedding_model_recall_is_skipped_and_said() {
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let catalog = CatalogService::new(store.clone(), CacheSettings::default());
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(|| EmbedderInfo { model: "m".into(), dim: 2, max_tokens: 8 });
    embedder
        .expect_embed_interactive()
        .returning(|_| Err(StoreError::Unavailable("model missing: run scripts/provision".into())));
    let search = SearchService::new(
        Arc::new(embedder),
        Arc::new(ExactIndex::new()),
        store.clone(),
        store.clone(),
        store.clone(),
    );
    let context = ContextService::new(store.clone(), store.clone(), Arc::new(TiktokenCounter::new()), catalog)
        .with_search(search);
    let id =
        store.create(&tenant(), NewThread { model: Some("gpt-4o".into()), ..NewThread::default() }).await.unwrap().id;
    store.append(&tenant(), id, vec![NewMessage::text(Role::User, "where is my kettle?").unwrap()]).await.unwrap();
    let recall = RecallOptions { mode: SearchMode::Vector, ..RecallOptions::default() };
    let ctx = context
        .assemble(&tenant(), id, ContextRequest { budget: budget(500), recall: Some(recall), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ctx.messages.len(), 1, "the context is still assembled");
    let d = ctx.dropped.iter().find(|d| d.reason == "recall_unavailable").expect("and says why recall is missing");
    assert!(!d.detail.contains("scripts/provision"), "no server detail in the response: {}", d.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_memory_and_the_summary_come_from_their_stores() {
    let f = fixture().await;
    let context = f.context.clone().with_working_memory(f.store.clone()).with_summaries(f.store.clone());
    let t = tenant();
    // Resource scope by default: the user's document, not the thread's.
    f.agent("helper", "Help.", MemoryOptions::default()).await;
    let id = f.thread(Some("gpt-4o"), Some("user-9"), Some("helper")).await;
    f.say(id, &texts(20, "chat")).await;
    let user = ResourceId::parse("user-9").unwrap();
    f.store
        .put_working(&t, &WorkingScope::Resource(user.clone()), WorkingContent::Json(json!({"name": "Ann"})), 0, 10)
        .await
        .unwrap();
    f.store
        .put_working(&t, &WorkingScope::Thread(id), WorkingContent::Markdown("thread note".into()), 0, 10)
        .await
        .unwrap();
    let summary = memlayer_domain::NewSummary {
        text: "They talked about kettles.".into(),
        covers_through: 10,
        newly_covered: 10,
        summarizer: "test".into(),
    };
    memlayer_ports::SummaryStore::save_summary(&*f.store, &t, id, summary, 0).await.unwrap();
    let request = || ContextRequest { budget: budget(2_000), recall: no_recall(), ..Default::default() };
    let ctx = context.assemble(&t, id, request()).await.unwrap();
    let wm = ctx.messages.iter().find(|m| m.section == Section::WorkingMemory).unwrap();
    assert!(wm.content().contains(r#"{"name":"Ann"}"#) && !wm.content().contains("thread note"), "{}", wm.content());
    let sum = ctx.messages.iter().find(|m| m.section == Section::Summary).unwrap();
    assert!(sum.content().contains("through message 10") && sum.content().contains("kettles"), "{}", sum.content());
    let report = |s: Section| ctx.sections.iter().find(|r| r.section == s).unwrap().clone();
    assert_eq!(report(Section::WorkingMemory).version, Some(1));
    assert_eq!((report(Section::Summary).version, report(Section::Summary).covers_through), (Some(1), Some(10)));
    assert_eq!(ctx.tokens.total, cookbook_total(&ctx).await);
    // A thread-scoped agent reads the thread's own document.
    let options = memlayer_domain::WorkingMemoryOptions {
        scope: memlayer_domain::WorkingScopeKind::Thread,
        ..memlayer_domain::WorkingMemoryOptions::default()
    };
    f.agent("scoped", "Help.", MemoryOptions { working_memory: Some(options), ..MemoryOptions::default() }).await;
    let other = f.thread(Some("gpt-4o"), Some("user-9"), Some("scoped")).await;
    f.say(other, &texts(2, "hi")).await;
    f.store
        .put_working(&t, &WorkingScope::Thread(other), WorkingContent::Markdown("thread two note".into()), 0, 10)
        .await
        .unwrap();
    let ctx = context.assemble(&t, other, request()).await.unwrap();
    let wm = ctx.messages.iter().find(|m| m.section == Section::WorkingMemory).unwrap();
    assert!(wm.content().ends_with("thread two note"), "{}", wm.content());
    assert!(ctx.messages.iter().all(|m| m.section != Section::Summary), "no summary yet: none sent");
}

#[tokio::test]
async fn recall_fills_top_k_however_many_better_hits_are_recent() {
    let f = fixture().await;
    let id = f.thread(Some("gpt-4o"), None, None).await;
    // 20 old messages that match once, then 60 that match three times each:
    // every newer one outranks every old one, and the recent messages hold
    // more of them than an over-fetch of `2k + 8` would cover.
    let mut lines: Vec<String> = (0..20).map(|i| format!("kettle note number {i} about the order")).collect();
    lines.extend((0..60).map(|i| format!("kettle kettle kettle update number {i}")));
    f.say(id, &lines).await;
    let recall = RecallOptions { mode: SearchMode::Lexical, top_k: Some(3), ..RecallOptions::default() };
    let request = ContextRequest {
        budget: budget(900),
        recall: Some(recall),
        query: Some("kettle".into()),
        ..Default::default()
    };
    let ctx = f.context.assemble(&tenant(), id, request).await.unwrap();
    let recent = ctx.sections.iter().find(|s| s.section == Section::Recent).unwrap();
    assert!(recent.messages.len() > 2 * 3 + 8, "the recent messages hold {} of the better hits", recent.messages.len());
    let recalled = ctx.sections.iter().find(|s| s.section == Section::Recall).expect("recall ran");
    assert_eq!(recalled.messages.len(), 3, "top_k recalled: {recalled:?}");
    for s in &recalled.messages {
        assert!(recent.messages.iter().all(|r| r.message_id != s.message_id), "seq {} repeated", s.seq);
    }
}

#[tokio::test]
async fn recall_ranks_as_search_does_without_the_excluded_messages() {
    use memlayer_domain::{Embedding, SearchQuery, SearchScope, TopK, Window};
    use memlayer_ports::{VectorEntry, VectorIndex as _};
    let store = Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap());
    let index = Arc::new(ExactIndex::new());
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(|| EmbedderInfo { model: "m".into(), dim: 2, max_tokens: 8 });
    embedder.expect_embed_interactive().returning(|_| Ok(vec![Embedding::new("m", vec![1.0, 0.0], 2).unwrap()]));
    let search = SearchService::new(Arc::new(embedder), index.clone(), store.clone(), store.clone(), store.clone());
    let thread = store.create(&tenant(), NewThread::default()).await.unwrap().id;
    let batch = (0..40).map(|i| NewMessage::text(Role::User, format!("message {i}")).unwrap()).collect();
    let messages = store.append(&tenant(), thread, batch).await.unwrap();
    // Message i scores cos(0.07 i) against the query: the older, the better.
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let a = 0.07 * i as f32;
            VectorEntry {
                id: m.id,
                tenant: tenant(),
                thread,
                embedding: Embedding::new("m", vec![a.cos(), a.sin()], 2).unwrap(),
            }
        })
        .collect();
    index.upsert(entries).await.unwrap();
    let query = |k: u32, window: Window| {
        SearchQuery::new("q", SearchScope::Thread(thread), SearchMode::Vector, TopK::new(k).unwrap(), window, None)
            .unwrap()
    };
    let ids = |hits: &[memlayer_domain::SearchHit]| {
        hits.iter().map(|h| (h.message.id, h.score, h.before.len(), h.after.len())).collect::<Vec<_>>()
    };
    for window in [Window::default(), Window::new(1, 1).unwrap()] {
        let searched = search.search(&tenant(), &query(5, window)).await.unwrap().hits;
        let recalled = search.recall(&tenant(), &query(5, window), None, &Default::default()).await.unwrap();
        assert_eq!(ids(&recalled), ids(&searched), "nothing excluded: the search's hits");
    }
    // The 20 best excluded (more than `2k + 8`): the next five, as a search
    // for 25 minus those 20 ranks them.
    let exclude: std::collections::HashSet<_> = messages[..20].iter().map(|m| m.id).collect();
    let wider = search.search(&tenant(), &query(25, Window::default())).await.unwrap().hits;
    let expected: Vec<_> = wider.iter().filter(|h| !exclude.contains(&h.message.id)).cloned().collect();
    let recalled = search.recall(&tenant(), &query(5, Window::default()), None, &exclude).await.unwrap();
    assert_eq!(recalled.len(), 5);
    assert_eq!(ids(&recalled), ids(&expected));
    assert_eq!(recalled[0].message.id, messages[20].id);
}
