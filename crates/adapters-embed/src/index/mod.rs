//! In-process [`VectorIndex`](memlayer_ports::VectorIndex) adapters.
//!
//! - [`ExactIndex`] (`exact`): every vector in RAM, compared with the query
//!   one by one. Vectors live in one contiguous arena per (tenant, model)
//!   with per-thread postings, so a thread-scoped search reads only that
//!   thread's vectors and a tenant-scoped one only that tenant's.
//! - [`HnswIndex`] (`hnsw`): one `usearch` HNSW graph per model, over every
//!   tenant, that takes inserts and removals while it is searched, persisted
//!   as a snapshot. Filters that admit few candidates are searched exactly.
//!
//! Shared rules:
//! - vectors are stored unit-length and queries normalised, so every
//!   returned score is the cosine similarity, computed exactly (the graph only
//!   chooses candidates);
//! - entries are keyed by (message id, model): a query sees only its model's
//!   entries; every model has one dimension, fixed by its first vector (and
//!   free again once it has none), and a vector or query of another
//!   dimension is `Invalid`;
//! - a search never returns a removed entry, another tenant's, or one of a
//!   thread outside the filter; ties in score are broken by message id;
//! - scans and graph searches that are more than a few hundred microseconds
//!   of CPU run on tokio's blocking pool; a std lock is never held across an
//!   `.await`, and a write that would wait for a lock waits on the blocking
//!   pool, not on a runtime worker.

mod codes;
mod exact;
mod graph;
mod hnsw;
mod math;
mod snapshot;
mod store;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, TryLockError};

use memlayer_domain::{DomainError, MessageId, TenantId, ThreadId};
use memlayer_ports::{StoreError, VectorEntry};

pub use self::exact::ExactIndex;
pub use self::hnsw::{HnswConfig, HnswIndex, HnswModelStats, HnswStats};

/// Exact comparisons (candidates × dimensions) done inline; more go to the
/// blocking pool. Here 2^17 multiply-adds take ~40–60 µs (a 100k × 384 scan
/// takes ~17 ms) and a round trip through the blocking pool ~10–40 µs
/// (`examples/bench_index.rs` prints both): a thread of a few hundred
/// messages is searched inline, a tenant of thousands is not.
const INLINE_WORK: usize = 1 << 17;

/// An entry ready to store: its vector made unit-length.
#[derive(Debug)]
struct Prepared {
    id: MessageId,
    tenant: TenantId,
    thread: ThreadId,
    model: String,
    unit: Vec<f32>,
}

impl Prepared {
    fn from_entry(e: VectorEntry) -> Self {
        let unit = math::normalised(e.embedding.vector());
        Self { id: e.id, tenant: e.tenant, thread: e.thread, model: e.embedding.model().to_owned(), unit }
    }
}

/// Checks a batch against the stored dimensions (`stored(model)`) and
/// against itself; nothing is written when it fails.
fn check_batch(batch: &[Prepared], stored: impl Fn(&str) -> Option<usize>) -> Result<(), StoreError> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for p in batch {
        let dim = match stored(&p.model) {
            Some(d) => d,
            None => match seen.iter().find(|(m, _)| *m == p.model) {
                Some(&(_, d)) => d,
                None => {
                    seen.push((&p.model, p.unit.len()));
                    p.unit.len()
                }
            },
        };
        if p.unit.len() != dim {
            return Err(dimension_error("vector", &p.model, p.unit.len(), dim));
        }
    }
    Ok(())
}

fn dimension_error(field: &'static str, model: &str, got: usize, stored: usize) -> StoreError {
    StoreError::Invalid(DomainError::new(
        field,
        format!("has {got} dimensions, the index holds {stored}-dimensional vectors of model `{model}`"),
    ))
}

/// A read guard, through poisoning (a panic elsewhere leaves the data as
/// consistent as any single operation does).
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` under the write lock `lock(owner)`: inline when the lock is
/// free, else on the blocking pool, so that waiting for a long search to
/// finish never blocks a runtime worker.
async fn write_with<O, T: 'static, R>(
    owner: &Arc<O>,
    lock: fn(&O) -> &RwLock<T>,
    f: impl FnOnce(&mut T) -> R + Send + 'static,
) -> Result<R, StoreError>
where
    O: Send + Sync + 'static,
    R: Send + 'static,
{
    match lock(owner).try_write() {
        Ok(mut guard) => return Ok(f(&mut guard)),
        Err(TryLockError::Poisoned(p)) => return Ok(f(&mut p.into_inner())),
        Err(TryLockError::WouldBlock) => {}
    }
    let owner = Arc::clone(owner);
    tokio::task::spawn_blocking(move || f(&mut lock(&owner).write().unwrap_or_else(PoisonError::into_inner)))
        .await
        .map_err(StoreError::backend)
}

/// Runs CPU-heavy `f` on the blocking pool.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(StoreError::backend)
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Clustered unit vectors for the tests (uniform noise is a worst case
    //! that no graph index is judged on).

    /// xorshift64*.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    pub(crate) fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// `n` unit vectors of `dim` around `clusters` centres.
    pub(crate) fn clustered(seed: u64, n: usize, dim: usize, clusters: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng(seed | 1);
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| unit((0..dim).map(|_| rng.next()).collect())).collect();
        (0..n).map(|i| unit(centres[i % clusters].iter().map(|x| x + 0.3 * rng.next()).collect())).collect()
    }

    /// Cosine similarity in f64.
    pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        (dot / (na * nb)) as f32
    }
}
