//! Token embedding: a row gather forward, a scatter-add backward.

use crate::float::Float;

/// `out[i, :] = table[tokens[i], :]`. Token ids must be below the table's row count (the model
/// checks them against the vocabulary before calling).
pub fn embedding_forward<T: Float>(out: &mut [T], tokens: &[u32], table: &[T], dim: usize) {
    assert_eq!(out.len(), tokens.len() * dim, "embedding out");
    for (row, &t) in out.chunks_exact_mut(dim).zip(tokens) {
        let t = t as usize;
        row.copy_from_slice(&table[t * dim..(t + 1) * dim]);
    }
}

/// `dtable[tokens[i], :] += dout[i, :]` (a token that occurs twice receives both gradients).
pub fn embedding_backward<T: Float>(dtable: &mut [T], dout: &[T], tokens: &[u32], dim: usize) {
    assert_eq!(dout.len(), tokens.len() * dim, "embedding dout");
    for (row, &t) in dout.chunks_exact(dim).zip(tokens) {
        let t = t as usize;
        for (d, g) in dtable[t * dim..(t + 1) * dim].iter_mut().zip(row) {
            *d += *g;
        }
    }
}
