//! Causal attention on the CPU in four masks (dense, S²-Attn, the paper's rolled S²-Attn, and
//! groups without a shift) with GQA, tiled like FlashAttention-2: the forward keeps only per-row
//! log-sum-exp statistics and the backward recomputes probabilities tile by tile, so memory is
//! O(N·D) per head and tiles that the causal or group mask hides entirely are skipped. That skipping is where S²-Attn's ~4x saving
//! (DESIGN §2) actually comes from.
//!
//! Layouts (row-major): q, out, dq, dout `[batch, seq_len, n_heads, head_dim]`, the natural output
//! of the q projection, so nothing is transposed; k, v, dk, dv `[batch, seq_len, n_kv_heads,
//! head_dim]`; lse `[batch, n_heads, seq_len]`. Query head `h` reads kv head
//! `h / (n_heads / n_kv_heads)` in place: repeated K/V are never materialised.

mod mask;
mod plan;
mod softmax;
mod tiled;

use std::sync::Mutex;

pub use mask::{AttnMask, AttnMode};

use crate::float::Float;
use crate::ops::bulk;
use crate::ops::pool;
use crate::ops::scratch::with_buffer;
use tiled::{Grads, Inputs, Saved, Shared, BR};

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn q_len(&self) -> usize {
        self.batch * self.seq_len * self.n_heads * self.head_dim
    }

    /// Offset of token `i` of kv head `h` in batch `b` in a kv-shaped tensor (the caller's layout).
    fn kv_row(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.seq_len + i) * self.n_kv_heads + h) * self.head_dim
    }

    fn kv_len(&self) -> usize {
        self.batch * self.seq_len * self.n_kv_heads * self.head_dim
    }

    fn lse_len(&self) -> usize {
        self.batch * self.n_heads * self.seq_len
    }

    fn check(&self) {
        assert!(
            self.n_kv_heads > 0 && self.n_heads.is_multiple_of(self.n_kv_heads) && self.n_heads > 0,
            "attention: n_kv_heads ({}) must divide n_heads ({})",
            self.n_kv_heads,
            self.n_heads
        );
        assert!(self.head_dim > 0, "attention: head_dim must be positive");
    }
}

/// How much of the (Q tile × K tile) grid a forward touched, summed over batch and heads: the
/// evidence that masked tiles are skipped rather than computed and discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttnStats {
    pub tiles_visited: usize,
    pub tiles_total: usize,
}

impl std::ops::Add for AttnStats {
    type Output = AttnStats;

    fn add(self, o: AttnStats) -> AttnStats {
        AttnStats {
            tiles_visited: self.tiles_visited + o.tiles_visited,
            tiles_total: self.tiles_total + o.tiles_total,
        }
    }
}

fn check_len(name: &str, len: usize, expected: usize, shape: &AttnShape) {
    assert!(
        len == expected,
        "attention: `{name}` has {len} elements, expected {expected} for {shape:?}"
    );
}

fn check_mask(mask: &AttnMask) {
    if let Err(e) = AttnMask::new(mask.mode, mask.group_size) {
        panic!("attention: {e} (build masks with AttnMask::new or AttnMask::from_ratio)");
    }
}

/// Causal attention forward: writes every element of `out` and `lse` (the natural-log
/// log-sum-exp of each query row's scaled scores, which the backward needs). Scale 1/√head_dim.
/// Runs in parallel over (batch, head, Q tile).
///
/// # Panics
/// If a slice length does not match `shape` (naming the tensor), if `n_kv_heads` does not divide
/// `n_heads`, or if `mask` holds a group size `AttnMask::new` would reject.
pub fn attention_forward<T: Float>(
    out: &mut [T],
    lse: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    shape: &AttnShape,
    mask: &AttnMask,
) -> AttnStats {
    shape.check();
    check_mask(mask);
    for (name, len, expected) in [
        ("out", out.len(), shape.q_len()),
        ("lse", lse.len(), shape.lse_len()),
        ("q", q.len(), shape.q_len()),
        ("k", k.len(), shape.kv_len()),
        ("v", v.len(), shape.kv_len()),
    ] {
        check_len(name, len, expected, shape);
    }
    if shape.seq_len == 0 {
        return AttnStats::default();
    }
    with_inputs(q, k, v, shape, mask, |x| {
        let (out, lse) = (Shared::new(out), Shared::new(lse));
        let q_tiles = shape.seq_len.div_ceil(BR);
        let stats = Mutex::new(AttnStats::default());
        pool::for_each(shape.batch * shape.n_heads * q_tiles, |task| {
            // Each head's last tile first: a causal Q tile's work grows with its index, so taking
            // the largest first leaves the region's end to the smallest, and whichever thread
            // runs slower at that moment waits less for the other.
            let (bh, tile) = (task / q_tiles, q_tiles - 1 - task % q_tiles);
            let (b, h) = (bh / shape.n_heads, bh % shape.n_heads);
            let tile_stats = tiled::forward_q_tile(x, (b, h, tile), out, lse);
            let mut total = stats.lock().unwrap_or_else(|e| e.into_inner());
            *total = *total + tile_stats;
        });
        stats.into_inner().unwrap_or_else(|e| e.into_inner())
    })
}

