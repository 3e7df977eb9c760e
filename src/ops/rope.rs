//! Rotary position embedding in Hugging Face Llama's rotate-half layout, with linear position
//! interpolation (LongLoRA / Position Interpolation: positions divided by a factor).
//!
//! RoPE is a rotation, so both passes work in place: forward rotates by +θ, backward by −θ
//! (the transpose), turning the gradient of the rotated tensor into that of its input.

use crate::float::{cst, Float};
use crate::ops::pool;

/// cos and sin of `(pos / factor) · theta^(−2k/head_dim)` for every position and `k < head_dim/2`.
#[derive(Clone, Debug)]
pub struct RopeTable<T> {
    pub half_dim: usize,
    pub cos: Vec<T>,
    pub sin: Vec<T>,
}

impl<T: Float> RopeTable<T> {
    /// Tables for positions `0..max_positions` (computed in f64, then rounded once).
    pub fn new(max_positions: usize, head_dim: usize, theta: f64, factor: f64) -> Self {
        let half_dim = head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half_dim);
        let mut sin = Vec::with_capacity(max_positions * half_dim);
        for p in 0..max_positions {
            for k in 0..half_dim {
                let inv_freq = theta.powf(-((2 * k) as f64) / head_dim as f64);
                let angle = p as f64 / factor * inv_freq;
                cos.push(cst(angle.cos()));
                sin.push(cst(angle.sin()));
            }
        }
        RopeTable { half_dim, cos, sin }
    }

    /// Number of positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half_dim.max(1)
    }
}

/// Rows per parallel task.
const ROWS: usize = 64;

fn rotate<T: Float>(x: &mut [T], table: &RopeTable<T>, positions: &[u32], n_heads: usize, sign: T) {
    let half = table.half_dim;
    let row_len = n_heads * 2 * half;
    assert_eq!(x.len(), positions.len() * row_len, "rope input");
    if row_len == 0 {
        return;
    }
    pool::for_each_chunk(x, ROWS * row_len, |task, rows| {
        let positions = &positions[task * ROWS..];
        for (row, &pos) in rows.chunks_exact_mut(row_len).zip(positions) {
            let at = pos as usize * half;
            let (cos, sin) = (&table.cos[at..at + half], &table.sin[at..at + half]);
            for head in row.chunks_exact_mut(2 * half) {
                let (x1, x2) = head.split_at_mut(half);
                for k in 0..half {
                    let (a, b, s) = (x1[k], x2[k], sign * sin[k]);
                    x1[k] = a * cos[k] - b * s;
                    x2[k] = b * cos[k] + a * s;
                }
            }
        }
    });
}

/// Rotates `x` (`rows × n_heads × head_dim`) in place; `positions[row]` is each row's position.
pub fn rope_forward<T: Float>(
    x: &mut [T],
    table: &RopeTable<T>,
    positions: &[u32],
    n_heads: usize,
) {
    rotate(x, table, positions, n_heads, T::one());
}

/// Maps the gradient of the rotated tensor to the gradient of its input, in place.
pub fn rope_backward<T: Float>(
    dx: &mut [T],
    table: &RopeTable<T>,
    positions: &[u32],
    n_heads: usize,
) {
    rotate(dx, table, positions, n_heads, -T::one());
}
