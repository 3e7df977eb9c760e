//! Products read in place: `C[m×n] (+)= alpha·A[m×k]·B[k×n]` for the attention's tiles
//! (at most a few hundred rows) and for LoRA's rank-r products (k or m = r). A GEMM library copies
//! both operands into its own layout on every call, which for 64×64 tiles costs as much as the
//! product; here every operand is read where it lies. The callers arrange for B's rows and C's
//! rows to be contiguous (the head dimension of a tile copied once, a transposed tile, a token's
//! row), so a register block of MR rows × NR columns of C is updated with one vector load of B per
//! column chunk and one broadcast of A per row, and A may have any strides.
//!
//! The kernel is written once in plain Rust and compiled three times per type: with AVX-512, with
//! AVX2 + FMA (both chosen at run time when the CPU has them) and for the baseline target.

use std::any::TypeId;

use crate::float::{madd, Float};

/// One product's operands. Element (r, c) of A is `a[r·rsa + c·csa]`, of B `b[r·rsb + c]`, of C
/// `c[r·ldc + c]`. With `accumulate` the product is added to C; without, it overwrites C, which is
/// then not read (it may hold NaN).
#[derive(Clone, Copy)]
pub(crate) struct Product<T> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: T,
    pub a: *const T,
    pub rsa: usize,
    pub csa: usize,
    pub b: *const T,
    pub rsb: usize,
    pub accumulate: bool,
    pub c: *mut T,
    pub ldc: usize,
}

/// Runs `p` with the fastest kernel this CPU supports.
///
/// # Safety
/// Every element the sizes and strides reach must lie inside a live allocation; C must not
/// overlap A or B, and nothing else may access C meanwhile.
pub(crate) unsafe fn product<T: Float>(p: &Product<T>) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx512 || avx2 {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                // SAFETY: T is f32 (same TypeId), so this reinterprets the product as its own
                // type; the CPU has the features the kernel was compiled for.
                let p = unsafe { &*(p as *const Product<T> as *const Product<f32>) };
                return unsafe {
                    if avx512 {
                        product_avx512(p)
                    } else {
                        product_avx2(p)
                    }
                };
            }
            if TypeId::of::<T>() == TypeId::of::<f64>() {
                // SAFETY: T is f64, as above.
                let p = unsafe { &*(p as *const Product<T> as *const Product<f64>) };
                return unsafe {
                    if avx512 {
                        product_f64_avx512(p)
                    } else {
                        product_f64_avx2(p)
                    }
                };
            }
        }
    }
    unsafe { blocked::<T, 4, 8, false>(p) }
}

/// The f32 blocks' register shapes with half the lanes per vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_f64_avx512(p: &Product<f64>) {
    unsafe { blocked::<f64, 4, 32, true>(p) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_f64_avx2(p: &Product<f64>) {
    unsafe { blocked::<f64, 6, 8, true>(p) }
}

/// 4 × 64 f32 accumulators are 16 of the 32 zmm registers, leaving room for 4 vectors of B and a
/// broadcast of A.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(p: &Product<f32>) {
    unsafe { blocked::<f32, 4, 64, true>(p) }
}

/// 6 × 16 f32 accumulators are 12 of the 16 ymm registers, leaving two for B and one for a
/// broadcast of A: 12 independent chains of fused multiply-adds keep both FMA pipes busy through
/// their 4–5 cycle latency, where 4 × 16 (8 chains) left a third of them idle.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(p: &Product<f32>) {
    unsafe { blocked::<f32, 6, 16, true>(p) }
}

/// The walk below for C accumulated into or overwritten, one copy each, so that the store's
/// choice is made at compile time. Tested at run time in every row's store, it cost an
/// accumulating 4 × 64 block in L1 ~530 cycles against ~523 at k = 64, ~1048 against ~1035 at
/// k = 128 (medians of ten rounds).
#[inline(always)]
unsafe fn blocked<T: Float, const MR: usize, const NR: usize, const FUSED: bool>(p: &Product<T>) {
    if p.accumulate {
        unsafe { walk::<T, MR, NR, FUSED, true>(p) }
    } else {
        unsafe { walk::<T, MR, NR, FUSED, false>(p) }
    }
}

