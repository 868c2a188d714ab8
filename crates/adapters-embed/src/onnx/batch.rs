//! Batch planning and padding: pure functions, no model.
//!
//! Same rules as `scripts/embed_reference.py` (`plan_batches`, `pad_batch`),
//! so that both sides feed the model identical tensors.

/// Indices of `lengths`, sorted by length (stable), cut into batches of at
/// most `max_size` rows and at most `max_tokens` padded tokens (rows × the
/// longest row). A row longer than `max_tokens` still gets a batch of its own.
pub(crate) fn plan(lengths: &[usize], max_tokens: usize, max_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let grown = longest.max(lengths[i]);
        if !current.is_empty() && (current.len() + 1 > max_size || (current.len() + 1) * grown > max_tokens) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        current.push(i);
        longest = longest.max(lengths[i]);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Row-major `[rows, longest]` tensors for one batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Padded {
    pub rows: usize,
    pub longest: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Right-pads `rows` with `pad_id` to the longest one; the mask is 1 on real
/// tokens and 0 on padding, token types are all 0.
pub(crate) fn pad(rows: &[Vec<u32>], pad_id: u32) -> Padded {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cells = rows.len() * longest;
    let mut input_ids = vec![i64::from(pad_id); cells];
    let mut attention_mask = vec![0; cells];
    for (r, ids) in rows.iter().enumerate() {
        let start = r * longest;
        for (cell, &id) in input_ids[start..start + ids.len()].iter_mut().zip(ids) {
            *cell = i64::from(id);
        }
        attention_mask[start..start + ids.len()].fill(1);
    }
    Padded { rows: rows.len(), longest, input_ids, attention_mask, token_type_ids: vec![0; cells] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lengths: &[usize], max_tokens: usize, max_size: usize, expected: &[&[usize]]) {
        let got = plan(lengths, max_tokens, max_size);
        assert_eq!(got, expected, "lengths {lengths:?}, max_tokens {max_tokens}, max_size {max_size}");
        let mut seen: Vec<usize> = got.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>(), "every index exactly once");
    }

    #[test]
    fn batches_are_sorted_and_capped() {
        check(&[], 8192, 64, &[]);
        check(&[5], 8192, 64, &[&[0]]);
        // sorted by length, ties keep input order
        check(&[9, 3, 7, 3], 8192, 64, &[&[1, 3, 2, 0]]);
        // row cap
        check(&[4, 4, 4, 4, 4], 8192, 2, &[&[0, 1], &[2, 3], &[4]]);
        // token cap counts padded cells: 3 rows of longest 10 = 30 > 25
        check(&[10, 2, 10, 2], 25, 64, &[&[1, 3], &[0, 2]]);
        check(&[2, 2, 10], 30, 64, &[&[0, 1, 2]]);
        check(&[2, 2, 10], 29, 64, &[&[0, 1], &[2]]);
        check(&[2, 2, 10, 10], 25, 64, &[&[0, 1], &[2, 3]]);
        // a row longer than the cap still goes, alone
        check(&[300, 1], 256, 64, &[&[1], &[0]]);
    }

    #[test]
    fn padding_is_right_sided_with_a_mask() {
        let p = pad(&[vec![101, 7, 102], vec![101, 102]], 0);
        assert_eq!((p.rows, p.longest), (2, 3));
        assert_eq!(p.input_ids, [101, 7, 102, 101, 102, 0]);
        assert_eq!(p.attention_mask, [1, 1, 1, 1, 1, 0]);
        assert_eq!(p.token_type_ids, [0; 6]);
    }
}
