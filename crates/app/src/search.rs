use std::collections::HashMap;
use std::sync::Arc;

use memlayer_domain::{
    Cursor, Direction, Embedding, EmbeddingCounts, MessageId, PageSize, SearchHit, SearchMode, SearchPlan, SearchQuery,
    SearchScope, TenantId, ThreadId,
};
use memlayer_ports::{
    Embedder, EmbedderInfo, EmbeddingStore, MessageStore, StoreError, ThreadStore, VectorFilter, VectorIndex,
    VectorMatch,
};

/// Reciprocal-rank-fusion constant (the usual 60 from Cormack et al.).
const RRF_K: f32 = 60.0;
/// Most texts one `embed` call accepts.
pub const MAX_EMBED_TEXTS: usize = 256;

/// Hits and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// The strategy and coverage.
    pub plan: SearchPlan,
}

/// Semantic, lexical and hybrid recall over stored messages.
#[derive(Debug, Clone)]
pub struct SearchService {
    embedder: Arc<dyn Embedder>,
    index: Arc<dyn VectorIndex>,
    store: Arc<dyn EmbeddingStore>,
    messages: Arc<dyn MessageStore>,
    threads: Arc<dyn ThreadStore>,
}

impl SearchService {
    /// Assembles the service from ports.
    #[must_use]
    pub fn new(
        embedder: Arc<dyn Embedder>,
        index: Arc<dyn VectorIndex>,
        store: Arc<dyn EmbeddingStore>,
        messages: Arc<dyn MessageStore>,
        threads: Arc<dyn ThreadStore>,
    ) -> Self {
        Self { embedder, index, store, messages, threads }
    }

    /// The embedding model, its dimension and token limit.
    #[must_use]
    pub fn embedder_info(&self) -> EmbedderInfo {
        self.embedder.info()
    }

