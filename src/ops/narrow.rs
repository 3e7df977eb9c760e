//! Products with a LoRA adapter's rank-r side, r much smaller than the other sizes. `ops::gemm`
//! packs B and blocks C in 64-column panels, whose wide register blocks an r-column C leaves
//! unused; these run the attention's register-blocked kernel (`microgemm`) with every operand read
//! in place, transposing only the r-row adapter matrices. Where C is narrow (`x·Aᵀ`, `dY·B`) its
//! r columns fit one register block, so each row of x is read once for all r outputs (a dot
//! product per output, in baseline code, took 3.5% of a 4,096-token step's profile); where C is
//! wide (`y += t·B`, and the adapter gradients `tᵀ·x`), each element of C is loaded and stored
//! once rather than once per rank. Row-wise work runs in parallel over rows; the sums over rows
//! (the adapter gradients) run in row order, so results do not depend on scheduling.

use crate::float::Float;
use crate::ops::microgemm::{product, Product};
use crate::ops::pool;
use crate::ops::scratch::with_buffer;

/// Rows per parallel task in `narrow_nt` and `narrow_nn`.
const NARROW_ROWS: usize = 32;

/// Rows of y per parallel task in `widen_nn`: a multiple of the kernel's register blocks.
const WIDEN_ROWS: usize = 64;

/// `rows × cols` row-major `x` transposed into `t` (`cols × rows`).
fn transpose<T: Float>(t: &mut [T], x: &[T], rows: usize, cols: usize) {
    for (r, row) in x.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
}

/// `out[m×r] (+)= alpha · x[m×k] · a[r×k]ᵀ`: a transposed once, then [`narrow_nn`]'s product.
#[allow(clippy::too_many_arguments)]
pub fn narrow_nt<T: Float>(
    out: &mut [T],
    x: &[T],
    a: &[T],
    m: usize,
    k: usize,
    r: usize,
    alpha: T,
    acc: bool,
) {
    assert!(a.len() >= r * k, "narrow_nt sizes");
    with_buffer(k * r, |at: &mut [T]| {
        transpose(at, a, r, k);
        rows_times(out, x, at, (m, k, r), alpha, acc);
    });
}

/// `out[m×r] = x[m×n] · b[n×r]` (b row-major, r columns).
pub fn narrow_nn<T: Float>(out: &mut [T], x: &[T], b: &[T], m: usize, n: usize, r: usize) {
    rows_times(out, x, b, (m, n, r), T::one(), false);
}

/// `out[m×r] (+)= alpha · x[m×k] · b[k×r]` on the register-blocked kernel, in parallel over
/// blocks of rows. Without `acc`, out is only written (it may hold NaN).
fn rows_times<T: Float>(
    out: &mut [T],
    x: &[T],
    b: &[T],
    (m, k, r): (usize, usize, usize),
    alpha: T,
    acc: bool,
) {
    assert!(
        out.len() >= m * r && x.len() >= m * k && b.len() >= k * r,
        "narrow product sizes"
    );
    if r == 0 || m == 0 {
        return;
    }
    pool::for_each_chunk(&mut out[..m * r], NARROW_ROWS * r, |task, out| {
        // SAFETY: the task's rows of x (k each) lie inside x's m rows, b holds k rows of r, and
        // out is the task's own rows (r each) of a distinct mutable borrow, so C overlaps
        // neither A nor B.
        unsafe {
            product(&Product {
                m: out.len() / r,
                k,
                n: r,
                alpha,
                a: x.as_ptr().add(task * NARROW_ROWS * k),
                rsa: k,
                csa: 1,
                b: b.as_ptr(),
                rsb: r,
                accumulate: acc,
                c: out.as_mut_ptr(),
                ldc: r,
            })
        }
    });
}

/// `y[m×n] += alpha · t[m×r] · b[n×r]ᵀ`: b transposed once, then r row updates per row.
pub fn widen_nt<T: Float>(y: &mut [T], t: &[T], b: &[T], m: usize, r: usize, n: usize, alpha: T) {
    assert!(
        y.len() >= m * n && t.len() >= m * r && b.len() >= n * r,
        "widen_nt sizes"
    );
    with_buffer(n * r, |bt: &mut [T]| {
        transpose(bt, b, n, r);
        widen_nn(y, t, bt, m, r, n, alpha);
    });
}

