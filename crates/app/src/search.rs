//! The search use cases ([`SearchService`]): scopes, vector, lexical and
//! hybrid ranking, neighbour windows, hydration and the response budget; and
//! embedding texts for `/api/embed`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use memlayer_domain::{
    Coverage, Embedding, EmbeddingCounts, MemoryOptions, MessageId, Reach, SearchHit, SearchMode, SearchPlan,
    SearchQuery, SearchScope, SearchStage, StageKind, Thread, ThreadId, TopK,
};
use memlayer_ports::{
    Embedder, EmbedderInfo, EmbeddingStore, IndexKind, MessageStore, ScoredHit, SearchFilter, SeqRange, StoreError,
    ThreadStore, VectorIndex,
};

use crate::Limiter;

/// Reciprocal-rank-fusion constant (the usual 60 from Cormack et al.).
/// Most texts one `embed` call accepts.
pub const MAX_EMBED_TEXTS: usize = 256;
/// Most bytes of text one `embed` call accepts, all texts together: the
/// call holds an embedding session that vector search needs too.
pub const MAX_EMBED_BYTES: usize = 1024 * 1024;

/// Hits and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// The strategy and coverage.
    pub plan: SearchPlan,
    /// The response budget cut the results: fewer hits than found, or
    /// fewer neighbours than the window asked for.
    pub truncated: bool,
}

