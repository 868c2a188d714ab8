//! One model's HNSW graph: a `usearch` index that takes inserts and removals
//! while it is searched, and the tables that say which tenant and thread
//! each of its keys belongs to.
//!
//! Keys are this module's own: a counter, never reused, so that a key
//! removed from the graph can never stand for another entry. The graph holds
//! the only copy of each vector (unit length, `f32`); exact scans and the
//! re-scoring of graph results read it back with `get`.
//!
//! Concurrency: usearch adds, removes and searches concurrently, each add or
//! search on one of a fixed number of per-thread contexts ([`CONTEXTS`], a
//! counting semaphore here so that a burst of searches waits instead of
//! failing). Growing the capacity reallocates the graph's node table, so it
//! takes [`Graph::grow`] exclusively; everything else takes it shared.
//! Tables are under their own lock, held by a search for its duration and
//! by a writer only to update them (never while it inserts vectors).

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError, RwLock};

use foldhash::{HashMap, HashSet};
use memlayer_domain::{MessageId, TenantId, ThreadId};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::codes::{CODES_FROM, Codes};
use super::math::{TopK, dot};
use super::read;
use super::store::Threads;

/// usearch calls (adds and searches) in flight at once, at most.
const CONTEXTS: usize = 64;
/// The smallest capacity reserved.
const MIN_CAPACITY: usize = 1024;

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GraphParams {
    /// Neighbours per node (`M`; 0: usearch's default, 16).
    pub connectivity: usize,
    /// Beam width while inserting (`efConstruction`).
    pub ef_construction: usize,
    /// Beam width while searching (`ef`); a search for more results widens it.
    pub ef_search: usize,
}

/// What the tables know of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub id: MessageId,
    pub thread: ThreadId,
    /// Index into [`Tables::tenants`].
    pub tenant: u32,
    /// Position in `by_tenant[tenant]`.
    #[serde(skip)]
    tpos: u32,
    /// Position in `by_thread[(tenant, thread)]`.
    #[serde(skip)]
    hpos: u32,
}

/// One entry of a thread's postings: what an exact scan of the thread needs
/// without looking its key up in [`Tables::slots`].
#[derive(Debug, Clone, Copy)]
struct Posting {
    key: u64,
    id: MessageId,
}

/// One thread's postings and, from [`CODES_FROM`] entries on, their
/// vectors' int8 codes in the same order (see [`super::codes`]). The codes
/// may cover only a prefix of the entries: those added since the last
/// [`Graph::code_threads`] (whose vectors may not be in the graph yet) are
/// scanned from the graph.
#[derive(Debug, Default)]
struct Postings {
    entries: Vec<Posting>,
    codes: Option<Codes>,
}

/// Keys by id, tenant and thread. Hashed with `foldhash` (seeded per
/// process, so ids a caller chooses cannot be picked to collide): a filtered
/// graph search looks keys up once per visited node, and SipHash was a
/// tenth of an exact scan's time.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) tenants: Vec<TenantId>,
    tenant_index: HashMap<TenantId, u32>,
    slots: HashMap<u64, Slot>,
    by_id: HashMap<MessageId, u64>,
    by_tenant: Vec<Vec<u64>>,
    /// Each tenant's threads with entries (indexed as `by_tenant`), so a
    /// tenant-wide scan reads its threads' postings and codes.
    threads_of: Vec<HashSet<ThreadId>>,
    /// Keyed by tenant too, so a thread id named in another tenant's filter
    /// finds nothing, and a thread's count is its postings' length.
    by_thread: HashMap<(u32, ThreadId), Postings>,
    /// Threads of at least [`CODES_FROM`] entries whose codes do not cover
    /// them all: coded by [`Graph::code_threads`] once their vectors are in
    /// the graph.
    uncoded: HashSet<(u32, ThreadId)>,
    pub(crate) next_key: u64,
}

impl Tables {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot(&self, key: u64) -> Option<&Slot> {
        self.slots.get(&key)
    }

    pub(crate) fn tenant_index(&self, tenant: &TenantId) -> Option<u32> {
        self.tenant_index.get(tenant).copied()
    }

    fn intern(&mut self, tenant: &TenantId) -> u32 {
        if let Some(&i) = self.tenant_index.get(tenant) {
            return i;
        }
        let i = self.tenants.len() as u32;
        self.tenants.push(tenant.clone());
        self.tenant_index.insert(tenant.clone(), i);
        self.by_tenant.push(Vec::new());
        self.threads_of.push(HashSet::default());
        i
    }

