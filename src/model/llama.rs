//! The Llama decoder's forward pass, which saves what backward needs, and its explicit backward.
//! The forward is the list of layers in order; the backward is the same list reversed.

use crate::error::{Error, Result};
use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::model::weights::{LayerWeights, LlamaWeights};
use crate::ops::attention::{attention_backward, attention_forward, AttnMask, AttnShape};
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward, scored_count};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::linear::{linear_backward, linear_forward, lora_rank};
use crate::ops::matmul::{matmul_nn, matmul_nt, matmul_tn};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::{rope_backward, rope_forward, RopeTable};
use crate::ops::swiglu::{swiglu_backward, swiglu_forward};

/// A Llama causal language model.
#[derive(Clone, Debug)]
pub struct Llama<T> {
    pub config: LlamaConfig,
    pub weights: LlamaWeights<T>,
}

/// What one decoder layer's backward needs from its forward.
struct LayerCache<T> {
    x: Vec<T>,
    rstd_attn: Vec<T>,
    xn_attn: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    xa_q: Vec<T>,
    xa_k: Vec<T>,
    xa_v: Vec<T>,
    attn: Vec<T>,
    lse: Vec<T>,
    xa_o: Vec<T>,
    h: Vec<T>,
    rstd_mlp: Vec<T>,
    xn_mlp: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    act: Vec<T>,
}

/// Everything a forward pass computed that the loss and the backward pass read.
pub struct Activations<T> {
    batch: usize,
    seq_len: usize,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    rope: RopeTable<T>,
    mask: AttnMask,
    layers: Vec<LayerCache<T>>,
    x_final: Vec<T>,
    rstd_final: Vec<T>,
    xn_final: Vec<T>,
    /// `[batch · seq_len, vocab]` next-token logits.
    pub logits: Vec<T>,
}

impl<T: Float> Activations<T> {
    /// Rows of the activation matrices (`batch · seq_len`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq_len
    }

    /// Elements of the tensors kept for backward (layer caches, final norm, logits).
    pub fn saved_elements(&self) -> usize {
        let layers: usize = self.layers.iter().map(LayerCache::elements).sum();
        layers
            + self.x_final.len()
            + self.rstd_final.len()
            + self.xn_final.len()
            + self.logits.len()
    }
}

impl<T> LayerCache<T> {
    fn elements(&self) -> usize {
        [
            &self.x,
            &self.rstd_attn,
            &self.xn_attn,
            &self.q,
            &self.k,
            &self.v,
            &self.xa_q,
            &self.xa_k,
            &self.xa_v,
            &self.attn,
            &self.lse,
            &self.xa_o,
            &self.h,
            &self.rstd_mlp,
            &self.xn_mlp,
            &self.gate,
            &self.up,
            &self.act,
        ]
        .iter()
        .map(|v| v.len())
        .sum()
    }
}

fn zeros<T: Float>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

impl<T: Float> Llama<T> {
    /// Wraps weights after checking them against the config.
    pub fn new(config: LlamaConfig, weights: LlamaWeights<T>) -> Result<Self> {
        config.validate()?;
        let expected = LlamaWeights::<T>::zeros(&config);
        let base: Vec<_> = weights
            .params()
            .into_iter()
            .filter(|p| !p.name.contains(".lora_"))
            .collect();
        if base.len() != expected.params().len() {
            return Err(Error::Shape {
                what: "model weights".into(),
                expected: format!("{} layers from the config", config.num_hidden_layers),
                got: format!("{} layers", weights.layers.len()),
            });
        }
        for (p, e) in base.into_iter().zip(expected.params()) {
            if p.name != e.name || p.shape != e.shape || p.data.len() != e.numel() {
                return Err(Error::Shape {
                    what: format!("parameter {}", e.name),
                    expected: format!("{:?}", e.shape),
                    got: format!("{} {:?} with {} values", p.name, p.shape, p.data.len()),
                });
            }
        }
        Ok(Llama { config, weights })
    }

