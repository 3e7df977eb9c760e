//! The FlashAttention-2 loops on the CPU: a Q tile of `BR` rows streams over K/V tiles of `BC`
//! keys with an online softmax (forward) or recomputes the probabilities from the saved
//! log-sum-exp (backward). Scores live transposed, `st[key][query]`, so that every product reads
//! its B operand along contiguous rows: the Q and dO tiles, transposed or copied once per Q tile,
//! and the V (forward) or K (backward) tile, read in place from the head-major copies of K and V
//! that each call makes once. The softmax runs along rows with one lane per query. dK and dV
//! accumulate head-major too, in blocks that one task owns (the caller adds them into its tensors
//! at the end), and each Q tile's dQ in the thread's tile buffers, added once per tile. Each worker
//! thread keeps its tile buffers (O(BR·D), independent of N) across calls, so a training step
//! allocates nothing here after its first.

use std::ops::Range;

use super::plan::TilePlan;
use super::softmax::{column_max, exp_columns, softmax_grad_columns, ScoreTile};
use super::{AttnMask, AttnShape, AttnStats};
use crate::float::{cst, Float};
use crate::ops::dot::dot;
use crate::ops::microgemm::{product, Product};
use crate::ops::scratch::{with_scratch, Aligned};

/// Query rows per tile.
pub(super) const BR: usize = 64;
/// Keys per tile.
const BC: usize = 64;

/// The read-only inputs shared by every task: q in the caller's layout, k and v copied head-major,
/// `[batch, n_kv_heads, seq_len, head_dim]`.
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k_heads: &'a [T],
    pub v_heads: &'a [T],
    pub shape: &'a AttnShape,
    pub mask: &'a AttnMask,
}

/// The gradient of the output and what the forward saved, for the backward.
pub(super) struct Saved<'a, T> {
    pub dout: &'a [T],
    pub out: &'a [T],
    pub lse: &'a [T],
}

/// A tensor that parallel tasks write in disjoint rows: each task derives its rows from its own
/// (batch, head, tile) and no two tasks share one.
#[derive(Clone, Copy)]
pub(super) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `Shared` is only written through `Shared::at`, whose callers write disjoint rows.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn new(x: &mut [T]) -> Self {
        Shared {
            ptr: x.as_mut_ptr(),
            len: x.len(),
        }
    }

    /// A writable operand starting at `offset` with row stride `ld`.
    ///
    /// # Safety
    /// No other task may access the rows written through it meanwhile.
    unsafe fn at(self, offset: usize, ld: usize) -> Out<T> {
        Out {
            ptr: self.ptr,
            len: self.len,
            offset,
            ld,
        }
    }
}

impl<T: Float> Shared<T> {
    /// `x[offset..offset + src.len()] += src`.
    ///
    /// # Safety
    /// No other task may access those elements meanwhile.
    pub unsafe fn add_row(self, offset: usize, src: &[T]) {
        assert!(
            offset + src.len() <= self.len,
            "attention gradient row out of bounds"
        );
        // SAFETY: in bounds (asserted), and the caller's alone. As a slice (not one raw-pointer
        // update per element) the sum vectorises.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), src.len()) };
        for (x, &v) in dst.iter_mut().zip(src) {
            *x += v;
        }
    }
}

/// A read-only operand: element (r, c) is `data[offset + r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct In<'a, T> {
    data: &'a [T],
    offset: usize,
    rs: usize,
    cs: usize,
}

/// A written operand: element (r, c) is `ptr[offset + r·ld + c]`, inside `len` elements.
struct Out<T> {
    ptr: *mut T,
    len: usize,
    offset: usize,
    ld: usize,
}

impl<T> Out<T> {
    fn scratch(x: &mut [T], ld: usize) -> Self {
        Out {
            ptr: x.as_mut_ptr(),
            len: x.len(),
            offset: 0,
            ld,
        }
    }
}

fn row_major<T>(data: &[T], offset: usize, rs: usize) -> In<'_, T> {
    In {
        data,
        offset,
        rs,
        cs: 1,
    }
}