    /// Records `id` under a new key; returns it and the key it replaces.
    pub(crate) fn insert(&mut self, id: MessageId, tenant: &TenantId, thread: ThreadId) -> (u64, Option<u64>) {
        let old = self.remove(id);
        let key = self.next_key;
        self.next_key += 1;
        self.put(key, id, tenant, thread);
        (key, old)
    }

    /// Records `id` under `key` (a loaded snapshot's); `key` must be new.
    pub(crate) fn put(&mut self, key: u64, id: MessageId, tenant: &TenantId, thread: ThreadId) {
        let tix = self.intern(tenant);
        let in_tenant = &mut self.by_tenant[tix as usize];
        let tpos = in_tenant.len() as u32;
        in_tenant.push(key);
        let in_thread = self.by_thread.entry((tix, thread)).or_default();
        if in_thread.entries.is_empty() {
            self.threads_of[tix as usize].insert(thread);
        }
        let hpos = in_thread.entries.len() as u32;
        in_thread.entries.push(Posting { key, id });
        if in_thread.entries.len() >= CODES_FROM {
            self.uncoded.insert((tix, thread));
        }
        self.slots.insert(key, Slot { id, thread, tenant: tix, tpos, hpos });
        self.by_id.insert(id, key);
        self.next_key = self.next_key.max(key + 1);
    }

    /// Forgets `id`; returns its key.
    pub(crate) fn remove(&mut self, id: MessageId) -> Option<u64> {
        let key = self.by_id.remove(&id)?;
        let slot = self.slots.remove(&key)?;
        let in_tenant = &mut self.by_tenant[slot.tenant as usize];
        in_tenant.swap_remove(slot.tpos as usize);
        if let Some(&moved) = in_tenant.get(slot.tpos as usize)
            && let Some(s) = self.slots.get_mut(&moved)
        {
            s.tpos = slot.tpos;
        }
        let thread_key = (slot.tenant, slot.thread);
        if let Some(in_thread) = self.by_thread.get_mut(&thread_key) {
            let hpos = slot.hpos as usize;
            let coded_all = in_thread.codes.as_ref().is_some_and(|c| c.len() == in_thread.entries.len());
            in_thread.entries.swap_remove(hpos);
            if let Some(codes) = &mut in_thread.codes {
                if coded_all {
                    codes.swap_remove(hpos);
                } else if hpos < codes.len() {
                    // The entry moved into the gap has no code yet.
                    codes.truncate(hpos);
                    self.uncoded.insert(thread_key);
                }
                if in_thread.entries.len() < CODES_FROM / 2 {
                    in_thread.codes = None;
                }
            }
            if let Some(moved) = in_thread.entries.get(slot.hpos as usize)
                && let Some(s) = self.slots.get_mut(&moved.key)
            {
                s.hpos = slot.hpos;
            }
            if in_thread.entries.is_empty() {
                self.by_thread.remove(&thread_key);
                self.threads_of[slot.tenant as usize].remove(&slot.thread);
            }
        }
        Some(key)
    }

    /// Forgets every entry of `tenant`'s `thread`; returns their keys.
    pub(crate) fn remove_thread(&mut self, tenant: &TenantId, thread: ThreadId) -> Vec<u64> {
        let Some(tix) = self.tenant_index(tenant) else { return Vec::new() };
        let ids: Vec<MessageId> =
            self.by_thread.get(&(tix, thread)).map(|ps| ps.entries.iter().map(|p| p.id).collect()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Entries in scope.
    pub(crate) fn count(&self, tenant: &TenantId, threads: Threads<'_>) -> usize {
        let Some(tix) = self.tenant_index(tenant) else { return 0 };
        match threads {
            Threads::All => self.by_tenant[tix as usize].len(),
            Threads::Only(ts) => {
                ts.iter().filter_map(|t| self.by_thread.get(&(tix, *t))).map(|p| p.entries.len()).sum()
            }
        }
    }

    /// Calls `f` with the key, id and thread of every entry in scope (the
    /// tenant's threads one by one when it is the whole tenant), and
    /// `coded` with the coded prefix of every thread in scope whose postings
    /// carry codes (instead of calling `f` for those entries) unless `coded`
    /// is `None`.
    fn for_each<'a>(
        &'a self,
        tenant: &TenantId,
        threads: Threads<'_>,
        mut f: impl FnMut(u64, MessageId, ThreadId),
        mut coded: Option<&mut dyn FnMut(ThreadId, &'a [Posting], &'a Codes)>,
    ) {
        let Some(tix) = self.tenant_index(tenant) else { return };
        let all: Vec<ThreadId>;
        let ts = match threads {
            Threads::All => {
                all = self.threads_of[tix as usize].iter().copied().collect();
                &all[..]
            }
            Threads::Only(ts) => ts,
        };
        for t in ts {
            let Some(p) = self.by_thread.get(&(tix, *t)) else { continue };
            let mut rest = &p.entries[..];
            if let (Some(codes), Some(coded)) = (&p.codes, coded.as_deref_mut()) {
                let (head, tail) = p.entries.split_at(codes.len().min(p.entries.len()));
                coded(*t, head, codes);
                rest = tail;
            }
            for e in rest {
                f(e.key, e.id, *t);
            }
        }
    }

    /// Every (key, slot).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.slots.iter().map(|(k, s)| (*k, s))
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.by_id.keys().copied()
    }

