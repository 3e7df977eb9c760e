//! The Llama decoder written once against [`Backend`]: the forward is the list of layers in order,
//! saving what backward needs; the backward is the same list reversed.

use crate::backend::{Backend, Ids, LinearId, Memory, NormId, Proj, Rope, Stats, Tensor};
use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::ops::attention::AttnMask;

/// What one decoder layer's backward needs from its forward, besides the layer's input.
struct LayerCache<M: Memory> {
    rstd_attn: M::Stats,
    xn_attn: M::Tensor,
    q: M::Tensor,
    k: M::Tensor,
    v: M::Tensor,
    xa_q: Option<M::Stats>,
    xa_k: Option<M::Stats>,
    xa_v: Option<M::Stats>,
    attn: M::Tensor,
    lse: M::Stats,
    xa_o: Option<M::Stats>,
    h: M::Tensor,
    rstd_mlp: M::Stats,
    xn_mlp: M::Tensor,
    gate: M::Tensor,
    up: M::Tensor,
    act: M::Tensor,
}

/// Everything a forward pass computed that the loss and the backward pass read, allocated once per
/// (batch, seq_len) and reusable across passes of that shape.
pub struct Activations<M: Memory> {
    batch: usize,
    seq_len: usize,
    tokens: M::Ids,
    positions: M::Ids,
    rope: M::Rope,
    mask: AttnMask,
    /// Keep only each layer's input and recompute the layer inside its backward.
    recompute: bool,
    /// Each layer's input, then the last layer's output.
    inputs: Vec<M::Tensor>,
    /// One per layer, or one shared by all layers when recomputing.
    layers: Vec<LayerCache<M>>,
    rstd_final: M::Stats,
    xn_final: M::Tensor,
    /// `[batch · seq_len, vocab]` next-token logits.
    pub logits: M::Tensor,
}

/// The backward pass's scratch tensors, allocated once per shape like [`Activations`].
pub struct BackwardBuffers<M: Memory> {
    labels: M::Labels,
    lse: M::Stats,
    dlogits: M::Tensor,
    /// The gradient of the residual stream, carried from the top of the model to the embedding.
    dx: M::Tensor,
    dxn: M::Tensor,
    dattn: M::Tensor,
    dq: M::Tensor,
    dk: M::Tensor,
    dv: M::Tensor,
    dact: M::Tensor,
    dgate: M::Tensor,
    dup: M::Tensor,
    /// When recomputing: the layer being differentiated, rerun, and its (discarded) output.
    recomputed: Option<(LayerCache<M>, M::Tensor)>,
}

