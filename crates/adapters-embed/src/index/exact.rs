//! [`ExactIndex`]: brute-force cosine search over vectors held in RAM.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{IndexKind, SearchFilter, StoreError, VectorEntry, VectorIndex, VectorSearch};

use super::math::{TopK, normalised};
use super::store::{ModelStore, Threads, dedup_threads};
use super::{INLINE_WORK, Prepared, blocking, check_batch, dimension_error, read, write_with};

/// Exact nearest-neighbour search: every candidate the filter admits is
/// compared with the query, so recall is 1 and strategy is `exact`.
///
/// Storage is one contiguous arena of unit vectors per (tenant, model), with
/// a free list and compaction, plus per-thread postings: a thread-scoped
/// search touches only that thread's vectors, a tenant-scoped one only that
/// tenant's. Nothing is persisted: the application fills the index from the
/// durable store at start-up. Clones share the same index.
#[derive(Debug, Clone, Default)]
pub struct ExactIndex {
    inner: Arc<Exact>,
}

#[derive(Debug, Default)]
struct Exact {
    models: RwLock<HashMap<String, ModelStore>>,
}

fn models(e: &Exact) -> &RwLock<HashMap<String, ModelStore>> {
    &e.models
}

impl ExactIndex {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Approximate bytes of heap the vectors and their tables take.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        read(&self.inner.models).values().map(ModelStore::heap_bytes).sum()
    }
}

/// A validated search request, owned so it can move to the blocking pool.
#[derive(Debug)]
struct Request {
    tenant: TenantId,
    threads: Option<Vec<ThreadId>>,
    model: String,
    query: Vec<f32>,
    k: usize,
}

impl Request {
    fn new(filter: &SearchFilter, query: &Embedding, k: usize) -> Self {
        Self {
            tenant: filter.tenant.clone(),
            threads: filter.threads.listed().map(dedup_threads),
            model: query.model().to_owned(),
            query: normalised(query.vector()),
            k,
        }
    }

    fn threads(&self) -> Threads<'_> {
        self.threads.as_deref().map_or(Threads::All, Threads::Only)
    }
}

/// Candidates in scope, or the dimension error.
fn plan(models: &HashMap<String, ModelStore>, r: &Request) -> Result<usize, StoreError> {
    let Some(store) = models.get(&r.model) else { return Ok(0) };
    if store.dim() != r.query.len() {
        return Err(dimension_error("query", &r.model, r.query.len(), store.dim()));
    }
    Ok(store.tenant(&r.tenant).map_or(0, |t| t.count(r.threads())))
}

fn run(models: &HashMap<String, ModelStore>, r: &Request) -> VectorSearch {
    let mut top = TopK::new(r.k);
    if let Some(t) = models.get(&r.model).and_then(|s| s.tenant(&r.tenant)) {
        t.scan(&r.query, r.threads(), &mut top);
    }
    VectorSearch { matches: top.into_matches(), strategy: IndexKind::Exact }
}