/// Walks C in panels of NR columns. The columns right of the last full panel go through panels
/// of 48, 32, 16 and 8 columns where they fit (so that a head dimension of 32 or 96 under the
/// 64-wide AVX-512 blocks stays vectorised, and the MLP's 688 = 10·64 + 48 columns end in one
/// block of 12 accumulators instead of a 32-wide block and a 16-wide one, whose four chains of
/// dependent multiply-adds leave the FMA units half idle), and the last `n mod 8` through a scalar
/// block, row block by row block alongside the first panel: there its latency-bound work overlaps
/// the vector blocks' and finds A's rows in L1 (after the panels, it made the lm head's n = 258
/// product 15% slower). Columns outermost: our products are one or two panels wide (the
/// attention's tiles, the GEMM's packed panels), so the choice of widths runs once per panel
/// instead of once per block of rows, and the loop over a panel's row blocks is as plain as a
/// hand-written one. On a 64×64×64 product in L1 that took a 4 × 64 block from ~543 to ~524
/// cycles (512 is the FMA bound).
#[inline(always)]
unsafe fn walk<T: Float, const MR: usize, const NR: usize, const FUSED: bool, const ACC: bool>(
    p: &Product<T>,
) {
    let mut edge = p.n % 8;
    let mut j = 0;
    while j + NR <= p.n {
        unsafe { column_panel::<T, MR, NR, FUSED, ACC>(p, j, NR, edge) };
        (j, edge) = (j + NR, 0);
    }
    unsafe { narrower_panel::<T, MR, NR, 48, FUSED, ACC>(p, &mut j, &mut edge) };
    unsafe { narrower_panel::<T, MR, NR, 32, FUSED, ACC>(p, &mut j, &mut edge) };
    unsafe { narrower_panel::<T, MR, NR, 16, FUSED, ACC>(p, &mut j, &mut edge) };
    unsafe { narrower_panel::<T, MR, NR, 8, FUSED, ACC>(p, &mut j, &mut edge) };
    if edge > 0 {
        // No panel to go beside (n < 8): the edge is C's only panel.
        unsafe { column_panel::<T, MR, 8, FUSED, ACC>(p, j, edge, 0) };
    }
}

/// The panel of W columns at `*j`, when W is narrower than the walk's full panels and fits in the
/// columns left; it takes the edge along (see `column_panel`) and moves `*j` past itself.
#[inline(always)]
unsafe fn narrower_panel<
    T: Float,
    const MR: usize,
    const NR: usize,
    const W: usize,
    const FUSED: bool,
    const ACC: bool,
>(
    p: &Product<T>,
    j: &mut usize,
    edge: &mut usize,
) {
    if NR > W && *j + W <= p.n {
        unsafe { column_panel::<T, MR, W, FUSED, ACC>(p, *j, W, *edge) };
        (*j, *edge) = (*j + W, 0);
    }
}

/// Columns `j..j + cols` of C (`cols <= W`), and the last `edge` columns of C when that is not 0,
/// in blocks of MR rows, then the last `m mod MR` rows in blocks of 4, 2 and 1 rows, so that every
/// row stays on the vector path.
#[inline(always)]
unsafe fn column_panel<
    T: Float,
    const MR: usize,
    const W: usize,
    const FUSED: bool,
    const ACC: bool,
>(
    p: &Product<T>,
    j: usize,
    cols: usize,
    edge: usize,
) {
    let mut i = 0;
    while i + MR <= p.m {
        unsafe { row_block::<T, MR, W, FUSED, ACC>(p, i, j, cols, edge) };
        i += MR;
    }
    if MR > 4 && i + 4 <= p.m {
        unsafe { row_block::<T, 4, W, FUSED, ACC>(p, i, j, cols, edge) };
        i += 4;
    }
    if MR > 2 && i + 2 <= p.m {
        unsafe { row_block::<T, 2, W, FUSED, ACC>(p, i, j, cols, edge) };
        i += 2;
    }
    if i < p.m {
        unsafe { row_block::<T, 1, W, FUSED, ACC>(p, i, j, cols, edge) };
    }
}

/// Rows `i..i + MR` of a column panel: its block at (i, j), then, when `edge` is not 0, the
/// block of C's last `edge` columns.
#[inline(always)]
unsafe fn row_block<
    T: Float,
    const MR: usize,
    const W: usize,
    const FUSED: bool,
    const ACC: bool,