impl<M: Memory> Activations<M> {
    /// Rows of the activation matrices (`batch · seq_len`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq_len
    }

    /// Whether these buffers fit a pass over `batch` sequences of `seq_len` under `mask`.
    pub fn fits(&self, batch: usize, seq_len: usize, mask: &AttnMask, recompute: bool) -> bool {
        self.batch == batch
            && self.seq_len == seq_len
            && self.mask == *mask
            && self.recompute == recompute
    }

    /// Elements of the tensors kept for backward (layer inputs and caches, final norm, logits).
    pub fn saved_elements(&self) -> usize {
        let layers: usize = self.layers.iter().map(LayerCache::elements).sum();
        let inputs: usize = self.inputs.iter().map(M::tensor_len).sum();
        layers
            + inputs
            + M::stats_len(&self.rstd_final)
            + M::tensor_len(&self.xn_final)
            + M::tensor_len(&self.logits)
    }

    /// Zeroed buffers for passes over `batch` sequences of `seq_len` tokens.
    pub fn new<B: Backend<Memory = M>>(
        b: &mut B,
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
        recompute: bool,
    ) -> Result<Self> {
        let cfg = b.config().clone();
        let rows = batch * seq_len;
        let d = cfg.hidden_size;
        let positions: Vec<u32> = (0..rows).map(|r| (r % seq_len) as u32).collect();
        if recompute {
            check_uniform_ranks(b)?;
        }
        let cached = if recompute { 1 } else { cfg.num_hidden_layers };
        let layers = (0..cached)
            .map(|l| LayerCache::new(b, &cfg, l, rows))
            .collect::<Result<_>>()?;
        Ok(Activations {
            batch,
            seq_len,
            tokens: b.ids(&vec![0; rows])?,
            positions: b.ids(&positions)?,
            rope: b.rope_table(seq_len)?,
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
    let projs = [Proj::Q, Proj::K, Proj::V, Proj::O];
    for layer in 1..b.config().num_hidden_layers {
        for proj in projs {
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

impl<M: Memory> LayerCache<M> {
    fn new<B: Backend<Memory = M>>(
        b: &mut B,
        cfg: &LlamaConfig,
        layer: usize,
        rows: usize,
    ) -> Result<Self> {
        let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
        let rank = |b: &B, proj| b.lora_rank(LinearId::Layer(layer, proj));
        let (rq, rk, rv, ro) = (
            rank(b, Proj::Q),
            rank(b, Proj::K),
            rank(b, Proj::V),
            rank(b, Proj::O),
        );
        Ok(LayerCache {
            rstd_attn: b.stats(rows)?,
            xn_attn: b.tensor(rows * d)?,
            q: b.tensor(rows * d)?,
            k: b.tensor(rows * kv)?,
            v: b.tensor(rows * kv)?,
            xa_q: adapter_stats(b, rows, rq)?,
            xa_k: adapter_stats(b, rows, rk)?,
            xa_v: adapter_stats(b, rows, rv)?,
            attn: b.tensor(rows * d)?,
            lse: b.stats(rows * cfg.num_attention_heads)?,
            xa_o: adapter_stats(b, rows, ro)?,
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

/// The `x·Aᵀ` buffer of an adapter of rank `rank`; none without an adapter.
fn adapter_stats<B: Backend>(b: &mut B, rows: usize, rank: usize) -> Result<Option<Stats<B>>> {
    match rank {
        0 => Ok(None),
        _ => b.stats(rows * rank).map(Some),
    }
}

impl<M: Memory> BackwardBuffers<M> {
    /// Zeroed scratch for backward passes over activations shaped like `acts`.
    pub fn new<B: Backend<Memory = M>>(b: &mut B, acts: &Activations<M>) -> Result<Self> {
        let cfg = b.config().clone();
        let rows = acts.rows();
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
            labels: b.labels(&vec![0; rows])?,
            lse: b.stats(rows)?,
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

    /// Whether these buffers fit a backward pass over `acts`.
    pub fn fits(&self, acts: &Activations<M>) -> bool {
        M::tensor_len(&self.dx) == M::tensor_len(&acts.inputs[0])
            && self.recomputed.is_some() == acts.recompute
    }
}

/// Checks a token batch against its shape and the vocabulary.
pub fn check_tokens(cfg: &LlamaConfig, tokens: &[u32], batch: usize, seq_len: usize) -> Result<()> {
    if tokens.len() != batch * seq_len || tokens.is_empty() {
        return Err(Error::Shape {
            what: "token batch".into(),
            expected: format!("{batch} × {seq_len} tokens (non-empty)"),
            got: format!("{} tokens", tokens.len()),
        });
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {}",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// Checks labels against the number of rows and the vocabulary (−100 = not scored).
pub fn check_targets(cfg: &LlamaConfig, rows: usize, targets: &[i32]) -> Result<()> {
    if targets.len() != rows {
        return Err(Error::Shape {
            what: "targets".into(),
            expected: format!("{rows} labels"),
            got: format!("{}", targets.len()),
        });
    }
    let vocab = cfg.vocab_size as i32;
    match targets
        .iter()
        .find(|&&t| t != crate::ops::cross_entropy::IGNORE_INDEX && !(0..vocab).contains(&t))
    {
        Some(bad) => Err(Error::Data(format!(
            "label {bad} is outside the vocabulary of {vocab} (and not -100)"
        ))),
        None => Ok(()),
    }
}

/// Runs the decoder on `tokens` (checked by [`check_tokens`], shaped as `acts`), keeping what
/// backward needs in `acts`: the layers in order, then the final norm and the output head.
pub fn decoder_forward<B: Backend>(
    b: &mut B,
    acts: &mut Activations<B::Memory>,
    tokens: &[u32],
) -> Result<()> {
    let layer_count = b.config().num_hidden_layers;
    b.set_ids(&mut acts.tokens, tokens)?;
    b.embedding_forward(&mut acts.inputs[0], &acts.tokens)?;
    for layer in 0..layer_count {
        let cache = if acts.recompute { 0 } else { layer };
        let (done, rest) = acts.inputs.split_at_mut(layer + 1);
        layer_forward(
            b,
            layer,
            &mut acts.layers[cache],
            &done[layer],
            &mut rest[0],
            &acts.positions,
            &acts.rope,
            acts.batch,
            &acts.mask,
        )?;
    }
    b.rmsnorm_forward(
        NormId::Final,
        &mut acts.xn_final,
        &mut acts.rstd_final,
        &acts.inputs[layer_count],
    )?;
    b.linear_forward(
        LinearId::LmHead,
        &mut acts.logits,
        None,
        &acts.xn_final,
        false,
    )
}

/// One decoder layer: `h = x + o_proj(attn(rope(q, k), v))`, `out = h + mlp(norm(h))`.
#[allow(clippy::too_many_arguments)]
fn layer_forward<B: Backend>(
    b: &mut B,
    layer: usize,
    c: &mut LayerCache<B::Memory>,
    x: &Tensor<B>,
    out: &mut Tensor<B>,
    positions: &Ids<B>,
    rope: &Rope<B>,
    batch: usize,
    mask: &AttnMask,
) -> Result<()> {
    let (heads, kv_heads) = (
        b.config().num_attention_heads,
        b.config().num_key_value_heads,
    );
    let lin = |proj| LinearId::Layer(layer, proj);
    b.rmsnorm_forward(NormId::Input(layer), &mut c.xn_attn, &mut c.rstd_attn, x)?;
    b.linear_forward(lin(Proj::Q), &mut c.q, c.xa_q.as_mut(), &c.xn_attn, false)?;
    b.linear_forward(lin(Proj::K), &mut c.k, c.xa_k.as_mut(), &c.xn_attn, false)?;
    b.linear_forward(lin(Proj::V), &mut c.v, c.xa_v.as_mut(), &c.xn_attn, false)?;
    b.rope_forward(&mut c.q, rope, positions, heads)?;
    b.rope_forward(&mut c.k, rope, positions, kv_heads)?;
    b.attention_forward(&mut c.attn, &mut c.lse, &c.q, &c.k, &c.v, batch, mask)?;
    b.copy(&mut c.h, x)?;
    b.linear_forward(lin(Proj::O), &mut c.h, c.xa_o.as_mut(), &c.attn, true)?;
    b.rmsnorm_forward(
        NormId::PostAttention(layer),
        &mut c.xn_mlp,
        &mut c.rstd_mlp,
        &c.h,
    )?;
    b.linear_forward(lin(Proj::Gate), &mut c.gate, None, &c.xn_mlp, false)?;
    b.linear_forward(lin(Proj::Up), &mut c.up, None, &c.xn_mlp, false)?;
    b.swiglu_forward(&mut c.act, &c.gate, &c.up)?;
    b.copy(out, &c.h)?;
    b.linear_forward(lin(Proj::Down), out, None, &c.act, true)
}

/// The summed cross-entropy of the logits against `targets` (checked by [`check_targets`]).
pub fn decoder_loss<B: Backend>(
    b: &mut B,
    acts: &Activations<B::Memory>,
    scratch: &mut BackwardBuffers<B::Memory>,
    targets: &[i32],
) -> Result<f64> {
    b.set_labels(&mut scratch.labels, targets)?;
    b.cross_entropy_forward(&mut scratch.lse, &acts.logits, &scratch.labels)
}

/// Accumulates into the backend's gradients the gradient of `dloss · Σ(per-position loss)` and
/// returns the summed loss: the forward's steps reversed.
pub fn decoder_backward<B: Backend>(
    b: &mut B,
    acts: &Activations<B::Memory>,
    s: &mut BackwardBuffers<B::Memory>,
    targets: &[i32],
    dloss: f64,
) -> Result<f64> {
    let layer_count = b.config().num_hidden_layers;
    let loss_sum = decoder_loss(b, acts, s, targets)?;
    b.zero(&mut s.dlogits)?;
    b.cross_entropy_backward(&mut s.dlogits, &acts.logits, &s.labels, &s.lse, dloss)?;
    b.zero(&mut s.dxn)?;
    b.linear_backward(
        LinearId::LmHead,
        &mut s.dxn,
        &s.dlogits,
        &acts.xn_final,
        None,
    )?;
    b.zero(&mut s.dx)?;
    b.rmsnorm_backward(
        NormId::Final,
        &mut s.dx,
        &s.dxn,
        &acts.inputs[layer_count],
        &acts.rstd_final,
    )?;
    for layer in (0..layer_count).rev() {
        let x = &acts.inputs[layer];
        match s.recomputed.take() {
            Some((mut cache, mut out)) => {
                let recomputed = layer_forward(
                    b,
                    layer,
                    &mut cache,
                    x,
                    &mut out,
                    &acts.positions,
                    &acts.rope,
                    acts.batch,
                    &acts.mask,
                )
                .and_then(|()| layer_backward(b, layer, &cache, x, s, acts));
                s.recomputed = Some((cache, out));
                recomputed?;
            }
            None => layer_backward(b, layer, &acts.layers[layer], x, s, acts)?,
        }
    }
    b.embedding_backward(&s.dx, &acts.tokens)?;
    Ok(loss_sum)
}

/// The layer forward's steps reversed: turns `s.dx`, the gradient of the layer's output, into the
/// gradient of its input `x`.
fn layer_backward<B: Backend>(
    b: &mut B,
    layer: usize,
    c: &LayerCache<B::Memory>,
    x: &Tensor<B>,
    s: &mut BackwardBuffers<B::Memory>,
    acts: &Activations<B::Memory>,
) -> Result<()> {
    let (heads, kv_heads) = (
        b.config().num_attention_heads,
        b.config().num_key_value_heads,
    );
    let lin = |proj| LinearId::Layer(layer, proj);
    b.zero(&mut s.dact)?;
    b.linear_backward(lin(Proj::Down), &mut s.dact, &s.dx, &c.act, None)?;
    b.zero(&mut s.dgate)?;
    b.zero(&mut s.dup)?;
    b.swiglu_backward(&mut s.dgate, &mut s.dup, &s.dact, &c.gate, &c.up)?;
    b.zero(&mut s.dxn)?;
    b.linear_backward(lin(Proj::Up), &mut s.dxn, &s.dup, &c.xn_mlp, None)?;
    b.linear_backward(lin(Proj::Gate), &mut s.dxn, &s.dgate, &c.xn_mlp, None)?;
    // The residual: dh = dout + the norm's gradient, accumulated in place.
    b.rmsnorm_backward(
        NormId::PostAttention(layer),
        &mut s.dx,
        &s.dxn,
        &c.h,
        &c.rstd_mlp,
    )?;

    b.zero(&mut s.dattn)?;
    b.linear_backward(lin(Proj::O), &mut s.dattn, &s.dx, &c.attn, c.xa_o.as_ref())?;
    b.zero(&mut s.dq)?;
    b.zero(&mut s.dk)?;
    b.zero(&mut s.dv)?;
    b.attention_backward(
        &mut s.dq, &mut s.dk, &mut s.dv, &s.dattn, &c.q, &c.k, &c.v, &c.attn, &c.lse, acts.batch,
        &acts.mask,
    )?;
    b.rope_backward(&mut s.dq, &acts.rope, &acts.positions, heads)?;
    b.rope_backward(&mut s.dk, &acts.rope, &acts.positions, kv_heads)?;
    b.zero(&mut s.dxn)?;
    b.linear_backward(lin(Proj::Q), &mut s.dxn, &s.dq, &c.xn_attn, c.xa_q.as_ref())?;
    b.linear_backward(lin(Proj::K), &mut s.dxn, &s.dk, &c.xn_attn, c.xa_k.as_ref())?;
    b.linear_backward(lin(Proj::V), &mut s.dxn, &s.dv, &c.xn_attn, c.xa_v.as_ref())?;
    b.rmsnorm_backward(NormId::Input(layer), &mut s.dx, &s.dxn, x, &c.rstd_attn)
}
