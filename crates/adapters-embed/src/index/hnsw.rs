//! [`HnswIndex`]: approximate search on HNSW graphs that take inserts and
//! removals while they are searched (`usearch`), persisted as a snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use memlayer_domain::{DomainError, Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{IndexKind, SearchFilter, StoreError, VectorEntry, VectorIndex, VectorSearch};

use super::graph::{Graph, GraphParams, Slot};
use super::math::{TopK, normalised};
use super::snapshot;
use super::store::{Threads, dedup_threads};
use super::{INLINE_WORK, Prepared, blocking, check_batch, dimension_error, read};
use crate::background::BackgroundPool;

/// Settings of [`HnswIndex`].
///
/// Defaults come from `examples/bench_index.rs` on 100,000 and 1,000,000
/// all-MiniLM-L6-v2 embeddings of real text (2 cores; see
/// docs/BENCHMARKS.md). `M` is usearch's default, 16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswConfig {
    /// Where the index persists itself (on [`HnswIndex::flush`] and
    /// `close`); `None` keeps it in memory only.
    pub snapshot_path: Option<PathBuf>,
    /// Unused since the graph takes inserts (it was the size of the exactly
    /// searched delta that started a rebuild); kept so that configurations
    /// naming it still load.
    pub rebuild_threshold: usize,
    /// Searches whose filter admits at most this many candidates are exact
    /// (20,000 × 384 dimensions take a few ms). Default 20,000.
    pub exact_below: usize,
    /// Beam width while inserting (`efConstruction`). Default 100.
    pub ef_construction: usize,
    /// Beam width while searching (`ef`; a search for more than this many
    /// results widens it to `k`). Applied to a loaded snapshot too.
    /// Default 64.
    pub ef_search: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self { snapshot_path: None, rebuild_threshold: 5000, exact_below: 20_000, ef_construction: 100, ef_search: 64 }
    }
}

/// Figures of one model's part of an [`HnswIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswModelStats {
    /// The embedding model.
    pub model: String,
    /// Its vectors' dimension.
    pub dim: usize,
    /// Entries in the tables (searchable).
    pub entries: usize,
    /// Vectors in the graph (equal to `entries` unless an insert is under way).
    pub graph: usize,
    /// `ef_search` of the graph.
    pub ef_search: usize,
    /// Approximate heap bytes (vectors, graph, tables).
    pub heap_bytes: usize,
}

/// Figures of an [`HnswIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswStats {
    /// Per model, sorted by name.
    pub models: Vec<HnswModelStats>,
}

/// Approximate nearest-neighbour search on HNSW graphs (`usearch`).
///
/// Per model: one graph over every tenant's vectors, which takes inserts
/// and removals while it is searched (no rebuild, no delta, no tombstones:
/// a removed node's slot is reused by a later insert), and tables of which
/// tenant and thread each entry belongs to. Inserts run on the process's
/// low-priority index threads (one per core at nice [`REBUILD_NICE`]), so
/// searches preempt them; writes (upserts, removals, snapshots) take turns,
/// searches never wait for them beyond a table update.
///
/// Search: a filter admitting at most [`HnswConfig::exact_below`] candidates
/// (counted from per-tenant and per-thread postings) is searched exactly
/// (strategy `exact`). Otherwise the graph is searched with the filter as
/// its predicate, and the hits are re-scored exactly (strategy `hnsw`).
/// When the graph yields fewer than `k` admitted hits, the filter's
/// candidates are searched exactly instead, still reported as `hnsw`: the
/// choice depends on the filter's own candidates only (never on the graph's
/// size or other tenants' share of it), so the reported strategy reveals
/// nothing about other tenants. Scores are always the exact cosine.
///
/// [`VectorIndex::close`] waits for the write in progress (one upsert batch
/// at most) and writes the snapshot.
///
/// Clones share the same index.
#[derive(Clone)]
pub struct HnswIndex {
    inner: Arc<Inner>,
}

impl fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HnswIndex").field("config", &self.inner.config).field("stats", &self.stats()).finish()
    }
}

/// Nice value of the index threads: the lowest priority, below batch
/// embedding, which itself yields to requests.
pub(crate) const REBUILD_NICE: i32 = 19;

/// The process's index threads, shared by every [`HnswIndex`], at nice
/// [`REBUILD_NICE`] unless `MEMLAYER_INDEX_NICE` (0–19) says otherwise (for
/// benchmarks on a machine where other niced work competes).
fn index_threads() -> Result<&'static BackgroundPool, StoreError> {
    static POOL: OnceLock<Result<BackgroundPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let nice = std::env::var("MEMLAYER_INDEX_NICE")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| (0..=19).contains(n))
            .unwrap_or(REBUILD_NICE);
        BackgroundPool::new("memlayer-index", cores, nice).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| StoreError::backend(e.clone()))
}

struct Inner {
    config: HnswConfig,
    params: GraphParams,
    models: RwLock<HashMap<String, Arc<Graph>>>,
    /// One writer at a time: upserts, removals and snapshots.
    writer: tokio::sync::Mutex<()>,
    /// Tests: an insert waits here (on the index threads) before it starts.
    #[cfg(test)]
    before_insert: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// An owned search request.
#[derive(Debug)]
struct Request {
    tenant: TenantId,
    threads: Option<Vec<ThreadId>>,
    model: String,
    query: Vec<f32>,
    k: usize,
    /// Entries to skip: never returned, never counted against `k`.
    exclude: HashSet<MessageId>,
}

impl Request {
    fn threads(&self) -> Threads<'_> {
        self.threads.as_deref().map_or(Threads::All, Threads::Only)
    }
}

