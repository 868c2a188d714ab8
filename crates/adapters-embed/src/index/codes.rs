//! Int8 codes of a large thread's vectors, for an exact scan that reads a
//! quarter of the bytes.
//!
//! An exact scan of a thread's vectors read each one back from the graph
//! (`get`: a lock, a key lookup and a 1.5 KB copy): at 20,000 vectors most of
//! a search's CPU and the largest single cost of a server under mixed load
//! (docs/BENCHMARKS.md, "Under load"). A thread with at least
//! [`CODES_FROM`] entries also keeps, beside its postings, each vector as
//! 384 signed bytes and a scale: `v[j] ≈ scale × code[j]`, with `scale` the
//! vector's largest magnitude over 127, so `|v[j] − scale × code[j]| ≤
//! scale / 2`.
//!
//! The scan stays exact: for a query `q`, `scale × Σ q[j] code[j]` is within
//! `scale / 2 × Σ |q[j]|` (plus [`ROUNDING`]) of the exact score, so a
//! candidate whose upper bound is below the k-th best lower bound cannot be
//! among the best k; only the others are read back from the graph and
//! scored exactly ([`super::graph::Graph::scan`]). Results, scores and ties
//! are those of the full f32 scan.

/// A thread's postings carry codes from this many entries on (an f32 scan
/// of fewer costs well under a millisecond), and drop them below half of it.
pub(crate) const CODES_FROM: usize = 2048;

/// Margin for floating-point rounding in both the exact and the approximate
/// dot product (each at most ~384 × 2⁻²⁴ of `Σ |q[j] v[j]| ≤ 1` for unit
/// vectors: about 2.3e-5).
pub(crate) const ROUNDING: f32 = 1e-4;

/// Int8 codes of vectors of one dimension, in posting order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Codes {
    dim: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    pub(crate) fn new(dim: usize) -> Self {
        Self { dim, data: Vec::new(), scales: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.scales.len()
    }

    /// Appends the code of `v` (of this dimension).
    pub(crate) fn push(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 0.0 };
        self.data
            .extend(v.iter().map(|x| if scale > 0.0 { (x / scale).round().clamp(-127.0, 127.0) as i8 } else { 0 }));
        self.scales.push(scale);
    }

    /// Removes entry `i`, moving the last one into its place (as the
    /// postings' `swap_remove`).
    pub(crate) fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
        }
        self.data.truncate(last * self.dim);
        self.scales.swap_remove(i);
    }

    /// Keeps the first `n` entries.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.data.truncate(n * self.dim);
        self.scales.truncate(n);
    }

    /// Entry `i`'s approximate score against `q` and the bound on its
    /// error, given `q_l1 = Σ |q[j]|`.
    #[inline]
    pub(crate) fn approx(&self, q: &[f32], q_l1: f32, i: usize) -> (f32, f32) {
        let scale = self.scales[i];
        let code = &self.data[i * self.dim..(i + 1) * self.dim];
        (scale * dot_codes(q, code), scale * 0.5 * q_l1 + ROUNDING)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.scales.capacity() * 4
    }
}

/// `Σ q[j] × code[j]`, with the f32 dot product's sixteen lanes, compiled
/// per SIMD width like [`super::math::dot`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn dot_codes(q: &[f32], code: &[i8]) -> f32 {
    const LANES: usize = 16;
    let n = q.len().min(code.len());
    let (q, code) = (&q[..n], &code[..n]);
    let mut acc = [0.0f32; LANES];
    let (cq, cc) = (q.chunks_exact(LANES), code.chunks_exact(LANES));
    let tail: f32 = cq.remainder().iter().zip(cc.remainder()).map(|(x, c)| x * f32::from(*c)).sum();
    for (x, c) in cq.zip(cc) {
        for i in 0..LANES {
            acc[i] += x[i] * f32::from(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testdata::clustered;

    #[test]
    fn the_bound_holds_for_every_pair() {
        let dim = 384;
        let mut codes = Codes::new(dim);
        let vs = clustered(1, 200, dim, 7);
        for v in &vs {
            codes.push(v);
        }
        for q in clustered(2, 20, dim, 7) {
            let l1: f32 = q.iter().map(|x| x.abs()).sum();
            for (i, v) in vs.iter().enumerate() {
                let exact = super::super::math::dot(&q, v);
                let (a, b) = codes.approx(&q, l1, i);
                assert!((exact - a).abs() <= b, "entry {i}: exact {exact}, approx {a}, bound {b}");
                // The bound is useful: far tighter than the score range.
                assert!(b < 0.05, "bound {b}");
            }
        }
    }

    #[test]
    fn swap_remove_moves_the_last_code_into_the_gap() {
        let dim = 8;
        let mut codes = Codes::new(dim);
        let vs = clustered(3, 4, dim, 4);
        for v in &vs {
            codes.push(v);
        }
        codes.swap_remove(1);
        assert_eq!(codes.len(), 3);
        let q = clustered(4, 1, dim, 1).remove(0);
        let l1: f32 = q.iter().map(|x| x.abs()).sum();
        let mut fresh = Codes::new(dim);
        for v in [&vs[0], &vs[3], &vs[2]] {
            fresh.push(v);
        }
        for i in 0..3 {
            assert_eq!(codes.approx(&q, l1, i), fresh.approx(&q, l1, i));
        }
        codes.swap_remove(2);
        codes.swap_remove(0);
        assert_eq!(codes.len(), 1);
        assert_eq!(codes.approx(&q, l1, 0), fresh.approx(&q, l1, 1));
    }

    #[test]
    fn a_zero_vector_codes_to_zero() {
        let mut codes = Codes::new(4);
        codes.push(&[0.0; 4]);
        let (a, b) = codes.approx(&[0.5, 0.5, 0.5, 0.5], 2.0, 0);
        assert_eq!(a, 0.0);
        assert!(b <= ROUNDING);
    }
}
