//! The Llama decoder written once against [`Backend`]: the forward is the list of layers in order,
//! saving what backward needs; the backward is the same list reversed.

use crate::backend::{Backend, BatchShape, Ids, Rope, Tensor};
use crate::error::Result;
use crate::model::activations::{Activations, BackwardBuffers, LayerCache, LossBuffers};
use crate::model::ids::{LinearId, NormId, Proj};
use crate::ops::attention::AttnMask;

/// Runs the decoder on `tokens` (checked, shaped as `acts`), keeping what backward needs in
/// `acts`: the layers in order, then the final norm and the output head.
pub(super) fn decoder_forward<B: Backend>(
    b: &mut B,
    acts: &mut Activations<B::Buffers>,
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
            acts.shape,
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
        acts.shape.rows(),
        false,
    )
}

/// One decoder layer: `h = x + o_proj(attn(rope(q, k), v))`, `out = h + mlp(norm(h))`.
#[allow(clippy::too_many_arguments)]
fn layer_forward<B: Backend>(
    b: &mut B,
    layer: usize,
    c: &mut LayerCache<B::Buffers>,
    x: &Tensor<B>,
    out: &mut Tensor<B>,
    positions: &Ids<B>,
    rope: &Rope<B>,
    shape: BatchShape,
    mask: &AttnMask,
) -> Result<()> {
    let (heads, kv_heads) = (
        b.config().num_attention_heads,
        b.config().num_key_value_heads,
    );
    let (lin, rows) = (|proj| LinearId::Layer(layer, proj), shape.rows());
    b.rmsnorm_forward(NormId::Input(layer), &mut c.xn_attn, &mut c.rstd_attn, x)?;
    b.linear_forward(
        lin(Proj::Q),
        &mut c.q,
        c.xa_q.as_mut(),
        &c.xn_attn,
        rows,
        false,
    )?;
    b.linear_forward(
        lin(Proj::K),
        &mut c.k,
        c.xa_k.as_mut(),
        &c.xn_attn,
        rows,
        false,
    )?;
    b.linear_forward(
        lin(Proj::V),
        &mut c.v,
        c.xa_v.as_mut(),
        &c.xn_attn,
        rows,
        false,
    )?;
    b.rope_forward(&mut c.q, rope, positions, heads)?;
    b.rope_forward(&mut c.k, rope, positions, kv_heads)?;
    b.attention_forward(&mut c.attn, &mut c.lse, &c.q, &c.k, &c.v, shape, mask)?;
    b.copy(&mut c.h, x)?;
    b.linear_forward(lin(Proj::O), &mut c.h, c.xa_o.as_mut(), &c.attn, rows, true)?;
    b.rmsnorm_forward(
        NormId::PostAttention(layer),
        &mut c.xn_mlp,
        &mut c.rstd_mlp,
        &c.h,
    )?;
    b.linear_forward(lin(Proj::Gate), &mut c.gate, None, &c.xn_mlp, rows, false)?;
    b.linear_forward(lin(Proj::Up), &mut c.up, None, &c.xn_mlp, rows, false)?;
    b.swiglu_forward(&mut c.act, &c.gate, &c.up)?;
    b.copy(out, &c.h)?;
    b.linear_forward(lin(Proj::Down), out, None, &c.act, rows, true)
}

/// The summed cross-entropy of the logits against `targets` (checked), keeping the labels and
/// each row's log-sum-exp in `loss` for the backward.
pub(super) fn decoder_loss<B: Backend>(
    b: &mut B,
    acts: &Activations<B::Buffers>,
    loss: &mut LossBuffers<B::Buffers>,
    targets: &[i32],
) -> Result<f64> {
    b.set_labels(&mut loss.labels, targets)?;
    b.cross_entropy_forward(&mut loss.lse, &acts.logits, &loss.labels)
}