/// How a search will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Nothing can match.
    Empty,
    /// Compare this many candidates exactly.
    Exact(usize),
    /// Ask the graph.
    Graph,
}

impl Inner {
    fn graph(&self, model: &str) -> Option<Arc<Graph>> {
        read(&self.models).get(model).cloned()
    }

    fn plan(&self, graph: Option<&Graph>, r: &Request) -> Result<Plan, StoreError> {
        let Some(graph) = graph else { return Ok(Plan::Empty) };
        if graph.dim != r.query.len() {
            return Err(dimension_error("query", &r.model, r.query.len(), graph.dim));
        }
        if r.k == 0 {
            return Ok(Plan::Empty);
        }
        let total = read(&graph.tables).count(&r.tenant, r.threads());
        // Decided by the filter's own candidates only, never by the graph's
        // size or by how much of it is other tenants': the strategy a search
        // reports must not tell a tenant anything about anybody else.
        Ok(match total {
            0 => Plan::Empty,
            n if n <= self.config.exact_below => Plan::Exact(n),
            _ => Plan::Graph,
        })
    }

    fn run(graph: &Graph, r: &Request, plan: Plan) -> Result<VectorSearch, StoreError> {
        let mut top = TopK::new(r.k);
        let tables = read(&graph.tables);
        let skip = |id: &MessageId| r.exclude.contains(id);
        let strategy = match plan {
            Plan::Empty => IndexKind::Exact,
            Plan::Exact(_) => {
                graph.scan(&tables, &r.query, &r.tenant, r.threads(), skip, &mut top);
                IndexKind::Exact
            }
            Plan::Graph => {
                let tix = tables.tenant_index(&r.tenant);
                let allowed: Option<HashSet<ThreadId>> = r.threads.as_ref().map(|ts| ts.iter().copied().collect());
                let admit = |s: &Slot| {
                    Some(s.tenant) == tix
                        && allowed.as_ref().is_none_or(|a| a.contains(&s.thread))
                        && !r.exclude.contains(&s.id)
                };
                let admitted = graph.search(&tables, &r.query, r.k, admit, &mut top).map_err(StoreError::backend)?;
                // The plan's strategy, whatever rescued it: whether the graph
                // falls short depends on the other tenants' points around the
                // filter's, which the report must not reveal.
                if admitted < r.k {
                    top = TopK::new(r.k);
                    graph.scan(&tables, &r.query, &r.tenant, r.threads(), skip, &mut top);
                }
                IndexKind::Hnsw
            }
        };
        Ok(VectorSearch { matches: top.into_matches(), strategy })
    }

    /// Writes the snapshot, if configured (blocking; the caller holds the
    /// writer lock).
    fn write_snapshot(&self) -> Result<(), StoreError> {
        let Some(path) = &self.config.snapshot_path else { return Ok(()) };
        let started = Instant::now();
        let mut models: Vec<(String, Arc<Graph>)> =
            read(&self.models).iter().map(|(name, g)| (name.clone(), Arc::clone(g))).collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes = snapshot::write(path, &models)
            .map_err(|e| StoreError::backend(format!("writing vector index snapshot {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), bytes, elapsed_ms = started.elapsed().as_millis() as u64, "vector index snapshot written");
        Ok(())
    }

    /// Drops models left without entries (their dimension is free again).
    fn drop_empty(&self) {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        models.retain(|_, g| read(&g.tables).len() > 0);
    }
}

impl HnswIndex {
    /// Opens the index, loading `config.snapshot_path` when it holds a valid
    /// snapshot. A missing snapshot starts empty; an unreadable, corrupt or
    /// older-format one is logged and ignored (the application re-upserts
    /// from the durable store, and the next snapshot replaces it).
    ///
    /// # Errors
    /// `Invalid` for a zero `ef_search` or `ef_construction`; `Backend` when
    /// the snapshot's directory cannot be created.
    pub fn open(config: HnswConfig) -> Result<Self, StoreError> {
        if config.ef_search == 0 || config.ef_construction == 0 {
            return Err(StoreError::Invalid(DomainError::new(
                "ef_search",
                "ef_search and ef_construction must be at least 1",
            )));
        }
        let params =
            GraphParams { connectivity: 0, ef_construction: config.ef_construction, ef_search: config.ef_search };
        let mut models = HashMap::new();
        if let Some(path) = &config.snapshot_path {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::backend(format!("creating vector index snapshot directory {}: {e}", dir.display()))
                })?;
            }
            if path.exists() {
                let started = Instant::now();
                match snapshot::read(path, params) {
                    Ok(loaded) => {
                        for m in loaded {
                            if read(&m.graph.tables).len() > 0 {
                                models.insert(m.model, Arc::new(m.graph));
                            }
                        }
                        tracing::info!(
                            path = %path.display(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "vector index snapshot loaded"
                        );
                    }
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "ignoring unusable vector index snapshot; starting empty"
                    ),
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                params,
                models: RwLock::new(models),
                writer: tokio::sync::Mutex::new(()),
                #[cfg(test)]
                before_insert: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &HnswConfig {
        &self.inner.config
    }

    /// Current figures.
    #[must_use]
    pub fn stats(&self) -> HnswStats {
        let models = read(&self.inner.models);
        let mut out: Vec<HnswModelStats> = models
            .iter()
            .map(|(name, g)| HnswModelStats {
                model: name.clone(),
                dim: g.dim,
                entries: read(&g.tables).len(),
                graph: g.size(),
                ef_search: g.ef_search(),
                heap_bytes: g.heap_bytes(),
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        HnswStats { models: out }
    }

    /// Sets `ef_search` for the next searches of every model (benchmarks
    /// compare settings without reloading; a restart applies the configured
    /// one).
    pub fn set_ef_search(&self, ef_search: usize) {
        for g in read(&self.inner.models).values() {
            g.set_ef_search(ef_search.max(1));
        }
    }

    /// Writes the snapshot of the current state if a path is configured; a
    /// restart then needs neither a rebuild nor a re-upsert. Waits for the
    /// write in progress; searches go on meanwhile.
    ///
    /// # Errors
    /// `Backend` on an I/O failure (the previous snapshot is kept).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.inner.config.snapshot_path.is_none() {
            return Ok(());
        }
        let _writer = self.inner.writer.lock().await;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.write_snapshot()).await?
    }

    /// Plans and runs a search: inline when it is small, else on the
    /// blocking pool.
    async fn run_request(&self, request: Request) -> Result<VectorSearch, StoreError> {
        let Some(graph) = self.inner.graph(&request.model) else {
            return Ok(VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact });
        };
        match self.inner.plan(Some(&graph), &request)? {
            Plan::Empty => return Ok(VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact }),
            plan @ Plan::Exact(n) if n.saturating_mul(request.query.len()) <= INLINE_WORK => {
                return Inner::run(&graph, &request, plan);
            }
            _ => {}
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let plan = inner.plan(Some(&graph), &request)?;
            Inner::run(&graph, &request, plan)
        })
        .await?
    }