/// `c[m×n] (+)= alpha·a[m×k]·b[k×n]` (`+=` when `accumulate`); `b` must have unit column stride.
#[allow(clippy::too_many_arguments)]
fn tile_product<T: Float>(
    (m, k, n): (usize, usize, usize),
    alpha: T,
    a: In<'_, T>,
    b: In<'_, T>,
    accumulate: bool,
    c: Out<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |o: &In<'_, T>, rows: usize, cols: usize| {
        o.offset + (rows.max(1) - 1) * o.rs + (cols.max(1) - 1) * o.cs
    };
    assert!(b.cs == 1, "tile product: B needs unit column stride");
    assert!(
        (k == 0 || (last(&a, m, k) < a.data.len() && last(&b, k, n) < b.data.len()))
            && c.offset + (m - 1) * c.ld + n <= c.len,
        "tile product operand out of bounds"
    );
    // SAFETY: the asserts keep every element the strides reach inside its slice; C is either an
    // exclusive scratch borrow or rows of a `Shared` tensor that only this task writes, and the
    // inputs are shared borrows of other buffers, so C overlaps neither A nor B.
    unsafe {
        product(&Product {
            m,
            k,
            n,
            alpha,
            a: a.data.as_ptr().add(a.offset),
            rsa: a.rs,
            csa: a.cs,
            b: b.data.as_ptr().add(b.offset),
            rsb: b.rs,
            accumulate,
            c: c.ptr.add(c.offset),
            ldc: c.ld,
        });
    }
}

impl<T: Float> Inputs<'_, T> {
    fn scale(&self) -> T {
        cst((self.shape.head_dim as f64).sqrt().recip())
    }

    /// Offset of token `i` of query head `h` in batch `b` in a q-shaped tensor.
    fn q_at(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.shape.seq_len + i) * self.shape.n_heads + h) * self.shape.head_dim
    }

    /// Offset of token `i` of kv head `h` in batch `b` in the head-major k and v, whose rows are
    /// `head_dim` apart.
    fn head_at(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.shape.n_kv_heads + h) * self.shape.seq_len + i) * self.shape.head_dim
    }

    fn kv_head(&self, h: usize) -> usize {
        h / (self.shape.n_heads / self.shape.n_kv_heads)
    }

    /// Copies rows `rows` of head `h` of a q-shaped tensor, transposed, into `t[d·BR + r]`.
    /// Eight rows at a time, so that each column's eight values leave in one contiguous store
    /// instead of eight stores to eight cache lines.
    fn transpose_rows(&self, x: &[T], b: usize, h: usize, rows: &Range<usize>, t: &mut [T]) {
        const GROUP: usize = 8;
        let d = self.shape.head_dim;
        let row = |i: usize| {
            let at = self.q_at(b, i, h);
            &x[at..at + d]
        };
        let full = rows.len() / GROUP * GROUP;
        for r0 in (0..full).step_by(GROUP) {
            let src: [&[T]; GROUP] = std::array::from_fn(|k| row(rows.start + r0 + k));
            for (c, dst) in t.chunks_exact_mut(BR).take(d).enumerate() {
                let dst: &mut [T; GROUP] = (&mut dst[r0..r0 + GROUP]).try_into().unwrap();
                for (v, s) in dst.iter_mut().zip(&src) {
                    *v = s[c];
                }
            }
        }
        for r in full..rows.len() {
            for (c, &v) in row(rows.start + r).iter().enumerate() {
                t[c * BR + r] = v;
            }
        }
    }

    /// Copies the D values at each offset of `rows` (token offsets from `q_at`) into
    /// `t[r·D + c]`, so that a product reading them as its B operand walks one contiguous block.
    /// Read in place, their row stride (every head's D values: 1 or 2 KiB at our shapes) maps a
    /// tile's rows onto a few L1 sets, which evicts them before the next block of C comes back to
    /// them.
    fn pack_rows(&self, x: &[T], rows: impl Iterator<Item = usize>, t: &mut [T]) {
        let d = self.shape.head_dim;
        for (dst, at) in t.chunks_exact_mut(d).zip(rows) {
            dst.copy_from_slice(&x[at..at + d]);
        }
    }

    /// `st = scale·K[keys]·Qt`, the transposed scores of the planned rows, masked.
    fn scores(&self, b: usize, kvh: usize, keys: &Range<usize>, s: &mut Tiles<T>) {
        let (rows, d) = (s.plan.rows.len(), self.shape.head_dim);
        tile_product(
            (keys.len(), d, rows),
            self.scale(),
            row_major(self.k_heads, self.head_at(b, keys.start, kvh), d),
            row_major(&s.qt, 0, BR),
            false,
            Out::scratch(&mut s.st, BR),
        );
        s.plan.mask_columns(keys, &mut s.st, BR);
    }
}