    fn attn_shape(&self, batch: usize, seq_len: usize) -> AttnShape {
        AttnShape {
            batch,
            seq_len,
            n_heads: self.config.num_attention_heads,
            n_kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim(),
        }
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens (row-major) and keeps the
    /// activations for [`Llama::backward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<Activations<T>> {
        let cfg = &self.config;
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
        let rows = batch * seq_len;
        let d = cfg.hidden_size;
        let positions: Vec<u32> = (0..rows).map(|r| (r % seq_len) as u32).collect();
        let rope = RopeTable::new(
            seq_len,
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.rope_scaling_factor,
        );
        let shape = self.attn_shape(batch, seq_len);

        let mut x = zeros(rows * d);
        embedding_forward(&mut x, tokens, &self.weights.embed_tokens.data, d);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for lw in &self.weights.layers {
            let (cache, out) = self.layer_forward(lw, x, &positions, &rope, &shape, mask);
            layers.push(cache);
            x = out;
        }

        let mut rstd_final = zeros(rows);
        let mut xn_final = zeros(rows * d);
        rmsnorm_forward(
            &mut xn_final,
            &mut rstd_final,
            &x,
            &self.weights.norm.data,
            d,
            cfg.rms_norm_eps,
        );
        let mut logits = zeros(rows * cfg.vocab_size);
        matmul_nt(
            &mut logits,
            &xn_final,
            &self.weights.lm_head.data,
            rows,
            d,
            cfg.vocab_size,
            T::one(),
            false,
        );
        Ok(Activations {
            batch,
            seq_len,
            tokens: tokens.to_vec(),
            positions,
            rope,
            mask: *mask,
            layers,
            x_final: x,
            rstd_final,
            xn_final,
            logits,
        })
    }