    fn request(filter: &SearchFilter, query: &Embedding, k: usize, exclude: HashSet<MessageId>) -> Request {
        Request {
            exclude,
            tenant: filter.tenant.clone(),
            threads: filter.threads.listed().map(dedup_threads),
            model: query.model().to_owned(),
            query: normalised(query.vector()),
            k,
        }
    }

    /// Inserts one model's part of a batch (the writer lock held).
    async fn insert(&self, model: String, dim: usize, batch: Vec<Prepared>) -> Result<(), StoreError> {
        let graph = {
            let mut models = self.inner.models.write().unwrap_or_else(PoisonError::into_inner);
            match models.get(&model) {
                Some(g) => Arc::clone(g),
                None => {
                    let g = Arc::new(Graph::new(dim, self.inner.params).map_err(StoreError::backend)?);
                    models.insert(model.clone(), Arc::clone(&g));
                    g
                }
            }
        };
        // Keys first (a short table update), then the vectors, with no
        // table lock held: searches go on while the graph grows.
        let mut replaced = Vec::new();
        let items: Vec<(u64, Vec<f32>)> = {
            let mut tables = graph.tables.write().unwrap_or_else(PoisonError::into_inner);
            batch
                .into_iter()
                .map(|p| {
                    let (key, old) = tables.insert(p.id, &p.tenant, p.thread);
                    replaced.extend(old);
                    (key, p.unit)
                })
                .collect()
        };
        let work = {
            let graph = Arc::clone(&graph);
            #[cfg(test)]
            let gate = self.inner.before_insert.lock().unwrap_or_else(PoisonError::into_inner).take();
            move || {
                #[cfg(test)]
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                graph.remove_keys(&replaced);
                let result = graph.make_room(items.len()).and_then(|()| graph.insert(&items));
                if result.is_err() {
                    // Forget what did not make it into the graph.
                    let mut buf = vec![0.0f32; graph.dim];
                    let missing: Vec<u64> =
                        items.iter().map(|(k, _)| *k).filter(|k| !graph.vector(*k, &mut buf)).collect();
                    let mut tables = graph.tables.write().unwrap_or_else(PoisonError::into_inner);
                    let ids: Vec<MessageId> = missing.iter().filter_map(|k| tables.slot(*k).map(|s| s.id)).collect();
                    for id in ids {
                        tables.remove(id);
                    }
                }
                graph.code_threads();
                result
            }
        };
        let result = index_threads()?.run(work).await?;
        result.map_err(|e| StoreError::backend(format!("vector index insert: {e}")))
    }
}