>(
    p: &Product<T>,
    i: usize,
    j: usize,
    cols: usize,
    edge: usize,
) {
    unsafe { block_at::<T, MR, W, FUSED, ACC>(p, i, j, cols) };
    if edge > 0 {
        unsafe { block_at::<T, MR, 8, FUSED, ACC>(p, i, p.n - edge, edge) };
    }
}

/// The MR × `cols` block of C at (i, j): a full block of W columns in registers, or, cut by the
/// right edge of C (`cols < W`), a scalar one. `FUSED` uses fused multiply-adds (only where the
/// target has them: elsewhere `mul_add` would be a library call).
#[inline(always)]
unsafe fn block_at<
    T: Float,
    const MR: usize,
    const W: usize,
    const FUSED: bool,
    const ACC: bool,
>(
    p: &Product<T>,
    i: usize,
    j: usize,
    cols: usize,
) {
    let acc = if cols == W {
        unsafe { full_block::<T, MR, W, FUSED>(p, i, j) }
    } else {
        unsafe { edge_block::<T, MR, W>(p, i, j, cols) }
    };
    unsafe { store::<T, MR, W, FUSED, ACC>(p, &acc, i, j, cols) };
}

/// `A[i..i+MR, :]·B[:, j..j+NR]`, kept in registers.
#[inline(always)]
unsafe fn full_block<T: Float, const MR: usize, const NR: usize, const FUSED: bool>(
    p: &Product<T>,
    i: usize,
    j: usize,
) -> [[T; NR]; MR] {
    let mut acc = [[T::zero(); NR]; MR];
    for kk in 0..p.k {
        // SAFETY (whole block): the caller guarantees every element the sizes reach is valid.
        let b_row: [T; NR] = unsafe { std::ptr::read_unaligned(p.b.add(kk * p.rsb + j).cast()) };
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let a = unsafe { *p.a.add((i + r) * p.rsa + kk * p.csa) };
            for (c, &b) in acc_row.iter_mut().zip(&b_row) {
                *c = madd::<T, FUSED>(a, b, *c);
            }
        }
    }
    acc
}

/// The same for a block cut by the right edge of C, `cols < NR`.
#[inline(never)]
unsafe fn edge_block<T: Float, const MR: usize, const NR: usize>(
    p: &Product<T>,
    i: usize,
    j: usize,
    cols: usize,
) -> [[T; NR]; MR] {
    let mut acc = [[T::zero(); NR]; MR];
    for kk in 0..p.k {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let a = unsafe { *p.a.add((i + r) * p.rsa + kk * p.csa) };
            for (c, acc) in acc_row.iter_mut().enumerate().take(cols) {
                *acc += a * unsafe { *p.b.add(kk * p.rsb + j + c) };
            }
        }
    }
    acc
}