    /// One decoder layer: `h = x + o_proj(attn(rope(q, k), v))`, `out = h + mlp(norm(h))`.
    fn layer_forward(
        &self,
        lw: &LayerWeights<T>,
        x: Vec<T>,
        positions: &[u32],
        rope: &RopeTable<T>,
        shape: &AttnShape,
        mask: &AttnMask,
    ) -> (LayerCache<T>, Vec<T>) {
        let cfg = &self.config;
        let (rows, d, kv, ff) = (
            positions.len(),
            cfg.hidden_size,
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let eps = cfg.rms_norm_eps;
        let mut c = LayerCache {
            rstd_attn: zeros(rows),
            xn_attn: zeros(rows * d),
            q: zeros(rows * d),
            k: zeros(rows * kv),
            v: zeros(rows * kv),
            xa_q: zeros(rows * lora_rank(&lw.q_proj)),
            xa_k: zeros(rows * lora_rank(&lw.k_proj)),
            xa_v: zeros(rows * lora_rank(&lw.v_proj)),
            attn: zeros(rows * d),
            lse: zeros(rows * cfg.num_attention_heads),
            xa_o: zeros(rows * lora_rank(&lw.o_proj)),
            h: zeros(rows * d),
            rstd_mlp: zeros(rows),
            xn_mlp: zeros(rows * d),
            gate: zeros(rows * ff),
            up: zeros(rows * ff),
            act: zeros(rows * ff),
            x,
        };
        rmsnorm_forward(
            &mut c.xn_attn,
            &mut c.rstd_attn,
            &c.x,
            &lw.input_layernorm.data,
            d,
            eps,
        );
        linear_forward(&mut c.q, &mut c.xa_q, &c.xn_attn, &lw.q_proj, rows);
        linear_forward(&mut c.k, &mut c.xa_k, &c.xn_attn, &lw.k_proj, rows);
        linear_forward(&mut c.v, &mut c.xa_v, &c.xn_attn, &lw.v_proj, rows);
        rope_forward(&mut c.q, rope, positions, cfg.num_attention_heads);
        rope_forward(&mut c.k, rope, positions, cfg.num_key_value_heads);
        attention_forward(&mut c.attn, &mut c.lse, &c.q, &c.k, &c.v, shape, mask);
        linear_forward(&mut c.h, &mut c.xa_o, &c.attn, &lw.o_proj, rows);
        c.h.iter_mut().zip(&c.x).for_each(|(h, &x)| *h += x);
        rmsnorm_forward(
            &mut c.xn_mlp,
            &mut c.rstd_mlp,
            &c.h,
            &lw.post_attention_layernorm.data,
            d,
            eps,
        );
        linear_forward(&mut c.gate, &mut [], &c.xn_mlp, &lw.gate_proj, rows);
        linear_forward(&mut c.up, &mut [], &c.xn_mlp, &lw.up_proj, rows);
        swiglu_forward(&mut c.act, &c.gate, &c.up);
        let mut out = zeros(rows * d);
        linear_forward(&mut out, &mut [], &c.act, &lw.down_proj, rows);
        out.iter_mut().zip(&c.h).for_each(|(o, &h)| *o += h);
        (c, out)
    }

    /// Mean cross-entropy of the logits against `targets` (−100 = not scored), and the number of
    /// scored positions. A batch with nothing scored has loss 0.
    pub fn loss(&self, acts: &Activations<T>, targets: &[i32]) -> Result<(T, usize)> {
        self.check_targets(acts, targets)?;
        let mut lse = zeros(acts.rows());
        let sum = cross_entropy_forward(&mut lse, &acts.logits, targets, self.config.vocab_size);
        let count = scored_count(targets);
        Ok((
            if count == 0 {
                T::zero()
            } else {
                sum / cst(count as f64)
            },
            count,
        ))
    }

    fn check_targets(&self, acts: &Activations<T>, targets: &[i32]) -> Result<()> {
        if targets.len() != acts.rows() {
            return Err(Error::Shape {
                what: "targets".into(),
                expected: format!("{} labels", acts.rows()),
                got: format!("{}", targets.len()),
            });
        }
        let vocab = self.config.vocab_size as i32;
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

    /// Accumulates into `grads` the gradient of `dloss · Σ(per-position loss)` for every tensor
    /// whose gradient buffer is non-empty, and returns the summed loss. With
    /// `dloss = 1 / scored_count` this is the gradient of the mean loss that [`Llama::loss`] reports.
    pub fn backward(
        &self,
        acts: &Activations<T>,
        targets: &[i32],
        dloss: T,
        grads: &mut LlamaWeights<T>,
    ) -> Result<T> {
        self.check_targets(acts, targets)?;
        let cfg = &self.config;
        let (rows, d, vocab) = (acts.rows(), cfg.hidden_size, cfg.vocab_size);
        let mut lse = zeros(rows);
        let loss_sum = cross_entropy_forward(&mut lse, &acts.logits, targets, vocab);
        let mut dlogits = zeros(rows * vocab);
        cross_entropy_backward(&mut dlogits, &acts.logits, targets, &lse, vocab, dloss);

        if !grads.lm_head.data.is_empty() {
            matmul_tn(
                &mut grads.lm_head.data,
                &dlogits,
                &acts.xn_final,
                vocab,
                rows,
                d,
                T::one(),
                true,
            );
        }
        let mut dxn = zeros(rows * d);
        matmul_nn(
            &mut dxn,
            &dlogits,
            &self.weights.lm_head.data,
            rows,
            vocab,
            d,
            T::one(),
            false,
        );
        drop(dlogits);
        let mut dx = zeros(rows * d);
        rmsnorm_backward(
            &mut dx,
            nonempty(&mut grads.norm.data),
            &dxn,
            &acts.x_final,
            &self.weights.norm.data,
            &acts.rstd_final,
            d,
        );

        let shape = self.attn_shape(acts.batch, acts.seq_len);
        for ((lw, cache), lg) in self
            .weights
            .layers
            .iter()
            .zip(&acts.layers)
            .zip(&mut grads.layers)
            .rev()
        {
            dx = self.layer_backward(lw, cache, lg, dx, acts, &shape);
        }
        if !grads.embed_tokens.data.is_empty() {
            embedding_backward(&mut grads.embed_tokens.data, &dx, &acts.tokens, d);
        }
        Ok(loss_sum)
    }

    /// The layer forward's steps reversed; takes the gradient of the layer's output and returns
    /// the gradient of its input.
    fn layer_backward(
        &self,
        lw: &LayerWeights<T>,
        c: &LayerCache<T>,
        g: &mut LayerWeights<T>,
        dout: Vec<T>,
        acts: &Activations<T>,
        shape: &AttnShape,
    ) -> Vec<T> {
        let cfg = &self.config;
        let (rows, d, kv, ff) = (
            acts.rows(),
            cfg.hidden_size,
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let (rope, positions) = (&acts.rope, &acts.positions);

        let mut dact = zeros(rows * ff);
        linear_backward(
            Some(&mut dact),
            &mut g.down_proj,
            &dout,
            &c.act,
            &lw.down_proj,
            &[],
            rows,
        );
        let (mut dgate, mut dup) = (zeros(rows * ff), zeros(rows * ff));
        swiglu_backward(&mut dgate, &mut dup, &dact, &c.gate, &c.up);
        let mut dxn = zeros(rows * d);
        linear_backward(
            Some(&mut dxn),
            &mut g.up_proj,
            &dup,
            &c.xn_mlp,
            &lw.up_proj,
            &[],
            rows,
        );
        linear_backward(
            Some(&mut dxn),
            &mut g.gate_proj,
            &dgate,
            &c.xn_mlp,
            &lw.gate_proj,
            &[],
            rows,
        );
        let mut dh = dout;
        rmsnorm_backward(
            &mut dh,
            nonempty(&mut g.post_attention_layernorm.data),
            &dxn,
            &c.h,
            &lw.post_attention_layernorm.data,
            &c.rstd_mlp,
            d,
        );

        let mut dattn = zeros(rows * d);
        linear_backward(
            Some(&mut dattn),
            &mut g.o_proj,
            &dh,
            &c.attn,
            &lw.o_proj,
            &c.xa_o,
            rows,
        );
        let (mut dq, mut dk, mut dv) = (zeros(rows * d), zeros(rows * kv), zeros(rows * kv));
        attention_backward(
            &mut dq, &mut dk, &mut dv, &dattn, &c.q, &c.k, &c.v, &c.attn, &c.lse, shape, &acts.mask,
        );
        rope_backward(&mut dq, rope, positions, cfg.num_attention_heads);
        rope_backward(&mut dk, rope, positions, cfg.num_key_value_heads);
        let mut dxn = zeros(rows * d);
        linear_backward(
            Some(&mut dxn),
            &mut g.q_proj,
            &dq,
            &c.xn_attn,
            &lw.q_proj,
            &c.xa_q,
            rows,
        );
        linear_backward(
            Some(&mut dxn),
            &mut g.k_proj,
            &dk,
            &c.xn_attn,
            &lw.k_proj,
            &c.xa_k,
            rows,
        );
        linear_backward(
            Some(&mut dxn),
            &mut g.v_proj,
            &dv,
            &c.xn_attn,
            &lw.v_proj,
            &c.xa_v,
            rows,
        );
        let mut dx = dh;
        rmsnorm_backward(
            &mut dx,
            nonempty(&mut g.input_layernorm.data),
            &dxn,
            &c.x,
            &lw.input_layernorm.data,
            &c.rstd_attn,
            d,
        );
        dx
    }
}

/// A gradient buffer as an optional slice: `None` when the tensor is frozen (empty buffer).
fn nonempty<T>(buf: &mut [T]) -> Option<&mut [T]> {
    (!buf.is_empty()).then_some(buf)
}