/// One worker thread's tile buffers: the plan, the transposed Q tile (and dO tile), the packed
/// Q and dO tiles, the scores, the output accumulator or the gradient of the scores, the Q tile's
/// gradient, and per-row statistics.
struct Tiles<T> {
    plan: TilePlan,
    qt: Aligned<T>,
    dot: Aligned<T>,
    q_pack: Aligned<T>,
    do_pack: Aligned<T>,
    st: Aligned<T>,
    acc: Aligned<T>,
    dq: Aligned<T>,
    max: Vec<T>,
    sum: Vec<T>,
    shift: Vec<T>,
}

impl<T: Float> Tiles<T> {
    fn new(seq_len: usize, d: usize) -> Self {
        Tiles {
            plan: TilePlan::new(seq_len, BR, BC),
            qt: Aligned::new(d * BR, T::zero()),
            dot: Aligned::new(d * BR, T::zero()),
            q_pack: Aligned::new(BR * d, T::zero()),
            do_pack: Aligned::new(BR * d, T::zero()),
            st: Aligned::new(BC * BR, T::zero()),
            acc: Aligned::new(BR * d.max(BC), T::zero()),
            dq: Aligned::new(BR * d, T::zero()),
            max: vec![T::zero(); BR],
            sum: vec![T::zero(); BR],
            shift: vec![T::zero(); BR],
        }
    }

    fn fits(&self, seq_len: usize, d: usize) -> bool {
        self.plan.fits(seq_len) && self.qt.len() == d * BR
    }
}

/// Runs `f` on this thread's tile buffers for sequences of `seq_len` and heads of `d`,
/// (re)allocating them only when the shape changed.
fn with_tiles<T: Float, R>(seq_len: usize, d: usize, f: impl FnOnce(&mut Tiles<T>) -> R) -> R {
    with_scratch(
        |t: &Tiles<T>| t.fits(seq_len, d),
        || Tiles::new(seq_len, d),
        f,
    )
}

/// Forward of Q tile `tile` of head `h` in batch `b`: fills its output rows and log-sum-exp.
pub(super) fn forward_q_tile<T: Float>(
    x: &Inputs<'_, T>,
    (b, h, tile): (usize, usize, usize),
    out: Shared<T>,
    lse: Shared<T>,
) -> AttnStats {
    let (n, d) = (x.shape.seq_len, x.shape.head_dim);
    with_tiles(n, d, |s: &mut Tiles<T>| {
        let rows = tile * BR..((tile + 1) * BR).min(n);
        s.plan
            .plan(&x.mask.head(h, x.shape.n_heads, n), rows.clone(), n);
        x.transpose_rows(x.q, b, h, &rows, &mut s.qt);
        s.acc[..rows.len() * d].fill(T::zero());
        s.max.fill(T::neg_infinity());
        s.sum.fill(T::zero());
        let kvh = x.kv_head(h);
        for t in 0..s.plan.tiles.len() {
            let keys = s.plan.tiles[t].clone();
            x.scores(b, kvh, &keys, s);
            online_softmax(s, keys.len(), d);
            tile_product(
                (rows.len(), keys.len(), d),
                T::one(),
                In {
                    data: &s.st,
                    offset: 0,
                    rs: 1,
                    cs: BR,
                },
                row_major(x.v_heads, x.head_at(b, keys.start, kvh), d),
                true,
                Out::scratch(&mut s.acc, d),
            );
        }
        // SAFETY: rows `rows` of head h in batch b, and that head's lse entries, belong to this
        // task alone.
        unsafe { finish_q_tile(x, s, (b, h), out.at(0, 0), lse.at(0, 0)) };
        s.plan.stats(n)
    })
}

