//! The FlashAttention-2 loops on the CPU: Q tiles of `BR` rows stream over K/V tiles of `BC`
//! keys with an online softmax (forward) or recompute the probabilities from the saved
//! log-sum-exp (backward). Only tiles that hold at least one allowed (query, key) pair are ever
//! touched, and no buffer larger than a tile is allocated, so memory stays O(N·D) per head.

use std::ops::Range;

use super::mask::{HeadMask, RowKeys};
use super::softmax::{exp_shifted_sum, row_max};
use super::{AttnMask, AttnShape, AttnStats};
use crate::float::{cst, Float};

/// Query rows per tile.
const BR: usize = 64;
/// Keys per tile.
const BC: usize = 64;

/// The read-only inputs shared by every task.
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub shape: &'a AttnShape,
    pub mask: &'a AttnMask,
}

/// The gradient of the output and what the forward saved, for the backward.
pub(super) struct Saved<'a, T> {
    pub dout: &'a [T],
    pub out: &'a [T],
    pub lse: &'a [T],
}

impl<T: Float> Inputs<'_, T> {
    fn scale(&self) -> T {
        cst((self.shape.head_dim as f64).sqrt().recip())
    }

    fn head_mask(&self, head: usize) -> HeadMask {
        let s = self.shape;
        self.mask.head(head, s.n_heads, s.seq_len)
    }

    /// Rows `rows` of query head `head` in batch `b` as a `rows × D` matrix of a q-shaped tensor.
    fn q_rows<'a>(&self, x: &'a [T], b: usize, head: usize, rows: &Range<usize>) -> View<'a, T> {
        let s = self.shape;
        View::rows_of(
            x,
            (b * s.seq_len + rows.start) * s.n_heads + head,
            rows.len(),
            s.n_heads,
            s.head_dim,
        )
    }

    /// Rows `rows` of kv head `head` in batch `b` as a `rows × D` matrix of a k-shaped tensor.
    fn kv_rows<'a>(&self, x: &'a [T], b: usize, head: usize, rows: &Range<usize>) -> View<'a, T> {
        let s = self.shape;
        View::rows_of(
            x,
            (b * s.seq_len + rows.start) * s.n_kv_heads + head,
            rows.len(),
            s.n_kv_heads,
            s.head_dim,
        )
    }
}