/// Semantic, lexical and hybrid recall over stored messages.
#[derive(Debug, Clone)]
pub struct SearchService {
    embedder: Arc<dyn Embedder>,
    index: Arc<dyn VectorIndex>,
    store: Arc<dyn EmbeddingStore>,
    messages: Arc<dyn MessageStore>,
    threads: Arc<dyn ThreadStore>,
    max_response_bytes: usize,
    limiter: Limiter,
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
        Self {
            embedder,
            index,
            store,
            messages,
            threads,
            max_response_bytes: crate::DEFAULT_MAX_RESPONSE_BYTES,
            limiter: Limiter::unlimited(),
        }
    }

    /// Charges embedded texts and search queries to their tenant's budget
    /// (`limits.embed_tokens`); the default charges nothing.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Bounds the bytes of messages one search returns (hits and
    /// neighbours, by [`memlayer_domain::Message::approx_bytes`]); the
    /// default is [`crate::DEFAULT_MAX_RESPONSE_BYTES`].
    #[must_use]
    pub fn with_max_response_bytes(mut self, max_bytes: usize) -> Self {
        self.max_response_bytes = max_bytes;
        self
    }

    /// The embedding model, its dimension and token limit.
    #[must_use]
    pub fn embedder_info(&self) -> EmbedderInfo {
        self.embedder.info()
    }

    /// The configured vector index.
    #[must_use]
    pub fn index_kind(&self) -> IndexKind {
        self.index.kind()
    }

    /// Embeds up to [`MAX_EMBED_TEXTS`] texts of at most [`MAX_EMBED_BYTES`]
    /// together with the configured model, charged to `who`'s tenant.
    ///
    /// # Errors
    /// `RateLimited` when the tenant's embedding budget is spent;
    /// `Invalid` for an empty or oversized list or an oversized text;
    /// `Unavailable` when the model is missing.
    pub async fn embed(&self, who: &(impl Reach + 'static), texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
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
        let total: usize = texts.iter().map(String::len).sum();
        if total > MAX_EMBED_BYTES {
            return Err(memlayer_domain::DomainError::new(
                "texts",
                format!("are {total} bytes together, at most {MAX_EMBED_BYTES} are accepted per request"),
            )
            .into());
        }
        self.limiter.charge_embedding(who.tenant(), crate::embedding_cost(texts.iter().map(String::as_str))).await?;
        self.embedder.embed(texts).await.map_err(unprovisioned)
    }

    /// The filter of `scope` as `who` may reach it and, for one thread,
    /// that thread: read once, both to check it exists and for its memory
    /// options. A caller bound to a resource searches that resource's
    /// threads only: another resource's scope admits nothing, the tenant's
    /// scope becomes the resource's, and another resource's thread is
    /// `NotFound`.
    async fn filter(
        &self,
        who: &(impl Reach + 'static),
        scope: &SearchScope,
    ) -> Result<(SearchFilter, Option<Thread>), StoreError> {
        let tenant = who.tenant().clone();
        let bound = who.resource();
        // The filter is who searches too: a store that enforces resources
        // (Postgres) binds the search to the caller's.
        let within = |filter: SearchFilter| filter.within(bound.cloned());
        Ok(match scope {
            SearchScope::Thread(id) => {
                let thread = self.threads.get(who, *id).await?;
                if !who.reaches(thread.resource_id.as_ref()) {
                    return Err(StoreError::not_found("thread", id));
                }
                (within(SearchFilter::these_threads(tenant, vec![*id])), Some(thread))
            }
            SearchScope::Resource(resource) if bound.is_some_and(|b| b != resource) => {
                (within(SearchFilter::these_threads(tenant, Vec::new())), None)
            }
            SearchScope::Resource(resource) => {
                let threads = self.threads.resource_threads(who, resource).await?;
                (within(SearchFilter::these_threads(tenant, threads)), None)
            }
            SearchScope::Tenant => match bound {
                Some(resource) => {
                    let threads = self.threads.resource_threads(who, resource).await?;
                    (within(SearchFilter::these_threads(tenant, threads)), None)
                }
                None => (SearchFilter::all_threads(tenant), None),
            },
        })
    }

    /// Embedding progress of a thread.
    ///
    /// # Errors
    /// `NotFound` for a missing thread.
    pub async fn thread_embeddings(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
    ) -> Result<EmbeddingCounts, StoreError> {
        let (filter, _) = self.filter(who, &SearchScope::Thread(thread)).await?;
        self.store.embedding_counts(&filter, self.embedder.info().model).await
    }

    /// Runs a search.
    ///
    /// Vector mode ranks by cosine similarity of the query's embedding
    /// (never comparing vectors of another model: those messages are counted
    /// in `plan.other_model` instead); lexical mode by BM25; hybrid fuses
    /// both rankings by the mean of their min-max normalised scores ([`fuse`]).
    /// Hits scoring below `min_score` are dropped; a hit whose message was
    /// deleted meanwhile is never returned. Without `top_k`, a search within
    /// one thread returns the thread's `_memory.top_k` hits (from its agent),
    /// any other [`TopK::default`].
    ///
    /// # Errors
    /// `NotFound` for a scope naming a missing or foreign thread;
    /// `Unavailable` when vector or hybrid search needs a missing model.
    #[tracing::instrument(name = "search", skip_all, fields(mode = %query.mode))]
    pub async fn search(&self, who: &(impl Reach + 'static), query: &SearchQuery) -> Result<SearchResults, StoreError> {
        let (filter, thread) = self.filter(who, &query.scope).await?;
        let k = top_k(query, thread.as_ref())?;
        let mut plan = SearchPlan { vector_index: "none".into(), ..SearchPlan::default() };
        if filter.admits_nothing() {
            return Ok(SearchResults { hits: Vec::new(), plan, truncated: false });
        }
        let how = Ranking { embedded: None, exclude: &HashSet::new(), coverage: true };
        let found = self.rank(who, query, &filter, k, how).await?;
        plan.stages = found.stages;
        if let Some((strategy, model, counts)) = found.vector {
            plan.vector_index = strategy.as_str().to_owned();
            plan.model = model;
            if let Some(counts) = counts {
                plan.pending = counts.pending;
                plan.other_model = counts.other_model;
            }
        }
        tracing::info!(
            mode = %query.mode,
            index = %plan.vector_index,
            hits = found.ranked.len(),
            pending = plan.pending,
            other_model = plan.other_model,
            "search"
        );
        let (hits, truncated) = self.hydrate(who, query, found.ranked).await?;
        if truncated {
            tracing::info!(
                max_response_bytes = self.max_response_bytes,
                hits = hits.len(),
                "search cut by the response budget"
            );
        }
        Ok(SearchResults { hits, plan, truncated })
    }

    /// Embeds a search query in the interactive lane, charged to `who`'s
    /// tenant as [`search`](Self::search) charges its query: for a caller
    /// that embeds the query while it does something else, then passes the
    /// embedding to [`recall`](Self::recall).
    ///
    /// # Errors
    /// `RateLimited` when the tenant's embedding budget is spent;
    /// `Unprovisioned` when the model is missing.
    pub async fn embed_query(&self, who: &(impl Reach + 'static), text: &str) -> Result<Embedding, StoreError> {
        self.limiter.charge_embedding(who.tenant(), crate::embedding_cost([text])).await?;
        let mut embedded = self.embedder.embed_interactive(vec![text.to_owned()]).await.map_err(unprovisioned)?;
        embedded.pop().ok_or_else(|| StoreError::backend("embedder returned no vector"))
    }

    /// The hits [`search`](Self::search) would return for `query` if the
    /// `exclude`d messages were not stored: the same ranking, scores and
    /// neighbour windows, and `top_k` hits whenever that many others match,
    /// however many excluded ones rank above them (context recall leaves
    /// out the messages already among the recent ones this way). Reports no
    /// plan: the coverage counts a search reads on every query are not read.
    /// `embedded` is the query's embedding from
    /// [`embed_query`](Self::embed_query) (already charged); without it a
    /// vector or hybrid query is embedded and charged here.
    ///
    /// # Errors
    /// As [`search`](Self::search).
    #[tracing::instrument(name = "search.recall", skip_all, fields(mode = %query.mode))]
    pub async fn recall(
        &self,
        who: &(impl Reach + 'static),
        query: &SearchQuery,
        embedded: Option<Embedding>,
        exclude: &HashSet<MessageId>,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let (filter, thread) = self.filter(who, &query.scope).await?;
        let k = top_k(query, thread.as_ref())?;
        if filter.admits_nothing() {
            return Ok(Vec::new());
        }
        let found = self.rank(who, query, &filter, k, Ranking { embedded, exclude, coverage: false }).await?;
        let (hits, _) = self.hydrate(who.tenant(), query, found.ranked).await?;
        Ok(hits)
    }

    /// Ranks the messages `filter` admits for `query`: up to `k`, best
    /// first, those scoring below `min_score` dropped, and (for vector and
    /// hybrid) how the vector leg ran.
    async fn rank(
        &self,
        who: &(impl Reach + 'static),
        query: &SearchQuery,
        filter: &SearchFilter,
        k: usize,
        how: Ranking<'_>,
    ) -> Result<Ranked, StoreError> {
        let tenant = who.tenant();
        let exclude = how.exclude;
        let uses_vectors = matches!(query.mode, SearchMode::Vector | SearchMode::Hybrid);
        if uses_vectors && how.embedded.is_none() {
            self.limiter.charge_embedding(tenant, crate::embedding_cost([query.text()])).await?;
        }
        let candidates = if query.mode == SearchMode::Hybrid { (k * 4).max(20) } else { k };
        // The two legs run at once: a hybrid search takes the slower leg's
        // time, not the sum (each may wait for the store's catch-up round).
        let vector_leg = async {
            if !uses_vectors {
                return Ok(None);
            }
            let model = self.embedder.info().model;
            let embed = async {
                match how.embedded {
                    Some(q) => Ok(q),
                    None => {
                        let mut embedded = self
                            .embedder
                            .embed_interactive(vec![query.text().to_owned()])
                            .await
                            .map_err(unprovisioned)?;
                        embedded.pop().ok_or_else(|| StoreError::backend("embedder returned no vector"))
                    }
                }
            };
            // The coverage counts (a database read) run while the query is
            // embedded (ONNX, in the embedder's interactive lane).
            let coverage = async {
                if how.coverage { self.store.coverage(filter, model.clone()).await.map(Some) } else { Ok(None) }
            };
            let (q, counts) = tokio::join!(
                tracing::Instrument::instrument(embed, tracing::info_span!("search.embed")),
                tracing::Instrument::instrument(coverage, tracing::info_span!("search.coverage")),
            );
            let (q, counts) = (q?, counts?);
            let scan = async {
                if exclude.is_empty() {
                    self.index.search(filter, &q, candidates).await
                } else {
                    self.index.search_excluding(filter, &q, candidates, exclude).await
                }
            };
            let found = tracing::Instrument::instrument(scan, tracing::info_span!("search.index")).await?;
            Ok::<_, StoreError>(Some((found, model, counts)))
        };
        let lexical_leg = async {
            if !matches!(query.mode, SearchMode::Lexical | SearchMode::Hybrid) {
                return Ok::<_, StoreError>(None);
            }
            let mut found =
                self.store.lexical_search(filter, query.text().to_owned(), candidates + exclude.len()).await?;
            if !exclude.is_empty() {
                found.retain(|m| !exclude.contains(&m.id));
                found.truncate(candidates);
            }
            Ok(Some(found))
        };
        let (vector, lexical) = tokio::try_join!(
            tracing::Instrument::instrument(vector_leg, tracing::info_span!("search.vector", candidates)),
            tracing::Instrument::instrument(lexical_leg, tracing::info_span!("search.lexical", candidates)),
        )?;
        let mut how_vector = None;
        let vector = vector.map(|(found, model, counts)| {
            how_vector = Some((found.strategy, model, counts));
            found.matches
        });
        let mut stages = Vec::with_capacity(3);
        let stage = |kind, found: &Vec<ScoredHit>| SearchStage { kind, candidates: found.len() };
        stages.extend(vector.as_ref().map(|v| stage(StageKind::Vector, v)));
        stages.extend(lexical.as_ref().map(|l| stage(StageKind::Lexical, l)));
        let ranked = match (vector, lexical) {
            (Some(v), Some(l)) => {
                let fused = fuse(&[v, l]);
                stages.push(stage(StageKind::Fusion, &fused));
                fused
            }
            (Some(v), None) => v,
            (None, Some(l)) => l,
            (None, None) => Vec::new(),
        };
        let ranked = ranked.into_iter().filter(|m| query.min_score.is_none_or(|min| m.score >= min)).take(k).collect();
        Ok(Ranked { ranked, vector: how_vector, stages })
    }

    /// Reads the ranked hits and their neighbour windows within the
    /// response budget. Hits come first, in rank order, as long as they fit
    /// (the best one always); the remaining budget then goes to the
    /// windows, read in one query in the hits' rank order, each message
    /// once: a neighbour that is itself a hit appears only as that hit, and
    /// one in several windows only in the best-ranked hit's window.
    #[tracing::instrument(name = "search.hydrate", skip_all, fields(hits = ranked.len()))]
    async fn hydrate(
        &self,
        who: &(impl Reach + 'static),
        query: &SearchQuery,
        ranked: Vec<ScoredHit>,
    ) -> Result<(Vec<SearchHit>, bool), StoreError> {
        let scores: HashMap<MessageId, f32> = ranked.iter().map(|m| (m.id, m.score)).collect();
        let messages = self.messages.get_many(who, ranked.iter().map(|m| m.id).collect()).await?;
        let mut left = self.max_response_bytes;
        let mut truncated = false;
        let mut hits = Vec::with_capacity(messages.len());
        for message in messages {
            let size = message.approx_bytes();
            if size > left && !hits.is_empty() {
                truncated = true;
                break;
            }
            left = left.saturating_sub(size);
            let score = scores.get(&message.id).copied().unwrap_or_default();
            hits.push(SearchHit { message, score, mode: query.mode, before: Vec::new(), after: Vec::new() });
        }
        if query.window.is_empty() || hits.is_empty() {
            return Ok((hits, truncated));
        }
        let windows = neighbour_windows(&hits, query.window.before(), query.window.after());
        let read = self.messages.read_windows(who, windows.iter().map(|(_, _, w)| *w).collect(), left).await?;
        truncated |= read.truncated;
        for m in read.messages {
            let Some((hit, side, _)) =
                windows.iter().find(|(_, _, w)| w.thread == m.thread_id && (w.from..=w.to).contains(&m.seq))
            else {
                continue;
            };
            let hit = &mut hits[*hit];
            match side {
                Side::Before => hit.before.push(m),
                Side::After => hit.after.push(m),
            }
        }
        for hit in &mut hits {
            hit.before.sort_by_key(|m| m.seq);
            hit.after.sort_by_key(|m| m.seq);
        }
        Ok((hits, truncated))
    }
}

/// How [`SearchService::rank`] runs beyond the query itself.
#[derive(Debug)]
struct Ranking<'a> {
    /// The query's embedding, made (and charged) already.
    embedded: Option<Embedding>,
    /// Messages ranked as if absent.
    exclude: &'a HashSet<MessageId>,
    /// Whether to read the coverage counts a search reports.
    coverage: bool,
}

/// What [`SearchService::rank`] found.
#[derive(Debug)]
struct Ranked {
    ranked: Vec<ScoredHit>,
    /// The vector leg's strategy, model and (when read) coverage.
    vector: Option<(IndexKind, String, Option<Coverage>)>,
    /// The stages that ran, in order.
    stages: Vec<SearchStage>,
}

/// The query's `top_k`, else one thread's `_memory.top_k`, else the default.
fn top_k(query: &SearchQuery, thread: Option<&Thread>) -> Result<usize, StoreError> {
    Ok(match (query.top_k, thread) {
        (Some(k), _) => k,
        (None, Some(thread)) => {
            MemoryOptions::from_metadata(&thread.metadata).top_k.map(TopK::new).transpose()?.unwrap_or_default()
        }
        (None, None) => TopK::default(),
    }
    .get())
}

/// Which side of its hit a window lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// The neighbour windows of `hits`, in rank order, as disjoint runs of
/// sequence numbers tagged with their hit and side: each hit's `before`
/// messages before it and `after` after it, minus every hit's own message
/// and every run an earlier window already covers (so each message is read
/// and returned once).
fn neighbour_windows(hits: &[SearchHit], before: u32, after: u32) -> Vec<(usize, Side, SeqRange)> {
    let mut taken: HashMap<ThreadId, Vec<(i64, i64)>> = HashMap::new();
    for hit in hits {
        let seq = hit.message.seq;
        taken.entry(hit.message.thread_id).or_default().push((seq, seq));
    }
    let mut out = Vec::new();
    for (i, hit) in hits.iter().enumerate() {
        let (thread, seq) = (hit.message.thread_id, hit.message.seq);
        let sides = [
            (Side::Before, seq.saturating_sub(i64::from(before)), seq - 1),
            (Side::After, seq + 1, seq.saturating_add(i64::from(after))),
        ];
        for (side, from, to) in sides {
            if from > to {
                continue;
            }
            let covered = taken.entry(thread).or_default();
            for (a, b) in subtract((from, to), covered) {
                out.push((i, side, SeqRange { thread, from: a, to: b }));
            }
            covered.push((from, to));
        }
    }
    out
}

/// The parts of `range` (inclusive) that none of `covered` overlaps, in order.
fn subtract(range: (i64, i64), covered: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut parts = vec![range];
    for &(a, b) in covered {
        parts = parts
            .into_iter()
            .flat_map(|(from, to)| {
                if b < from || a > to {
                    return vec![(from, to)];
                }
                let mut rest = Vec::with_capacity(2);
                if from < a {
                    rest.push((from, a - 1));
                }
                if b < to {
                    rest.push((b + 1, to));
                }
                rest
            })
            .collect();
    }
    parts
}

/// The embedder's `Unavailable` means its model or runtime is missing: a
/// problem with a fix the caller may see.
fn unprovisioned(e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unprovisioned(m),
        other => other,
    }
}

/// Fusion of best-first rankings by a convex combination of normalised
/// scores: each ranking's scores are min-max normalised over its own
/// candidates (its best 1, its last 0; all 1 when they are equal), and a
/// hit's fused score is their mean, a ranking that missed it adding 0. So
/// a fused score lies in 0..=1 whatever the legs' scales (cosine, BM25),
/// and agreement of both legs ranks first. Measured against reciprocal rank
/// fusion on REALTALK (docs/BENCHMARKS.md, "Retrieval evaluation"): better
/// at every candidate depth, with equal weights (none tuned).
fn fuse(rankings: &[Vec<ScoredHit>]) -> Vec<ScoredHit> {
    let weight = 1.0 / rankings.len().max(1) as f32;
    let mut fused: HashMap<MessageId, ScoredHit> = HashMap::new();
    for ranking in rankings {
        let (Some(best), Some(last)) = (ranking.first(), ranking.last()) else { continue };
        let span = best.score - last.score;
        for m in ranking {
            let normalised = if span > 0.0 { (m.score - last.score) / span } else { 1.0 };
            let add = weight * normalised;
            fused.entry(m.id).and_modify(|f| f.score += add).or_insert(ScoredHit { score: add, ..*m });
        }
    }
    let mut out: Vec<_> = fused.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: MessageId, score: f32) -> ScoredHit {
        ScoredHit { id, thread: ThreadId::new(), score }
    }

    #[test]
    fn subtract_leaves_the_uncovered_parts_in_order() {
        assert_eq!(subtract((1, 10), &[]), vec![(1, 10)]);
        assert_eq!(subtract((1, 10), &[(4, 5), (8, 8)]), vec![(1, 3), (6, 7), (9, 10)]);
        assert_eq!(subtract((3, 6), &[(1, 9)]), Vec::<(i64, i64)>::new());
        assert_eq!(subtract((3, 6), &[(6, 9), (1, 3)]), vec![(4, 5)]);
    }

    #[test]
    fn neighbour_windows_skip_hits_and_what_earlier_windows_cover() {
        use memlayer_domain::{NewMessage, Role};
        let thread = ThreadId::new();
        let hit = |seq: i64| SearchHit {
            message: NewMessage::text(Role::User, "x").unwrap().into_message(
                MessageId::new(),
                thread,
                seq,
                memlayer_domain::now(),
            ),
            score: 1.0,
            mode: SearchMode::Lexical,
            before: Vec::new(),
            after: Vec::new(),
        };
        // Hits at 10 (best) and 12, windows of 2 + 2.
        let windows = neighbour_windows(&[hit(10), hit(12)], 2, 2);
        let got: Vec<(usize, Side, i64, i64)> = windows.iter().map(|(i, s, w)| (*i, *s, w.from, w.to)).collect();
        // Hit 12's `before` (10, 11) is a hit and hit 10's window: nothing left.
        assert_eq!(got, vec![(0, Side::Before, 8, 9), (0, Side::After, 11, 11), (1, Side::After, 13, 14)]);
    }

    #[test]
    fn fusion_rewards_agreement() {
        let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
        let vector = vec![m(a, 0.9), m(b, 0.8), m(c, 0.1)];
        let lexical = vec![m(b, 12.0), m(c, 3.0)];
        let fused = fuse(&[vector, lexical]);
        // b: (0.875 + 1) / 2; a: (1 + 0) / 2; c: last of both, 0.
        assert_eq!(fused.iter().map(|x| x.id).collect::<Vec<_>>(), vec![b, a, c]);
        assert!((fused[0].score - 0.9375).abs() < 1e-6, "{}", fused[0].score);
        assert!((fused[1].score - 0.5).abs() < 1e-6 && fused[2].score.abs() < 1e-6);
    }

    #[test]
    fn fusion_scores_stay_within_zero_and_one_whatever_the_scales() {
        let (a, b) = (MessageId::new(), MessageId::new());
        let one = fuse(&[vec![m(a, 7.5)], vec![m(a, -3.0), m(b, -9.0)]]);
        assert_eq!(one.iter().map(|x| (x.id, x.score)).collect::<Vec<_>>(), vec![(a, 1.0), (b, 0.0)]);
        let equal = fuse(&[vec![m(a, 2.0), m(b, 2.0)], vec![]]);
        assert!(equal.iter().all(|x| (x.score - 0.5).abs() < 1e-6), "equal scores all count as the best: {equal:?}");
        assert!(fuse(&[vec![], vec![]]).is_empty());
    }
}