    /// Entries that have their int8 code.
    #[cfg(test)]
    pub(crate) fn coded(&self) -> usize {
        self.by_thread.values().filter_map(|p| p.codes.as_ref()).map(Codes::len).sum()
    }

    /// Approximate heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        // Hash tables at ~7/8 load with a control byte; postings of 8 B per
        // tenant and of 24 B per thread; the large threads' codes.
        let n = self.slots.len();
        let codes: usize = self.by_thread.values().filter_map(|p| p.codes.as_ref()).map(Codes::heap_bytes).sum();
        n * (8 + size_of::<Slot>() + 1) * 8 / 7 + n * (16 + 8 + 1) * 8 / 7 + n * (8 + size_of::<Posting>()) + codes
    }
}

/// A counting semaphore over usearch's per-thread contexts.
#[derive(Debug)]
struct Contexts {
    free: Mutex<usize>,
    returned: Condvar,
}

impl Contexts {
    fn new(n: usize) -> Self {
        Self { free: Mutex::new(n), returned: Condvar::new() }
    }

    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            while *free == 0 {
                free = self.returned.wait(free).unwrap_or_else(PoisonError::into_inner);
            }
            *free -= 1;
        }
        struct Give<'a>(&'a Contexts);
        impl Drop for Give<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                self.0.returned.notify_one();
            }
        }
        let _give = Give(self);
        f()
    }
}

/// One model's graph and tables.
pub(crate) struct Graph {
    pub(crate) dim: usize,
    pub(crate) params: GraphParams,
    index: Index,
    /// Exclusive while the capacity grows, shared by every other usearch call.
    grow: RwLock<()>,
    contexts: Contexts,
    pub(crate) tables: RwLock<Tables>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("len", &self.index.size())
            .finish_non_exhaustive()
    }
}

fn options(dim: usize, p: GraphParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        // Vectors are unit length: inner product is the cosine, and a zero
        // vector gets distance 1 (cosine 0) instead of a division by zero.
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: p.connectivity,
        expansion_add: p.ef_construction,
        expansion_search: p.ef_search,
        multi: false,
    }
}

impl Graph {
    /// An empty graph.
    ///
    /// # Errors
    /// usearch's, as text.
    pub(crate) fn new(dim: usize, params: GraphParams) -> Result<Self, String> {
        let index = Index::new(&options(dim, params)).map_err(|e| e.to_string())?;
        let graph = Self {
            dim,
            params,
            index,
            grow: RwLock::new(()),
            contexts: Contexts::new(CONTEXTS),
            tables: RwLock::new(Tables::default()),
        };
        graph.reserve(MIN_CAPACITY)?;
        Ok(graph)
    }

