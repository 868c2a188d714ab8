//! Contract cases for the [`crate::TransferStore`]: exports in pages that
//! never skip or repeat, a thread's import keeping ids and times, in one
//! transaction, idempotent, compared (never overwritten) when its id is
//! taken, counted against the quota; the catalog's and resource working
//! memory's imports likewise.

use memlayer_domain::{
    AgentConfig, AgentId, AgentName, MemoryOptions, ModelConfig, ModelId, NewAgent, NewModel, NewTool, Quota,
    ResourceId, Setting, SettingName, Thread, ThreadId, Title, ToolConfig, ToolId, WorkingContent, WorkingMemory,
    WorkingScope, now,
};
use serde_json::json;

use super::Backend;
use super::embedding_cases::far_future;
use super::support::{assert_invalid, assert_not_found, msgs, tenant};
use super::thread_cases::fork_source;
use crate::{Differs, Imported, StoreError, ThreadRecords};

/// Everything the store holds of one thread, read through the export
/// methods in small pages.
async fn export_one(b: &Backend, t: &memlayer_domain::TenantId, thread: &Thread) -> (ThreadRecords, Vec<String>) {
    let mut messages = Vec::new();
    let mut after = 0;
    loop {
        let page = b.transfer.export_messages(t, thread.id, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        messages.extend(page);
    }
    let mut vectors = Vec::new();
    let mut after = 0;
    while after < thread.last_seq {
        for (seq, v) in b.transfer.export_vectors(t, thread.id, after, 2).await.unwrap() {
            vectors.push(format!("{seq}:{}:{:?}", v.id, v.embedding));
        }
        after += 2;
    }
    let extras = b.transfer.export_thread_extras(t, thread.id).await.unwrap();
    let records = ThreadRecords {
        thread: thread.clone(),
        messages,
        states: extras.states,
        summaries: extras.summaries,
        working: extras.working,
    };
    (records, vectors)
}

/// Removes a thread and its rows, so its ids are free again.
async fn erase(b: &Backend, t: &memlayer_domain::TenantId, id: ThreadId) {
    b.threads.delete(t, id).await.unwrap();
    while b.threads.sweep_deleted(1_000).await.unwrap().more {}
}

/// Exports read every record of a thread in pages, never skipping or
/// repeating, and threads in id order of the tenant (and resource) only.
pub async fn transfer_export_reads_every_record_in_pages(b: Backend) {
    let t = tenant("acme");
    let (source, stored) = fork_source(&b, &t).await;
    let (records, vectors) = export_one(&b, &t, &source).await;
    let live: Vec<_> = stored.iter().filter(|m| m.seq != 3).cloned().collect();
    assert_eq!(records.messages, live, "every live message once, in seq order");
    assert_eq!(vectors.len(), 2, "both stored vectors: {vectors:?}");
    assert!(vectors[0].starts_with(&format!("1:{}", stored[0].id)));
    assert_eq!(records.states.len(), 1);
    assert_eq!((records.states[0].state.clone(), records.states[0].version), (json!({"step": 2}), 2));
    assert_eq!(records.summaries.iter().map(|s| s.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(records.working.iter().map(|w| w.version).collect::<Vec<_>>(), vec![1, 2]);

    let other = b.threads.create(&t, memlayer_domain::NewThread::default()).await.unwrap();
    b.threads.create(&tenant("globex"), memlayer_domain::NewThread::default()).await.unwrap();
    let gone = b.threads.create(&t, memlayer_domain::NewThread::default()).await.unwrap();
    b.threads.delete(&t, gone.id).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = b.transfer.export_threads(&t, None, after, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.into_iter().map(|t| t.id));
    }
    let mut want = vec![source.id, other.id];
    want.sort();
    assert_eq!(seen, want, "the tenant's live threads in id order, once each");
    let user = ResourceId::parse("user-1").unwrap();
    let of_user = b.transfer.export_threads(&t, Some(user.clone()), None, 10).await.unwrap();
    assert_eq!(of_user.iter().map(|t| t.id).collect::<Vec<_>>(), vec![source.id]);
    assert_not_found(b.transfer.export_messages(&t, gone.id, 0, 10).await, "deleted thread");
    assert_not_found(b.transfer.export_thread_extras(&tenant("globex"), source.id).await, "foreign thread");

    let scope = WorkingScope::Resource(user.clone());
    b.working.put_working(&t, &scope, WorkingContent::Markdown("a".into()), 0, 10).await.unwrap();
    b.working.put_working(&t, &scope, WorkingContent::Markdown("b".into()), 1, 10).await.unwrap();
    let other_scope = WorkingScope::Resource(ResourceId::parse("user-0").unwrap());
    b.working.put_working(&t, &other_scope, WorkingContent::Markdown("z".into()), 0, 10).await.unwrap();
    let first = b.transfer.export_resource_working(&t, None, None, 2).await.unwrap();
    let last = first.last().unwrap();
    let WorkingScope::Resource(r) = &last.scope else { panic!("a resource scope") };
    let rest = b.transfer.export_resource_working(&t, None, Some((r.clone(), last.version)), 2).await.unwrap();
    let all: Vec<_> = first.iter().chain(&rest).map(|w| (w.scope.id_text(), w.version)).collect();
    assert_eq!(all, vec![("user-0".into(), 1), ("user-1".into(), 1), ("user-1".into(), 2)]);
    let one = b.transfer.export_resource_working(&t, Some(user), None, 10).await.unwrap();
    assert_eq!(one.len(), 2, "narrowed to one resource");
}

/// A thread's import keeps every id, seq, version and time; its messages
/// are pending embedding and searchable like appended ones; importing it
/// again changes nothing.
pub async fn transfer_import_keeps_ids_and_is_idempotent(b: Backend) {
    let t = tenant("acme");
    let (source, _) = fork_source(&b, &t).await;
    let (records, _) = export_one(&b, &t, &source).await;
    erase(&b, &t, source.id).await;
    let before = b.usage.usage(&t).await.unwrap();

    assert_eq!(b.transfer.import_thread(&t, records.clone(), &Quota::UNLIMITED).await.unwrap(), Imported::Created);
    assert_eq!(b.threads.get(&t, source.id).await.unwrap(), source, "the thread as exported, times and last_seq kept");
    let (again, _) = export_one(&b, &t, &source).await;
    assert_eq!(again, records, "every record as exported");
    let after = b.usage.usage(&t).await.unwrap();
    assert_eq!((after.threads, after.messages), (before.threads + 1, before.messages + 5), "counted like appends");

    let due = b.embeddings.due_jobs(far_future(), 100).await.unwrap();
    assert_eq!(due.iter().filter(|j| j.thread == source.id).count(), 5, "every imported message awaits a vector");
    let only = crate::SearchFilter::these_threads(t.clone(), vec![source.id]);
    let hits = b.embeddings.lexical_search(&only, "zanzibarian".into(), 10).await.unwrap();
    assert_eq!(hits.len(), 1, "imported messages are searchable");

    assert_eq!(b.transfer.import_thread(&t, records.clone(), &Quota::UNLIMITED).await.unwrap(), Imported::Unchanged);
    let (third, _) = export_one(&b, &t, &source).await;
    assert_eq!(third, records, "a second import changed nothing");
    assert_eq!(b.usage.usage(&t).await.unwrap(), after, "and counted nothing");

    // Messages appended after the export do not make the file differ.
    b.messages.append(&t, source.id, msgs(0..1)).await.unwrap();
    assert_eq!(b.transfer.import_thread(&t, records, &Quota::UNLIMITED).await.unwrap(), Imported::Unchanged);
}

/// An import whose id is stored with other content is compared, never
/// written; a taken message id or a record that does not hang together
/// stores nothing of the thread; the quota counts an import.
pub async fn transfer_import_refuses_conflicts_storing_nothing(b: Backend) {
    let t = tenant("acme");
    let (source, stored) = fork_source(&b, &t).await;
    let (records, _) = export_one(&b, &t, &source).await;

    let mut retitled = records.clone();
    retitled.thread.title = Some(Title::parse("Other").unwrap());
    let got = b.transfer.import_thread(&t, retitled, &Quota::UNLIMITED).await.unwrap();
    assert_eq!(got, Imported::Differs(Differs::Thread { field: "title" }));
    let mut edited = records.clone();
    edited.messages[1].content = "changed".into();
    let got = b.transfer.import_thread(&t, edited, &Quota::UNLIMITED).await.unwrap();
    assert_eq!(got, Imported::Differs(Differs::Message { id: stored[1].id, field: "content" }));
    assert_eq!(b.threads.get(&t, source.id).await.unwrap(), source, "nothing overwritten");

    // A new thread reusing a stored message's id: nothing of it is stored.
    let mut stolen = records.clone();
    let fresh = ThreadId::new();
    stolen.thread.id = fresh;
    stolen.states.clear();
    stolen.summaries.clear();
    stolen.working.clear();
    for m in &mut stolen.messages {
        m.thread_id = fresh;
    }
    let got = b.transfer.import_thread(&t, stolen.clone(), &Quota::UNLIMITED).await;
    assert!(matches!(got, Err(StoreError::Conflict(_))), "a taken message id: {got:?}");
    assert_not_found(b.threads.get(&t, fresh).await, "the thread of a refused import");
    assert_eq!(b.transfer.export_threads(&t, None, None, 10).await.unwrap().len(), 1);

    // Records that do not hang together.
    let mut unordered = stolen.clone();
    unordered.messages.swap(0, 1);
    assert_invalid(b.transfer.import_thread(&t, unordered, &Quota::UNLIMITED).await, "seqs out of order");
    let mut beyond = stolen.clone();
    beyond.thread.last_seq = 2;
    assert_invalid(b.transfer.import_thread(&t, beyond, &Quota::UNLIMITED).await, "a seq past last_seq");
    assert_invalid(b.transfer.import_thread(&tenant("globex"), stolen.clone(), &Quota::UNLIMITED).await, "tenant");
    assert_not_found(b.threads.get(&t, fresh).await, "nothing stored");

    // The quota counts an import; a refused one stores nothing.
    erase(&b, &t, source.id).await;
    let tight = Quota { messages: Some(3), ..Quota::UNLIMITED };
    let got = b.transfer.import_thread(&t, records.clone(), &tight).await;
    assert!(matches!(got, Err(StoreError::QuotaExceeded { .. })), "past the quota: {got:?}");
    assert_not_found(b.threads.get(&t, source.id).await, "nothing of a refused import");
    let roomy = Quota { messages: Some(5), ..Quota::UNLIMITED };
    assert_eq!(b.transfer.import_thread(&t, records, &roomy).await.unwrap(), Imported::Created);
}

/// The catalog and a resource's working memory import with their ids,
/// idempotently, and a stored record with other content differs.
pub async fn transfer_catalog_and_resource_working_import(b: Backend) {
    let t = tenant("acme");
    let at = now();
    let model = ModelConfig {
        id: ModelId::new(),
        tenant: t.clone(),
        spec: NewModel {
            name: "gpt-4o".into(),
            provider: "openai".into(),
            context_window: 128_000,
            max_output_tokens: 4_096,
            input_price: 2.5,
            output_price: 10.0,
            is_default: true,
        },
        created_at: at,
        updated_at: at,
    };
    let tool = ToolConfig {
        id: ToolId::new(),
        tenant: t.clone(),
        spec: NewTool {
            name: "lookup".into(),
            description: "find an order".into(),
            parameters: json!({"type": "object"}),
        },
        created_at: at,
        updated_at: at,
    };
    let agent = AgentConfig {
        id: AgentId::new(),
        tenant: t.clone(),
        spec: NewAgent {
            name: AgentName::parse("support").unwrap(),
            model_id: model.id,
            system_prompt: "be kind".into(),
            tool_ids: vec![tool.id],
            memory: MemoryOptions { last_n: Some(5), ..MemoryOptions::default() },
            runner: None,
        },
        created_at: at,
        updated_at: at,
    };
    let setting = Setting {
        tenant: t.clone(),
        category: SettingName::category("ui").unwrap(),
        key: SettingName::key("theme").unwrap(),
        value: json!("dark"),
        updated_at: at,
    };
    let mut orphan = agent.clone();
    orphan.id = AgentId::new();
    orphan.spec.name = AgentName::parse("orphan").unwrap();
    orphan.spec.model_id = ModelId::new();
    assert_invalid(b.transfer.import_agent(&t, orphan).await, "an agent whose model is missing");

    for round in [Imported::Created, Imported::Unchanged] {
        assert_eq!(b.transfer.import_model(&t, model.clone()).await.unwrap(), round);
        assert_eq!(b.transfer.import_tool(&t, tool.clone()).await.unwrap(), round);
        assert_eq!(b.transfer.import_agent(&t, agent.clone()).await.unwrap(), round);
        assert_eq!(b.transfer.import_setting(&t, setting.clone()).await.unwrap(), round);
    }
    let catalog = b.transfer.export_catalog(&t).await.unwrap();
    assert_eq!(catalog.models, vec![model.clone()]);
    assert_eq!(catalog.tools, vec![tool.clone()]);
    assert_eq!(catalog.agents, vec![agent.clone()]);
    assert_eq!(catalog.settings, vec![setting.clone()]);
    assert!(b.transfer.export_catalog(&tenant("globex")).await.unwrap().models.is_empty());

    let mut renamed = model.clone();
    renamed.spec.provider = "azure".into();
    let differs = Imported::Differs(Differs::Record { field: "spec" });
    assert_eq!(b.transfer.import_model(&t, renamed).await.unwrap(), differs);
    let mut other = setting.clone();
    other.value = json!("light");
    assert_eq!(
        b.transfer.import_setting(&t, other).await.unwrap(),
        Imported::Differs(Differs::Record { field: "value" })
    );
    let mut same_name = model.clone();
    same_name.id = ModelId::new();
    assert!(matches!(b.transfer.import_model(&t, same_name).await, Err(StoreError::Conflict(_))), "a taken name");
    assert_invalid(b.transfer.import_model(&tenant("globex"), model.clone()).await, "another tenant's record");
    assert_eq!(b.transfer.export_catalog(&t).await.unwrap(), catalog, "nothing overwritten");

    let scope = WorkingScope::Resource(ResourceId::parse("user-1").unwrap());
    let version = |v, text: &str| WorkingMemory {
        scope: scope.clone(),
        content: WorkingContent::Markdown(text.into()),
        version: v,
        updated_at: at,
    };
    let versions = vec![version(1, "a"), version(2, "b")];
    for round in [Imported::Created, Imported::Unchanged] {
        assert_eq!(b.transfer.import_resource_working(&t, versions.clone()).await.unwrap(), round);
    }
    assert_eq!(b.transfer.export_resource_working(&t, None, None, 10).await.unwrap(), versions);
    let got = b.transfer.import_resource_working(&t, vec![version(1, "a"), version(2, "c")]).await.unwrap();
    assert_eq!(got, Imported::Differs(Differs::Record { field: "content" }));
    assert_invalid(b.transfer.import_resource_working(&t, vec![version(2, "b"), version(1, "a")]).await, "order");
}
