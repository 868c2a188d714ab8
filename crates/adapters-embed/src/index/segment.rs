//! One immutable HNSW segment: an `instant_distance::HnswMap` built over a
//! snapshot of vectors, with the postings that let a filter be checked (or
//! searched exactly) without touching the graph.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use instant_distance::{Builder, HnswMap, Search};
use memlayer_domain::{MessageId, TenantId, ThreadId};
use serde::{Deserialize, Serialize};

use super::math::{TopK, dot};
use super::store::Threads;

/// Seed of the layer assignment: builds are reproducible.
const BUILD_SEED: u64 = 0x6d65_6d6c_6179_6572;
/// Idle `Search` buffers kept per segment (each holds one byte per point).
const SEARCH_POOL: usize = 8;

/// A unit vector as the graph sees it. Shared (`Arc`) between the graph and
/// the segment's by-point table, so a segment holds each vector once.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point(pub(crate) Arc<[f32]>);

impl Point {
    pub(crate) fn new(v: &[f32]) -> Self {
        Self(Arc::from(v))
    }
}

impl instant_distance::Point for Point {
    /// `1 - cos` for unit vectors: the same order as cosine, cheap to compute.
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

// Serialised as little-endian bytes: one length prefix and a copy per
// vector instead of one serde call per element.
impl Serialize for Point {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Point;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("little-endian f32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Point, E> {
                if !b.len().is_multiple_of(4) {
                    return Err(E::custom("vector bytes are not a whole number of f32"));
                }
                let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(E::custom("vector element is not finite"));
                }
                Ok(Point(Arc::from(v)))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// What the segment knows of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: MessageId,
    pub thread: ThreadId,
    /// Index into [`Segment::tenants`].
    pub tenant: u32,
}

/// Build input: points with their metadata, tenants interned.
#[derive(Debug, Default)]
pub(crate) struct SegmentInput {
    pub tenants: Vec<TenantId>,
    tenant_index: HashMap<TenantId, u32>,
    pub meta: Vec<Meta>,
    pub points: Vec<Point>,
}

impl SegmentInput {
    pub(crate) fn push(&mut self, id: MessageId, tenant: &TenantId, thread: ThreadId, point: Point) {
        let tenant = match self.tenant_index.get(tenant) {
            Some(&i) => i,
            None => {
                let i = self.tenants.len() as u32;
                self.tenants.push(tenant.clone());
                self.tenant_index.insert(tenant.clone(), i);
                i
            }
        };
        self.meta.push(Meta { id, thread, tenant });
        self.points.push(point);
    }

    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

/// Graph build parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuildParams {
    pub ef_construction: usize,
    pub ef_search: usize,
}

/// An immutable graph over a fixed set of points. Point ids (`pid`) are the
/// graph's own order; every table here is indexed by them.
pub(crate) struct Segment {
    pub(crate) map: HnswMap<Point, u32>,
    pub(crate) dim: usize,
    pub(crate) ef_search: usize,
    /// Points by pid (the same `Arc`s the graph holds).
    points: Vec<Point>,
    /// Metadata by pid.
    pub(crate) meta: Vec<Meta>,
    pub(crate) tenants: Vec<TenantId>,
    by_tenant: HashMap<TenantId, (u32, Vec<u32>)>,
    by_thread: HashMap<ThreadId, Vec<u32>>,
    by_id: HashMap<MessageId, u32>,
    searches: Mutex<Vec<Search>>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("ef_search", &self.ef_search)
            .field("tenants", &self.tenants.len())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Builds the graph (CPU-heavy: run it on the blocking pool). `input`
    /// must not be empty.
    pub(crate) fn build(input: SegmentInput, dim: usize, params: BuildParams) -> Self {
        let SegmentInput { tenants, meta, points, .. } = input;
        let values: Vec<u32> = (0..points.len() as u32).collect();
        let map = Builder::default()
            .ef_construction(params.ef_construction)
            .ef_search(params.ef_search)
            .seed(BUILD_SEED)
            .build(points, values);
        // `values[pid]` is the input position of point `pid`.
        let by_pid: Vec<Meta> = map.values.iter().map(|&i| meta[i as usize]).collect();
        Self::assemble(map, dim, params.ef_search, tenants, by_pid)
    }

    /// A segment from a loaded graph and its by-pid metadata.
    ///
    /// # Errors
    /// When the parts do not fit together (a corrupt snapshot).
    pub(crate) fn from_parts(
        map: HnswMap<Point, u32>,
        dim: usize,
        ef_search: usize,
        tenants: Vec<TenantId>,
        meta: Vec<Meta>,
    ) -> Result<Self, String> {
        let n = map.iter().count();
        if n != meta.len() || map.values.len() != n {
            return Err(format!("graph has {n} points, metadata {}", meta.len()));
        }
        if n == 0 {
            return Err("empty segment".into());
        }
        if let Some((pid, _)) = map.iter().find(|(_, p)| p.0.len() != dim) {
            return Err(format!("point {} is not of dimension {dim}", pid.into_inner()));
        }
        if meta.iter().any(|m| m.tenant as usize >= tenants.len()) {
            return Err("metadata names an unknown tenant".into());
        }
        let unique: HashSet<MessageId> = meta.iter().map(|m| m.id).collect();
        if unique.len() != n {
            return Err("an id appears twice".into());
        }
        Ok(Self::assemble(map, dim, ef_search, tenants, meta))
    }

