//! Cross-entropy over the vocabulary with an ignore index, as PyTorch's `CrossEntropyLoss`
//! with `ignore_index = -100` and mean reduction over the scored positions.

use rayon::prelude::*;

use crate::float::Float;

/// Label value of a position that is not scored.
pub const IGNORE_INDEX: i32 = -100;

/// Number of scored (non-ignored) targets.
pub fn scored_count(targets: &[i32]) -> usize {
    targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
}

/// Writes each row's log-sum-exp into `lse` and returns the summed loss over scored rows
/// (divide by [`scored_count`] for the mean). Targets must be in `0..vocab` or the ignore index.
/// The sum runs in row order so the result does not depend on thread scheduling.
pub fn cross_entropy_forward<T: Float>(
    lse: &mut [T],
    logits: &[T],
    targets: &[i32],
    vocab: usize,
) -> T {
    assert_eq!(logits.len(), targets.len() * vocab, "cross-entropy logits");
    assert_eq!(lse.len(), targets.len(), "cross-entropy lse");
    lse.par_iter_mut()
        .zip(logits.par_chunks(vocab))
        .for_each(|(l, row)| {
            let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
            *l = max + row.iter().map(|&v| (v - max).exp()).sum::<T>().ln();
        });
    lse.iter()
        .zip(logits.chunks_exact(vocab))
        .zip(targets)
        .filter(|(_, &t)| t != IGNORE_INDEX)
        .map(|((&l, row), &t)| l - row[t as usize])
        .sum()
}

/// Accumulates `dlogits += dloss · (softmax(logits) − onehot(target))` for scored rows;
/// `dloss` is the gradient of the reported loss w.r.t. each row's loss (1/count for a mean).
pub fn cross_entropy_backward<T: Float>(
    dlogits: &mut [T],
    logits: &[T],
    targets: &[i32],
    lse: &[T],
    vocab: usize,
    dloss: T,
) {
    assert_eq!(dlogits.len(), logits.len(), "cross-entropy dlogits");
    dlogits
        .par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(targets.par_iter().zip(lse.par_iter()))
        .filter(|(_, (&t, _))| t != IGNORE_INDEX)
        .for_each(|((d, row), (&t, &l))| {
            for (dv, &v) in d.iter_mut().zip(row) {
                *dv += dloss * (v - l).exp();
            }
            d[t as usize] -= dloss;
        });
}