/// `y[m×n] += alpha · t[m×r] · a[r×n]`, in blocks of `WIDEN_ROWS` rows.
pub fn widen_nn<T: Float>(y: &mut [T], t: &[T], a: &[T], m: usize, r: usize, n: usize, alpha: T) {
    assert!(
        y.len() >= m * n && t.len() >= m * r && a.len() >= r * n,
        "widen_nn sizes"
    );
    if r == 0 || m == 0 || n == 0 {
        return;
    }
    pool::for_each_chunk(&mut y[..m * n], WIDEN_ROWS * n, |task, y_rows| {
        let t_rows = &t[task * WIDEN_ROWS * r..];
        // SAFETY: t_rows holds at least the block's rows of t (r each; t has m of them), y_rows
        // its rows of y (n each), and a holds r rows of n; y is a distinct mutable borrow, so C
        // overlaps neither A nor B.
        unsafe {
            product(&Product {
                m: y_rows.len() / n,
                k: r,
                n,
                alpha,
                a: t_rows.as_ptr(),
                rsa: r,
                csa: 1,
                b: a.as_ptr(),
                rsb: n,
                accumulate: true,
                c: y_rows.as_mut_ptr(),
                ldc: n,
            })
        }
    });
}

/// Columns of g per parallel task in `narrow_tn`: one AVX-512 register block of the kernel.
const GRAD_COLUMNS: usize = 64;
/// Rows of x per product in `narrow_tn`: a task's 64-column strip of them (64 KiB in f32) stays
/// in L2 while each of the kernel's row panels of g passes over it.
const GRAD_ROWS: usize = 256;

/// `g[r×k] += alpha · t[m×r]ᵀ · x[m×k]` (an adapter gradient). Tasks take strips of columns and
/// pass over the rows of x in blocks, so each element is summed in row order and results do not
/// depend on scheduling.
#[allow(clippy::too_many_arguments)]
pub fn narrow_tn<T: Float>(g: &mut [T], t: &[T], x: &[T], m: usize, r: usize, k: usize, alpha: T) {
    assert!(
        g.len() >= r * k && t.len() >= m * r && x.len() >= m * k,
        "narrow_tn sizes"
    );
    // Shared by the tasks, each of which writes only its own columns.
    let g = pool::Base::new(g);
    pool::for_each(k.div_ceil(GRAD_COLUMNS), |strip| {
        let c0 = strip * GRAD_COLUMNS;
        for m0 in (0..m).step_by(GRAD_ROWS) {
            // SAFETY: tᵀ's rows m0.. (element (c, i) at t[i·r + c]) lie inside the m·r
            // elements of t, x's rows m0.. and columns c0.. inside its m rows of k, and g's
            // columns c0.. inside its r rows of k; g is a distinct mutable borrow whose
            // columns c0..c0 + n only this task writes.
            unsafe {
                product(&Product {
                    m: r,
                    k: GRAD_ROWS.min(m - m0),
                    n: GRAD_COLUMNS.min(k - c0),
                    alpha,
                    a: t.as_ptr().add(m0 * r),
                    rsa: 1,
                    csa: r,
                    b: x.as_ptr().add(m0 * k + c0),
                    rsb: k,
                    accumulate: true,
                    c: g.at(c0),
                    ldc: k,
                })
            }
        }
    });
}