    /// The configured vector index (`exact`, `hnsw`, `libsql`).
    #[must_use]
    pub fn index_kind(&self) -> &'static str {
        self.index.kind()
    }

    /// Embeds up to [`MAX_EMBED_TEXTS`] texts with the configured model.
    ///
    /// # Errors
    /// `Invalid` for an empty or oversized list or an oversized text;
    /// `Unavailable` when the model is missing.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        if texts.is_empty() || texts.len() > MAX_EMBED_TEXTS {
            return Err(memlayer_domain::DomainError::new(
                "texts",
                format!("must hold 1 to {MAX_EMBED_TEXTS} texts, got {}", texts.len()),
            )
            .into());
        }
        if let Some(i) = texts.iter().position(|t| t.len() > memlayer_domain::MAX_CONTENT_BYTES) {
            return Err(memlayer_domain::DomainError::new(
                "texts",
                format!("text {i} is over {} bytes", memlayer_domain::MAX_CONTENT_BYTES),
            )
            .into());
        }
        self.embedder.embed(texts).await.map_err(unprovisioned)
    }

    async fn filter(&self, tenant: &TenantId, scope: &SearchScope) -> Result<VectorFilter, StoreError> {
        let threads = match scope {
            SearchScope::Thread(id) => {
                self.threads.get(tenant, *id).await?;
                Some(vec![*id])
            }
            SearchScope::Resource(resource) => Some(self.store.resource_threads(tenant, resource).await?),
            SearchScope::Tenant => None,
        };
        Ok(VectorFilter { tenant: tenant.clone(), threads })
    }

    /// Embedding progress of a thread.
    ///
    /// # Errors
    /// `NotFound` for a missing thread.
    pub async fn thread_embeddings(&self, tenant: &TenantId, thread: ThreadId) -> Result<EmbeddingCounts, StoreError> {
        let filter = self.filter(tenant, &SearchScope::Thread(thread)).await?;
        self.store.embedding_counts(&filter, self.embedder.info().model).await
    }

    /// Runs a search.
    ///
    /// Vector mode ranks by cosine similarity of the query's embedding
    /// (never comparing vectors of another model: those messages are counted
    /// in `plan.other_model` instead); lexical mode by BM25; hybrid fuses
    /// both rankings with reciprocal rank fusion (`1/(60 + rank)` summed).
    /// Hits scoring below `min_score` are dropped; a hit whose message was
    /// deleted meanwhile is never returned.
    ///
    /// # Errors
    /// `NotFound` for a scope naming a missing or foreign thread;
    /// `Unavailable` when vector or hybrid search needs a missing model.
    pub async fn search(&self, tenant: &TenantId, query: &SearchQuery) -> Result<SearchResults, StoreError> {
        let filter = self.filter(tenant, &query.scope).await?;
        let k = query.top_k.get();
        let mut plan = SearchPlan { vector_index: "none".into(), ..SearchPlan::default() };
        if filter.threads.as_ref().is_some_and(Vec::is_empty) {
            return Ok(SearchResults { hits: Vec::new(), plan });
        }
        let candidates = if query.mode == SearchMode::Hybrid { (k * 4).max(20) } else { k };
        let vector = if matches!(query.mode, SearchMode::Vector | SearchMode::Hybrid) {
            let model = self.embedder.info().model;
            // The coverage counts (a database read) run while the query is
            // embedded (ONNX on the blocking pool).
            let (embedded, counts) = tokio::join!(
                self.embedder.embed_interactive(vec![query.text().to_owned()]),
                self.store.coverage(&filter, model.clone())
            );
            let mut embedded = embedded.map_err(unprovisioned)?;
            let counts = counts?;
            let q = embedded.pop().ok_or_else(|| StoreError::backend("embedder returned no vector"))?;
            let found = self.index.search(&filter, &q, candidates).await?;
            plan.vector_index = found.strategy.to_owned();
            plan.model = model;
            plan.pending = counts.pending;
            plan.other_model = counts.other_model;
            Some(found.matches)
        } else {
            None
        };
        let lexical = if matches!(query.mode, SearchMode::Lexical | SearchMode::Hybrid) {
            Some(self.store.lexical_search(&filter, query.text().to_owned(), candidates).await?)
        } else {
            None
        };
        let ranked = match (vector, lexical) {
            (Some(v), Some(l)) => fuse(&[v, l]),
            (Some(v), None) => v,
            (None, Some(l)) => l,
            (None, None) => Vec::new(),
        };
        let ranked: Vec<VectorMatch> =
            ranked.into_iter().filter(|m| query.min_score.is_none_or(|min| m.score >= min)).take(k).collect();
        tracing::info!(
            mode = %query.mode,
            index = %plan.vector_index,
            hits = ranked.len(),
            pending = plan.pending,
            other_model = plan.other_model,
            "search"
        );
        let hits = self.hydrate(tenant, query, ranked).await?;
        Ok(SearchResults { hits, plan })
    }

    async fn hydrate(
        &self,
        tenant: &TenantId,
        query: &SearchQuery,
        ranked: Vec<VectorMatch>,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let scores: HashMap<MessageId, f32> = ranked.iter().map(|m| (m.id, m.score)).collect();
        let messages = self.messages.get_many(tenant, ranked.iter().map(|m| m.id).collect()).await?;
        let mut hits = Vec::with_capacity(messages.len());
        for message in messages {
            let score = scores.get(&message.id).copied().unwrap_or_default();
            let (before, after) = self.window(tenant, &message, query).await?;
            hits.push(SearchHit { message, score, mode: query.mode, before, after });
        }
        Ok(hits)
    }

    async fn window(
        &self,
        tenant: &TenantId,
        message: &memlayer_domain::Message,
        query: &SearchQuery,
    ) -> Result<(Vec<memlayer_domain::Message>, Vec<memlayer_domain::Message>), StoreError> {
        let around = |direction, n: u32| {
            let messages = Arc::clone(&self.messages);
            let tenant = tenant.clone();
            let thread = message.thread_id;
            let seq = message.seq;
            async move {
                if n == 0 {
                    return Ok(Vec::new());
                }
                let cursor = Cursor::messages(thread, direction, seq);
                let size = PageSize::new(n)?;
                match messages.page(&tenant, thread, Some(cursor), None, size).await {
                    Ok(page) => Ok(page.items),
                    // The thread was deleted after the hit was read: no neighbours.
                    Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
        };
        let mut before = around(Direction::Backward, query.window.before()).await?;
        before.reverse();
        let after = around(Direction::Forward, query.window.after()).await?;
        Ok((before, after))
    }
}

/// The embedder's `Unavailable` means its model or runtime is missing: a
/// problem with a fix the caller may see.
fn unprovisioned(e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unprovisioned(m),
        other => other,
    }
}

/// Reciprocal rank fusion of best-first rankings.
fn fuse(rankings: &[Vec<VectorMatch>]) -> Vec<VectorMatch> {
    let mut fused: HashMap<MessageId, VectorMatch> = HashMap::new();
    for ranking in rankings {
        for (rank, m) in ranking.iter().enumerate() {
            let add = 1.0 / (RRF_K + rank as f32 + 1.0);
            fused.entry(m.id).and_modify(|f| f.score += add).or_insert(VectorMatch { score: add, ..*m });
        }
    }
    let mut out: Vec<_> = fused.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: MessageId, score: f32) -> VectorMatch {
        VectorMatch { id, thread: ThreadId::new(), score }
    }

    #[test]
    fn fusion_rewards_agreement() {
        let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
        let vector = vec![m(a, 0.9), m(b, 0.8), m(c, 0.1)];
        let lexical = vec![m(b, 12.0), m(c, 3.0)];
        let fused = fuse(&[vector, lexical]);
        assert_eq!(fused.iter().map(|x| x.id).collect::<Vec<_>>(), vec![b, c, a]);
        let expected_b = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected_b).abs() < 1e-6);
    }
}