/// Turns the tile's masked scores into `exp(score − new max)`, updates each row's running max and
/// sum, and rescales the rows of the output accumulator whose max grew.
fn online_softmax<T: Float>(s: &mut Tiles<T>, keys: usize, d: usize) {
    let rows = s.plan.rows.len();
    let old_max: [T; BR] = std::array::from_fn(|r| s.max[r]);
    column_max(
        &ScoreTile {
            st: &mut s.st,
            keys,
            queries: rows,
            ld: BR,
        },
        &mut s.max,
    );
    for (shift, &max) in s.shift.iter_mut().zip(&s.max).take(rows) {
        // A row with no key seen yet (its keys lie in other rows' tiles) keeps max −inf; shifting
        // by 0 keeps its exp at exactly 0 instead of NaN.
        *shift = if max == T::neg_infinity() {
            T::zero()
        } else {
            max
        };
    }
    // The rescale factors exp(old max − new shift) are a one-key score tile, so that they take
    // the vectorised exp instead of a libm call per row.
    let mut rescales = old_max;
    let mut unused_sums = [T::zero(); BR];
    exp_columns(
        &mut ScoreTile {
            st: &mut rescales,
            keys: 1,
            queries: rows,
            ld: BR,
        },
        &s.shift,
        &mut unused_sums,
    );
    for (r, &rescale) in rescales.iter().enumerate().take(rows) {
        if rescale != T::one() {
            s.sum[r] *= rescale;
            s.acc[r * d..(r + 1) * d]
                .iter_mut()
                .for_each(|a| *a *= rescale);
        }
    }
    let mut tile = ScoreTile {
        st: &mut s.st,
        keys,
        queries: rows,
        ld: BR,
    };
    exp_columns(&mut tile, &s.shift, &mut s.sum);
}