    /// A graph loaded from a usearch file (streamed into memory, not read
    /// whole first) with the tables that describe it.
    ///
    /// # Errors
    /// When the file cannot be loaded or does not hold exactly the tables'
    /// keys.
    pub(crate) fn load(path: &Path, dim: usize, params: GraphParams, tables: Tables) -> Result<Self, String> {
        let graph = Self::new(dim, params)?;
        let p = path.to_str().ok_or("the snapshot path is not UTF-8")?;
        graph.index.load(p).map_err(|e| e.to_string())?;
        if graph.index.dimensions() != dim {
            return Err(format!("graph of dimension {}, expected {dim}", graph.index.dimensions()));
        }
        if graph.index.size() != tables.len() {
            return Err(format!("graph holds {} vectors, the tables {}", graph.index.size(), tables.len()));
        }
        if let Some((key, _)) = tables.iter().find(|(k, _)| !graph.index.contains(*k)) {
            return Err(format!("key {key} is not in the graph"));
        }
        // A loaded index keeps its stored search width: apply the configured one.
        graph.index.change_expansion_add(params.ef_construction);
        graph.index.change_expansion_search(params.ef_search);
        // Always: a load resets the per-thread contexts to usearch's default.
        graph
            .index
            .reserve_capacity_and_threads(graph.index.capacity().max(tables.len()).max(MIN_CAPACITY), CONTEXTS)
            .map_err(|e| e.to_string())?;
        *graph.tables.write().unwrap_or_else(PoisonError::into_inner) = tables;
        graph.code_threads();
        Ok(graph)
    }

    fn reserve(&self, capacity: usize) -> Result<(), String> {
        let _grow = self.grow.write().unwrap_or_else(PoisonError::into_inner);
        if self.index.capacity() >= capacity {
            return Ok(());
        }
        self.index.reserve_capacity_and_threads(capacity, CONTEXTS).map_err(|e| e.to_string())
    }

    /// Makes room for `extra` more vectors (doubling, so that growth is rare).
    pub(crate) fn make_room(&self, extra: usize) -> Result<(), String> {
        let needed = self.index.size() + extra;
        let capacity = self.index.capacity();
        if needed <= capacity {
            return Ok(());
        }
        self.reserve(needed.max(capacity * 2).max(MIN_CAPACITY))
    }

    /// Inserts unit vectors under new keys, in parallel on the current
    /// rayon pool. Call [`Self::make_room`] first.
    ///
    /// # Errors
    /// usearch's first error, as text (the other vectors are still inserted).
    pub(crate) fn insert(&self, items: &[(u64, Vec<f32>)]) -> Result<(), String> {
        let _grow = read(&self.grow);
        items
            .par_iter()
            .map(|(key, v)| self.contexts.with(|| self.index.add(*key, v.as_slice())).map_err(|e| e.to_string()))
            .collect::<Result<Vec<()>, String>>()
            .map(drop)
    }

    /// Drops keys from the graph (their nodes are reused by later inserts).
    pub(crate) fn remove_keys(&self, keys: &[u64]) {
        let _grow = read(&self.grow);
        for &k in keys {
            if let Err(e) = self.index.remove(k) {
                tracing::warn!(key = k, error = %e, "vector index: removing a key failed");
            }
        }
    }

    /// Copies the vector of `key` into `buf`; `false` when the graph does
    /// not (or not yet) hold it.
    pub(crate) fn vector(&self, key: u64, buf: &mut [f32]) -> bool {
        let _grow = read(&self.grow);
        self.read_back(key, buf)
    }

    /// [`Self::vector`] for a caller that holds `grow` already (taking it
    /// again could wait behind a queued capacity growth).
    fn read_back(&self, key: u64, buf: &mut [f32]) -> bool {
        matches!(self.index.get(key, buf), Ok(n) if n > 0)
    }

    /// The search beam width in force.
    pub(crate) fn ef_search(&self) -> usize {
        self.index.expansion_search()
    }

    /// Sets the search beam width for the next searches.
    pub(crate) fn set_ef_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// Live vectors in the graph.
    pub(crate) fn size(&self) -> usize {
        self.index.size()
    }

