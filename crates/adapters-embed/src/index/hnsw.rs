//! [`HnswIndex`]: approximate search on immutable `instant-distance` graphs,
//! kept current by an exact delta, tombstones and background rebuilds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use memlayer_domain::{DomainError, Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{IndexKind, SearchFilter, StoreError, VectorEntry, VectorIndex, VectorSearch};
use tokio::sync::watch;

use super::math::{TopK, normalised};
use super::segment::{BuildParams, Point, Segment, SegmentInput};
use super::snapshot::{self, DeltaEntry, ModelImage};
use super::store::{ModelStore, Threads, dedup_threads};
use super::{INLINE_WORK, Prepared, blocking, check_batch, dimension_error, read, write_with};
use crate::background::BackgroundPool;

/// Settings of [`HnswIndex`].
///
/// Defaults come from `examples/bench_index.rs` on 100,000 all-MiniLM-L6-v2
/// embeddings of real text (2 cores): with `ef_construction` 100,
/// `ef_search` 48 gave recall@10 0.99 at ~16× the exact QPS (32: 0.985 at
/// ~20×; 16: 0.963 at ~28×; 100: 0.996 at ~8×). The graph build took ~7
/// minutes with `ef_construction` 48 and ~17 with 100 on that loaded
/// machine; `M` is fixed at 32 by instant-distance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswConfig {
    /// Where the index persists itself (after each rebuild and on
    /// [`HnswIndex::flush`]); `None` keeps it in memory only.
    pub snapshot_path: Option<PathBuf>,
    /// Delta size (vectors not yet in a graph, per model) that starts a
    /// background rebuild. Default 5000.
    pub rebuild_threshold: usize,
    /// Searches whose filter admits at most this many candidates are exact
    /// (20,000 × 384 dimensions take ~3–4 ms). Default 20,000.
    pub exact_below: usize,
    /// Beam width while building (`efConstruction`). Default 100.
    pub ef_construction: usize,
    /// Beam width while searching (`ef`): the graph returns at most this many
    /// candidates per search, so it also caps `k` for the graph path (a
    /// larger `k` is searched exactly). Applied to new graphs and to a loaded
    /// snapshot (changing it needs a restart, not a rebuild). Default 48.
    pub ef_search: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self { snapshot_path: None, rebuild_threshold: 5000, exact_below: 20_000, ef_construction: 100, ef_search: 48 }
    }
}

/// Figures of one model's part of an [`HnswIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HnswModelStats {
    /// The embedding model.
    pub model: String,
    /// Its vectors' dimension.
    pub dim: usize,
    /// Points in the built graph (live and removed).
    pub graph: usize,
    /// Graph points removed or replaced since it was built.
    pub tombstones: usize,
    /// Vectors not yet in a graph (searched exactly).
    pub delta: usize,
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
    /// Graph rebuilds completed since open.
    pub rebuilds: u64,
    /// Whether a rebuild is running.
    pub rebuilding: bool,
}

/// Approximate nearest-neighbour search on HNSW graphs (`instant-distance`).
///
/// Per model: one immutable graph over every tenant's vectors, a delta of
/// newer vectors searched exactly, and tombstones for graph points removed
/// or replaced since the build. When the delta exceeds
/// [`HnswConfig::rebuild_threshold`], or tombstones exceed 20% of the graph,
/// a background task rebuilds one graph from the live points (on the
/// process's low-priority index threads, one per core at nice
/// [`REBUILD_NICE`], so searches and appends preempt it), swaps it in,
/// re-applies whatever was upserted or removed meanwhile, and writes the
/// snapshot. [`VectorIndex::close`] abandons a running build (its result is
/// dropped when it ends; nothing waits for it) and writes the snapshot of
/// what is in memory, so shutdown takes a snapshot write, not a build.
///
/// Search: a filter admitting at most [`HnswConfig::exact_below`] candidates
/// (counted from per-tenant and per-thread postings) is searched exactly
/// (strategy `exact`). Otherwise the graph yields its `ef_search` nearest
/// points, those outside the filter or removed are dropped, the rest are
/// re-scored exactly and merged with the exact delta results (strategy
/// `hnsw`). Because instant-distance fixes `ef_search` per graph, the
/// over-fetch cannot grow per query: when the graph returned fewer than `k`
/// admitted hits, the filter's candidates are searched exactly instead, still
/// reported as `hnsw`. The choice depends on the filter's own candidates only
/// (never on the graph's size or other tenants' share of it), so the
/// reported strategy reveals nothing about other tenants. Scores are always
/// the exact cosine.
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

/// Nice value of the index build threads: the lowest priority, below batch
/// embedding, which itself yields to requests.
pub(crate) const REBUILD_NICE: i32 = 19;

/// The process's index build threads, shared by every [`HnswIndex`].
fn build_threads() -> Result<&'static BackgroundPool, StoreError> {
    static POOL: OnceLock<Result<BackgroundPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        BackgroundPool::new("memlayer-index", cores, REBUILD_NICE).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| StoreError::backend(e.clone()))
}

