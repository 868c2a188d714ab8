//! The embedding worker, search and deletes over mocked ports.

use std::sync::Arc;
use std::time::Duration;

use memlayer_app::{EmbeddingWorker, MemoryService, SearchService, StoreError, WorkerSettings};
use memlayer_domain::{
    Coverage, Embedding, Message, MessageId, NewMessage, Role, SearchMode, SearchQuery, SearchScope, TenantId,
    ThreadId, TopK, Window, from_micros, now,
};
use memlayer_ports::{
    EmbedderInfo, MockEmbedder, MockEmbeddingStore, MockMessageStore, MockStateStore, MockThreadStore,
    MockTokenCounter, MockVectorIndex, PendingEmbedding, ScoredHit, VectorEntry, VectorSearch,
};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn info() -> EmbedderInfo {
    EmbedderInfo { model: "m".into(), dim: 2, max_tokens: 8 }
}

fn job(attempts: u32) -> PendingEmbedding {
    PendingEmbedding { id: MessageId::new(), tenant: tenant(), thread: ThreadId::new(), text: "hi".into(), attempts }
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        batch_size: 8,
        poll_interval: Duration::from_millis(10),
        base_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(60),
        lease: Duration::from_secs(300),
    }
}

#[tokio::test]
async fn a_failed_embedding_is_rescheduled_with_backoff_and_nothing_is_indexed() {
    let jobs = vec![job(2), job(0)];
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let mut store = MockEmbeddingStore::new();
    store.expect_claim_jobs().times(1).returning(move |_, _, _| Ok(jobs.clone()));
    let before = now();
    store
        .expect_fail_jobs()
        .withf(move |got, error, retry_at| {
            let delay = *retry_at - before;
            got == &ids
                && error.contains("model missing")
                && delay >= time::Duration::seconds(8)
                && delay < time::Duration::seconds(10)
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    store.expect_complete_jobs().times(0);
    let mut embedder = MockEmbedder::new();
    embedder.expect_embed().returning(|_| Err(StoreError::Unavailable("model missing: run scripts/provision".into())));
    let mut index = MockVectorIndex::new();
    index.expect_upsert().times(0);
    let worker = EmbeddingWorker::new(Arc::new(embedder), Arc::new(store), Arc::new(index), settings());
    let round = worker.run_once().await.unwrap();
    assert_eq!((round.embedded, round.failed), (0, 2), "2^attempts × base backoff: 2 s × 4 = 8 s");
}

#[tokio::test]
async fn embedded_jobs_are_stored_then_indexed() {
    let jobs = vec![job(0), job(1)];
    let thread = jobs[0].thread;
    let mut store = MockEmbeddingStore::new();
    let j = jobs.clone();
    store.expect_claim_jobs().times(1).returning(move |_, _, _| Ok(j.clone()));
    store.expect_complete_jobs().times(1).returning(move |done| {
        Ok(done.into_iter().map(|(id, embedding)| VectorEntry { id, tenant: tenant(), thread, embedding }).collect())
    });
    let mut embedder = MockEmbedder::new();
    embedder
        .expect_embed()
        .returning(|texts| Ok(texts.iter().map(|_| Embedding::new("m", vec![0.6, 0.8], 2).unwrap()).collect()));
    let mut index = MockVectorIndex::new();
    index.expect_upsert().withf(|entries| entries.len() == 2).times(1).returning(|_| Ok(()));
    let worker = EmbeddingWorker::new(Arc::new(embedder), Arc::new(store), Arc::new(index), settings());
    assert_eq!(worker.run_once().await.unwrap().embedded, 2);
}

/// An embedder that fails every batch holding `poison`, as a model runtime
/// does on one text it cannot take, and counts its calls.
#[derive(Debug)]
struct PoisonedEmbedder {
    poison: String,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl memlayer_ports::Embedder for PoisonedEmbedder {
    fn info(&self) -> EmbedderInfo {
        info()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if texts.contains(&self.poison) {
            return Err(StoreError::backend("tensor shape mismatch"));
        }
        Ok(texts.iter().map(|_| Embedding::new("m", vec![0.6, 0.8], 2).unwrap()).collect())
    }
}

#[tokio::test]
async fn one_bad_text_fails_alone_and_its_batch_mates_are_embedded() {
    let mut jobs: Vec<_> = (0..64).map(|i| PendingEmbedding { text: format!("text {i}"), ..job(0) }).collect();
    jobs[37].text = "poison".into();
    let bad = jobs[37].id;
    let mut store = MockEmbeddingStore::new();
    let j = jobs.clone();
    store
        .expect_claim_jobs()
        .withf(|at, limit, until| *limit == 64 && *until - *at == time::Duration::seconds(300))
        .times(1)
        .returning(move |_, _, _| Ok(j.clone()));
    store
        .expect_complete_jobs()
        .withf(move |done| done.len() == 63 && done.iter().all(|(id, _)| *id != bad))
        .times(1)
        .returning(|done| {
            Ok(done
                .into_iter()
                .map(|(id, embedding)| VectorEntry { id, tenant: tenant(), thread: ThreadId::new(), embedding })
                .collect())
        });
    store
        .expect_fail_jobs()
        .withf(move |ids, error, _| ids == &vec![bad] && error.contains("tensor shape mismatch"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let mut index = MockVectorIndex::new();
    index.expect_upsert().withf(|entries| entries.len() == 63).times(1).returning(|_| Ok(()));
    let embedder = Arc::new(PoisonedEmbedder { poison: "poison".into(), calls: 0.into() });
    let settings = WorkerSettings { batch_size: 64, ..settings() };
    let worker = EmbeddingWorker::new(embedder.clone(), Arc::new(store), Arc::new(index), settings);
    let round = worker.run_once().await.unwrap();
    assert_eq!((round.embedded, round.failed), (63, 1));
    // The whole batch, then two halves per level down to the single text:
    // 1 + 2 · log2(64) calls, not one per text.
    assert_eq!(embedder.calls.load(std::sync::atomic::Ordering::SeqCst), 13);
}

fn service(threads: MockThreadStore, messages: MockMessageStore, index: MockVectorIndex) -> MemoryService {
    let index: Arc<dyn memlayer_ports::VectorIndex> = Arc::new(index);
    let mut store = MockEmbeddingStore::new();
    store.expect_claim_jobs().returning(|_, _, _| Ok(Vec::new()));
    let worker = EmbeddingWorker::new(Arc::new(MockEmbedder::new()), Arc::new(store), index.clone(), settings());
    MemoryService::new(
        Arc::new(threads),
        Arc::new(messages),
        Arc::new(MockStateStore::new()),
        Arc::new(MockTokenCounter::new()),
        TenantId::default_tenant(),
        false,
    )
    .with_semantic(index, worker, true)
}

#[tokio::test]
async fn deletes_reach_the_index_only_after_the_store() {
    let id = ThreadId::new();
    let mut threads = MockThreadStore::new();
    threads.expect_delete().times(1).returning(|_, _| Ok(()));
    let mut index = MockVectorIndex::new();
    index.expect_remove_thread().withf(move |_, t| *t == id).times(1).returning(|_, _| Ok(()));
    index.expect_remove().times(1).returning(|_| Ok(()));
    let mut messages = MockMessageStore::new();
    messages.expect_get().returning(move |_, m| Ok(message(m, id, 1)));
    messages.expect_delete().times(1).returning(|_, _| Ok(()));
    let svc = service(threads, messages, index);
    svc.delete_thread(&tenant(), id).await.unwrap();
    svc.delete_message(&tenant(), id, MessageId::new()).await.unwrap();

    let mut threads = MockThreadStore::new();
    threads.expect_delete().returning(|_, id| Err(StoreError::not_found("thread", id)));
    let mut index = MockVectorIndex::new();
    index.expect_remove_thread().times(0);
    let svc = service(threads, MockMessageStore::new(), index);
    assert!(matches!(svc.delete_thread(&tenant(), id).await, Err(StoreError::NotFound { .. })));
}

#[tokio::test]
async fn a_message_of_another_thread_is_not_found_and_stays() {
    let (thread, other) = (ThreadId::new(), ThreadId::new());
    let mut messages = MockMessageStore::new();
    messages.expect_get().returning(move |_, m| Ok(message(m, other, 1)));
    messages.expect_delete().times(0);
    let mut index = MockVectorIndex::new();
    index.expect_remove().times(0);
    let svc = service(MockThreadStore::new(), messages, index);
    let got = svc.delete_message(&tenant(), thread, MessageId::new()).await;
    assert!(matches!(got, Err(StoreError::NotFound { what: "message", .. })), "{got:?}");
}

#[tokio::test]
async fn inline_mode_drains_the_worker_after_an_append() {
    let mut messages = MockMessageStore::new();
    messages.expect_append_within().times(1).returning(|_, thread, batch, _| {
        Ok(batch.into_iter().map(|m| m.into_message(MessageId::new(), thread, 1, from_micros(0))).collect())
    });
    let index = MockVectorIndex::new();
    let svc = service(MockThreadStore::new(), messages, index);
    let m = NewMessage::text(Role::User, "x").unwrap();
    svc.append_message(&tenant(), ThreadId::new(), m, memlayer_app::AppendOptions::default()).await.unwrap();
}

fn message(id: MessageId, thread: ThreadId, seq: i64) -> Message {
    NewMessage::text(Role::User, format!("m{seq}")).unwrap().into_message(id, thread, seq, from_micros(0))
}

#[tokio::test]
async fn search_never_returns_a_message_deleted_after_indexing() {
    let thread = ThreadId::new();
    let (alive, deleted) = (MessageId::new(), MessageId::new());
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(info);
    embedder.expect_embed_interactive().returning(|_| Ok(vec![Embedding::new("m", vec![1.0, 0.0], 2).unwrap()]));
    let mut index = MockVectorIndex::new();
    index.expect_search().returning(move |_, _, _| {
        Ok(VectorSearch {
            matches: vec![ScoredHit { id: deleted, thread, score: 0.9 }, ScoredHit { id: alive, thread, score: 0.8 }],
            strategy: memlayer_ports::IndexKind::Exact,
        })
    });
    let mut store = MockEmbeddingStore::new();
    store.expect_coverage().returning(|_, _| Ok(Coverage { pending: 3, other_model: 2 }));
    let mut messages = MockMessageStore::new();
    messages.expect_get_many().returning(move |_, _| Ok(vec![message(alive, thread, 2)]));
    let search = SearchService::new(
        Arc::new(embedder),
        Arc::new(index),
        Arc::new(store),
        Arc::new(messages),
        Arc::new(MockThreadStore::new()),
    );
    let q =
        SearchQuery::new("x", SearchScope::Tenant, SearchMode::Vector, TopK::new(5).unwrap(), Window::default(), None)
            .unwrap();
    let results = search.search(&tenant(), &q).await.unwrap();
    assert_eq!(results.hits.len(), 1);
    assert_eq!(results.hits[0].message.id, alive);
    assert_eq!((results.plan.pending, results.plan.other_model, results.plan.vector_index.as_str()), (3, 2, "exact"));
}

#[tokio::test]
async fn a_missing_model_is_reported_as_unprovisioned() {
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(info);
    embedder
        .expect_embed_interactive()
        .returning(|_| Err(StoreError::Unavailable("model.onnx missing: run scripts/provision".into())));
    let mut store = MockEmbeddingStore::new();
    store.expect_coverage().returning(|_, _| Ok(Coverage::default()));
    let search = SearchService::new(
        Arc::new(embedder),
        Arc::new(MockVectorIndex::new()),
        Arc::new(store),
        Arc::new(MockMessageStore::new()),
        Arc::new(MockThreadStore::new()),
    );
    let q = SearchQuery::new("x", SearchScope::Tenant, SearchMode::Hybrid, TopK::default(), Window::default(), None)
        .unwrap();
    let err = search.search(&tenant(), &q).await.unwrap_err();
    assert!(matches!(err, StoreError::Unprovisioned(ref m) if m.contains("scripts/provision")), "{err:?}");
}

#[tokio::test]
async fn a_search_within_a_thread_reads_it_once_and_defaults_to_its_top_k() {
    let id = ThreadId::new();
    let metadata = memlayer_domain::Metadata::from_value(serde_json::json!({"_memory": {"top_k": 2}})).unwrap();
    let thread = memlayer_domain::Thread {
        id,
        tenant: tenant(),
        resource_id: None,
        agent_id: None,
        title: None,
        model: None,
        metadata,
        last_seq: 0,
        created_at: from_micros(0),
        updated_at: from_micros(0),
    };
    let mut threads = MockThreadStore::new();
    threads.expect_get().times(1).returning(move |_, _| Ok(thread.clone()));
    let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
    let found = ids.clone();
    let mut store = MockEmbeddingStore::new();
    // Lexical mode asks the store for `top_k` candidates.
    store.expect_lexical_search().withf(|_, _, k| *k == 2).times(1).returning(move |_, _, k| {
        Ok(found.iter().take(k).map(|&m| ScoredHit { id: m, thread: id, score: 1.0 }).collect())
    });
    let mut messages = MockMessageStore::new();
    messages
        .expect_get_many()
        .returning(move |_, got| Ok(got.into_iter().enumerate().map(|(i, m)| message(m, id, i as i64 + 1)).collect()));
    let search = SearchService::new(
        Arc::new(MockEmbedder::new()),
        Arc::new(MockVectorIndex::new()),
        Arc::new(store),
        Arc::new(messages),
        Arc::new(threads),
    );
    let q = SearchQuery::new("x", SearchScope::Thread(id), SearchMode::Lexical, None, Window::default(), None).unwrap();
    assert_eq!(search.search(&tenant(), &q).await.unwrap().hits.len(), 2);
}

#[tokio::test]
async fn the_plan_names_the_stages_that_ran() {
    let thread = ThreadId::new();
    let ids: Vec<MessageId> = (0..4).map(|_| MessageId::new()).collect();
    let hit = |i: usize, score: f32| ScoredHit { id: ids[i], thread, score };
    let (by_vector, by_words) = (vec![hit(0, 0.9), hit(1, 0.5), hit(2, 0.1)], vec![hit(2, 7.0), hit(3, 2.0)]);
    let mut embedder = MockEmbedder::new();
    embedder.expect_info().returning(info);
    embedder.expect_embed_interactive().returning(|_| Ok(vec![Embedding::new("m", vec![1.0, 0.0], 2).unwrap()]));
    let mut index = MockVectorIndex::new();
    index.expect_search().returning(move |_, _, _| {
        Ok(VectorSearch { matches: by_vector.clone(), strategy: memlayer_ports::IndexKind::Exact })
    });
    let mut store = MockEmbeddingStore::new();
    store.expect_coverage().returning(|_, _| Ok(Coverage::default()));
    store.expect_lexical_search().returning(move |_, _, _| Ok(by_words.clone()));
    let mut messages = MockMessageStore::new();
    messages.expect_get_many().returning(move |_, got| {
        Ok(got.into_iter().enumerate().map(|(i, m)| message(m, thread, i as i64 + 1)).collect())
    });
    let search = SearchService::new(
        Arc::new(embedder),
        Arc::new(index),
        Arc::new(store),
        Arc::new(messages),
        Arc::new(MockThreadStore::new()),
    );
    let stages = |mode: SearchMode| {
        let search = search.clone();
        async move {
            let q = SearchQuery::new("x", SearchScope::Tenant, mode, TopK::new(2).unwrap(), Window::default(), None)
                .unwrap();
            let results = search.search(&tenant(), &q).await.unwrap();
            assert_eq!(results.hits.len(), 2);
            results.plan.stages.iter().map(|s| (s.kind.as_str(), s.candidates)).collect::<Vec<_>>()
        }
    };
    assert_eq!(stages(SearchMode::Vector).await, [("vector", 3)]);
    assert_eq!(stages(SearchMode::Lexical).await, [("lexical", 2)]);
    // Hybrid: both legs, then their union fused (message 2 is in both).
    assert_eq!(stages(SearchMode::Hybrid).await, [("vector", 3), ("lexical", 2), ("fusion", 4)]);
}
