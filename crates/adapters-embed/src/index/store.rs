//! Exactly searched vector storage: one contiguous arena per (tenant, model)
//! with per-thread postings, so a thread-scoped scan touches only that
//! thread's vectors and a tenant-scoped one only that tenant's.
//!
//! [`ModelStore`] is the whole of [`super::ExactIndex`] for one model.

use std::collections::{HashMap, HashSet};

use memlayer_domain::{MessageId, TenantId, ThreadId};

use super::math::{TopK, dot};

/// Free slots above this many, and above the live count, trigger compaction.
const COMPACT_MIN_FREE: usize = 1024;

/// Which threads a scan covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Threads<'a> {
    /// Every thread of the tenant.
    All,
    /// Only these (deduplicated).
    Only(&'a [ThreadId]),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: MessageId,
    thread: ThreadId,
    /// Position in `by_thread[thread]`, for O(1) removal.
    pos: u32,
    live: bool,
}

/// The vectors of one tenant for one model.
#[derive(Debug)]
pub(crate) struct TenantStore {
    dim: usize,
    /// Slot `s` is `arena[s * dim..(s + 1) * dim]`; vectors are unit length.
    arena: Vec<f32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_id: HashMap<MessageId, u32>,
    by_thread: HashMap<ThreadId, Vec<u32>>,
}

impl TenantStore {
    fn new(dim: usize) -> Self {
        Self {
            dim,
            arena: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            by_thread: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    fn vector(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.arena[s..s + self.dim]
    }

    /// Inserts a unit vector; the id must not be present.
    fn insert(&mut self, id: MessageId, thread: ThreadId, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        debug_assert!(!self.by_id.contains_key(&id));
        let postings = self.by_thread.entry(thread).or_default();
        let slot_meta = Slot { id, thread, pos: postings.len() as u32, live: true };
        let slot = if let Some(slot) = self.free.pop() {
            let s = slot as usize * self.dim;
            self.arena[s..s + self.dim].copy_from_slice(v);
            self.slots[slot as usize] = slot_meta;
            slot
        } else {
            self.arena.extend_from_slice(v);
            self.slots.push(slot_meta);
            (self.slots.len() - 1) as u32
        };
        postings.push(slot);
        self.by_id.insert(id, slot);
    }

    /// Removes an id; returns its thread when it was present.
    fn remove(&mut self, id: MessageId) -> Option<ThreadId> {
        let slot = self.by_id.remove(&id)?;
        let Slot { thread, pos, .. } = self.slots[slot as usize];
        if let Some(postings) = self.by_thread.get_mut(&thread) {
            postings.swap_remove(pos as usize);
            if let Some(&moved) = postings.get(pos as usize) {
                self.slots[moved as usize].pos = pos;
            }
            if postings.is_empty() {
                self.by_thread.remove(&thread);
            }
        }
        self.slots[slot as usize].live = false;
        self.free.push(slot);
        self.maybe_compact();
        Some(thread)
    }

    /// Removes every entry of `thread`; returns their ids.
    fn remove_thread(&mut self, thread: ThreadId) -> Vec<MessageId> {
        let Some(postings) = self.by_thread.remove(&thread) else { return Vec::new() };
        let mut ids = Vec::with_capacity(postings.len());
        for slot in postings {
            let s = &mut self.slots[slot as usize];
            s.live = false;
            self.by_id.remove(&s.id);
            ids.push(s.id);
            self.free.push(slot);
        }
        self.maybe_compact();
        ids
    }

    /// Rewrites the arena without holes once most of it is free.
    fn maybe_compact(&mut self) {
        if self.by_id.is_empty() {
            *self = Self::new(self.dim);
            return;
        }
        if self.free.len() < COMPACT_MIN_FREE || self.free.len() < self.by_id.len() {
            return;
        }
        let mut fresh = Self::new(self.dim);
        fresh.arena.reserve(self.by_id.len() * self.dim);
        for (slot, meta) in self.slots.iter().enumerate() {
            if meta.live {
                fresh.insert(meta.id, meta.thread, self.vector(slot as u32));
            }
        }
        *self = fresh;
    }

    /// Number of entries in scope.
    pub(crate) fn count(&self, threads: Threads<'_>) -> usize {
        match threads {
            Threads::All => self.len(),
            Threads::Only(ts) => ts.iter().map(|t| self.by_thread.get(t).map_or(0, Vec::len)).sum(),
        }
    }

    /// Scores every entry in scope against the unit query `q`.
    pub(crate) fn scan(&self, q: &[f32], threads: Threads<'_>, top: &mut TopK) {
        match threads {
            Threads::All => {
                for (slot, (v, meta)) in self.arena.chunks_exact(self.dim).zip(&self.slots).enumerate() {
                    if meta.live {
                        let score = dot(q, v);
                        top.offer(score, || {
                            let m = &self.slots[slot];
                            (m.id, m.thread)
                        });
                    }
                }
            }
            Threads::Only(ts) => {
                for t in ts {
                    for &slot in self.by_thread.get(t).map_or(&[][..], Vec::as_slice) {
                        let score = dot(q, self.vector(slot));
                        top.offer(score, || {
                            let m = &self.slots[slot as usize];
                            (m.id, m.thread)
                        });
                    }
                }
            }
        }
    }

    /// Every live entry: id, thread, unit vector.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (MessageId, ThreadId, &[f32])> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, m)| m.live)
            .map(|(slot, m)| (m.id, m.thread, self.vector(slot as u32)))
    }

    /// Arena bytes held (capacity), for memory figures.
    fn heap_bytes(&self) -> usize {
        self.arena.capacity() * 4
            + self.slots.capacity() * size_of::<Slot>()
            + self.by_id.capacity() * (size_of::<MessageId>() + 4)
            + self.by_thread.values().map(|p| p.capacity() * 4 + 24).sum::<usize>()
    }
}

/// Every vector of one model, grouped by tenant.
#[derive(Debug)]
pub(crate) struct ModelStore {
    dim: usize,
    tenants: HashMap<TenantId, TenantStore>,
    tenant_of: HashMap<MessageId, TenantId>,
}

impl ModelStore {
    pub(crate) fn new(dim: usize) -> Self {
        Self { dim, tenants: HashMap::new(), tenant_of: HashMap::new() }
    }

    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    pub(crate) fn len(&self) -> usize {
        self.tenant_of.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tenant_of.is_empty()
    }