struct Inner {
    config: HnswConfig,
    state: RwLock<State>,
    /// Set by `close`: no rebuild starts, and a running one is dropped.
    closed: AtomicBool,
    /// Tests: a built graph waits here before it is swapped in (or dropped).
    #[cfg(test)]
    before_swap: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// A rebuild task is running (or about to).
    running: AtomicBool,
    /// `true` while no rebuild runs.
    idle: watch::Sender<bool>,
    /// One snapshot writer at a time.
    snapshot_lock: Mutex<()>,
    rebuilds: AtomicU64,
}

fn state(i: &Inner) -> &RwLock<State> {
    &i.state
}

#[derive(Debug, Default)]
struct State {
    models: HashMap<String, ModelState>,
}

/// One model's vectors: `segment` (minus `dead`) ∪ `frozen` ∪ `active`.
/// An id is live in at most one of the three.
#[derive(Debug)]
struct ModelState {
    dim: usize,
    segment: Option<Arc<Segment>>,
    /// By pid of `segment`: removed or replaced since the build.
    dead: Vec<bool>,
    dead_count: usize,
    /// Vectors upserted since the last rebuild started.
    active: ModelStore,
    /// While a rebuild runs: the delta it is building into the next graph.
    frozen: Option<ModelStore>,
    /// While a rebuild runs: ids upserted or removed since it started (their
    /// copies in the new graph are stale and get tombstoned at the swap).
    changed: Option<HashSet<MessageId>>,
}

impl ModelState {
    fn new(dim: usize) -> Self {
        Self {
            dim,
            segment: None,
            dead: Vec::new(),
            dead_count: 0,
            active: ModelStore::new(dim),
            frozen: None,
            changed: None,
        }
    }

    fn live(&self) -> usize {
        self.segment.as_ref().map_or(0, |s| s.len() - self.dead_count)
            + self.active.len()
            + self.frozen.as_ref().map_or(0, ModelStore::len)
    }

    fn rebuilding(&self) -> bool {
        self.frozen.is_some()
    }

    fn needs_rebuild(&self, threshold: usize, force: bool) -> bool {
        if self.rebuilding() {
            return false;
        }
        let seg = self.segment.as_ref().map_or(0, |s| s.len());
        if force {
            return !self.active.is_empty() || self.dead_count > 0;
        }
        self.active.len() > threshold || (self.dead_count > 0 && self.dead_count * 5 > seg)
    }

    /// Makes `id` unsearchable; returns whether it was live.
    fn remove(&mut self, id: MessageId) -> bool {
        let mut found = self.active.remove(id);
        if let Some(frozen) = &mut self.frozen {
            found |= frozen.remove(id);
        }
        if let Some(pid) = self.segment.as_ref().and_then(|s| s.pid_of(&id))
            && !self.dead[pid as usize]
        {
            self.dead[pid as usize] = true;
            self.dead_count += 1;
            found = true;
        }
        if let Some(changed) = &mut self.changed {
            changed.insert(id);
        }
        found
    }

    fn remove_thread(&mut self, tenant: &TenantId, thread: ThreadId) {
        let mut ids = self.active.remove_thread(tenant, thread);
        if let Some(frozen) = &mut self.frozen {
            ids.extend(frozen.remove_thread(tenant, thread));
        }
        if let Some(seg) = &self.segment
            && let Some(tix) = seg.tenant_index(tenant)
        {
            for &pid in seg.thread_pids(&thread) {
                let m = &seg.meta[pid as usize];
                if m.tenant == tix && !self.dead[pid as usize] {
                    self.dead[pid as usize] = true;
                    self.dead_count += 1;
                    ids.push(m.id);
                }
            }
        }
        if let Some(changed) = &mut self.changed {
            changed.extend(ids);
        }
    }

    fn stats(&self, model: &str) -> HnswModelStats {
        let seg = self.segment.as_deref();
        HnswModelStats {
            model: model.to_owned(),
            dim: self.dim,
            graph: seg.map_or(0, Segment::len),
            tombstones: self.dead_count,
            delta: self.active.len() + self.frozen.as_ref().map_or(0, ModelStore::len),
            ef_search: seg.map_or(0, |s| s.ef_search),
            heap_bytes: seg.map_or(0, Segment::heap_bytes)
                + self.active.heap_bytes()
                + self.frozen.as_ref().map_or(0, ModelStore::heap_bytes),
        }
    }
}

/// An owned search request.
#[derive(Debug)]
struct Request {
    tenant: TenantId,
    threads: Option<Vec<ThreadId>>,
    model: String,
    query: Point,
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
    fn plan(&self, st: &State, r: &Request) -> Result<Plan, StoreError> {
        let Some(ms) = st.models.get(&r.model) else { return Ok(Plan::Empty) };
        if ms.dim != r.query.0.len() {
            return Err(dimension_error("query", &r.model, r.query.0.len(), ms.dim));
        }
        if r.k == 0 {
            return Ok(Plan::Empty);
        }
        let threads = r.threads();
        let delta: usize = [Some(&ms.active), ms.frozen.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.tenant(&r.tenant))
            .map(|t| t.count(threads))
            .sum();
        let in_graph = ms.segment.as_ref().map_or(0, |s| s.count(&r.tenant, threads));
        let total = delta + in_graph;
        if total == 0 {
            return Ok(Plan::Empty);
        }
        let Some(seg) = &ms.segment else { return Ok(Plan::Exact(total)) };
        // Decided by the filter's own candidates only, never by the graph's
        // size or by how much of it is other tenants': the strategy a search
        // reports must not tell a tenant anything about anybody else.
        if total <= self.config.exact_below || in_graph == 0 || r.k > seg.ef_search {
            return Ok(Plan::Exact(total));
        }
        Ok(Plan::Graph)
    }