/// `out = acc / sum`, `lse = max + ln(sum)`; every row saw at least its diagonal, so `sum > 0`.
///
/// # Safety
/// The rows of `s.plan.rows` of head h in batch b must belong to the caller alone.
unsafe fn finish_q_tile<T: Float>(
    x: &Inputs<'_, T>,
    s: &Tiles<T>,
    (b, h): (usize, usize),
    out: Out<T>,
    lse: Out<T>,
) {
    let d = x.shape.head_dim;
    for (r, i) in s.plan.rows.clone().enumerate() {
        let (at, stat) = (
            x.q_at(b, i, h),
            (b * x.shape.n_heads + h) * x.shape.seq_len + i,
        );
        assert!(
            at + d <= out.len && stat < lse.len,
            "attention output row out of bounds"
        );
        let inv = s.sum[r].recip();
        // SAFETY: in bounds (asserted), and the row is the caller's alone. As a slice (not one
        // raw-pointer store per element) the row's scaling vectorises.
        let out_row = unsafe { std::slice::from_raw_parts_mut(out.ptr.add(at), d) };
        for (o, &a) in out_row.iter_mut().zip(&s.acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
        // SAFETY: as above.
        unsafe { *lse.ptr.add(stat) = s.max[r] + s.sum[r].ln() };
    }
}

/// The gradients one backward task writes: dq of every query head that reads its kv head (in the
/// caller's layout), and dk, dv of that kv head (head-major, like the inputs' k and v).
pub(super) struct Grads<T> {
    pub dq: Shared<T>,
    pub dk: Shared<T>,
    pub dv: Shared<T>,
}

/// Backward of one (batch, kv head) over every query head that reads it, so that no two tasks
/// write the same gradient rows.
pub(super) fn backward_kv_head<T: Float>(
    x: &Inputs<'_, T>,
    saved: &Saved<'_, T>,
    (b, kvh): (usize, usize),
    g: &Grads<T>,
) {
    let (n, d) = (x.shape.seq_len, x.shape.head_dim);
    let per_kv = x.shape.n_heads / x.shape.n_kv_heads;
    with_tiles(n, d, |s: &mut Tiles<T>| {
        for h in kvh * per_kv..(kvh + 1) * per_kv {
            let mask = x.mask.head(h, x.shape.n_heads, n);
            for r0 in (0..n).step_by(BR) {
                let rows = r0..(r0 + BR).min(n);
                s.plan.plan(&mask, rows.clone(), n);
                x.transpose_rows(x.q, b, h, &rows, &mut s.qt);
                x.transpose_rows(saved.dout, b, h, &rows, &mut s.dot);
                x.pack_rows(x.q, rows.clone().map(|i| x.q_at(b, i, h)), &mut s.q_pack);
                x.pack_rows(
                    saved.dout,
                    rows.clone().map(|i| x.q_at(b, i, h)),
                    &mut s.do_pack,
                );
                load_row_stats(x, saved, (b, h), s);
                s.dq[..rows.len() * d].fill(T::zero());
                for t in 0..s.plan.tiles.len() {
                    let keys = s.plan.tiles[t].clone();
                    // SAFETY: this task alone writes dk, dv of kv head kvh.
                    unsafe { backward_tile(x, (b, kvh), &keys, s, g) };
                }
                for (r, i) in rows.clone().enumerate() {
                    // SAFETY: this task alone writes dq of the heads that read kv head kvh.
                    unsafe { g.dq.add_row(x.q_at(b, i, h), &s.dq[r * d..(r + 1) * d]) };
                }
            }
        }
    });
}

/// The planned rows' log-sum-exp (into `shift`) and `delta_i = dO_i · O_i` (FlashAttention-2's D,
/// into `max`).
fn load_row_stats<T: Float>(
    x: &Inputs<'_, T>,
    saved: &Saved<'_, T>,
    (b, h): (usize, usize),
    s: &mut Tiles<T>,
) {
    let sh = x.shape;
    let d = sh.head_dim;
    for (r, i) in s.plan.rows.clone().enumerate() {
        s.shift[r] = saved.lse[(b * sh.n_heads + h) * sh.seq_len + i];
        let at = x.q_at(b, i, h);
        let (dout, out) = (&saved.dout[at..at + d], &saved.out[at..at + d]);
        s.max[r] = dot(dout, out);
    }
}

/// One (Q tile, K tile) block, all transposed (`[key][query]`): Pᵀ = exp(Sᵀ − lse),
/// dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − delta), dQ += scale·dS·K (into the tile's own
/// accumulator), dK += scale·dSᵀ·Q. The B operands are the packed Q and dO tiles and the K tile
/// in place.
///
/// # Safety
/// The caller alone may write dk, dv of kv head `kvh` in batch `b`.
unsafe fn backward_tile<T: Float>(
    x: &Inputs<'_, T>,
    (b, kvh): (usize, usize),
    keys: &Range<usize>,
    s: &mut Tiles<T>,
    g: &Grads<T>,
) {
    let (d, rows) = (x.shape.head_dim, s.plan.rows.clone());
    let (nk, nr) = (keys.len(), rows.len());
    let kv_head_rows = x.head_at(b, keys.start, kvh);
    x.scores(b, kvh, keys, s);
    let mut tile = ScoreTile {
        st: &mut s.st,
        keys: nk,
        queries: nr,
        ld: BR,
    };
    exp_columns(&mut tile, &s.shift, &mut s.sum);
    let (p, ds) = (&s.st, &mut s.acc);
    tile_product(
        (nk, nr, d),
        T::one(),
        row_major(p, 0, BR),
        row_major(&s.do_pack, 0, d),
        true,
        unsafe { g.dv.at(kv_head_rows, d) },
    );
    tile_product(
        (nk, d, nr),
        T::one(),
        row_major(x.v_heads, kv_head_rows, d),
        row_major(&s.dot, 0, BR),
        false,
        Out::scratch(ds, BR),
    );
    softmax_grad_columns(
        &mut ScoreTile {
            st: ds,
            keys: nk,
            queries: nr,
            ld: BR,
        },
        p,
        &s.max,
    );
    let ds_t = In {
        data: &ds[..],
        offset: 0,
        rs: 1,
        cs: BR,
    };
    tile_product(
        (nr, nk, d),
        x.scale(),
        ds_t,
        row_major(x.k_heads, kv_head_rows, d),
        true,
        Out::scratch(&mut s.dq, d),
    );
    tile_product(
        (nk, nr, d),
        x.scale(),
        row_major(&ds[..], 0, BR),
        row_major(&s.q_pack, 0, d),
        true,
        unsafe { g.dk.at(kv_head_rows, d) },
    );
}
