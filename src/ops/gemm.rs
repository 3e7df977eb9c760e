//! Every layer's GEMM, `C (+)= alpha·A·B` (a token per row of A and C, or for a weight gradient
//! an output feature per row), on the attention's register-blocked tile kernel (`microgemm`). B,
//! a weight matrix (or the activations, for a weight gradient) read through any strides, is copied
//! once per call into panels of `KC` rows × `NC` columns, each 32 KiB in f32, so that one
//! panel stays in L1 while the kernel sweeps a whole chunk of A's rows past it; A is read in place
//! (its rows are contiguous, and the kernel broadcasts from four of them at a time); chunks of
//! rows of C go to different threads, about four per thread.

use crate::float::Float;
use crate::ops::microgemm::{product, Product};
use crate::ops::pool;
use crate::ops::scratch::with_buffer;

/// Columns of B per packed panel: one AVX-512 register block of the kernel.
const NC: usize = 64;
/// Rows of B per packed panel (the depth of one product): NC·KC f32 are 32 KiB, two thirds of L1.
const KC: usize = 128;
/// Rows of a packed panel that the transposing copy fills together.
const PACK_ROWS: usize = 16;
/// The most rows of C per parallel task: its rows of A (MC·KC f32 per panel, 128 KiB) stay in L2.
const MC: usize = 256;
/// The fewest rows per task, so that a short C (a weight gradient, one row per output feature)
/// still spreads over the threads while each task keeps a few register blocks of rows.
const MIN_ROWS: usize = 32;

/// A read-only matrix: element (r, c) is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<T> Strided<'_, T> {
    /// Whether every element of a `rows × cols` matrix lies inside `data`.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows * cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c[m×n] (+)= alpha · a[m×k] · b[k×n]`, `c` row-major with rows `n` apart; `accumulate` adds
/// to `c` instead of overwriting it.
pub(crate) fn gemm<T: Float>(
    c: &mut [T],
    a: Strided<'_, T>,
    b: Strided<'_, T>,
    (m, k, n): (usize, usize, usize),
    alpha: T,
    accumulate: bool,
) {
    assert!(
        c.len() >= m * n,
        "matmul output holds {} < {m}×{n}",
        c.len()
    );
    assert!(a.holds(m, k), "matmul left operand too short");
    assert!(b.holds(k, n), "matmul right operand too short");
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..m * n];
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let panels = n.div_ceil(NC);
    with_buffer(panels * k * NC, |packed: &mut [T]| {
        pack(b, k, n, packed);
        let packed = &*packed;
        let task_rows = m.div_ceil(4 * pool::threads()).clamp(MIN_ROWS, MC);
        pool::for_each_chunk(c, task_rows * n, |chunk, c_rows| {
            let rows = c_rows.len() / n;
            let row0 = chunk * task_rows;
            for panel in 0..panels {
                let (j0, cols) = (panel * NC, NC.min(n - panel * NC));
                for k0 in (0..k).step_by(KC) {
                    let depth = KC.min(k - k0);
                    // SAFETY: the asserts above keep rows row0.. row0 + rows and columns
                    // k0.. k0 + depth of A inside `a.data`; the panel's rows k0.. k0 + depth
                    // lie inside `packed` (k·NC per panel); C is this task's own chunk, a
                    // distinct mutable borrow, with `cols` columns from j0 inside each row.
                    unsafe {
                        product(&Product {
                            m: rows,
                            k: depth,
                            n: cols,
                            alpha,
                            a: a.data.as_ptr().add(row0 * a.rs + k0 * a.cs),
                            rsa: a.rs,
                            csa: a.cs,
                            b: packed.as_ptr().add((panel * k + k0) * NC),
                            rsb: NC,
                            accumulate: accumulate || k0 > 0,
                            c: c_rows.as_mut_ptr().add(j0),
                            ldc: n,
                        })
                    };
                }
            }
        });
    });
}