#[async_trait]
impl VectorIndex for HnswIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }

    async fn upsert(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let batch: Vec<Prepared> = entries.into_iter().map(Prepared::from_entry).collect();
        let _writer = self.inner.writer.lock().await;
        {
            let models = read(&self.inner.models);
            check_batch(&batch, |m| models.get(m).map(|g| g.dim))?;
        }
        let mut by_model: Vec<(String, Vec<Prepared>)> = Vec::new();
        for p in batch {
            match by_model.iter_mut().find(|(m, _)| *m == p.model) {
                Some((_, part)) => part.push(p),
                None => by_model.push((p.model.clone(), vec![p])),
            }
        }
        for (model, part) in by_model {
            let dim = part[0].unit.len();
            self.insert(model, dim, part).await?;
        }
        self.inner.drop_empty();
        Ok(())
    }

    async fn remove(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _writer = self.inner.writer.lock().await;
        let graphs: Vec<Arc<Graph>> = read(&self.inner.models).values().cloned().collect();
        for g in graphs {
            let keys: Vec<u64> = {
                let mut tables = g.tables.write().unwrap_or_else(PoisonError::into_inner);
                ids.iter().filter_map(|id| tables.remove(*id)).collect()
            };
            g.remove_keys(&keys);
        }
        self.inner.drop_empty();
        Ok(())
    }

    async fn remove_thread(&self, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
        let _writer = self.inner.writer.lock().await;
        let graphs: Vec<Arc<Graph>> = read(&self.inner.models).values().cloned().collect();
        for g in graphs {
            let keys = g.tables.write().unwrap_or_else(PoisonError::into_inner).remove_thread(tenant, thread);
            g.remove_keys(&keys);
        }
        self.inner.drop_empty();
        Ok(())
    }

    async fn search(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        self.run_request(Self::request(filter, query, k, HashSet::new())).await
    }

    /// Skips the excluded entries while searching: the graph admits only
    /// entries that are not excluded, so a graph search stays a graph search
    /// however many are excluded.
    async fn search_excluding(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
        exclude: &HashSet<MessageId>,
    ) -> Result<VectorSearch, StoreError> {
        self.run_request(Self::request(filter, query, k, exclude.clone())).await
    }

    async fn len(&self) -> Result<usize, StoreError> {
        Ok(read(&self.inner.models).values().map(|g| read(&g.tables).len()).sum())
    }

    /// Waits for the write in progress and writes the snapshot, if
    /// configured.
    async fn close(&self) -> Result<(), StoreError> {
        self.flush().await
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        let models = read(&self.inner.models);
        let mut ids = HashSet::new();
        for g in models.values() {
            ids.extend(read(&g.tables).ids());
        }
        Ok(ids.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use memlayer_domain::Embedding;

    use super::*;
    use crate::index::ExactIndex;
    use crate::index::math::dot;
    use crate::index::testdata::{clustered, cosine};

    const DIM: usize = 16;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn emb(model: &str, v: &[f32]) -> Embedding {
        Embedding::new(model, v.to_vec(), v.len()).unwrap()
    }

    fn entry(t: &TenantId, thread: ThreadId, v: &[f32]) -> VectorEntry {
        VectorEntry { id: MessageId::new(), tenant: t.clone(), thread, embedding: emb("m", v) }
    }

    fn all(t: &TenantId) -> SearchFilter {
        SearchFilter::all_threads(t.clone())
    }

    /// The graph is always used (nothing is "few" candidates).
    fn graph_config() -> HnswConfig {
        HnswConfig { exact_below: 0, ef_construction: 64, ef_search: 40, ..HnswConfig::default() }
    }

    /// `n` entries over `threads` threads of one tenant.
    fn corpus(t: &TenantId, n: usize, threads: usize, seed: u64) -> (Vec<VectorEntry>, Vec<ThreadId>) {
        let ts: Vec<ThreadId> = (0..threads).map(|_| ThreadId::new()).collect();
        let entries =
            clustered(seed, n, DIM, 12).iter().enumerate().map(|(i, v)| entry(t, ts[i % threads], v)).collect();
        (entries, ts)
    }

    fn assert_exact_scores(got: &VectorSearch, entries: &[VectorEntry], q: &[f32]) {
        assert!(got.matches.windows(2).all(|w| w[0].score >= w[1].score), "sorted best first");
        for m in &got.matches {
            let e = entries.iter().find(|e| e.id == m.id).expect("a stored entry");
            let truth = cosine(e.embedding.vector(), q);
            assert!((m.score - truth).abs() < 1e-5, "score {} is the cosine {truth}", m.score);
            assert_eq!(m.thread, e.thread);
        }
    }

    /// `close` returns while a build still runs, drops the build's graph
    /// when it ends, and leaves every vector searchable and in the snapshot.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_graph_finds_stored_vectors_with_exact_scores() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 400, 10, 1);
        index.upsert(entries.clone()).await.unwrap();
        let stats = index.stats();
        assert_eq!((stats.models[0].entries, stats.models[0].graph), (400, 400));
        let mut top1 = 0;
        for probe in (0..400).step_by(19) {
            let q = entries[probe].embedding.vector();
            let got = index.search(&all(&t), &emb("m", q), 10).await.unwrap();
            assert_eq!(got.strategy, IndexKind::Hnsw);
            assert_eq!(got.matches.len(), 10);
            assert_exact_scores(&got, &entries, q);
            top1 += usize::from(got.matches[0].id == entries[probe].id);
        }
        assert_eq!(top1, 22, "a stored vector queried exactly is its own top hit");
    }

    /// The strategy a search reports is chosen by the tenant's own points:
    /// another tenant filling the graph changes nothing a tenant can see.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reported_strategy_ignores_other_tenants() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let (t, other) = (tenant("acme"), tenant("other"));
        let (mine, _) = corpus(&t, 200, 4, 7);
        index.upsert(mine.clone()).await.unwrap();
        let q = emb("m", mine[17].embedding.vector());
        let before = index.search(&all(&t), &q, 10).await.unwrap();
        assert_eq!(before.strategy, IndexKind::Hnsw);
        let (theirs, _) = corpus(&other, 4_000, 8, 8);
        index.upsert(theirs).await.unwrap();
        let after = index.search(&all(&t), &q, 10).await.unwrap();
        assert_eq!(after.strategy, IndexKind::Hnsw, "another tenant's points do not change the reported plan");
        assert_eq!(after.matches.len(), 10);
        assert!(after.matches.iter().all(|m| mine.iter().any(|e| e.id == m.id)), "only the tenant's own points");
        assert_exact_scores(&after, &mine, mine[17].embedding.vector());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_filters_are_searched_exactly_like_the_exact_index() {
        let config = HnswConfig { exact_below: 100, ..graph_config() };
        let (index, exact) = (HnswIndex::open(config).unwrap(), ExactIndex::new());
        let t = tenant("acme");
        let (entries, threads) = corpus(&t, 450, 15, 2);
        index.upsert(entries.clone()).await.unwrap();
        exact.upsert(entries.clone()).await.unwrap();
        let scope = SearchFilter::these_threads(t.clone(), vec![threads[3], threads[4]]);
        for probe in [0usize, 5, 321] {
            let q = emb("m", entries[probe].embedding.vector());
            let got = index.search(&scope, &q, 15).await.unwrap();
            assert_eq!(got.strategy, IndexKind::Exact, "60 candidates <= exact_below");
            assert_eq!(got, exact.search(&scope, &q, 15).await.unwrap());
            let wide = index.search(&all(&t), &q, 15).await.unwrap();
            assert_eq!(wide.strategy, IndexKind::Hnsw);
            // k above ef_search: the graph widens its beam to k.
            let many = index.search(&all(&t), &q, 100).await.unwrap();
            assert_eq!((many.strategy, many.matches.len()), (IndexKind::Hnsw, 100));
            assert_exact_scores(&many, &entries, entries[probe].embedding.vector());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenants_threads_and_models_stay_apart_through_the_graph() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let (a, b) = (tenant("a"), tenant("b"));
        let threads: Vec<ThreadId> = (0..4).map(|_| ThreadId::new()).collect();
        let vectors = clustered(3, 480, DIM, 12);
        let mut entries = Vec::new();
        for (i, v) in vectors.iter().enumerate() {
            let t = if i % 4 == 0 { &b } else { &a };
            let mut e = entry(t, threads[i % 4], v);
            if i % 7 == 0 {
                e.embedding = emb("other", v);
            }
            entries.push(e);
        }
        index.upsert(entries.clone()).await.unwrap();
        for (probe, v) in vectors.iter().enumerate().step_by(23) {
            for filter in [all(&a), SearchFilter::these_threads(a.clone(), vec![threads[1], threads[2]])] {
                let got = index.search(&filter, &emb("m", v), 10).await.unwrap();
                assert_eq!(got.matches.len(), 10);
                for m in &got.matches {
                    let e = entries.iter().find(|e| e.id == m.id).unwrap();
                    assert!(filter.admits(&e.tenant, e.thread), "probe {probe}: outside the filter");
                    assert_eq!(e.embedding.model(), "m", "another model's entry");
                }
            }
        }
    }

    async fn check_live(index: &HnswIndex, t: &TenantId, live: &BTreeSet<MessageId>, replaced: &VectorEntry) {
        assert_eq!(&index.ids().await.unwrap().into_iter().collect::<BTreeSet<_>>(), live);
        assert_eq!(index.len().await.unwrap(), live.len());
        let got = index.search(&all(t), &replaced.embedding, 40).await.unwrap();
        assert_eq!(got.strategy, IndexKind::Hnsw);
        assert!(got.matches.iter().all(|m| live.contains(&m.id)), "a dead entry was returned");
        let expected = usize::from(live.contains(&replaced.id));
        assert_eq!(got.matches.iter().filter(|m| m.id == replaced.id).count(), expected, "replacement once");
        assert_eq!(index.stats().models[0].graph, live.len(), "the graph holds the live entries only");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removed_and_replaced_entries_stay_gone_and_slots_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = HnswConfig { snapshot_path: Some(dir.path().join("v.idx")), ..graph_config() };
        let index = HnswIndex::open(config.clone()).unwrap();
        let t = tenant("acme");
        let (entries, threads) = corpus(&t, 450, 5, 5);
        index.upsert(entries[..400].to_vec()).await.unwrap();
        let removed = vec![entries[10].id, entries[330].id, entries[399].id];
        index.remove(removed.clone()).await.unwrap();
        let mut replaced = entries[20].clone();
        replaced.embedding = emb("m", entries[420].embedding.vector());
        index.upsert(vec![replaced.clone()]).await.unwrap();
        index.remove_thread(&t, threads[4]).await.unwrap();
        index.upsert(entries[400..].to_vec()).await.unwrap();
        let live: BTreeSet<MessageId> = entries
            .iter()
            .enumerate()
            .filter(|(i, e)| !removed.contains(&e.id) && (e.thread != threads[4] || *i >= 400))
            .map(|(_, e)| e.id)
            .filter(|id| *id != replaced.id || replaced.thread != threads[4])
            .collect();
        check_live(&index, &t, &live, &replaced).await;
        let got = index.search(&all(&t), &replaced.embedding, 3).await.unwrap();
        if live.contains(&replaced.id) {
            assert!(got.matches.iter().any(|m| m.id == replaced.id), "the replacement vector is searched");
        }
        // And after a restart from the snapshot.
        index.close().await.unwrap();
        drop(index);
        let reopened = HnswIndex::open(config).unwrap();
        check_live(&reopened, &t, &live, &replaced).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_upserts_and_removals_are_not_lost() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 800, 20, 6);
        let writers: Vec<_> = entries
            .chunks(200)
            .map(|part| {
                let (index, part) = (index.clone(), part.to_vec());
                tokio::spawn(async move {
                    for batch in part.chunks(25) {
                        index.upsert(batch.to_vec()).await.unwrap();
                        index.remove(vec![batch[0].id]).await.unwrap();
                        index.upsert(vec![batch[0].clone()]).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(index.len().await.unwrap(), 800);
        assert_eq!(index.stats().models[0].graph, 800);
        let ids: BTreeSet<MessageId> = index.ids().await.unwrap().into_iter().collect();
        assert_eq!(ids, entries.iter().map(|e| e.id).collect());
        for e in entries.iter().step_by(37) {
            let got = index.search(&all(&t), &e.embedding, 1).await.unwrap();
            assert_eq!(got.matches[0].id, e.id);
        }
    }

    /// Searches do not wait for an insert: one is held before it starts
    /// (its keys already in the tables, its vectors not yet in the graph)
    /// while searches run and return.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_go_on_while_an_insert_runs() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 600, 6, 11);
        index.upsert(entries[..300].to_vec()).await.unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel();
        *index.inner.before_insert.lock().unwrap() = Some(gate);
        let insert = tokio::spawn({
            let (index, batch) = (index.clone(), entries[300..].to_vec());
            async move { index.upsert(batch).await }
        });
        while index.len().await.unwrap() < 600 {
            tokio::task::yield_now().await;
        }
        assert!(!insert.is_finished(), "the insert is held");
        for e in entries[..300].iter().step_by(29) {
            let got = index.search(&all(&t), &e.embedding, 5).await.unwrap();
            assert_eq!((got.strategy, got.matches[0].id), (IndexKind::Hnsw, e.id));
            let thread = SearchFilter::these_threads(t.clone(), vec![e.thread]);
            let exact = index.search(&thread, &e.embedding, 5).await.unwrap();
            assert_eq!(exact.matches[0].id, e.id, "the exact path skips vectors not yet inserted");
        }
        assert!(!insert.is_finished(), "the searches did not wait for the insert");
        open_gate.send(()).unwrap();
        insert.await.unwrap().unwrap();
        let got = index.search(&all(&t), &entries[450].embedding, 1).await.unwrap();
        assert_eq!(got.matches[0].id, entries[450].id);
    }

    /// A small tenant inside a big index is searched exactly: its recall is
    /// the exact index's, whatever surrounds it (the case is 1,000
    /// among 1,000,000; measured at that size by `examples/bench_index`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_tenant_among_many_keeps_exact_recall() {
        let index = HnswIndex::open(HnswConfig { exact_below: 20_000, ..graph_config() }).unwrap();
        let exact = ExactIndex::new();
        let big = tenant("big");
        let small = tenant("small");
        let threads: Vec<ThreadId> = (0..50).map(|_| ThreadId::new()).collect();
        let vectors = clustered(21, 50_000, DIM, 40);
        let mut mine = Vec::new();
        for (n, chunk) in vectors.chunks(5_000).enumerate() {
            let batch: Vec<VectorEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    // Every 49th vector is the small tenant's: 1,021 of 50,000.
                    let t = if (n * 5_000 + i) % 49 == 0 { &small } else { &big };
                    entry(t, threads[i % 50], v)
                })
                .collect();
            mine.extend(batch.iter().filter(|e| e.tenant == small).cloned());
            index.upsert(batch).await.unwrap();
        }
        exact.upsert(mine.clone()).await.unwrap();
        assert_eq!(index.len().await.unwrap(), 50_000);
        assert!(mine.len() > 1_000);
        let queries = clustered(22, 40, DIM, 40);
        for q in &queries {
            let q = emb("m", q);
            let got = index.search(&all(&small), &q, 10).await.unwrap();
            assert_eq!(got.strategy, IndexKind::Exact);
            assert_eq!(got, exact.search(&all(&small), &q, 10).await.unwrap(), "recall 1.0");
        }
        // Forced through the graph, the filter still returns only the small
        // tenant's entries, k of them, with exact scores.
        let forced = HnswIndex::open(graph_config()).unwrap();
        forced.upsert(mine.clone()).await.unwrap();
        for q in queries.iter().take(5) {
            let got = forced.search(&all(&small), &emb("m", q), 10).await.unwrap();
            assert_eq!((got.strategy, got.matches.len()), (IndexKind::Hnsw, 10));
            assert_exact_scores(&got, &mine, q);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_restores_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("vectors.idx");
        let config = HnswConfig { snapshot_path: Some(path.clone()), ..graph_config() };
        let index = HnswIndex::open(config.clone()).unwrap();
        let (a, b) = (tenant("a"), tenant("b"));
        let (mut entries, threads) = corpus(&a, 400, 6, 8);
        entries.extend(corpus(&b, 100, 2, 9).0);
        index.upsert(entries[..450].to_vec()).await.unwrap();
        index.flush().await.unwrap();
        assert!(path.exists(), "flush writes the snapshot");
        index.upsert(entries[450..].to_vec()).await.unwrap();
        index.remove(entries[..40].iter().map(|e| e.id).collect()).await.unwrap();
        index.upsert(vec![VectorEntry { embedding: emb("other", &[0.6, 0.8]), ..entries[470].clone() }]).await.unwrap();
        index.flush().await.unwrap();
        let graphs = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".usearch"))
            .count();
        assert_eq!(graphs, 2, "one graph file per model; the older generation is gone");

        let queries: Vec<(SearchFilter, Embedding)> = entries
            .iter()
            .step_by(37)
            .flat_map(|e| {
                [
                    (all(&a), e.embedding.clone()),
                    (all(&b), e.embedding.clone()),
                    (SearchFilter::these_threads(a.clone(), vec![threads[2]]), e.embedding.clone()),
                ]
            })
            .collect();
        let mut before = Vec::new();
        for (f, q) in &queries {
            before.push(index.search(f, q, 10).await.unwrap());
        }
        let stats_before = index.stats();
        drop(index);

        let reopened = HnswIndex::open(config.clone()).unwrap();
        let stats = reopened.stats();
        assert_eq!(
            stats.models.iter().map(|m| (&m.model, m.dim, m.entries, m.graph)).collect::<Vec<_>>(),
            stats_before.models.iter().map(|m| (&m.model, m.dim, m.entries, m.graph)).collect::<Vec<_>>()
        );
        assert_eq!(reopened.len().await.unwrap(), 500 - 40 + 1);
        for ((f, q), expected) in queries.iter().zip(&before) {
            assert_eq!(&reopened.search(f, q, 10).await.unwrap(), expected);
        }
        assert_eq!(reopened.search(&all(&b), &emb("other", &[0.6, 0.8]), 5).await.unwrap().matches.len(), 1);
        // Inserts go on after a load.
        let (more, _) = corpus(&a, 50, 2, 12);
        reopened.upsert(more.clone()).await.unwrap();
        let got = reopened.search(&all(&a), &more[7].embedding, 1).await.unwrap();
        assert_eq!(got.matches[0].id, more[7].id);

        // ef_search is a load-time setting.
        drop(reopened);
        let wider = HnswIndex::open(HnswConfig { ef_search: 300, ..config }).unwrap();
        assert_eq!(wider.stats().models.iter().find(|m| m.model == "m").unwrap().ef_search, 300);
    }

    fn graph_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".usearch"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_or_truncated_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.idx");
        let config = HnswConfig { snapshot_path: Some(path.clone()), ..graph_config() };
        let index = HnswIndex::open(config.clone()).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 200, 2, 10);
        index.upsert(entries.clone()).await.unwrap();
        index.flush().await.unwrap();
        drop(index);
        let manifest = std::fs::read(&path).unwrap();
        let graph = graph_files(dir.path()).pop().unwrap();
        let graph_bytes = std::fs::read(&graph).unwrap();
        assert_eq!(HnswIndex::open(config.clone()).unwrap().len().await.unwrap(), 200);

        let flip = |b: &[u8]| {
            let mut f = b.to_vec();
            let middle = f.len() / 2;
            f[middle] ^= 0x01;
            f
        };
        let cases: [(&str, Vec<u8>, Vec<u8>); 6] = [
            ("flipped manifest byte", flip(&manifest), graph_bytes.clone()),
            ("truncated manifest", manifest[..manifest.len() - 100].to_vec(), graph_bytes.clone()),
            ("garbage manifest", b"not a snapshot at all".to_vec(), graph_bytes.clone()),
            ("empty manifest", Vec::new(), graph_bytes.clone()),
            ("flipped graph byte", manifest.clone(), flip(&graph_bytes)),
            ("truncated graph", manifest.clone(), graph_bytes[..graph_bytes.len() - 100].to_vec()),
        ];
        for (what, m, g) in cases {
            for f in graph_files(dir.path()) {
                std::fs::remove_file(f).unwrap();
            }
            std::fs::write(&path, m).unwrap();
            std::fs::write(&graph, g).unwrap();
            let index = HnswIndex::open(config.clone()).unwrap();
            assert_eq!(index.len().await.unwrap(), 0, "{what}: starts empty");
            index.upsert(entries[..5].to_vec()).await.unwrap();
            index.flush().await.unwrap();
            assert_eq!(
                HnswIndex::open(config.clone()).unwrap().len().await.unwrap(),
                5,
                "{what}: replaced by the next flush"
            );
        }
    }

    /// A snapshot of the previous format (version 1: instant-distance graphs
    /// and a delta in one file) is not misread: the index starts empty (the
    /// application re-adds the stored vectors) and the next flush replaces
    /// it with the current format.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_of_the_previous_format_is_dropped_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hnsw.snapshot");
        // A well-formed version-1 file: magic, version 1, a body, its
        // checksum and the end magic (the checksum is the format's own).
        let mut v1 = b"MLVECIX\x01".to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&[1, 1, b'm', 16, 0, 0]);
        v1.extend_from_slice(&super::snapshot::checksum_of(&v1).to_le_bytes());
        v1.extend_from_slice(b"MLVECEND");
        std::fs::write(&path, &v1).unwrap();
        let config = HnswConfig { snapshot_path: Some(path.clone()), ..graph_config() };
        let index = HnswIndex::open(config.clone()).unwrap();
        assert_eq!(index.len().await.unwrap(), 0, "the old snapshot is not read");
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 100, 2, 13);
        index.upsert(entries.clone()).await.unwrap();
        index.close().await.unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), v1, "replaced");
        let reopened = HnswIndex::open(config).unwrap();
        assert_eq!(reopened.len().await.unwrap(), 100);
        let got = reopened.search(&all(&t), &entries[3].embedding, 1).await.unwrap();
        assert_eq!(got.matches[0].id, entries[3].id);
    }

    /// A thread of more than `CODES_FROM` entries is scanned through its
    /// int8 codes: the hits, their order and their scores are still those
    /// of scoring every entry exactly, for every k, with exclusions, next
    /// to a thread without codes, and after removals (codes moved with
    /// their entries), more inserts (codes extended) and the thread
    /// shrinking (codes dropped).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coded_thread_scans_exactly() {
        use crate::index::codes::CODES_FROM;
        let index = HnswIndex::open(HnswConfig { exact_below: 1_000_000, ..graph_config() }).unwrap();
        let t = tenant("acme");
        let (big, small) = (ThreadId::new(), ThreadId::new());
        let vectors = clustered(11, CODES_FROM + 900, DIM, 12);
        let mut stored: Vec<VectorEntry> = vectors.iter().map(|v| entry(&t, big, v)).collect();
        // Exact duplicates: ties broken by id, as the full scan breaks them.
        for v in vectors.iter().take(40) {
            stored.push(entry(&t, big, v));
        }
        stored.extend(clustered(12, 150, DIM, 5).iter().map(|v| entry(&t, small, v)));
        index.upsert(stored.clone()).await.unwrap();
        // Another tenant's entries under the same thread ids (and near the
        // same vectors) are never scanned, whether coded or not.
        let theirs: Vec<VectorEntry> = clustered(11, CODES_FROM + 10, DIM, 12)
            .iter()
            .enumerate()
            .map(|(i, v)| entry(&tenant("other"), if i % 2 == 0 { big } else { small }, v))
            .collect();
        index.upsert(theirs).await.unwrap();
        let coded = |index: &HnswIndex| read(&index.inner.graph("m").unwrap().tables).coded();
        assert_eq!(coded(&index), CODES_FROM + 940, "every entry of the big thread has its code");

        async fn check(index: &HnswIndex, stored: &[VectorEntry], t: &TenantId, big: ThreadId, small: ThreadId) {
            let queries = clustered(13, 12, DIM, 12);
            for (qi, q) in queries.iter().enumerate() {
                for threads in [vec![big], vec![big, small], Vec::new()] {
                    // Empty: the whole tenant (both threads).
                    let filter = if threads.is_empty() {
                        SearchFilter::all_threads(t.clone())
                    } else {
                        SearchFilter::these_threads(t.clone(), threads.clone())
                    };
                    let threads = if threads.is_empty() { vec![big, small] } else { threads };
                    let exclude: HashSet<MessageId> = stored.iter().skip(qi).step_by(7).map(|e| e.id).collect();
                    let unit = normalised(q);
                    for k in [1, 10, 100] {
                        for excluding in [false, true] {
                            let mut truth: Vec<(f32, MessageId)> = stored
                                .iter()
                                .filter(|e| threads.contains(&e.thread) && !(excluding && exclude.contains(&e.id)))
                                .map(|e| (dot(&unit, &normalised(e.embedding.vector())), e.id))
                                .collect();
                            truth.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                            truth.truncate(k);
                            let got = if excluding {
                                index.search_excluding(&filter, &emb("m", q), k, &exclude).await.unwrap()
                            } else {
                                index.search(&filter, &emb("m", q), k).await.unwrap()
                            };
                            assert_eq!(got.strategy, IndexKind::Exact);
                            let got: Vec<(f32, MessageId)> = got.matches.iter().map(|m| (m.score, m.id)).collect();
                            assert_eq!(
                                got,
                                truth,
                                "query {qi}, threads {}, k {k}, excluding {excluding}",
                                threads.len()
                            );
                        }
                    }
                }
            }
        }
        check(&index, &stored, &t, big, small).await;

        // Removals move the last entry's code into the gap.
        let gone: Vec<MessageId> = stored.iter().filter(|e| e.thread == big).step_by(3).map(|e| e.id).collect();
        index.remove(gone.clone()).await.unwrap();
        stored.retain(|e| !gone.contains(&e.id));
        let big_left = stored.iter().filter(|e| e.thread == big).count();
        assert!(big_left >= CODES_FROM / 2 && coded(&index) == big_left, "codes follow the removals");
        check(&index, &stored, &t, big, small).await;

        // New entries get codes once their vectors are in the graph.
        let more: Vec<VectorEntry> = clustered(14, 600, DIM, 12).iter().map(|v| entry(&t, big, v)).collect();
        index.upsert(more.clone()).await.unwrap();
        stored.extend(more);
        assert_eq!(coded(&index), stored.iter().filter(|e| e.thread == big).count());
        check(&index, &stored, &t, big, small).await;

        // Below half the threshold the codes are dropped; the scan is the plain one.
        let gone: Vec<MessageId> =
            stored.iter().filter(|e| e.thread == big).skip(CODES_FROM / 4).map(|e| e.id).collect();
        index.remove(gone.clone()).await.unwrap();
        stored.retain(|e| !gone.contains(&e.id));
        assert_eq!(coded(&index), 0);
        check(&index, &stored, &t, big, small).await;
    }
}
