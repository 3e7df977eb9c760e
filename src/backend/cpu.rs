//! The CPU backend: the reference ops of `ops/`, in f32 or f64, on the host weights.

use std::marker::PhantomData;

use crate::backend::{Backend, LinearId, Memory, NormId, Proj, Tensor};
use crate::error::{Error, Result};
use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::model::weights::{LayerWeights, Linear, LlamaWeights, Param};
use crate::ops::attention::{attention_backward, attention_forward, AttnMask, AttnShape};
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::linear::{linear_backward, linear_forward, lora_rank};
use crate::ops::matmul::{matmul_nn, matmul_nt, matmul_tn};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::{rope_backward, rope_forward, RopeTable};
use crate::ops::swiglu::{swiglu_backward, swiglu_forward};

/// Host memory: every tensor a `Vec<T>`.
pub struct Host<T>(PhantomData<T>);

impl<T> Memory for Host<T> {
    type Tensor = Vec<T>;
    type Stats = Vec<T>;
    type Ids = Vec<u32>;
    type Labels = Vec<i32>;
    type Rope = RopeTable<T>;

    fn tensor_len(tensor: &Vec<T>) -> usize {
        tensor.len()
    }
    fn stats_len(stats: &Vec<T>) -> usize {
        stats.len()
    }
}

/// The reference ops over borrowed weights; gradients go to `grads` (empty buffers are frozen).
pub struct Cpu<'a, T> {
    config: &'a LlamaConfig,
    weights: &'a LlamaWeights<T>,
    grads: Option<&'a mut LlamaWeights<T>>,
}

impl<'a, T: Float> Cpu<'a, T> {
    /// For forward passes only.
    pub fn new(config: &'a LlamaConfig, weights: &'a LlamaWeights<T>) -> Self {
        Cpu {
            config,
            weights,
            grads: None,
        }
    }

    /// Backward passes accumulate into `grads`.
    pub fn with_grads(
        config: &'a LlamaConfig,
        weights: &'a LlamaWeights<T>,
        grads: &'a mut LlamaWeights<T>,
    ) -> Self {
        Cpu {
            config,
            weights,
            grads: Some(grads),
        }
    }

    fn grads(&mut self) -> Result<&mut LlamaWeights<T>> {
        self.grads.as_deref_mut().ok_or_else(|| {
            Error::option(
                "backward",
                "the CPU backend was opened for forward passes only",
            )
        })
    }

    fn attn_shape(&self, batch: usize, q_len: usize) -> AttnShape {
        let cfg = self.config;
        AttnShape {
            batch,
            seq_len: q_len / (batch * cfg.hidden_size).max(1),
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
        }
    }
}

fn layer_linear<T>(layer: &LayerWeights<T>, proj: Proj) -> &Linear<T> {
    match proj {
        Proj::Q => &layer.q_proj,
        Proj::K => &layer.k_proj,
        Proj::V => &layer.v_proj,
        Proj::O => &layer.o_proj,
        Proj::Gate => &layer.gate_proj,
        Proj::Up => &layer.up_proj,
        Proj::Down => &layer.down_proj,
    }
}

fn layer_linear_mut<T>(layer: &mut LayerWeights<T>, proj: Proj) -> &mut Linear<T> {
    match proj {
        Proj::Q => &mut layer.q_proj,
        Proj::K => &mut layer.k_proj,
        Proj::V => &mut layer.v_proj,
        Proj::O => &mut layer.o_proj,
        Proj::Gate => &mut layer.gate_proj,
        Proj::Up => &mut layer.up_proj,
        Proj::Down => &mut layer.down_proj,
    }
}

/// The norm's weight in `weights` (or its gradient in a gradient set).
pub(crate) fn norm_param<T>(weights: &LlamaWeights<T>, id: NormId) -> &Param<T> {
    match id {
        NormId::Input(l) => &weights.layers[l].input_layernorm,
        NormId::PostAttention(l) => &weights.layers[l].post_attention_layernorm,
        NormId::Final => &weights.norm,
    }
}

