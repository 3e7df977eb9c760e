//! The CPU backend: the reference ops of `ops/`, in f32 or f64, on the host weights.

use std::marker::PhantomData;

use crate::backend::{Backend, BatchShape, Buffers, Tensor};
use crate::error::{Error, Result};
use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, NormId};
use crate::model::{Grads, LlamaWeights, Param};
use crate::ops::attention::{attention_backward, attention_forward, AttnMask, AttnShape};
use crate::ops::bulk;
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::linear::{linear_backward, linear_forward};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::ops::rope::{rope_backward, rope_forward, RopeTable};
use crate::ops::swiglu::{swiglu_backward, swiglu_forward};

/// Host buffers: every tensor a `Vec<T>`.
pub struct HostBuffers<T>(PhantomData<T>);

impl<T> Buffers for HostBuffers<T> {
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

/// The reference ops over borrowed weights; gradients of the trained tensors go to `grads`.
pub struct Cpu<'a, T> {
    config: &'a LlamaConfig,
    weights: &'a LlamaWeights<Param<T>>,
    grads: Option<&'a mut Grads<T>>,
}

impl<'a, T: Float> Cpu<'a, T> {
    /// For forward passes only.
    pub fn new(config: &'a LlamaConfig, weights: &'a LlamaWeights<Param<T>>) -> Self {
        Cpu {
            config,
            weights,
            grads: None,
        }
    }

    /// Backward passes accumulate into `grads`.
    pub fn with_grads(
        config: &'a LlamaConfig,
        weights: &'a LlamaWeights<Param<T>>,
        grads: &'a mut Grads<T>,
    ) -> Self {
        Cpu {
            config,
            weights,
            grads: Some(grads),
        }
    }

    fn grads(&mut self) -> Result<&mut Grads<T>> {
        self.grads.as_deref_mut().ok_or_else(|| {
            Error::option(
                "backward",
                "the CPU backend was opened for forward passes only",
            )
        })
    }

    fn attn_shape(&self, shape: BatchShape) -> AttnShape {
        let cfg = self.config;
        AttnShape {
            batch: shape.batch,
            seq_len: shape.seq_len,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
        }
    }
}

impl<T: Float> Backend for Cpu<'_, T> {
    type Buffers = HostBuffers<T>;

    fn config(&self) -> &LlamaConfig {
        self.config
    }

    fn lora_rank(&self, id: LinearId) -> usize {
        self.weights.linear(id).lora_rank()
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
        bulk::fill(tensor, T::zero());
        Ok(())
    }
    fn copy(&mut self, dst: &mut Vec<T>, src: &Vec<T>) -> Result<()> {
        bulk::copy(dst, src);
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
        if let Some(dtable) = self.grads()?.embed_tokens.as_mut() {
            embedding_backward(&mut dtable.data, dout, tokens, d);
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
        let weight = &self.weights.norm(id).data;
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
        let dweight = self.grads()?.norm_mut(id).as_mut();
        let dweight = dweight.map(|g| g.data.as_mut_slice());
        rmsnorm_backward(dx, dweight, dout, x, &weights.norm(id).data, rstd, d);
        Ok(())
    }

    fn linear_forward(
        &mut self,
        id: LinearId,
        y: &mut Vec<T>,
        xa: Option<&mut Vec<T>>,
        x: &Vec<T>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let xa = xa.map_or(&mut [][..], |xa| xa.as_mut_slice());
        linear_forward(y, xa, x, self.weights.linear(id), rows, accumulate);
        Ok(())
    }

    fn linear_backward(
        &mut self,
        id: LinearId,
        dx: &mut Vec<T>,
        dy: &Vec<T>,
        x: &Vec<T>,
        xa: Option<&Vec<T>>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let xa = xa.map_or(&[][..], |xa| xa.as_slice());
        let lin = self.weights.linear(id);
        let grad = self.grads()?.linear_mut(id);
        linear_backward(Some(dx), grad, dy, x, lin, xa, rows, accumulate);
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
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()> {
        attention_forward(out, lse, q, k, v, &self.attn_shape(shape), mask);
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
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()> {
        let shape = self.attn_shape(shape);
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
        accumulate: bool,
    ) -> Result<()> {
        swiglu_backward(dgate, dup, dout, gate, up, accumulate);
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