/// Copies B into `packed[panel][row][0..NC]`, panel `p` holding columns `p·NC..` (the last one's
/// unused columns are left as they are: the products never read them), one panel per task.
fn pack<T: Float>(b: Strided<'_, T>, k: usize, n: usize, packed: &mut [T]) {
    pool::for_each_chunk(packed, k * NC, |panel, dst| {
        let (j0, cols) = (panel * NC, NC.min(n - panel * NC));
        if b.cs == 1 {
            for (row, dst) in dst.chunks_exact_mut(NC).enumerate() {
                let at = row * b.rs + j0;
                dst[..cols].copy_from_slice(&b.data[at..at + cols]);
            }
        } else if b.rs == 1 {
            // B is a transposed weight (`nn.Linear`'s [out, in] read as [in, out]): each of its
            // columns is a contiguous row of the weight. Sixteen rows of the panel at a time
            // (4 KiB, held in L1 while every column writes into them): column by column over the
            // whole depth, each column's k values went to k different lines of a panel larger
            // than L1, and the copy took a tenth of the time of a 1,024-row product.
            for (block, dst) in dst.chunks_mut(PACK_ROWS * NC).enumerate() {
                let k0 = block * PACK_ROWS;
                for col in 0..cols {
                    let at = (j0 + col) * b.cs + k0;
                    let src = &b.data[at..at + dst.len() / NC];
                    for (dst, &v) in dst[col..].iter_mut().step_by(NC).zip(src) {
                        *dst = v;
                    }
                }
            }
        } else {
            for (row, dst) in dst.chunks_exact_mut(NC).enumerate() {
                for (col, dst) in dst[..cols].iter_mut().enumerate() {
                    *dst = b.data[row * b.rs + (j0 + col) * b.cs];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// One product in type T from f64 operands: A row-major or transposed, B in `layout` 0 (rows
    /// contiguous), 1 (a transposed weight) or 2 (both strides > 1), C poisoned with NaN unless
    /// accumulating. Returns C in f64 with the f64 definition beside it.
    fn run<T: Float>(
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        a_transposed: bool,
        layout: usize,
        accumulate: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut random =
            |len: usize| -> Vec<f64> { (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
        let (rsa, csa) = if a_transposed { (1, m) } else { (k, 1) };
        let (rsb, csb) = [(n, 1), (1, k), (2, 2 * k)][layout];
        let (a, b, start) = (
            random(m * k),
            random((k - 1) * rsb + (n - 1) * csb + 1),
            random(m * n),
        );
        let alpha = 0.625;
        let want: Vec<f64> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let dot: f64 = (0..k)
                    .map(|p| a[i * rsa + p * csa] * b[p * rsb + j * csb])
                    .sum();
                alpha * dot + if accumulate { start[e] } else { 0.0 }
            })
            .collect();
        let cast = |x: &[f64]| -> Vec<T> { x.iter().map(|&v| T::from_f64_lossy(v)).collect() };
        let (a, b) = (cast(&a), cast(&b));
        let mut c: Vec<T> = if accumulate {
            cast(&start)
        } else {
            vec![T::nan(); m * n]
        };
        gemm(
            &mut c,
            Strided {
                data: &a,
                rs: rsa,
                cs: csa,
            },
            Strided {
                data: &b,
                rs: rsb,
                cs: csb,
            },
            (m, k, n),
            T::from_f64_lossy(alpha),
            accumulate,
        );
        (c.iter().map(|v| v.to_f64().unwrap()).collect(), want)
    }

    /// Sizes across every blocking boundary (KC rows and NC columns of a packed panel, the rows
    /// of a task, the kernel's 4-row edge and its 48-, 8- and 1-column edge blocks), each layout,
    /// f32 and f64.
    #[test]
    fn gemm_matches_its_definition_across_block_boundaries() {
        let mut rng = Rng::new(17);
        let sizes = [
            (1, 1, 1),
            (3, 130, 65),
            (70, 300, 258),
            (257, 129, 64),
            (33, 64, 7),
            (9, 40, 112),
        ];
        for (case, &size) in sizes.iter().enumerate() {
            for layout in 0..3 {
                let (a_transposed, accumulate) = (case % 2 == 1, layout != 1);
                let (got, want) = run::<f32>(&mut rng, size, a_transposed, layout, accumulate);
                let tol = 1e-5 * (size.1 as f64).sqrt();
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= tol * (1.0 + w.abs()),
                        "f32 {size:?} layout {layout}: C[{e}] = {g}, expected {w}"
                    );
                }
                let (got, want) = run::<f64>(&mut rng, size, a_transposed, layout, accumulate);
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                        "f64 {size:?} layout {layout}: C[{e}] = {g}, expected {w}"
                    );
                }
            }
        }
    }
}