    fn run(&self, st: &State, r: &Request, plan: Plan) -> VectorSearch {
        // Exact parts keep `k` more than the excluded, so that dropping
        // those at the end still leaves the best `k` of the rest.
        let mut top = TopK::new(r.k.saturating_add(r.exclude.len()));
        let Some(ms) = st.models.get(&r.model).filter(|_| plan != Plan::Empty) else {
            return VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact };
        };
        let q = &r.query.0[..];
        let threads = r.threads();
        for store in [Some(&ms.active), ms.frozen.as_ref()].into_iter().flatten() {
            if let Some(t) = store.tenant(&r.tenant) {
                t.scan(q, threads, &mut top);
            }
        }
        // The plan's strategy, whatever rescued it: a graph search that
        // yields fewer than `k` admitted points falls back to an exact scan
        // of the filter's points, and whether it does depends on the other
        // tenants' points around them, which the report must not reveal.
        let strategy = if plan == Plan::Graph { IndexKind::Hnsw } else { IndexKind::Exact };
        if let Some(seg) = &ms.segment {
            let mut done = false;
            if plan == Plan::Graph
                && let Some(tix) = seg.tenant_index(&r.tenant)
            {
                let allowed: Option<HashSet<ThreadId>> = r.threads.as_ref().map(|ts| ts.iter().copied().collect());
                let admit = |m: &super::segment::Meta| {
                    m.tenant == tix
                        && allowed.as_ref().is_none_or(|a| a.contains(&m.thread))
                        && !r.exclude.contains(&m.id)
                };
                let mut from_graph = TopK::new(r.k);
                let admitted = seg.graph_search(&r.query, &ms.dead, admit, &mut from_graph);
                if admitted >= r.k {
                    top.merge(from_graph);
                    done = true;
                }
            }
            if !done {
                seg.scan(q, &r.tenant, threads, &ms.dead, &mut top);
            }
        }
        let mut matches = top.into_matches();
        if !r.exclude.is_empty() {
            matches.retain(|m| !r.exclude.contains(&m.id));
            matches.truncate(r.k);
        }
        VectorSearch { matches, strategy }
    }

    fn any_needs_rebuild(&self, force: bool) -> bool {
        read(&self.state).models.values().any(|m| m.needs_rebuild(self.config.rebuild_threshold, force))
    }

    /// Rebuilds every model that needs it (blocking; minutes for large
    /// graphs). Returns how many graphs were built.
    fn rebuild_pending(&self, force: bool) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let models: Vec<String> = read(&self.state)
            .models
            .iter()
            .filter(|(_, m)| m.needs_rebuild(self.config.rebuild_threshold, force))
            .map(|(name, _)| name.clone())
            .collect();
        models.iter().filter(|m| self.rebuild_model(m, force)).count()
    }

    /// Freezes the delta, builds a graph of every live point, swaps it in.
    fn rebuild_model(&self, model: &str, force: bool) -> bool {
        let started = Instant::now();
        let Some((input, dim)) = self.begin_rebuild(model, force) else { return false };
        let points = input.len();
        let params = BuildParams { ef_construction: self.config.ef_construction, ef_search: self.config.ef_search };
        let built = if points == 0 {
            Ok(None)
        } else {
            catch_unwind(AssertUnwindSafe(|| Segment::build(input, dim, params))).map(|s| Some(Arc::new(s)))
        };
        #[cfg(test)]
        if let Some(gate) = self.before_swap.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = gate.recv();
        }
        let closed = self.closed.load(Ordering::Acquire);
        let Some(replaced) = self.finish_rebuild(model, built.ok().filter(|_| !closed)) else {
            if closed {
                tracing::info!(model, points, "vector index closed: the rebuild's graph is dropped");
            } else {
                tracing::error!(model, points, "vector index rebuild failed; keeping the previous graph");
            }
            return false;
        };
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            model,
            points,
            replaced_meanwhile = replaced,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vector index graph rebuilt"
        );
        true
    }

    /// Moves the delta to `frozen`, starts recording changes, and returns
    /// every live point: the next graph's input.
    fn begin_rebuild(&self, model: &str, force: bool) -> Option<(SegmentInput, usize)> {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let ms = st.models.get_mut(model)?;
        if !ms.needs_rebuild(self.config.rebuild_threshold, force) {
            return None;
        }
        let mut input = SegmentInput::default();
        if let Some(seg) = &ms.segment {
            for (pid, m) in seg.meta.iter().enumerate() {
                if !ms.dead[pid] {
                    input.push(m.id, &seg.tenants[m.tenant as usize], m.thread, seg.point(pid as u32).clone());
                }
            }
        }
        let frozen = std::mem::replace(&mut ms.active, ModelStore::new(ms.dim));
        for (id, tenant, thread, v) in frozen.iter() {
            input.push(id, tenant, thread, Point::new(v));
        }
        ms.frozen = Some(frozen);
        ms.changed = Some(HashSet::new());
        Some((input, ms.dim))
    }

    /// Swaps in the new graph (`built`: `Some(None)` when there were no live
    /// points, `None` when the build failed) and tombstones its points that
    /// were upserted or removed during the build. Returns how many, or
    /// `None` when the build failed and the frozen delta went back.
    fn finish_rebuild(&self, model: &str, built: Option<Option<Arc<Segment>>>) -> Option<usize> {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let ms = st.models.get_mut(model)?;
        let changed = ms.changed.take().unwrap_or_default();
        let frozen = ms.frozen.take()?;
        let Some(segment) = built else {
            // Put the frozen delta back; newer versions in `active` win, and
            // what was removed meanwhile stays removed.
            for (id, tenant, thread, v) in frozen.iter() {
                if !ms.active.contains(&id) && !changed.contains(&id) {
                    ms.active.upsert(id, tenant, thread, v);
                }
            }
            return None;
        };
        let mut dead = vec![false; segment.as_ref().map_or(0, |s| s.len())];
        let mut dead_count = 0;
        if let Some(seg) = &segment {
            for id in &changed {
                if let Some(pid) = seg.pid_of(id) {
                    dead[pid as usize] = true;
                    dead_count += 1;
                }
            }
        }
        ms.segment = segment;
        ms.dead = dead;
        ms.dead_count = dead_count;
        if ms.live() == 0 {
            st.models.remove(model);
        }
        Some(dead_count)
    }

    /// Writes the snapshot, if configured (blocking).
    fn write_snapshot(&self) -> Result<(), StoreError> {
        let Some(path) = &self.config.snapshot_path else { return Ok(()) };
        let _one_writer = self.snapshot_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let images: Vec<ModelImage> = {
            let st = read(&self.state);
            let mut names: Vec<&String> = st.models.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|name| {
                    let ms = &st.models[name];
                    let delta = [Some(&ms.active), ms.frozen.as_ref()]
                        .into_iter()
                        .flatten()
                        .flat_map(ModelStore::iter)
                        .map(|(id, tenant, thread, v)| DeltaEntry {
                            id,
                            tenant: tenant.clone(),
                            thread,
                            vector: Point::new(v),
                        })
                        .collect();
                    let segment = ms.segment.as_ref().map(|s| {
                        let dead = ms.dead.iter().enumerate().filter(|(_, d)| **d).map(|(p, _)| p as u32).collect();
                        (Arc::clone(s), dead)
                    });
                    ModelImage { model: name.clone(), dim: ms.dim, delta, segment }
                })
                .collect()
        };
        let bytes = snapshot::write(path, &images)
            .map_err(|e| StoreError::backend(format!("writing vector index snapshot {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), bytes, elapsed_ms = started.elapsed().as_millis() as u64, "vector index snapshot written");
        Ok(())
    }

    /// Starts the background rebuild task if some model needs one and none runs.
    fn schedule(self: &Arc<Self>) {
        if self.closed.load(Ordering::Acquire)
            || !self.any_needs_rebuild(false)
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.store(false, Ordering::Release);
            return;
        };
        self.idle.send_replace(false);
        runtime.spawn(rebuild_loop(Arc::clone(self), false));
    }
}

