//! Cross-entropy over the vocabulary with an ignore index, as PyTorch's `CrossEntropyLoss`
//! with `ignore_index = -100` and mean reduction over the scored positions. The per-row passes
//! run in parallel over blocks of rows, each block one vectorised loop (`ops::simd`).

use crate::float::Float;
use crate::ops::pool;
use crate::ops::simd::{self, Kernel};

/// Label value of a position that is not scored.
pub const IGNORE_INDEX: i32 = -100;

/// Rows per parallel task.
const ROWS: usize = 64;

/// Independent partial sums per row, so that the row's max and sum vectorise (a single running
/// sum is one dependency chain that the compiler may not reorder).
const LANES: usize = 16;

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
    pool::for_each_chunk(lse, ROWS, |task, lse| {
        let logits = &logits[task * ROWS * vocab..][..lse.len() * vocab];
        simd::dispatch(LogSumExp { lse, logits, vocab })
    });
    lse.iter()
        .zip(logits.chunks_exact(vocab))
        .zip(targets)
        .filter(|(_, &t)| t != IGNORE_INDEX)
        .map(|((&l, row), &t)| l - row[t as usize])
        .sum()
}

struct LogSumExp<'a, T> {
    lse: &'a mut [T],
    logits: &'a [T],
    vocab: usize,
}

impl<T: Float> Kernel for LogSumExp<'_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        for (l, row) in self
            .lse
            .iter_mut()
            .zip(self.logits.chunks_exact(self.vocab))
        {
            let max = lanes(row, T::neg_infinity(), |m, v| m.max(v), |m, v| m.max(v));
            let sum = lanes(
                row,
                T::zero(),
                |s, v| s + (v - max).exp_simd::<FUSED>(),
                |a, b| a + b,
            );
            *l = max + sum.ln();
        }
    }
}

/// Folds `row` with `step` into `LANES` independent accumulators, then combines them with `merge`.
#[inline(always)]
fn lanes<T: Float>(row: &[T], init: T, step: impl Fn(T, T) -> T, merge: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; LANES];
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    for block in blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a = step(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a = step(*a, v);
    }
    acc.into_iter().fold(init, merge)
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
    assert_eq!(logits.len(), targets.len() * vocab, "cross-entropy logits");
    assert_eq!(lse.len(), targets.len(), "cross-entropy lse");
    pool::for_each_chunk(dlogits, (ROWS * vocab).max(1), |task, dlogits| {
        let rows = task * ROWS..task * ROWS + dlogits.len() / vocab.max(1);
        let logits = &logits[rows.start * vocab..rows.end * vocab];
        let (targets, lse) = (&targets[rows.clone()], &lse[rows]);
        simd::dispatch(SoftmaxGrad {
            dlogits,
            logits,
            targets,
            lse,
            vocab,
            dloss,
        })
    });
}

struct SoftmaxGrad<'a, T> {
    dlogits: &'a mut [T],
    logits: &'a [T],
    targets: &'a [i32],
    lse: &'a [T],
    vocab: usize,
    dloss: T,
}

impl<T: Float> Kernel for SoftmaxGrad<'_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        let rows = self.dlogits.chunks_exact_mut(self.vocab);
        let inputs = self.logits.chunks_exact(self.vocab);
        for ((d, row), (&t, &l)) in rows.zip(inputs).zip(self.targets.iter().zip(self.lse)) {
            if t == IGNORE_INDEX {
                continue;
            }
            for (dv, &v) in d.iter_mut().zip(row) {
                *dv += self.dloss * (v - l).exp_simd::<FUSED>();
            }
            d[t as usize] -= self.dloss;
        }
    }
}