/// Runs `f` on the tasks' inputs: q as given, k and v copied to `[batch, n_kv_heads, seq_len,
/// head_dim]` (in this thread's scratch, so a training step allocates them once). In that layout a
/// tile of keys is one contiguous block that the tile products read in place; in the caller's
/// layout each key's D values sit a whole row of heads apart, and every tile of them had to be
/// copied out.
fn with_inputs<T: Float, R>(
    q: &[T],
    k: &[T],
    v: &[T],
    shape: &AttnShape,
    mask: &AttnMask,
    f: impl FnOnce(&Inputs<'_, T>) -> R,
) -> R {
    let (n, d, heads) = (shape.seq_len, shape.head_dim, shape.n_kv_heads);
    // One task per (batch, head) block of the output, in parallel: serial, these copies were 2% of
    // a 4,096-token step with the other core idle.
    let transpose = |x: &[T], out: &mut [T]| {
        pool::for_each_chunk(out, (n * d).max(1), |bh, block| {
            let (b, h) = (bh / heads, bh % heads);
            for (i, dst) in block.chunks_exact_mut(d).enumerate() {
                let at = shape.kv_row(b, i, h);
                dst.copy_from_slice(&x[at..at + d]);
            }
        });
    };
    with_buffer(k.len(), |k_heads: &mut [T]| {
        with_buffer(v.len(), |v_heads: &mut [T]| {
            transpose(k, k_heads);
            transpose(v, v_heads);
            f(&Inputs {
                q,
                k_heads,
                v_heads,
                shape,
                mask,
            })
        })
    })
}

/// Causal attention backward (FlashAttention-2): ACCUMULATES (`+=`) the gradients of q, k and v
/// into `dq`, `dk`, `dv`, so a caller can sum contributions; `out` and `lse` are the forward's.
/// Runs in parallel over (batch, kv head), each task covering every query head of its group.
///
/// # Panics
/// As `attention_forward`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    shape: &AttnShape,
    mask: &AttnMask,
) {
    shape.check();
    check_mask(mask);
    for (name, len, expected) in [
        ("dq", dq.len(), shape.q_len()),
        ("dk", dk.len(), shape.kv_len()),
        ("dv", dv.len(), shape.kv_len()),
        ("dout", dout.len(), shape.q_len()),
        ("q", q.len(), shape.q_len()),
        ("k", k.len(), shape.kv_len()),
        ("v", v.len(), shape.kv_len()),
        ("out", out.len(), shape.q_len()),
        ("lse", lse.len(), shape.lse_len()),
    ] {
        check_len(name, len, expected, shape);
    }
    let saved = Saved { dout, out, lse };
    with_inputs(q, k, v, shape, mask, |x| {
        // dK and dV accumulate head-major, each (batch, kv head) block owned by one task, and are
        // added into the caller's tensors once at the end: in the caller's layout every tile
        // update wrote rows shared, at the heads' boundaries, with the cache lines of the task
        // next to it.
        with_buffer(dk.len(), |dk_heads: &mut [T]| {
            with_buffer(dv.len(), |dv_heads: &mut [T]| {
                bulk::fill(dk_heads, T::zero());
                bulk::fill(dv_heads, T::zero());
                let grads = Grads {
                    dq: Shared::new(dq),
                    dk: Shared::new(dk_heads),
                    dv: Shared::new(dv_heads),
                };
                pool::for_each(shape.batch * shape.n_kv_heads, |bk| {
                    let (b, kvh) = (bk / shape.n_kv_heads, bk % shape.n_kv_heads);
                    tiled::backward_kv_head(x, &saved, (b, kvh), &grads);
                });
                add_from_heads(dk, dk_heads, shape);
                add_from_heads(dv, dv_heads, shape);
            })
        })
    })
}

/// `x += heads`, `heads` in the head-major layout `[batch, n_kv_heads, seq_len, head_dim]` and `x`
/// in the caller's kv layout; one task per (batch, kv head) block.
fn add_from_heads<T: Float>(x: &mut [T], heads: &[T], shape: &AttnShape) {
    let (n, d, kv) = (shape.seq_len, shape.head_dim, shape.n_kv_heads);
    let x = Shared::new(x);
    pool::for_each(shape.batch * kv, |bk| {
        let (b, h) = (bk / kv, bk % kv);
        for (i, src) in heads[bk * n * d..(bk + 1) * n * d]
            .chunks_exact(d)
            .enumerate()
        {
            // SAFETY: token i of kv head h in batch b; no other task writes that head.
            unsafe { x.add_row(shape.kv_row(b, i, h), src) };
        }
    });
}
