//! Vector arithmetic shared by both indexes: a dot product the compiler
//! vectorises, normalisation, and the bounded top-k heap.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use memlayer_domain::{MessageId, ThreadId};
use memlayer_ports::ScoredHit;

/// Lanes of the dot product: sixteen independent accumulators let LLVM keep
/// several SIMD registers busy (a plain `zip().map().sum()` is a serial
/// dependency chain and was 4.6× slower to build an index with, see
/// `shared/ENVIRONMENT.md`).
const LANES: usize = 16;

/// Dot product of two slices of the same length (the shorter one's length
/// otherwise). Compiled three times, for AVX-512, for AVX2 with FMA and for
/// the baseline, and chosen at run time by what the CPU has (the release
/// build targets baseline x86-64, whose SSE2 is a quarter of AVX-512's
/// width); the code, and so the order of every addition, is the same in all
/// three, so the result does not depend on the CPU.
#[must_use]
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    // Pairwise reduction keeps the rounding error small and symmetric.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// `v` scaled to unit length; a zero vector stays zero (its cosine with
/// anything is then 0, the convention for an undefined angle).
#[must_use]
pub(crate) fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = f64::from(dot(v, v)).sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return v.to_vec();
    }
    // Already unit length (the embedder normalises): keep the exact values.
    if (norm - 1.0).abs() < 1e-7 {
        return v.to_vec();
    }
    v.iter().map(|&x| (f64::from(x) / norm) as f32).collect()
}

/// A scored candidate. Orders best first: higher score, then lower id (a
/// deterministic tie-break, so equal inputs give equal outputs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub score: f32,
    pub id: MessageId,
    pub thread: ThreadId,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// The `k` best candidates seen so far: a min-heap of size `k` whose root is
/// the worst kept candidate.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k.min(4096) + 1) }
    }

    /// How many it keeps.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// The score a candidate must beat to enter, when full.
    #[inline]
    pub(crate) fn floor(&self) -> Option<f32> {
        if self.heap.len() < self.k { None } else { self.heap.peek().map(|r| r.0.score) }
    }

    /// Offers a candidate.
    #[inline]
    pub(crate) fn push(&mut self, c: Scored) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse(c));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && c > worst.0
        {
            *worst = Reverse(c);
        }
    }

    /// Offers a score, building the candidate only when it would enter.
    #[inline]
    pub(crate) fn offer(&mut self, score: f32, id: impl FnOnce() -> (MessageId, ThreadId)) {
        match self.floor() {
            Some(floor) if score < floor => {}
            _ => {
                let (id, thread) = id();
                self.push(Scored { score, id, thread });
            }
        }
    }

    /// The kept candidates, best first.
    pub(crate) fn into_matches(self) -> Vec<ScoredHit> {
        // `Reverse` sorts ascending as descending scores.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(c)| ScoredHit { id: c.id, thread: c.thread, score: c.score })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_naive_sum_for_every_tail_length() {
        for n in [0usize, 1, 7, 15, 16, 17, 31, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn normalisation_gives_unit_vectors_and_keeps_zero() {
        let v = normalised(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert_eq!(normalised(&[0.0, 0.0]), vec![0.0, 0.0]);
        let unit = [0.6f32, 0.8];
        assert_eq!(normalised(&unit), unit.to_vec());
    }

    #[test]
    fn top_k_keeps_the_best_sorted_with_a_stable_tie_break() {
        let thread = ThreadId::new();
        let ids: Vec<MessageId> = (0..6).map(|_| MessageId::new()).collect();
        let mut top = TopK::new(3);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.9, -0.2, 0.7].into_iter().enumerate() {
            top.offer(s, || (ids[i], thread));
        }
        let got: Vec<(f32, MessageId)> = top.into_matches().iter().map(|m| (m.score, m.id)).collect();
        let (lo, hi) = if ids[1] < ids[3] { (ids[1], ids[3]) } else { (ids[3], ids[1]) };
        assert_eq!(got, vec![(0.9, lo), (0.9, hi), (0.7, ids[5])]);
        assert!(TopK::new(0).into_matches().is_empty());
    }
}
