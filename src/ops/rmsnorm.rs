//! RMSNorm as in Llama: `y = w ∘ x / sqrt(mean(x²) + eps)`.

use crate::float::{cst, Float};
use crate::ops::dot::{dot, dot3};
use crate::ops::pool;

/// Rows per parallel task.
const ROWS: usize = 32;

/// Columns of the weight gradient per parallel task.
const WEIGHT_COLUMNS: usize = 64;

/// Normalises each row of `x` (`rows × dim`) and saves the reciprocal RMS per row for backward.
pub fn rmsnorm_forward<T: Float>(
    out: &mut [T],
    rstd: &mut [T],
    x: &[T],
    weight: &[T],
    dim: usize,
    eps: f64,
) {
    assert_eq!(out.len(), x.len(), "rmsnorm out");
    assert_eq!(rstd.len() * dim, x.len(), "rmsnorm rstd");
    pool::for_each_chunk_pair(out, ROWS * dim, rstd, ROWS, |task, out, rstd| {
        let x = &x[task * ROWS * dim..];
        for ((o, r), xr) in out.chunks_exact_mut(dim).zip(rstd).zip(x.chunks_exact(dim)) {
            let ms = dot(xr, xr) / cst(dim as f64);
            *r = (ms + cst(eps)).sqrt().recip();
            for ((o, &xv), &w) in o.iter_mut().zip(xr).zip(weight) {
                *o = w * (xv * *r);
            }
        }
    });
}

/// Accumulates `dx` and (when given) `dweight` from `dout`.
///
/// With `n = x·r`: `dx = r·(g − n·mean(g∘n))` where `g = w∘dout`, and `dweight += Σ_rows dout∘n`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<T: Float>(
    dx: &mut [T],
    dweight: Option<&mut [T]>,
    dout: &[T],
    x: &[T],
    weight: &[T],
    rstd: &[T],
    dim: usize,
) {
    assert_eq!(dx.len(), x.len(), "rmsnorm dx");
    assert_eq!(dout.len(), x.len(), "rmsnorm dout");
    pool::for_each_chunk(dx, ROWS * dim, |task, dx| {
        let rows = task * ROWS * dim..task * ROWS * dim + dx.len();
        let (dout, x, rstd) = (&dout[rows.clone()], &x[rows], &rstd[task * ROWS..]);
        let rows = dx.chunks_exact_mut(dim).zip(dout.chunks_exact(dim));
        for (((dxr, dor), xr), &r) in rows.zip(x.chunks_exact(dim)).zip(rstd) {
            let mean_gn = dot3(weight, dor, xr) * r / cst(dim as f64);
            for (((d, &g), &xv), &w) in dxr.iter_mut().zip(dor).zip(xr).zip(weight) {
                *d += r * (w * g - xv * r * mean_gn);
            }
        }
    });
    if let Some(dw) = dweight {
        // Each task owns a range of columns and sums them over the rows in row order, so the
        // result does not depend on scheduling.
        pool::for_each_chunk(dw, WEIGHT_COLUMNS, |chunk, dw| {
            let c0 = chunk * WEIGHT_COLUMNS;
            for ((dor, xr), &r) in dout.chunks_exact(dim).zip(x.chunks_exact(dim)).zip(rstd) {
                let cols = c0..c0 + dw.len();
                for ((d, &g), &xv) in dw.iter_mut().zip(&dor[cols.clone()]).zip(&xr[cols]) {
                    *d += g * xv * r;
                }
            }
        });
    }
}