fn norm_param_mut<T>(weights: &mut LlamaWeights<T>, id: NormId) -> &mut Param<T> {
    match id {
        NormId::Input(l) => &mut weights.layers[l].input_layernorm,
        NormId::PostAttention(l) => &mut weights.layers[l].post_attention_layernorm,
        NormId::Final => &mut weights.norm,
    }
}

impl<T: Float> Backend for Cpu<'_, T> {
    type Memory = Host<T>;

    fn config(&self) -> &LlamaConfig {
        self.config
    }

    fn lora_rank(&self, id: LinearId) -> usize {
        match id {
            LinearId::Layer(l, proj) => lora_rank(layer_linear(&self.weights.layers[l], proj)),
            LinearId::LmHead => 0,
        }
    }

    fn tensor(&mut self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }
    fn stats(&mut self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }
    fn ids(&mut self, values: &[u32]) -> Result<Vec<u32>> {
        Ok(values.to_vec())
    }
    fn set_ids(&mut self, ids: &mut Vec<u32>, values: &[u32]) -> Result<()> {
        values.clone_into(ids);
        Ok(())
    }
    fn labels(&mut self, values: &[i32]) -> Result<Vec<i32>> {
        Ok(values.to_vec())
    }
    fn set_labels(&mut self, labels: &mut Vec<i32>, values: &[i32]) -> Result<()> {
        values.clone_into(labels);
        Ok(())
    }
    fn rope_table(&mut self, seq_len: usize) -> Result<RopeTable<T>> {
        let cfg = self.config;
        Ok(RopeTable::new(
            seq_len,
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.rope_scaling_factor,
        ))
    }
    fn zero(&mut self, tensor: &mut Vec<T>) -> Result<()> {
        tensor.fill(T::zero());
        Ok(())
    }
    fn copy(&mut self, dst: &mut Vec<T>, src: &Vec<T>) -> Result<()> {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn to_host(&mut self, tensor: &Vec<T>) -> Result<Vec<f32>> {
        Ok(tensor
            .iter()
            .map(|v| v.to_f32().unwrap_or(f32::NAN))
            .collect())
    }

    fn embedding_forward(&mut self, out: &mut Vec<T>, tokens: &Vec<u32>) -> Result<()> {
        let table = &self.weights.embed_tokens.data;
        embedding_forward(out, tokens, table, self.config.hidden_size);
        Ok(())
    }

    fn embedding_backward(&mut self, dout: &Vec<T>, tokens: &Vec<u32>) -> Result<()> {
        let d = self.config.hidden_size;
        let table = &mut self.grads()?.embed_tokens.data;
        if !table.is_empty() {
            embedding_backward(table, dout, tokens, d);
        }
        Ok(())
    }

    fn rmsnorm_forward(
        &mut self,
        id: NormId,
        out: &mut Vec<T>,
        rstd: &mut Vec<T>,
        x: &Vec<T>,
    ) -> Result<()> {
        let cfg = self.config;
        let weight = &norm_param(self.weights, id).data;
        rmsnorm_forward(out, rstd, x, weight, cfg.hidden_size, cfg.rms_norm_eps);
        Ok(())
    }

    fn rmsnorm_backward(
        &mut self,
        id: NormId,
        dx: &mut Vec<T>,
        dout: &Vec<T>,
        x: &Vec<T>,
        rstd: &Vec<T>,
    ) -> Result<()> {
        let (d, weights) = (self.config.hidden_size, self.weights);
        let dweight = &mut norm_param_mut(self.grads()?, id).data;
        let dweight = (!dweight.is_empty()).then_some(dweight.as_mut_slice());
        let weight = &norm_param(weights, id).data;
        rmsnorm_backward(dx, dweight, dout, x, weight, rstd, d);
        Ok(())
    }

    fn linear_forward(
        &mut self,
        id: LinearId,
        y: &mut Vec<T>,
        xa: Option<&mut Vec<T>>,
        x: &Vec<T>,
        accumulate: bool,
    ) -> Result<()> {
        let cfg = self.config;
        let xa = xa.map_or(&mut [][..], |xa| xa.as_mut_slice());
        match id {
            LinearId::Layer(l, proj) => {
                let lin = layer_linear(&self.weights.layers[l], proj);
                let rows = x.len() / lin.in_features();
                linear_forward(y, xa, x, lin, rows, accumulate);
            }
            LinearId::LmHead => {
                let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
                let lm_head = &self.weights.lm_head.data;
                matmul_nt(y, x, lm_head, x.len() / d, d, vocab, T::one(), accumulate);
            }
        }
        Ok(())
    }

    fn linear_backward(
        &mut self,
        id: LinearId,
        dx: &mut Vec<T>,
        dy: &Vec<T>,
        x: &Vec<T>,
        xa: Option<&Vec<T>>,
    ) -> Result<()> {
        let xa = xa.map_or(&[][..], |xa| xa.as_slice());
        let (cfg, weights) = (self.config, self.weights);
        let grads = self.grads()?;
        match id {
            LinearId::Layer(l, proj) => {
                let lin = layer_linear(&weights.layers[l], proj);
                let grad = layer_linear_mut(&mut grads.layers[l], proj);
                let rows = x.len() / lin.in_features();
                linear_backward(Some(dx), grad, dy, x, lin, xa, rows);
            }
            LinearId::LmHead => {
                let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
                let rows = x.len() / d;
                if !grads.lm_head.data.is_empty() {
                    let g = &mut grads.lm_head.data;
                    matmul_tn(g, dy, x, vocab, rows, d, T::one(), true);
                }
                matmul_nn(
                    dx,
                    dy,
                    &weights.lm_head.data,
                    rows,
                    vocab,
                    d,
                    T::one(),
                    true,
                );
            }
        }
        Ok(())
    }

    fn rope_forward(
        &mut self,
        x: &mut Vec<T>,
        rope: &RopeTable<T>,
        positions: &Vec<u32>,
        heads: usize,
    ) -> Result<()> {
        rope_forward(x, rope, positions, heads);
        Ok(())
    }

    fn rope_backward(
        &mut self,
        dx: &mut Vec<T>,
        rope: &RopeTable<T>,
        positions: &Vec<u32>,
        heads: usize,
    ) -> Result<()> {
        rope_backward(dx, rope, positions, heads);
        Ok(())
    }

    fn attention_forward(
        &mut self,
        out: &mut Vec<T>,
        lse: &mut Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        batch: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        let shape = self.attn_shape(batch, q.len());
        attention_forward(out, lse, q, k, v, &shape, mask);
        Ok(())
    }

    fn attention_backward(
        &mut self,
        dq: &mut Vec<T>,
        dk: &mut Vec<T>,
        dv: &mut Vec<T>,
        dout: &Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        out: &Vec<T>,
        lse: &Vec<T>,
        batch: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        let shape = self.attn_shape(batch, q.len());
        attention_backward(dq, dk, dv, dout, q, k, v, out, lse, &shape, mask);
        Ok(())
    }

    fn swiglu_forward(&mut self, out: &mut Vec<T>, gate: &Vec<T>, up: &Vec<T>) -> Result<()> {
        swiglu_forward(out, gate, up);
        Ok(())
    }

    fn swiglu_backward(
        &mut self,
        dgate: &mut Vec<T>,
        dup: &mut Vec<T>,
        dout: &Vec<T>,
        gate: &Vec<T>,
        up: &Vec<T>,
    ) -> Result<()> {
        swiglu_backward(dgate, dup, dout, gate, up);
        Ok(())
    }

    fn cross_entropy_forward(
        &mut self,
        lse: &mut Vec<T>,
        logits: &Vec<T>,
        labels: &Vec<i32>,
    ) -> Result<f64> {
        let sum = cross_entropy_forward(lse, logits, labels, self.config.vocab_size);
        Ok(sum.to_f64().unwrap_or(f64::NAN))
    }

    fn cross_entropy_backward(
        &mut self,
        dlogits: &mut Tensor<Self>,
        logits: &Vec<T>,
        labels: &Vec<i32>,
        lse: &Vec<T>,
        dloss: f64,
    ) -> Result<()> {
        let vocab = self.config.vocab_size;
        cross_entropy_backward(dlogits, logits, labels, lse, vocab, cst(dloss));
        Ok(())
    }
}