/// `C[block] (+)= alpha·acc`, reading C only when accumulating, as one fused multiply-add per
/// element where the target has them. A full-width row goes through a fixed-size array so that it
/// is vectorized: a slice of run-time length compiled to 3·NR scalar operations per row, a fifth
/// of a 64-deep product's time.
#[inline(always)]
unsafe fn store<T: Float, const MR: usize, const NR: usize, const FUSED: bool, const ACC: bool>(
    p: &Product<T>,
    acc: &[[T; NR]; MR],
    i: usize,
    j: usize,
    cols: usize,
) {
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY (whole loop): row i + r < m and columns j..j + cols <= n lie inside C by the
        // caller's contract.
        let c = unsafe { p.c.add((i + r) * p.ldc + j) };
        if cols == NR {
            let row: [T; NR] = if ACC {
                let old: [T; NR] = unsafe { std::ptr::read_unaligned(c.cast()) };
                std::array::from_fn(|col| madd::<T, FUSED>(p.alpha, acc_row[col], old[col]))
            } else {
                acc_row.map(|a| p.alpha * a)
            };
            unsafe { std::ptr::write_unaligned(c.cast(), row) };
        } else {
            let c_row = unsafe { std::slice::from_raw_parts_mut(c, cols) };
            for (x, &a) in c_row.iter_mut().zip(acc_row) {
                *x = if ACC {
                    madd::<T, FUSED>(p.alpha, a, *x)
                } else {
                    p.alpha * a
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    type Kernel = unsafe fn(&Product<f32>);

    /// The product by its definition, in f64.
    fn reference(p: &Product<f64>, a: &[f64], b: &[f64], c: &[f64]) -> Vec<f64> {
        let mut out = c.to_vec();
        for i in 0..p.m {
            for j in 0..p.n {
                let dot: f64 = (0..p.k)
                    .map(|kk| a[i * p.rsa + kk * p.csa] * b[kk * p.rsb + j])
                    .sum();
                let old = if p.accumulate { c[i * p.ldc + j] } else { 0.0 };
                out[i * p.ldc + j] = p.alpha * dot + old;
            }
        }
        out
    }

    /// Random ragged shapes, strided and transposed A, padded B and C rows, C overwritten (poisoned
    /// with NaN first) or accumulated into; f32 on whatever kernel this CPU picks, and every kernel this
    /// CPU can run, against the f64 definition.
    #[test]
    fn tile_products_match_their_definition_on_ragged_shapes() {
        let mut rng = Rng::new(11);
        for case in 0..300 {
            let pick = |rng: &mut Rng, hi: usize| 1 + (rng.uniform_range(0.0, hi as f64) as usize);
            let (m, k, n) = (pick(&mut rng, 70), pick(&mut rng, 70), pick(&mut rng, 140));
            let transposed = case % 2 == 1;
            let (rsa, csa) = if transposed { (1, m + 3) } else { (k + 2, 1) };
            let (rsb, ldc) = (n + case % 5, n + case % 3);
            let a: Vec<f64> = (0..m * rsa.max(1) + k * csa)
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect();
            let b: Vec<f64> = (0..k * rsb).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            let c: Vec<f64> = (0..m * ldc).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            let (alpha, accumulate) = (rng.uniform_range(0.5, 1.5), case % 3 != 0);
            let p64 = Product {
                m,
                k,
                n,
                alpha,
                a: a.as_ptr(),
                rsa,
                csa,
                b: b.as_ptr(),
                rsb,
                accumulate,
                c: std::ptr::null_mut(),
                ldc,
            };
            let want = reference(&p64, &a, &b, &c);
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&x| x as f32).collect(),
                b.iter().map(|&x| x as f32).collect(),
            );
            let mut kernels: Vec<(&str, Kernel)> = vec![
                ("dispatched", product::<f32>),
                ("baseline", blocked::<f32, 4, 8, false>),
            ];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    kernels.push(("avx512", product_avx512));
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    kernels.push(("avx2", product_avx2));
                }
            }
            for (name, kernel) in kernels {
                let mut c32: Vec<f32> = c
                    .iter()
                    .map(|&x| if accumulate { x as f32 } else { f32::NAN })
                    .collect();
                let p32 = Product {
                    m,
                    k,
                    n,
                    alpha: alpha as f32,
                    a: a32.as_ptr(),
                    rsa,
                    csa,
                    b: b32.as_ptr(),
                    rsb,
                    accumulate,
                    c: c32.as_mut_ptr(),
                    ldc,
                };
                // SAFETY: the buffers above cover every index the sizes and strides reach.
                unsafe { kernel(&p32) };
                for i in 0..m {
                    for j in 0..ldc {
                        let (got, want) = (f64::from(c32[i * ldc + j]), want[i * ldc + j]);
                        let expect = if j < n {
                            want
                        } else if !accumulate {
                            f64::NAN
                        } else {
                            c[i * ldc + j] as f32 as f64
                        };
                        let ok = if expect.is_nan() {
                            got.is_nan()
                        } else {
                            (got - expect).abs() <= 1e-5 * (k as f64).sqrt() * (1.0 + expect.abs())
                        };
                        assert!(ok, "{name} case {case} m={m} k={k} n={n}: C[{i},{j}] = {got}, expected {expect}");
                    }
                }
            }
            let mut c64: Vec<f64> = c
                .iter()
                .map(|&x| if accumulate { x } else { f64::NAN })
                .collect();
            // SAFETY: as above.
            unsafe {
                product(&Product {
                    c: c64.as_mut_ptr(),
                    ..p64
                })
            };
            for (idx, (&got, &want)) in c64.iter().zip(&want).enumerate() {
                let col = idx % ldc;
                if col < n {
                    assert!(
                        (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                        "f64 case {case}: C[{idx}] = {got}, expected {want}"
                    );
                }
            }
        }
    }
}