#[async_trait]
impl VectorIndex for ExactIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Exact
    }

    async fn upsert(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let batch: Vec<Prepared> = entries.into_iter().map(Prepared::from_entry).collect();
        write_with(&self.inner, models, move |models| {
            check_batch(&batch, |m| models.get(m).map(ModelStore::dim))?;
            for p in batch {
                let dim = p.unit.len();
                models
                    .entry(p.model)
                    .or_insert_with(|| ModelStore::new(dim))
                    .upsert(p.id, &p.tenant, p.thread, &p.unit);
            }
            Ok(())
        })
        .await?
    }

    async fn remove(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        write_with(&self.inner, models, move |models| {
            for store in models.values_mut() {
                for id in &ids {
                    store.remove(*id);
                }
            }
            models.retain(|_, s| !s.is_empty());
        })
        .await
    }

    async fn remove_thread(&self, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
        let tenant = tenant.clone();
        write_with(&self.inner, models, move |models| {
            for store in models.values_mut() {
                store.remove_thread(&tenant, thread);
            }
            models.retain(|_, s| !s.is_empty());
        })
        .await
    }

    async fn search(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        let request = Request::new(filter, query, k);
        {
            let models = read(&self.inner.models);
            let candidates = plan(&models, &request)?;
            if k == 0 || candidates == 0 {
                return Ok(VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact });
            }
            if candidates.saturating_mul(request.query.len()) <= INLINE_WORK {
                return Ok(run(&models, &request));
            }
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let models = read(&inner.models);
            plan(&models, &request)?;
            Ok(run(&models, &request))
        })
        .await?
    }

    async fn len(&self) -> Result<usize, StoreError> {
        Ok(read(&self.inner.models).values().map(ModelStore::len).sum())
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        let models = read(&self.inner.models);
        let ids: HashSet<MessageId> = models.values().flat_map(ModelStore::ids).collect();
        Ok(ids.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use memlayer_domain::Embedding;

    use super::*;
    use crate::index::testdata::{clustered, cosine};

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn entry(t: &TenantId, thread: ThreadId, model: &str, v: &[f32]) -> VectorEntry {
        VectorEntry {
            id: MessageId::new(),
            tenant: t.clone(),
            thread,
            embedding: Embedding::new(model, v.to_vec(), v.len()).unwrap(),
        }
    }

    fn emb(model: &str, v: &[f32]) -> Embedding {
        Embedding::new(model, v.to_vec(), v.len()).unwrap()
    }

    #[tokio::test]
    async fn scores_are_exact_cosines_even_for_unnormalised_input() {
        let index = ExactIndex::new();
        let t = tenant("acme");
        let thread = ThreadId::new();
        // Scaled copies: stored and queried vectors are not unit length.
        let vectors: Vec<Vec<f32>> = clustered(3, 3000, 24, 5)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.iter().map(|x| x * (1.0 + i as f32 % 7.0)).collect())
            .collect();
        let entries: Vec<_> = vectors.iter().map(|v| entry(&t, thread, "m", v)).collect();
        index.upsert(entries.clone()).await.unwrap();
        let q: Vec<f32> = vectors[42].iter().map(|x| x * -3.0 + 0.01).collect();
        let got = index.search(&SearchFilter::all_threads(t.clone()), &emb("m", &q), 25).await.unwrap();
        let mut truth: Vec<(f32, MessageId)> =
            entries.iter().map(|e| (cosine(e.embedding.vector(), &q), e.id)).collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(got.strategy, IndexKind::Exact);
        assert_eq!(got.matches.len(), 25);
        for (m, (score, id)) in got.matches.iter().zip(&truth) {
            assert!((m.score - score).abs() < 1e-5, "{} vs {score}", m.score);
            assert_eq!(m.id, *id);
        }
    }

    #[tokio::test]
    async fn thread_and_tenant_scopes_and_models_are_isolated() {
        let index = ExactIndex::new();
        let (a, b) = (tenant("a"), tenant("b"));
        let threads: Vec<ThreadId> = (0..4).map(|_| ThreadId::new()).collect();
        let vectors = clustered(5, 400, 8, 4);
        let mut entries = Vec::new();
        for (i, v) in vectors.iter().enumerate() {
            let t = if i % 3 == 0 { &b } else { &a };
            let model = if i % 5 == 0 { "other" } else { "m" };
            entries.push(entry(t, threads[i % 4], model, v));
        }
        index.upsert(entries.clone()).await.unwrap();
        let scope = SearchFilter::these_threads(a.clone(), vec![threads[1], threads[1], threads[2]]);
        let got = index.search(&scope, &emb("m", &vectors[0]), 1000).await.unwrap();
        let expected: Vec<&VectorEntry> =
            entries.iter().filter(|e| scope.admits(&e.tenant, e.thread) && e.embedding.model() == "m").collect();
        assert_eq!(got.matches.len(), expected.len(), "each admitted entry once");
        assert!(got.matches.iter().all(|m| expected.iter().any(|e| e.id == m.id)));
        // A thread id used under another tenant is not reachable through it.
        let foreign = SearchFilter::these_threads(tenant("c"), vec![threads[1]]);
        assert!(index.search(&foreign, &emb("m", &vectors[0]), 10).await.unwrap().matches.is_empty());
    }

    #[tokio::test]
    async fn dimensions_are_per_model_and_reset_when_empty() {
        let index = ExactIndex::new();
        let t = tenant("acme");
        let e = entry(&t, ThreadId::new(), "m", &[1.0, 0.0, 0.0]);
        index.upsert(vec![e.clone()]).await.unwrap();
        let bad = index.upsert(vec![entry(&t, ThreadId::new(), "m", &[1.0, 0.0])]).await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
        let mixed = vec![entry(&t, ThreadId::new(), "n", &[1.0, 0.0]), entry(&t, ThreadId::new(), "n", &[1.0])];
        assert!(matches!(index.upsert(mixed).await, Err(StoreError::Invalid(_))));
        assert_eq!(index.len().await.unwrap(), 1, "a rejected batch writes nothing");
        let q = index.search(&SearchFilter::all_threads(t.clone()), &emb("m", &[1.0, 0.0]), 3).await;
        assert!(matches!(q, Err(StoreError::Invalid(_))));
        index.remove(vec![e.id]).await.unwrap();
        index.upsert(vec![entry(&t, ThreadId::new(), "m", &[1.0, 0.0])]).await.unwrap();
        assert_eq!(index.len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn large_scans_run_on_the_blocking_pool_with_the_same_results() {
        let index = ExactIndex::new();
        let t = tenant("acme");
        let vectors = clustered(9, 3000, 128, 10);
        let threads: Vec<ThreadId> = (0..30).map(|_| ThreadId::new()).collect();
        let entries: Vec<_> = vectors.iter().enumerate().map(|(i, v)| entry(&t, threads[i % 30], "m", v)).collect();
        index.upsert(entries).await.unwrap();
        let all = SearchFilter::all_threads(t.clone());
        let one = SearchFilter::these_threads(t.clone(), threads.clone());
        let q = emb("m", &vectors[7]);
        // 3000 × 128 > INLINE_WORK (tenant scope runs blocking); the thread list
        // goes through postings. Same candidates, same answer.
        let (x, y) = (index.search(&all, &q, 10).await.unwrap(), index.search(&one, &q, 10).await.unwrap());
        assert_eq!(x, y);
        assert!((x.matches[0].score - 1.0).abs() < 1e-6);
    }
}
