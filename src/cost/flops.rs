//! FLOP counts of the work we time (DESIGN §3): attention in FlashAttention's convention (4·D per
//! unmasked query-key pair forward, backward 2.5x forward), matrix products as 2 FLOPs per
//! multiply-add.

use crate::model::{LlamaConfig, TrainableSet};
use crate::ops::attention::{AttnMask, AttnMode, AttnShape};

/// Causal pairs inside consecutive groups: the first of length `first`, then `group` each, the last
/// one cut at `seq_len`.
fn grouped_pairs(seq_len: usize, first: usize, group: usize) -> u64 {
    let tri = |g: u64| g * (g + 1) / 2;
    let mut start = 0;
    let mut len = first.min(seq_len);
    let mut pairs = 0;
    while start < seq_len {
        pairs += tri(len as u64);
        start += len;
        len = group.min(seq_len - start);
    }
    pairs
}

/// Unmasked (query, key) pairs of one sequence, summed over the heads: exact, in closed form per
/// group (a test checks it against [`AttnMask::allows`] element by element).
pub fn attention_pairs(mask: &AttnMask, n_heads: usize, seq_len: usize) -> u64 {
    let g = mask.group_size;
    if mask.mode == AttnMode::Dense || g >= seq_len {
        return n_heads as u64 * grouped_pairs(seq_len, seq_len, seq_len);
    }
    if mask.mode == AttnMode::S2NoShift {
        return n_heads as u64 * grouped_pairs(seq_len, g, g);
    }
    let unshifted = n_heads / 2;
    // A rolled head attends causally inside whole groups of G in rolled order, like an unshifted
    // head; an S2 head's first group is G/2 long.
    let shifted_first = if mask.mode == AttnMode::S2 { g / 2 } else { g };
    unshifted as u64 * grouped_pairs(seq_len, g, g)
        + (n_heads - unshifted) as u64 * grouped_pairs(seq_len, shifted_first, g)
}

/// Forward FLOPs of one attention call: `4·D` per unmasked pair, over the batch.
pub fn attention_forward_flops(shape: &AttnShape, mask: &AttnMask) -> f64 {
    4.0 * shape.head_dim as f64
        * attention_pairs(mask, shape.n_heads, shape.seq_len) as f64
        * shape.batch as f64
}

/// Parameters that take part in matrix products per token: every layer's projections and the
/// output head (the embedding is a gather).
pub fn matmul_params(cfg: &LlamaConfig) -> f64 {
    (cfg.num_params() - cfg.vocab_size * cfg.hidden_size) as f64
}

/// FLOPs of one training step (forward + backward) over `tokens = batch · seq_len` tokens: matrix
/// products forward (2·P·tokens), the input gradients (2·P·tokens) and, for full fine-tuning, the
/// weight gradients (2·P·tokens); attention forward and backward (3.5x forward) in every layer.
/// LoRA's rank-r products (under 1% at r = 8, d = 256) are not counted.
pub fn train_step_flops(
    cfg: &LlamaConfig,
    batch: usize,
    seq_len: usize,
    mask: &AttnMask,
    set: TrainableSet,
) -> f64 {
    let tokens = (batch * seq_len) as f64;
    let passes = if set == TrainableSet::Full { 3.0 } else { 2.0 };
    let shape = AttnShape {
        batch,
        seq_len,
        n_heads: cfg.num_attention_heads,
        n_kv_heads: cfg.num_key_value_heads,
        head_dim: cfg.head_dim(),
    };
    let attention = 3.5 * attention_forward_flops(&shape, mask) * cfg.num_hidden_layers as f64;
    passes * 2.0 * matmul_params(cfg) * tokens + attention
}

/// The contexts of the LongLoRA paper's FLOPs figure (Llama-2-7B).
pub const PAPER_FIGURE_CONTEXTS: [usize; 4] = [8192, 16384, 32768, 65536];

/// Forward FLOPs of one sequence in the LongLoRA paper's convention (its FLOPs figure and the
/// abstract's "16x"), split into attention and the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperFlops {
    /// Both N×N products of every layer, no causal halving.
    pub attention: f64,
    /// Everything else: 2 per parameter per token, the input embedding (a gather) excluded.
    pub other: f64,
}

impl PaperFlops {
    pub fn total(&self) -> f64 {
        self.attention + self.other
    }

    /// The attention's part of the total, in [0, 1].
    pub fn attention_share(&self) -> f64 {
        self.attention / self.total()
    }
}

/// Forward FLOPs of one sequence of `seq_len` tokens as the LongLoRA paper counts them: attention
/// `4·N·G·d_model` per layer with groups of `G = group_ratio · N` (1 for full attention, giving
/// `4·N²·d_model`; S²-Attn's default 1/4 gives a quarter of it), and `2·P·N` for the rest, where P
/// is every parameter except the input embedding. Unlike [`train_step_flops`], no causal halving
/// and no exact mask count: this is the paper's figure, for comparing with it.
pub fn paper_forward_flops(cfg: &LlamaConfig, seq_len: usize, group_ratio: f64) -> PaperFlops {
    let n = seq_len as f64;
    let group = group_ratio * n;
    PaperFlops {
        attention: 4.0 * n * group * cfg.hidden_size as f64 * cfg.num_hidden_layers as f64,
        other: 2.0 * matmul_params(cfg) * n,
    }
}