    fn assemble(
        map: HnswMap<Point, u32>,
        dim: usize,
        ef_search: usize,
        tenants: Vec<TenantId>,
        meta: Vec<Meta>,
    ) -> Self {
        let points: Vec<Point> = map.iter().map(|(_, p)| p.clone()).collect();
        let mut by_tenant: HashMap<TenantId, (u32, Vec<u32>)> =
            tenants.iter().enumerate().map(|(i, t)| (t.clone(), (i as u32, Vec::new()))).collect();
        let mut by_thread: HashMap<ThreadId, Vec<u32>> = HashMap::new();
        let mut by_id = HashMap::with_capacity(meta.len());
        for (pid, m) in meta.iter().enumerate() {
            let pid = pid as u32;
            if let Some((_, pids)) = by_tenant.get_mut(&tenants[m.tenant as usize]) {
                pids.push(pid);
            }
            by_thread.entry(m.thread).or_default().push(pid);
            by_id.insert(m.id, pid);
        }
        Self {
            map,
            dim,
            ef_search,
            points,
            meta,
            tenants,
            by_tenant,
            by_thread,
            by_id,
            searches: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.meta.len()
    }

    pub(crate) fn pid_of(&self, id: &MessageId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn point(&self, pid: u32) -> &Point {
        &self.points[pid as usize]
    }

    pub(crate) fn tenant_index(&self, tenant: &TenantId) -> Option<u32> {
        self.by_tenant.get(tenant).map(|(i, _)| *i)
    }

    /// Pids of a thread (any tenant: check `meta[pid].tenant`).
    pub(crate) fn thread_pids(&self, thread: &ThreadId) -> &[u32] {
        self.by_thread.get(thread).map_or(&[], Vec::as_slice)
    }

    /// Entries in scope, counting removed ones (an upper bound).
    pub(crate) fn count(&self, tenant: &TenantId, threads: Threads<'_>) -> usize {
        match threads {
            Threads::All => self.by_tenant.get(tenant).map_or(0, |(_, p)| p.len()),
            Threads::Only(ts) => ts.iter().map(|t| self.thread_pids(t).len()).sum(),
        }
    }

    /// Compares every live entry in scope (`dead[pid]` marks removed ones).
    pub(crate) fn scan(&self, q: &[f32], tenant: &TenantId, threads: Threads<'_>, dead: &[bool], top: &mut TopK) {
        let Some(&(tix, ref pids)) = self.by_tenant.get(tenant) else { return };
        let mut score = |pid: u32| {
            if !dead[pid as usize] {
                let s = dot(q, &self.points[pid as usize].0);
                top.offer(s, || {
                    let m = &self.meta[pid as usize];
                    (m.id, m.thread)
                });
            }
        };
        match threads {
            Threads::All => pids.iter().for_each(|&pid| score(pid)),
            Threads::Only(ts) => {
                for t in ts {
                    for &pid in self.thread_pids(t) {
                        if self.meta[pid as usize].tenant == tix {
                            score(pid);
                        }
                    }
                }
            }
        }
    }

    /// Searches the graph for `q` and offers the live entries it finds that
    /// `admit(meta)` accepts, re-scored exactly. Returns how many were
    /// admitted; the graph yields at most `ef_search` candidates.
    pub(crate) fn graph_search(
        &self,
        q: &Point,
        dead: &[bool],
        mut admit: impl FnMut(&Meta) -> bool,
        top: &mut TopK,
    ) -> usize {
        let mut search = self.searches.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
        let mut admitted = 0;
        for item in self.map.search(q, &mut search) {
            let pid = item.pid.into_inner() as usize;
            let m = &self.meta[pid];
            if dead[pid] || !admit(m) {
                continue;
            }
            admitted += 1;
            // The graph's distance is 1 - dot: recompute the score itself
            // rather than round-trip it through the subtraction.
            let s = dot(&q.0, &item.point.0);
            top.offer(s, || (m.id, m.thread));
        }
        let mut pool = self.searches.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < SEARCH_POOL {
            pool.push(search);
        }
        admitted
    }

    /// Approximate heap bytes: vectors, graph links, tables.
    pub(crate) fn heap_bytes(&self) -> usize {
        let n = self.len();
        // Each vector once (shared `Arc`: 16 B of counts), two fat pointers
        // to it (the graph's and ours), its value in the map.
        let vectors = n * (self.dim * 4 + 16 + 16 + 16 + 4);
        // Layer 0: 2M = 64 links of 4 B per point; upper layers: M = 32 links
        // for the ~41% (1/ln 32 + its powers) of points that reach them.
        let graph = n * 64 * 4 + n * 32 * 4 * 41 / 100;
        // Metadata, postings by tenant and thread, the id map.
        let tables = n * (size_of::<Meta>() + 4 + 4 + 32);
        vectors + graph + tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip_through_postcard() {
        let p = Point::new(&[0.5, -0.25, 1.0e-7, 3.0]);
        let bytes = postcard::to_stdvec(&p).unwrap();
        assert_eq!(bytes.len(), 1 + 16);
        assert_eq!(postcard::from_bytes::<Point>(&bytes).unwrap(), p);
        assert!(postcard::from_bytes::<Point>(&bytes[..bytes.len() - 1]).is_err());
        let nan = postcard::to_stdvec(&Point::new(&[f32::NAN])).unwrap();
        assert!(postcard::from_bytes::<Point>(&nan).is_err());
    }
}
