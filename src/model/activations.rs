//! The buffers a pass of the decoder works in, allocated once per shape on a backend: what the
//! forward keeps for backward ([`Activations`]), what the loss needs ([`LossBuffers`]) and the
//! backward's scratch ([`BackwardBuffers`]).

use crate::backend::{Backend, BatchShape, Buffers, Stats};
use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, Proj};
use crate::ops::attention::AttnMask;

/// What one decoder layer's backward needs from its forward, besides the layer's input.
pub(super) struct LayerCache<M: Buffers> {
    pub(super) rstd_attn: M::Stats,
    pub(super) xn_attn: M::Tensor,
    pub(super) q: M::Tensor,
    pub(super) k: M::Tensor,
    pub(super) v: M::Tensor,
    pub(super) xa_q: Option<M::Stats>,
    pub(super) xa_k: Option<M::Stats>,
    pub(super) xa_v: Option<M::Stats>,
    pub(super) attn: M::Tensor,
    pub(super) lse: M::Stats,
    pub(super) xa_o: Option<M::Stats>,
    pub(super) h: M::Tensor,
    pub(super) rstd_mlp: M::Stats,
    pub(super) xn_mlp: M::Tensor,
    pub(super) gate: M::Tensor,
    pub(super) up: M::Tensor,
    pub(super) act: M::Tensor,
}

/// Everything a forward pass computed that the loss and the backward pass read, allocated once per
/// (batch, seq_len, mask, recompute) and reusable across passes of that shape.
pub struct Activations<M: Buffers> {
    pub(super) shape: BatchShape,
    pub(super) tokens: M::Ids,
    pub(super) positions: M::Ids,
    pub(super) rope: M::Rope,
    pub(super) mask: AttnMask,
    /// Keep only each layer's input and recompute the layer inside its backward.
    pub(super) recompute: bool,
    /// Each layer's input, then the last layer's output.
    pub(super) inputs: Vec<M::Tensor>,
    /// One per layer, or one shared by all layers when recomputing.
    pub(super) layers: Vec<LayerCache<M>>,
    pub(super) rstd_final: M::Stats,
    pub(super) xn_final: M::Tensor,
    /// `[batch · seq_len, vocab]` next-token logits.
    pub(super) logits: M::Tensor,
}

/// The labels of a loss and each row's log-sum-exp, which the backward reads again.
pub(super) struct LossBuffers<M: Buffers> {
    pub(super) labels: M::Labels,
    pub(super) lse: M::Stats,
}

/// The backward pass's scratch tensors, allocated once per shape like [`Activations`].
pub(super) struct BackwardBuffers<M: Buffers> {
    pub(super) dlogits: M::Tensor,
    /// The gradient of the residual stream, carried from the top of the model to the embedding.
    pub(super) dx: M::Tensor,
    pub(super) dxn: M::Tensor,
    pub(super) dattn: M::Tensor,
    pub(super) dq: M::Tensor,
    pub(super) dk: M::Tensor,
    pub(super) dv: M::Tensor,
    pub(super) dact: M::Tensor,
    pub(super) dgate: M::Tensor,
    pub(super) dup: M::Tensor,
    /// When recomputing: the layer being differentiated, rerun, and its (discarded) output.
    pub(super) recomputed: Option<(LayerCache<M>, M::Tensor)>,
}

impl<M: Buffers> Activations<M> {
    /// Whether these buffers fit a pass over `shape` under `mask`.
    pub(super) fn fits(&self, shape: BatchShape, mask: &AttnMask, recompute: bool) -> bool {
        self.shape == shape && self.mask == *mask && self.recompute == recompute
    }

    /// Elements of the tensors kept for backward (layer inputs and caches, final norm, logits).
    pub(super) fn saved_elements(&self) -> usize {
        let layers: usize = self.layers.iter().map(LayerCache::elements).sum();
        let inputs: usize = self.inputs.iter().map(M::tensor_len).sum();
        layers
            + inputs
            + M::stats_len(&self.rstd_final)
            + M::tensor_len(&self.xn_final)
            + M::tensor_len(&self.logits)
    }

    /// Zeroed buffers for passes over `shape`.
    pub(super) fn new<B: Backend<Buffers = M>>(
        b: &mut B,
        shape: BatchShape,
        mask: &AttnMask,
        recompute: bool,
    ) -> Result<Self> {
        let cfg = b.config().clone();
        let rows = shape.rows();
        let d = cfg.hidden_size;
        let positions: Vec<u32> = (0..rows).map(|r| (r % shape.seq_len) as u32).collect();
        if recompute {
            check_uniform_ranks(b)?;
        }
        let cached = if recompute { 1 } else { cfg.num_hidden_layers };
        let layers = (0..cached)
            .map(|l| LayerCache::new(b, &cfg, l, rows))
            .collect::<Result<_>>()?;
        Ok(Activations {
            shape,
            tokens: b.ids(&vec![0; rows])?,
            positions: b.ids(&positions)?,
            rope: b.rope_table(shape.seq_len)?,
            mask: *mask,
            recompute,
            inputs: (0..=cfg.num_hidden_layers)
                .map(|_| b.tensor(rows * d))
                .collect::<Result<_>>()?,
            layers,
            rstd_final: b.stats(rows)?,
            xn_final: b.tensor(rows * d)?,
            logits: b.tensor(rows * cfg.vocab_size)?,
        })
    }
}