/// Rebuilds until nothing needs it, writing the snapshot after each round.
/// The caller has set `running`.
async fn rebuild_loop(inner: Arc<Inner>, mut force: bool) {
    loop {
        let worker = Arc::clone(&inner);
        let built = match build_threads() {
            Ok(threads) => threads.run(move || worker.rebuild_pending(force)).await,
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "vector index rebuild task failed");
            0
        });
        force = false;
        if built > 0 && inner.config.snapshot_path.is_some() {
            let worker = Arc::clone(&inner);
            match blocking(move || worker.write_snapshot()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => tracing::error!(error = %e, "vector index snapshot after rebuild failed"),
            }
        }
        if built > 0 && inner.any_needs_rebuild(false) {
            continue;
        }
        inner.running.store(false, Ordering::Release);
        // A schedule() refused while we ran would be lost: look once more.
        if built > 0 && inner.any_needs_rebuild(false) && !inner.running.swap(true, Ordering::AcqRel) {
            continue;
        }
        inner.idle.send_replace(true);
        return;
    }
}

impl HnswIndex {
    /// Opens the index, loading `config.snapshot_path` when it holds a valid
    /// snapshot. A missing snapshot starts empty; an unreadable or corrupt
    /// one is logged and ignored (the application re-upserts from the
    /// durable store, and the next snapshot replaces it).
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
        let mut state = State::default();
        if let Some(path) = &config.snapshot_path {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::backend(format!("creating vector index snapshot directory {}: {e}", dir.display()))
                })?;
            }
            if path.exists() {
                let started = Instant::now();
                match snapshot::read(path, config.ef_search) {
                    Ok(models) => {
                        state = restore(models);
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
        let (idle, _) = watch::channel(true);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state: RwLock::new(state),
                closed: AtomicBool::new(false),
                #[cfg(test)]
                before_swap: Mutex::new(None),
                running: AtomicBool::new(false),
                idle,
                snapshot_lock: Mutex::new(()),
                rebuilds: AtomicU64::new(0),
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
        let st = read(&self.inner.state);
        let mut models: Vec<HnswModelStats> = st.models.iter().map(|(name, m)| m.stats(name)).collect();
        models.sort_by(|a, b| a.model.cmp(&b.model));
        HnswStats {
            models,
            rebuilds: self.inner.rebuilds.load(Ordering::Relaxed),
            rebuilding: self.inner.running.load(Ordering::Acquire),
        }
    }

    /// Waits until no background rebuild is running.
    pub async fn wait_for_rebuild(&self) {
        let mut idle = self.inner.idle.subscribe();
        // The sender lives in `inner`, which we hold: this cannot fail.
        let _ = idle.wait_for(|idle| *idle).await;
    }

    /// Rebuilds now every model with a delta or tombstones, whatever the
    /// thresholds, and waits for it (and for the snapshot, if configured).
    ///
    /// # Errors
    /// `Backend` when the blocking pool fails.
    pub async fn rebuild_now(&self) -> Result<(), StoreError> {
        loop {
            self.wait_for_rebuild().await;
            if !self.inner.running.swap(true, Ordering::AcqRel) {
                break;
            }
        }
        self.inner.idle.send_replace(false);
        rebuild_loop(Arc::clone(&self.inner), true).await;
        Ok(())
    }

    /// Writes the snapshot of the current state (graphs, tombstones and
    /// delta) if a path is configured; a restart then needs neither a rebuild
    /// nor a re-upsert. Does not wait for a running rebuild: what it writes
    /// is complete either way.
    ///
    /// # Errors
    /// `Backend` on an I/O failure (the previous snapshot is kept).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.inner.config.snapshot_path.is_none() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.write_snapshot()).await?
    }

    /// Plans and runs a search: inline when it is small, else on the
    /// blocking pool.
    async fn run_request(&self, request: Request) -> Result<VectorSearch, StoreError> {
        {
            let st = read(&self.inner.state);
            let plan = self.inner.plan(&st, &request)?;
            match plan {
                Plan::Empty => return Ok(VectorSearch { matches: Vec::new(), strategy: IndexKind::Exact }),
                Plan::Exact(n) if n.saturating_mul(request.query.0.len()) <= INLINE_WORK => {
                    return Ok(self.inner.run(&st, &request, plan));
                }
                _ => {}
            }
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let st = read(&inner.state);
            let plan = inner.plan(&st, &request)?;
            Ok(inner.run(&st, &request, plan))
        })
        .await?
    }

    fn request(filter: &SearchFilter, query: &Embedding, k: usize, exclude: HashSet<MessageId>) -> Request {
        Request {
            exclude,
            tenant: filter.tenant.clone(),
            threads: filter.threads.listed().map(dedup_threads),
            model: query.model().to_owned(),
            query: Point::new(&normalised(query.vector())),
            k,
        }
    }
}