    /// Inserts or replaces (wherever the id was, even under another tenant).
    /// `v` must be a unit vector of `dim()` elements.
    pub(crate) fn upsert(&mut self, id: MessageId, tenant: &TenantId, thread: ThreadId, v: &[f32]) {
        self.remove(id);
        let dim = self.dim;
        self.tenants.entry(tenant.clone()).or_insert_with(|| TenantStore::new(dim)).insert(id, thread, v);
        self.tenant_of.insert(id, tenant.clone());
    }

    /// Removes an id; returns whether it was present.
    pub(crate) fn remove(&mut self, id: MessageId) -> bool {
        let Some(tenant) = self.tenant_of.remove(&id) else { return false };
        if let Some(store) = self.tenants.get_mut(&tenant) {
            store.remove(id);
            if store.len() == 0 {
                self.tenants.remove(&tenant);
            }
        }
        true
    }

    /// Removes a thread's entries; returns their ids.
    pub(crate) fn remove_thread(&mut self, tenant: &TenantId, thread: ThreadId) -> Vec<MessageId> {
        let Some(store) = self.tenants.get_mut(tenant) else { return Vec::new() };
        let ids = store.remove_thread(thread);
        if store.len() == 0 {
            self.tenants.remove(tenant);
        }
        for id in &ids {
            self.tenant_of.remove(id);
        }
        ids
    }

    pub(crate) fn tenant(&self, tenant: &TenantId) -> Option<&TenantStore> {
        self.tenants.get(tenant)
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.tenant_of.keys().copied()
    }

    /// Approximate heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tenants.values().map(TenantStore::heap_bytes).sum::<usize>() + self.tenant_of.capacity() * 48
    }
}

/// `threads` deduplicated, in first-seen order.
pub(crate) fn dedup_threads(threads: &[ThreadId]) -> Vec<ThreadId> {
    let mut seen = HashSet::with_capacity(threads.len());
    threads.iter().copied().filter(|t| seen.insert(*t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize, dim: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn slots_are_reused_and_postings_stay_consistent() {
        let t = TenantId::parse("t").unwrap();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let mut m = ModelStore::new(4);
        let ids: Vec<MessageId> = (0..6).map(|_| MessageId::new()).collect();
        for (i, id) in ids.iter().enumerate() {
            m.upsert(*id, &t, if i % 2 == 0 { a } else { b }, &unit(i, 4));
        }
        assert!(m.remove(ids[0]) && !m.remove(ids[0]));
        m.upsert(ids[1], &t, a, &unit(3, 4)); // replace and move to thread a
        let store = m.tenant(&t).unwrap();
        assert_eq!(store.count(Threads::Only(&[a])), 3);
        assert_eq!(store.count(Threads::Only(&[b])), 2);
        let removed = m.remove_thread(&t, b);
        assert_eq!(removed.len(), 2);
        assert_eq!(m.len(), 3);
        let mut top = TopK::new(10);
        m.tenant(&t).unwrap().scan(&unit(3, 4), Threads::All, &mut top);
        let got = top.into_matches();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, ids[1]);
        assert!((got[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn compaction_keeps_every_live_entry() {
        let t = TenantId::parse("t").unwrap();
        let thread = ThreadId::new();
        let mut m = ModelStore::new(8);
        let ids: Vec<MessageId> = (0..3000).map(|_| MessageId::new()).collect();
        for (i, id) in ids.iter().enumerate() {
            m.upsert(*id, &t, thread, &unit(i, 8));
        }
        for id in &ids[..2500] {
            m.remove(*id);
        }
        let store = m.tenant(&t).unwrap();
        assert!(store.slots.len() < 3000, "compacted");
        let live: HashSet<MessageId> = store.iter().map(|(id, ..)| id).collect();
        assert_eq!(live, ids[2500..].iter().copied().collect());
        assert_eq!(store.count(Threads::Only(&[thread])), 500);
        for (id, _, v) in store.iter() {
            let i = ids.iter().position(|x| *x == id).unwrap();
            assert_eq!(v, unit(i, 8).as_slice());
        }
    }
}