/// Accumulates into the backend's gradients the gradient of `dloss · Σ(per-position loss)` of the
/// loss [`decoder_loss`] computed last: the forward's steps reversed.
pub(super) fn decoder_backward<B: Backend>(
    b: &mut B,
    acts: &Activations<B::Buffers>,
    loss: &LossBuffers<B::Buffers>,
    s: &mut BackwardBuffers<B::Buffers>,
    dloss: f64,
) -> Result<()> {
    let layer_count = b.config().num_hidden_layers;
    let rows = acts.shape.rows();
    b.zero(&mut s.dlogits)?;
    b.cross_entropy_backward(&mut s.dlogits, &acts.logits, &loss.labels, &loss.lse, dloss)?;
    b.linear_backward(
        LinearId::LmHead,
        &mut s.dxn,
        &s.dlogits,
        &acts.xn_final,
        None,
        rows,
        false,
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
                    acts.shape,
                    &acts.mask,
                )
                .and_then(|()| layer_backward(b, layer, &cache, x, s, acts));
                s.recomputed = Some((cache, out));
                recomputed?;
            }
            None => layer_backward(b, layer, &acts.layers[layer], x, s, acts)?,
        }
    }
    b.embedding_backward(&s.dx, &acts.tokens)
}

/// The layer forward's steps reversed: turns `s.dx`, the gradient of the layer's output, into the
/// gradient of its input `x`.
fn layer_backward<B: Backend>(
    b: &mut B,
    layer: usize,
    c: &LayerCache<B::Buffers>,
    x: &Tensor<B>,
    s: &mut BackwardBuffers<B::Buffers>,
    acts: &Activations<B::Buffers>,
) -> Result<()> {
    let (heads, kv_heads) = (
        b.config().num_attention_heads,
        b.config().num_key_value_heads,
    );
    let (lin, rows) = (|proj| LinearId::Layer(layer, proj), acts.shape.rows());
    // The first op to produce a gradient tensor writes it; later ones add to it.
    b.linear_backward(
        lin(Proj::Down),
        &mut s.dact,
        &s.dx,
        &c.act,
        None,
        rows,
        false,
    )?;
    b.swiglu_backward(&mut s.dgate, &mut s.dup, &s.dact, &c.gate, &c.up, false)?;
    b.linear_backward(
        lin(Proj::Up),
        &mut s.dxn,
        &s.dup,
        &c.xn_mlp,
        None,
        rows,
        false,
    )?;
    b.linear_backward(
        lin(Proj::Gate),
        &mut s.dxn,
        &s.dgate,
        &c.xn_mlp,
        None,
        rows,
        true,
    )?;
    // The residual: dh = dout + the norm's gradient, accumulated in place.
    b.rmsnorm_backward(
        NormId::PostAttention(layer),
        &mut s.dx,
        &s.dxn,
        &c.h,
        &c.rstd_mlp,
    )?;

    b.linear_backward(
        lin(Proj::O),
        &mut s.dattn,
        &s.dx,
        &c.attn,
        c.xa_o.as_ref(),
        rows,
        false,
    )?;
    b.zero(&mut s.dq)?;
    b.zero(&mut s.dk)?;
    b.zero(&mut s.dv)?;
    b.attention_backward(
        &mut s.dq, &mut s.dk, &mut s.dv, &s.dattn, &c.q, &c.k, &c.v, &c.attn, &c.lse, acts.shape,
        &acts.mask,
    )?;
    b.rope_backward(&mut s.dq, &acts.rope, &acts.positions, heads)?;
    b.rope_backward(&mut s.dk, &acts.rope, &acts.positions, kv_heads)?;
    b.linear_backward(
        lin(Proj::Q),
        &mut s.dxn,
        &s.dq,
        &c.xn_attn,
        c.xa_q.as_ref(),
        rows,
        false,
    )?;
    b.linear_backward(
        lin(Proj::K),
        &mut s.dxn,
        &s.dk,
        &c.xn_attn,
        c.xa_k.as_ref(),
        rows,
        true,
    )?;
    b.linear_backward(
        lin(Proj::V),
        &mut s.dxn,
        &s.dv,
        &c.xn_attn,
        c.xa_v.as_ref(),
        rows,
        true,
    )?;
    b.rmsnorm_backward(NormId::Input(layer), &mut s.dx, &s.dxn, x, &c.rstd_attn)
}