/// `g[n×r] += alpha · dy[m×n]ᵀ · t[m×r]`: accumulated transposed (`r×n`, row updates along n) in
/// row order, then added into g.
#[allow(clippy::too_many_arguments)]
pub fn narrow_tn_transposed<T: Float>(
    g: &mut [T],
    dy: &[T],
    t: &[T],
    m: usize,
    n: usize,
    r: usize,
    alpha: T,
) {
    assert!(g.len() >= n * r, "narrow_tn_transposed sizes");
    with_buffer(r * n, |gt: &mut [T]| {
        gt.fill(T::zero());
        narrow_tn(gt, t, dy, m, r, n, alpha);
        for (o, g_row) in g.chunks_exact_mut(r.max(1)).take(n).enumerate() {
            for (c, g) in g_row.iter_mut().enumerate() {
                *g += gt[c * n + o];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `c[m×n] = Σ_k a(i, k)·b(k, j)` by its definition.
    fn product(
        m: usize,
        k: usize,
        n: usize,
        a: impl Fn(usize, usize) -> f64,
        b: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        (0..m * n)
            .map(|e| (0..k).map(|p| a(e / n, p) * b(p, e % n)).sum())
            .collect()
    }

    fn close(what: &str, got: &[f64], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                "{what}[{i}] = {g}, expected {w}"
            );
        }
    }

    #[test]
    fn narrow_products_match_their_definitions() {
        let mut rng = Rng::new(5);
        // (300, 130, 5): narrow_tn's tasks split both its rows and its columns, the last of each short.
        for (m, k, r) in [
            (1, 1, 1),
            (7, 37, 3),
            (33, 16, 8),
            (5, 100, 17),
            (300, 130, 5),
        ] {
            let mut rand = |n: usize| {
                (0..n)
                    .map(|_| rng.uniform_range(-1.0, 1.0))
                    .collect::<Vec<f64>>()
            };
            let (x, a, t, start) = (rand(m * k), rand(r * k), rand(m * r), rand(m * k.max(r)));
            let alpha = 0.75;
            let mut out = start[..m * r].to_vec();
            narrow_nt(&mut out, &x, &a, m, k, r, alpha, true);
            let xa = product(m, k, r, |i, p| x[i * k + p], |p, j| a[j * k + p]);
            let want: Vec<f64> = start[..m * r]
                .iter()
                .zip(&xa)
                .map(|(s, v)| s + alpha * v)
                .collect();
            close("narrow_nt", &out, &want);
            // a as an n×r matrix b (n = k): x·b.
            let mut out = vec![f64::NAN; m * r];
            narrow_nn(&mut out, &x, &a, m, k, r);
            close(
                "narrow_nn",
                &out,
                &product(m, k, r, |i, p| x[i * k + p], |p, j| a[p * r + j]),
            );
            let mut y = start[..m * k].to_vec();
            widen_nt(&mut y, &t, &a, m, r, k, alpha);
            let tb = product(m, r, k, |i, p| t[i * r + p], |p, j| a[j * r + p]);
            close(
                "widen_nt",
                &y,
                &start[..m * k]
                    .iter()
                    .zip(&tb)
                    .map(|(s, v)| s + alpha * v)
                    .collect::<Vec<_>>(),
            );
            let mut y = start[..m * k].to_vec();
            widen_nn(&mut y, &t, &a, m, r, k, alpha);
            let ta = product(m, r, k, |i, p| t[i * r + p], |p, j| a[p * k + j]);
            close(
                "widen_nn",
                &y,
                &start[..m * k]
                    .iter()
                    .zip(&ta)
                    .map(|(s, v)| s + alpha * v)
                    .collect::<Vec<_>>(),
            );
            let mut g = a.clone();
            narrow_tn(&mut g, &t, &x, m, r, k, alpha);
            let ttx = product(r, m, k, |i, p| t[p * r + i], |p, j| x[p * k + j]);
            close(
                "narrow_tn",
                &g,
                &a.iter()
                    .zip(&ttx)
                    .map(|(s, v)| s + alpha * v)
                    .collect::<Vec<_>>(),
            );
            let mut g = a.clone();
            narrow_tn_transposed(&mut g, &x, &t, m, k, r, alpha);
            let xtt = product(k, m, r, |i, p| x[p * k + i], |p, j| t[p * r + j]);
            close(
                "narrow_tn_transposed",
                &g,
                &a.iter()
                    .zip(&xtt)
                    .map(|(s, v)| s + alpha * v)
                    .collect::<Vec<_>>(),
            );
        }
    }
}