/// The state a snapshot describes.
fn restore(models: Vec<snapshot::LoadedModel>) -> State {
    let mut state = State::default();
    for m in models {
        let mut ms = ModelState::new(m.dim);
        if let Some((segment, dead)) = m.segment {
            ms.dead = vec![false; segment.len()];
            for pid in dead {
                if !ms.dead[pid as usize] {
                    ms.dead[pid as usize] = true;
                    ms.dead_count += 1;
                }
            }
            ms.segment = Some(Arc::new(segment));
        }
        for e in m.delta {
            ms.remove(e.id);
            ms.active.upsert(e.id, &e.tenant, e.thread, &e.vector.0);
        }
        if ms.live() > 0 {
            state.models.insert(m.model, ms);
        }
    }
    state
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
        write_with(&self.inner, state, move |st| {
            check_batch(&batch, |m| st.models.get(m).map(|s| s.dim))?;
            for p in batch {
                let dim = p.unit.len();
                let ms = st.models.entry(p.model).or_insert_with(|| ModelState::new(dim));
                ms.remove(p.id);
                ms.active.upsert(p.id, &p.tenant, p.thread, &p.unit);
            }
            Ok::<_, StoreError>(())
        })
        .await??;
        self.inner.schedule();
        Ok(())
    }

    async fn remove(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        write_with(&self.inner, state, move |st| {
            for ms in st.models.values_mut() {
                for id in &ids {
                    ms.remove(*id);
                }
            }
            st.models.retain(|_, m| m.live() > 0 || m.rebuilding());
        })
        .await?;
        self.inner.schedule();
        Ok(())
    }

    async fn remove_thread(&self, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
        let tenant = tenant.clone();
        write_with(&self.inner, state, move |st| {
            for ms in st.models.values_mut() {
                ms.remove_thread(&tenant, thread);
            }
            st.models.retain(|_, m| m.live() > 0 || m.rebuilding());
        })
        .await?;
        self.inner.schedule();
        Ok(())
    }

    async fn search(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        self.run_request(Self::request(filter, query, k, HashSet::new())).await
    }

    /// Skips the excluded entries while searching: the graph's candidates
    /// are admitted only when not excluded, so a graph search stays a graph
    /// search however many are excluded (the default's over-fetch would
    /// exceed `ef_search` and scan every candidate exactly).
    async fn search_excluding(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
        exclude: &HashSet<MessageId>,
    ) -> Result<VectorSearch, StoreError> {
        self.run_request(Self::request(filter, query, k, exclude.clone())).await
    }

    /// Waits for a running background rebuild (and the ones it chains).
    async fn settle(&self) -> Result<(), StoreError> {
        self.wait_for_rebuild().await;
        Ok(())
    }

    async fn len(&self) -> Result<usize, StoreError> {
        Ok(read(&self.inner.state).models.values().map(ModelState::live).sum())
    }

    /// Abandons a running rebuild (no new one starts) and writes the
    /// snapshot of the current graphs, tombstones and delta, if configured.
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        let st = read(&self.inner.state);
        let mut ids = HashSet::new();
        for ms in st.models.values() {
            if let Some(seg) = &ms.segment {
                ids.extend(seg.meta.iter().enumerate().filter(|(pid, _)| !ms.dead[*pid]).map(|(_, m)| m.id));
            }
            ids.extend(ms.active.ids());
            if let Some(frozen) = &ms.frozen {
                ids.extend(frozen.ids());
            }
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

    /// A graph is always used when it can be (nothing is "few" candidates).
    fn graph_config() -> HnswConfig {
        HnswConfig {
            rebuild_threshold: 1_000_000,
            exact_below: 0,
            ef_construction: 32,
            ef_search: 40,
            ..HnswConfig::default()
        }
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
    async fn close_abandons_a_running_rebuild_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hnsw.snapshot");
        let index = HnswIndex::open(HnswConfig { snapshot_path: Some(path.clone()), ..graph_config() }).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 300, 5, 7);
        index.upsert(entries.clone()).await.unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel();
        *index.inner.before_swap.lock().unwrap() = Some(gate);
        let rebuild = tokio::spawn({
            let index = index.clone();
            async move { index.rebuild_now().await }
        });
        // Wait until the build has begun (the delta is frozen).
        while read(&index.inner.state).models.get("m").is_none_or(|m| m.frozen.is_none()) {
            tokio::task::yield_now().await;
        }

        index.close().await.unwrap();
        assert!(index.stats().rebuilding, "close did not wait for the build");
        open_gate.send(()).unwrap();
        rebuild.await.unwrap().unwrap();
        index.wait_for_rebuild().await;
        let stats = index.stats();
        assert_eq!((stats.rebuilds, stats.models[0].graph, stats.models[0].delta), (0, 0, 300), "graph dropped");

        // Nothing scheduled after close, everything still found exactly.
        index.upsert(vec![entry(&t, ThreadId::new(), entries[0].embedding.vector())]).await.unwrap();
        assert!(!index.stats().rebuilding);
        let q = entries[3].embedding.vector();
        let got = index.search(&all(&t), &emb("m", q), 1).await.unwrap();
        assert_eq!(got.matches[0].id, entries[3].id);

        // The snapshot close wrote holds all 300 vectors.
        let reopened = HnswIndex::open(HnswConfig { snapshot_path: Some(path), ..graph_config() }).unwrap();
        assert_eq!(reopened.len().await.unwrap(), 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_graph_finds_stored_vectors_with_exact_scores() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 400, 10, 1);
        index.upsert(entries.clone()).await.unwrap();
        index.rebuild_now().await.unwrap();
        let stats = index.stats();
        assert_eq!((stats.models[0].graph, stats.models[0].delta, stats.rebuilds), (400, 0, 1));
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
        index.rebuild_now().await.unwrap();
        let q = emb("m", mine[17].embedding.vector());
        let before = index.search(&all(&t), &q, 10).await.unwrap();
        assert_eq!(before.strategy, IndexKind::Hnsw);
        let (theirs, _) = corpus(&other, 4_000, 8, 8);
        index.upsert(theirs).await.unwrap();
        index.rebuild_now().await.unwrap();
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
        index.rebuild_now().await.unwrap();
        let scope = SearchFilter::these_threads(t.clone(), vec![threads[3], threads[4]]);
        for probe in [0usize, 5, 321] {
            let q = emb("m", entries[probe].embedding.vector());
            let got = index.search(&scope, &q, 15).await.unwrap();
            assert_eq!(got.strategy, IndexKind::Exact, "60 candidates <= exact_below");
            assert_eq!(got, exact.search(&scope, &q, 15).await.unwrap());
            let wide = index.search(&all(&t), &q, 15).await.unwrap();
            assert_eq!(wide.strategy, IndexKind::Hnsw);
            // k above ef_search: the graph cannot deliver, exact instead.
            let many = index.search(&all(&t), &q, 100).await.unwrap();
            assert_eq!((many.strategy, many.matches.len()), (IndexKind::Exact, 100));
            assert_eq!(many, exact.search(&all(&t), &q, 100).await.unwrap());
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
        index.rebuild_now().await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removed_and_replaced_entries_stay_gone_across_rebuilds() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (mut entries, threads) = corpus(&t, 400, 8, 4);
        index.upsert(entries.clone()).await.unwrap();
        index.rebuild_now().await.unwrap();
        let removed: Vec<MessageId> = entries.iter().step_by(3).map(|e| e.id).collect();
        index.remove(removed.clone()).await.unwrap();
        index.remove_thread(&t, threads[1]).await.unwrap();
        // Replace one entry with another vector.
        let moved = entries.iter().position(|e| e.thread == threads[2]).unwrap();
        entries[moved].embedding = emb("m", entries[0].embedding.vector());
        index.upsert(vec![entries[moved].clone()]).await.unwrap();
        let live: Vec<&VectorEntry> =
            entries.iter().filter(|e| !removed.contains(&e.id) && e.thread != threads[1]).collect();
        for round in 0..2 {
            assert_eq!(index.len().await.unwrap(), live.len(), "round {round}");
            let ids: BTreeSet<MessageId> = index.ids().await.unwrap().into_iter().collect();
            assert_eq!(ids, live.iter().map(|e| e.id).collect());
            for e in entries.iter().step_by(13) {
                let got = index.search(&all(&t), &e.embedding, 20).await.unwrap();
                assert_eq!(got.matches.len(), 20);
                for m in &got.matches {
                    assert!(!removed.contains(&m.id), "round {round}: a removed entry came back");
                    assert_ne!(m.thread, threads[1], "round {round}: a removed thread came back");
                }
                assert_eq!(
                    got.matches.iter().filter(|m| m.id == entries[moved].id).count().min(1),
                    got.matches.iter().filter(|m| m.id == entries[moved].id).count(),
                    "never twice"
                );
            }
            let got = index.search(&all(&t), &entries[0].embedding, 3).await.unwrap();
            assert!(got.matches.iter().any(|m| m.id == entries[moved].id), "the replacement vector is searched");
            index.rebuild_now().await.unwrap();
            assert_eq!(index.stats().models[0].tombstones, 0, "a rebuild drops tombstones");
        }
    }

    async fn check_live(
        index: &HnswIndex,
        t: &TenantId,
        live: &BTreeSet<MessageId>,
        replaced: &VectorEntry,
        stage: &str,
    ) {
        assert_eq!(&index.ids().await.unwrap().into_iter().collect::<BTreeSet<_>>(), live, "{stage}");
        assert_eq!(index.len().await.unwrap(), live.len(), "{stage}");
        let got = index.search(&all(t), &replaced.embedding, 40).await.unwrap();
        assert!(got.matches.iter().all(|m| live.contains(&m.id)), "{stage}: a dead entry was returned");
        let expected = usize::from(live.contains(&replaced.id));
        assert_eq!(got.matches.iter().filter(|m| m.id == replaced.id).count(), expected, "{stage}: replacement once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_made_during_a_rebuild_are_applied_after_the_swap() {
        let index = HnswIndex::open(graph_config()).unwrap();
        let t = tenant("acme");
        let (entries, threads) = corpus(&t, 450, 5, 5);
        index.upsert(entries[..300].to_vec()).await.unwrap();
        index.rebuild_now().await.unwrap();
        index.upsert(entries[300..360].to_vec()).await.unwrap();

        // Freeze: the build input is every live point.
        let (input, dim) = index.inner.begin_rebuild("m", true).unwrap();
        assert_eq!(input.len(), 360);
        // Meanwhile: new entries, removals from the old graph and from the
        // frozen delta, a replacement, a removed thread.
        index.upsert(entries[360..].to_vec()).await.unwrap();
        let removed = vec![entries[10].id, entries[330].id, entries[400].id];
        index.remove(removed.clone()).await.unwrap();
        let mut replaced = entries[20].clone();
        replaced.embedding = emb("m", entries[420].embedding.vector());
        index.upsert(vec![replaced.clone()]).await.unwrap();
        index.remove_thread(&t, threads[4]).await.unwrap();
        let live: BTreeSet<MessageId> = entries
            .iter()
            .filter(|e| !removed.contains(&e.id) && e.thread != threads[4])
            .map(|e| e.id)
            .chain(if replaced.thread == threads[4] { None } else { Some(replaced.id) })
            .collect();
        check_live(&index, &t, &live, &replaced, "during").await;

        let params = BuildParams { ef_construction: 32, ef_search: 40 };
        let built = Segment::build(input, dim, params);
        let tombstoned = index.inner.finish_rebuild("m", Some(Some(Arc::new(built)))).unwrap();
        assert!(tombstoned >= 3, "removed, replaced and thread entries are tombstoned in the new graph");
        check_live(&index, &t, &live, &replaced, "after").await;
        let stats = &index.stats().models[0];
        assert_eq!(
            (stats.graph, stats.delta),
            (
                360,
                live.iter().filter(|id| entries[360..].iter().any(|e| e.id == **id)).count()
                    + usize::from(replaced.thread != threads[4])
            )
        );
        index.rebuild_now().await.unwrap();
        check_live(&index, &t, &live, &replaced, "rebuilt").await;
        assert_eq!(index.stats().models[0].graph, live.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_upserts_during_background_rebuilds_are_not_lost() {
        let config = HnswConfig { rebuild_threshold: 250, ..graph_config() };
        let index = HnswIndex::open(config).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 800, 20, 6);
        let writers: Vec<_> = entries
            .chunks(200)
            .map(|part| {
                let (index, part) = (index.clone(), part.to_vec());
                tokio::spawn(async move {
                    for batch in part.chunks(25) {
                        index.upsert(batch.to_vec()).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        index.wait_for_rebuild().await;
        let stats = index.stats();
        assert!(stats.rebuilds >= 1, "background rebuilds ran: {stats:?}");
        assert!(stats.models[0].delta <= 250, "{stats:?}");
        assert_eq!(index.len().await.unwrap(), 800);
        let ids: BTreeSet<MessageId> = index.ids().await.unwrap().into_iter().collect();
        assert_eq!(ids, entries.iter().map(|e| e.id).collect());
        for e in entries.iter().step_by(37) {
            let got = index.search(&all(&t), &e.embedding, 1).await.unwrap();
            assert_eq!(got.matches[0].id, e.id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tombstones_above_a_fifth_of_the_graph_trigger_a_rebuild() {
        let config = HnswConfig { rebuild_threshold: 100_000, ..graph_config() };
        let index = HnswIndex::open(config).unwrap();
        let t = tenant("acme");
        let (entries, _) = corpus(&t, 400, 4, 7);
        index.upsert(entries.clone()).await.unwrap();
        index.rebuild_now().await.unwrap();
        index.remove(entries[..60].iter().map(|e| e.id).collect()).await.unwrap();
        index.wait_for_rebuild().await;
        assert_eq!(index.stats().rebuilds, 1, "15% tombstones: no rebuild");
        index.remove(entries[60..100].iter().map(|e| e.id).collect()).await.unwrap();
        index.wait_for_rebuild().await;
        let stats = index.stats();
        assert_eq!((stats.rebuilds, stats.models[0].graph, stats.models[0].tombstones), (2, 300, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_restores_the_same_index_without_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("vectors.idx");
        let config = HnswConfig { snapshot_path: Some(path.clone()), ..graph_config() };
        let index = HnswIndex::open(config.clone()).unwrap();
        let (a, b) = (tenant("a"), tenant("b"));
        let (mut entries, threads) = corpus(&a, 400, 6, 8);
        entries.extend(corpus(&b, 100, 2, 9).0);
        index.upsert(entries[..450].to_vec()).await.unwrap();
        index.rebuild_now().await.unwrap();
        assert!(path.exists(), "a rebuild writes the snapshot");
        index.upsert(entries[450..].to_vec()).await.unwrap();
        index.remove(entries[..40].iter().map(|e| e.id).collect()).await.unwrap();
        index.upsert(vec![VectorEntry { embedding: emb("other", &[0.6, 0.8]), ..entries[470].clone() }]).await.unwrap();
        index.flush().await.unwrap();

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
        assert_eq!(stats.rebuilds, 0);
        assert_eq!(stats.models, stats_before.models);
        assert_eq!(stats.models[0].tombstones, 40);
        assert_eq!(reopened.len().await.unwrap(), 500 - 40 + 1);
        for ((f, q), expected) in queries.iter().zip(&before) {
            assert_eq!(&reopened.search(f, q, 10).await.unwrap(), expected);
        }
        assert_eq!(reopened.search(&all(&b), &emb("other", &[0.6, 0.8]), 5).await.unwrap().matches.len(), 1);

        // ef_search is a load-time setting: no rebuild to change it.
        let wider = HnswIndex::open(HnswConfig { ef_search: 300, ..config }).unwrap();
        assert_eq!(wider.stats().models[0].ef_search, 300);
        assert_eq!(wider.stats().rebuilds, 0);
        let got = wider.search(&all(&a), &entries[100].embedding, 100).await.unwrap();
        assert_eq!((got.strategy, got.matches[0].id), (IndexKind::Hnsw, entries[100].id));
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
        index.rebuild_now().await.unwrap();
        drop(index);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(HnswIndex::open(config.clone()).unwrap().len().await.unwrap(), 200);

        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01;
        let cases: [(&str, Vec<u8>); 4] = [
            ("flipped byte", flipped),
            ("truncated", good[..good.len() - 100].to_vec()),
            ("garbage", b"not a snapshot at all".to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
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
}