    /// Scores every entry in scope exactly.
    pub(crate) fn scan(
        &self,
        tables: &Tables,
        q: &[f32],
        tenant: &TenantId,
        threads: Threads<'_>,
        skip: impl Fn(&MessageId) -> bool,
        top: &mut TopK,
    ) {
        let _grow = read(&self.grow);
        let mut buf = vec![0.0f32; self.dim];
        let mut coded: Vec<(ThreadId, &[Posting], &Codes)> = Vec::new();
        tables.for_each(
            tenant,
            threads,
            |key, id, thread| {
                if skip(&id) {
                    return;
                }
                if self.read_back(key, &mut buf) {
                    top.offer(dot(q, &buf), || (id, thread));
                }
            },
            Some(&mut |thread, entries, codes| coded.push((thread, entries, codes))),
        );
        if coded.is_empty() {
            return;
        }
        // Approximate scores and their error bounds from the codes.
        let q_l1: f32 = q.iter().map(|x| x.abs()).sum();
        let mut candidates: Vec<(f32, f32, u32, u32)> = Vec::new();
        for (list, (_, entries, codes)) in coded.iter().enumerate() {
            for (pos, e) in entries.iter().enumerate() {
                if !skip(&e.id) {
                    let (approx, bound) = codes.approx(q, q_l1, pos);
                    candidates.push((approx, bound, list as u32, pos as u32));
                }
            }
        }
        // Nothing scoring below `floor` can enter: the k-th best lower bound
        // (k candidates score at least that), or the k-th exact score so far.
        let k = top.k();
        let mut floor = top.floor().unwrap_or(f32::NEG_INFINITY);
        if k > 0 && candidates.len() >= k {
            let mut lower: Vec<f32> = candidates.iter().map(|c| c.0 - c.1).collect();
            let (_, kth, _) = lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            floor = floor.max(*kth);
        }
        let mut missing = false;
        let mut rescore = |c: &(f32, f32, u32, u32), top: &mut TopK| {
            let (thread, entries, _) = coded[c.2 as usize];
            let e = entries[c.3 as usize];
            if self.read_back(e.key, &mut buf) {
                top.offer(dot(q, &buf), || (e.id, thread));
                true
            } else {
                false
            }
        };
        for c in candidates.iter().filter(|c| c.0 + c.1 >= floor) {
            missing |= !rescore(c, top);
        }
        if missing {
            // An entry whose vector is not in the graph yet (its insert is
            // under way) may have set the floor: score the rest too.
            for c in candidates.iter().filter(|c| c.0 + c.1 < floor) {
                rescore(c, top);
            }
        }
    }

    /// Extends the codes of the threads of at least [`CODES_FROM`] entries
    /// to every entry, reading the vectors back from the graph. Call once
    /// the vectors are in (after an insert, a load); a thread with a vector
    /// still missing keeps the codes it has and is left for the next call.
    pub(crate) fn code_threads(&self) {
        // Tables first, then `grow`: the order a search takes them in (it
        // holds the tables while it scans), so that a waiting capacity
        // growth can never stand between the two.
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let _grow = read(&self.grow);
        let pending = std::mem::take(&mut tables.uncoded);
        let mut later = Vec::new();
        let mut buf = vec![0.0f32; self.dim];
        for thread in pending {
            let Some(p) = tables.by_thread.get_mut(&thread) else { continue };
            if p.entries.len() < CODES_FROM {
                continue;
            }
            let codes = p.codes.get_or_insert_with(|| Codes::new(self.dim));
            for e in &p.entries[codes.len()..] {
                if !self.read_back(e.key, &mut buf) {
                    later.push(thread);
                    break;
                }
                codes.push(&buf);
            }
        }
        tables.uncoded.extend(later);
    }

    /// Searches the graph for the `count` nearest keys that `admit` accepts
    /// (approximate); returns how many it found, offered to `top` with their
    /// exact scores.
    pub(crate) fn search(
        &self,
        tables: &Tables,
        q: &[f32],
        count: usize,
        admit: impl Fn(&Slot) -> bool,
        top: &mut TopK,
    ) -> Result<usize, String> {
        let _grow = read(&self.grow);
        let found = self
            .contexts
            .with(|| self.index.filtered_search(q, count, |key| tables.slot(key).is_some_and(&admit)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0.0f32; self.dim];
        let mut admitted = 0;
        for &key in &found.keys {
            // Checked again: the predicate is not the last word in usearch.
            let Some(slot) = tables.slot(key).filter(|s| admit(s)) else { continue };
            if self.read_back(key, &mut buf) {
                admitted += 1;
                top.offer(dot(q, &buf), || (slot.id, slot.thread));
            }
        }
        Ok(admitted)
    }

    /// Writes the graph to `path` (usearch's format). Searches go on; the
    /// caller keeps writers out.
    ///
    /// # Errors
    /// usearch's, as text.
    pub(crate) fn save(&self, path: &Path) -> Result<(), String> {
        let _grow = read(&self.grow);
        let p = path.to_str().ok_or("the snapshot path is not UTF-8")?;
        self.index.save(p).map_err(|e| e.to_string())
    }

    /// Approximate heap bytes: usearch's own figure and the tables.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index.memory_usage() + read(&self.tables).heap_bytes()
    }
}