/// Recomputation reuses one layer's buffers for every layer, so every layer's adapters must have
/// layer 0's ranks.
fn check_uniform_ranks<B: Backend>(b: &B) -> Result<()> {
    for layer in 1..b.config().num_hidden_layers {
        for proj in Proj::ATTENTION {
            let (first, this) = (
                b.lora_rank(LinearId::Layer(0, proj)),
                b.lora_rank(LinearId::Layer(layer, proj)),
            );
            if first != this {
                return Err(Error::option(
                    "recompute",
                    format!(
                        "needs the same LoRA rank in every layer; {proj:?} has rank {first} in \
                         layer 0 and {this} in layer {layer}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl<M: Buffers> LayerCache<M> {
    fn new<B: Backend<Buffers = M>>(
        b: &mut B,
        cfg: &LlamaConfig,
        layer: usize,
        rows: usize,
    ) -> Result<Self> {
        let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
        let xa = |b: &mut B, proj| adapter_stats(b, rows, LinearId::Layer(layer, proj));
        Ok(LayerCache {
            rstd_attn: b.stats(rows)?,
            xn_attn: b.tensor(rows * d)?,
            q: b.tensor(rows * d)?,
            k: b.tensor(rows * kv)?,
            v: b.tensor(rows * kv)?,
            xa_q: xa(b, Proj::Q)?,
            xa_k: xa(b, Proj::K)?,
            xa_v: xa(b, Proj::V)?,
            attn: b.tensor(rows * d)?,
            lse: b.stats(rows * cfg.num_attention_heads)?,
            xa_o: xa(b, Proj::O)?,
            h: b.tensor(rows * d)?,
            rstd_mlp: b.stats(rows)?,
            xn_mlp: b.tensor(rows * d)?,
            gate: b.tensor(rows * ff)?,
            up: b.tensor(rows * ff)?,
            act: b.tensor(rows * ff)?,
        })
    }

    fn elements(&self) -> usize {
        let tensors = [
            &self.xn_attn,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.h,
            &self.xn_mlp,
            &self.gate,
            &self.up,
            &self.act,
        ];
        let adapters = [&self.xa_q, &self.xa_k, &self.xa_v, &self.xa_o];
        tensors.iter().map(|t| M::tensor_len(t)).sum::<usize>()
            + [&self.rstd_attn, &self.lse, &self.rstd_mlp]
                .iter()
                .map(|s| M::stats_len(s))
                .sum::<usize>()
            + adapters
                .iter()
                .flat_map(|s| s.as_ref())
                .map(M::stats_len)
                .sum::<usize>()
    }
}

/// The `x·Aᵀ` buffer of the adapter of `id`; none without an adapter.
fn adapter_stats<B: Backend>(b: &mut B, rows: usize, id: LinearId) -> Result<Option<Stats<B>>> {
    match b.lora_rank(id) {
        0 => Ok(None),
        rank => b.stats(rows * rank).map(Some),
    }
}

impl<M: Buffers> LossBuffers<M> {
    pub(super) fn new<B: Backend<Buffers = M>>(b: &mut B, rows: usize) -> Result<Self> {
        Ok(LossBuffers {
            labels: b.labels(&vec![0; rows])?,
            lse: b.stats(rows)?,
        })
    }
}

impl<M: Buffers> BackwardBuffers<M> {
    /// Zeroed scratch for backward passes over activations shaped like `acts`.
    pub(super) fn new<B: Backend<Buffers = M>>(b: &mut B, acts: &Activations<M>) -> Result<Self> {
        let cfg = b.config().clone();
        let rows = acts.shape.rows();
        let recomputed = if acts.recompute {
            Some((
                LayerCache::new(b, &cfg, 0, rows)?,
                b.tensor(rows * cfg.hidden_size)?,
            ))
        } else {
            None
        };
        let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
        Ok(BackwardBuffers {
            dlogits: b.tensor(rows * cfg.vocab_size)?,
            dx: b.tensor(rows * d)?,
            dxn: b.tensor(rows * d)?,
            dattn: b.tensor(rows * d)?,
            dq: b.tensor(rows * d)?,
            dk: b.tensor(rows * kv)?,
            dv: b.tensor(rows * kv)?,
            dact: b.tensor(rows * ff)?,
            dgate: b.tensor(rows * ff)?,
            dup: b.tensor(rows * ff)?,
            recomputed,
        })
    }
}