/// A read-only strided matrix inside a slice: element (r, c) is `data[offset + r·rs + c·cs]`.
/// It lets the GEMM read one head's rows straight out of the head-interleaved layout.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: Float> View<'a, T> {
    /// `rows` rows of `d` columns starting at row `first` of a tensor with `heads` rows per token.
    fn rows_of(data: &'a [T], first: usize, rows: usize, heads: usize, d: usize) -> Self {
        View {
            data,
            offset: first * d,
            rows,
            cols: d,
            rs: heads * d,
            cs: 1,
        }
    }

    /// The first `rows × cols` of a contiguous scratch matrix with row stride `ld`.
    fn scratch(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Self {
        View {
            data,
            offset: 0,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
    }
}

/// `c[m×n] = alpha · a[m×k] · b[k×n] + beta · c`, `c` contiguous with row stride `ldc`.
fn gemm<T: Float>(c: &mut [T], ldc: usize, a: View<'_, T>, b: View<'_, T>, alpha: T, beta: T) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(a.cols == b.rows && m > 0 && k > 0 && n > 0, "gemm shapes");
    assert!(
        a.last_index() < a.data.len()
            && b.last_index() < b.data.len()
            && (m - 1) * ldc + n <= c.len(),
        "gemm operand out of bounds"
    );
    // SAFETY: the asserts above keep every element the strides reach inside its slice, and `c`
    // is an exclusive borrow, so it cannot overlap `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr().add(a.offset),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.offset),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// The allowed keys of one Q tile's rows and the K tiles that hold at least one of them.
struct TilePlan {
    rows: Range<usize>,
    keys: Vec<RowKeys>,
    /// Difference array over K tiles: row intervals add +1 at their first tile, -1 after the last.
    hits: Vec<i32>,
    /// Key ranges of the K tiles to visit, in order.
    tiles: Vec<Range<usize>>,
}

impl TilePlan {
    fn new(seq_len: usize) -> Self {
        let n_tiles = seq_len.div_ceil(BC);
        TilePlan {
            rows: 0..0,
            keys: Vec::with_capacity(BR),
            hits: vec![0; n_tiles + 1],
            tiles: Vec::with_capacity(n_tiles),
        }
    }

    fn plan(&mut self, mask: &HeadMask, rows: Range<usize>, seq_len: usize) {
        self.keys.clear();
        self.keys.extend(rows.clone().map(|i| mask.row_keys(i)));
        self.rows = rows;
        self.hits.fill(0);
        for keys in &self.keys {
            for span in [keys.start..keys.end, keys.wrap_start..seq_len] {
                if !span.is_empty() {
                    self.hits[span.start / BC] += 1;
                    self.hits[(span.end - 1) / BC + 1] -= 1;
                }
            }
        }
        self.tiles.clear();
        let mut open = 0;
        for (t, &h) in self.hits[..seq_len.div_ceil(BC)].iter().enumerate() {
            open += h;
            if open > 0 {
                self.tiles.push(t * BC..((t + 1) * BC).min(seq_len));
            }
        }
    }

    fn stats(&self, seq_len: usize) -> AttnStats {
        AttnStats {
            tiles_visited: self.tiles.len(),
            tiles_total: seq_len.div_ceil(BC),
        }
    }

    /// Sets the scores of keys row `r` may not see to -inf, so that exp() turns them into 0.
    fn mask_row<T: Float>(&self, r: usize, keys: &Range<usize>, row: &mut [T]) {
        let k = self.keys[r];
        let local = |x: usize| x.clamp(keys.start, keys.end) - keys.start;
        for gap in [0..k.start, k.end..k.wrap_start] {
            row[local(gap.start)..local(gap.end)].fill(T::neg_infinity());
        }
    }
}

/// Adds a `rows.len() × D` contiguous tile into the listed rows of a gradient.
fn add_rows<T: Float>(dst: &mut [&mut [T]], rows: Range<usize>, tile: &[T], d: usize) {
    for (row, src) in dst[rows].iter_mut().zip(tile.chunks(d)) {
        row.iter_mut().zip(src).for_each(|(x, &y)| *x += y);
    }
}

/// Per-task buffers of the forward, allocated once per (batch, head).
struct ForwardScratch<T> {
    plan: TilePlan,
    scores: Vec<T>,
    acc: Vec<T>,
    max: Vec<T>,
    sum: Vec<T>,
}

/// Forward of one (batch, head): fills its output rows and log-sum-exp row.
pub(super) fn forward_head<T: Float>(
    x: &Inputs<'_, T>,
    b: usize,
    h: usize,
    out: &mut [&mut [T]],
    lse: &mut [T],
) -> AttnStats {
    let (n, d) = (x.shape.seq_len, x.shape.head_dim);
    let mask = x.head_mask(h);
    let mut s = ForwardScratch {
        plan: TilePlan::new(n),
        scores: vec![T::zero(); BR * BC],
        acc: vec![T::zero(); BR * d],
        max: vec![T::zero(); BR],
        sum: vec![T::zero(); BR],
    };
    let mut stats = AttnStats::default();
    for r0 in (0..n).step_by(BR) {
        s.plan.plan(&mask, r0..(r0 + BR).min(n), n);
        forward_q_tile(x, b, h, &mut s);
        finish_q_tile(&s, d, out, lse);
        stats = stats + s.plan.stats(n);
    }
    stats
}

/// The online softmax over the planned K tiles: `acc = Σ exp(S − max)·V`, `sum = Σ exp(S − max)`.
fn forward_q_tile<T: Float>(x: &Inputs<'_, T>, b: usize, h: usize, s: &mut ForwardScratch<T>) {
    let d = x.shape.head_dim;
    let rows = s.plan.rows.clone();
    let kvh = h / (x.shape.n_heads / x.shape.n_kv_heads);
    let q = x.q_rows(x.q, b, h, &rows);
    s.acc[..rows.len() * d].fill(T::zero());
    s.max.fill(T::neg_infinity());
    s.sum.fill(T::zero());
    for keys in &s.plan.tiles {
        let k = x.kv_rows(x.k, b, kvh, keys);
        gemm(&mut s.scores, BC, q, k.t(), x.scale(), T::zero());
        for r in 0..rows.len() {
            let row = &mut s.scores[r * BC..r * BC + keys.len()];
            s.plan.mask_row(r, keys, row);
            let rescale = online_softmax_row(row, &mut s.max[r], &mut s.sum[r]);
            if rescale != T::one() {
                s.acc[r * d..(r + 1) * d]
                    .iter_mut()
                    .for_each(|a| *a *= rescale);
            }
        }
        let p = View::scratch(&s.scores, rows.len(), keys.len(), BC);
        let v = x.kv_rows(x.v, b, kvh, keys);
        gemm(&mut s.acc, d, p, v, T::one(), T::one());
    }
}

/// Turns a row of masked scores into `exp(score − new max)` and updates the row's running max and
/// sum; returns the factor by which the row's accumulator must be rescaled.
fn online_softmax_row<T: Float>(row: &mut [T], max: &mut T, sum: &mut T) -> T {
    let new_max = row_max(row, *max);
    if new_max == T::neg_infinity() {
        // No key of this row seen yet: its tile was visited for the other rows.
        row.fill(T::zero());
        return T::one();
    }
    let rescale = (*max - new_max).exp();
    *sum = *sum * rescale + exp_shifted_sum(row, new_max);
    *max = new_max;
    rescale
}

/// `out = acc / sum`, `lse = max + ln(sum)`; every row saw at least its diagonal, so `sum > 0`.
fn finish_q_tile<T: Float>(s: &ForwardScratch<T>, d: usize, out: &mut [&mut [T]], lse: &mut [T]) {
    let rows = s.plan.rows.clone();
    for (r, i) in rows.enumerate() {
        let inv = s.sum[r].recip();
        for (o, &a) in out[i].iter_mut().zip(&s.acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
        lse[i] = s.max[r] + s.sum[r].ln();
    }
}

/// The gradient rows one backward task owns: dq of every query head that reads its kv head
/// (`dq[head in group][token]`), and dk, dv of the kv head (`[token]`).
pub(super) struct KvGrads<'a, T> {
    pub dq: Vec<Vec<&'a mut [T]>>,
    pub dk: Vec<&'a mut [T]>,
    pub dv: Vec<&'a mut [T]>,
}

/// Per-task buffers of the backward, allocated once per (batch, kv head).
struct BackwardScratch<T> {
    plan: TilePlan,
    probs: Vec<T>,
    dprobs: Vec<T>,
    dq: Vec<T>,
    dkv: Vec<T>,
    lse: Vec<T>,
    delta: Vec<T>,
}

/// Backward of one (batch, kv head) over every query head that reads it, so that no two tasks
/// write the same gradient rows.
pub(super) fn backward_kv_head<T: Float>(
    x: &Inputs<'_, T>,
    saved: &Saved<'_, T>,
    b: usize,
    kvh: usize,
    g: &mut KvGrads<'_, T>,
) {
    let (n, d) = (x.shape.seq_len, x.shape.head_dim);
    let mut s = BackwardScratch {
        plan: TilePlan::new(n),
        probs: vec![T::zero(); BR * BC],
        dprobs: vec![T::zero(); BR * BC],
        dq: vec![T::zero(); BR * d],
        dkv: vec![T::zero(); BC * d],
        lse: vec![T::zero(); BR],
        delta: vec![T::zero(); BR],
    };
    let per_kv = x.shape.n_heads / x.shape.n_kv_heads;
    for (hh, dq) in g.dq.iter_mut().enumerate() {
        let h = kvh * per_kv + hh;
        let mask = x.head_mask(h);
        for r0 in (0..n).step_by(BR) {
            s.plan.plan(&mask, r0..(r0 + BR).min(n), n);
            load_row_stats(x, saved, b, h, &mut s);
            s.dq[..s.plan.rows.len() * d].fill(T::zero());
            for t in 0..s.plan.tiles.len() {
                backward_tile(x, saved.dout, b, h, t, &mut s, &mut g.dk, &mut g.dv);
            }
            add_rows(dq, s.plan.rows.clone(), &s.dq, d);
        }
    }
}

/// The planned rows' log-sum-exp and `delta_i = dO_i · O_i` (FlashAttention-2's D).
fn load_row_stats<T: Float>(
    x: &Inputs<'_, T>,
    saved: &Saved<'_, T>,
    b: usize,
    h: usize,
    s: &mut BackwardScratch<T>,
) {
    let sh = x.shape;
    let d = sh.head_dim;
    for (r, i) in s.plan.rows.clone().enumerate() {
        s.lse[r] = saved.lse[(b * sh.n_heads + h) * sh.seq_len + i];
        let at = ((b * sh.seq_len + i) * sh.n_heads + h) * d;
        let (dout, out) = (&saved.dout[at..at + d], &saved.out[at..at + d]);
        s.delta[r] = dout.iter().zip(out).map(|(&a, &o)| a * o).sum();
    }
}

/// One (Q tile, K tile) block: recompute P, then dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − delta),
/// dQ += dS·K·scale, dK += dSᵀ·Q·scale.
#[allow(clippy::too_many_arguments)]
fn backward_tile<T: Float>(
    x: &Inputs<'_, T>,
    dout: &[T],
    b: usize,
    h: usize,
    t: usize,
    s: &mut BackwardScratch<T>,
    dk: &mut [&mut [T]],
    dv: &mut [&mut [T]],
) {
    let d = x.shape.head_dim;
    let (rows, keys) = (s.plan.rows.clone(), s.plan.tiles[t].clone());
    let kvh = h / (x.shape.n_heads / x.shape.n_kv_heads);
    let (q, k, v) = (
        x.q_rows(x.q, b, h, &rows),
        x.kv_rows(x.k, b, kvh, &keys),
        x.kv_rows(x.v, b, kvh, &keys),
    );
    let d_o = x.q_rows(dout, b, h, &rows);
    recompute_probs(x, q, k, s, &keys);
    let p = View::scratch(&s.probs, rows.len(), keys.len(), BC);
    gemm(&mut s.dkv, d, p.t(), d_o, T::one(), T::zero());
    add_rows(dv, keys.clone(), &s.dkv, d);
    gemm(&mut s.dprobs, BC, d_o, v.t(), T::one(), T::zero());
    for r in 0..rows.len() {
        let (pr, dpr) = (
            &s.probs[r * BC..r * BC + keys.len()],
            &mut s.dprobs[r * BC..r * BC + keys.len()],
        );
        for (ds, &p) in dpr.iter_mut().zip(pr) {
            *ds = p * (*ds - s.delta[r]);
        }
    }
    let ds = View::scratch(&s.dprobs, rows.len(), keys.len(), BC);
    gemm(&mut s.dq, d, ds, k, x.scale(), T::one());
    gemm(&mut s.dkv, d, ds.t(), q, x.scale(), T::zero());
    add_rows(dk, keys, &s.dkv, d);
}

/// `P = exp(S·scale − lse)` for the block, 0 where masked.
fn recompute_probs<T: Float>(
    x: &Inputs<'_, T>,
    q: View<'_, T>,
    k: View<'_, T>,
    s: &mut BackwardScratch<T>,
    keys: &Range<usize>,
) {
    gemm(&mut s.probs, BC, q, k.t(), x.scale(), T::zero());
    for r in 0..s.plan.rows.len() {
        let row = &mut s.probs[r * BC..r * BC + keys.len()];
        s.plan.mask_row(r, keys, row);
        exp_shifted_sum(row, s.lse[r]);
    }
}
