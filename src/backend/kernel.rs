//! The kernel backend: the decoder's ops as our CUDA kernels, on a GPU or in the CPU emulator.
//! Weights live on the device as bf16 copies of the host's f32 master weights (the RMSNorm
//! weights as f32 copies); the gradients of the trained tensors are f32 device buffers.

use crate::backend::device_weights::{
    check_supported, download_grads, upload_weights, zero_grads, DeviceGrads, DeviceWeights,
};
use crate::backend::{Backend, BatchShape, Buffers};
use crate::error::{Error, Result};
use crate::kernels::{
    self, AttentionHeads, AttentionScratch, BackwardOptions, Buffer, Device, DeviceRopeTable,
    KernelError, LinearScratch, LinearShape, LoraAdapter, LoraBackward, Sequences,
};
use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, NormId, ParamId};
use crate::model::{Grads, Llama, LlamaWeights, Param, TrainableSet};
use crate::ops::attention::AttnMask;

/// Device buffers: bf16 activations, f32 statistics.
pub struct DeviceBuffers;

impl Buffers for DeviceBuffers {
    type Tensor = Buffer<u16>;
    type Stats = Buffer<f32>;
    type Ids = Buffer<u32>;
    type Labels = Buffer<i32>;
    type Rope = DeviceRopeTable;

    fn tensor_len(tensor: &Buffer<u16>) -> usize {
        tensor.len()
    }
    fn stats_len(stats: &Buffer<f32>) -> usize {
        stats.len()
    }
}

/// The model's weights on a [`Device`], the gradients of the trained ones, and the kernels that
/// run the decoder's ops on them.
pub struct Kernels {
    device: Device,
    config: LlamaConfig,
    weights: DeviceWeights,
    grads: DeviceGrads,
    /// Scratch of the linear kernels, the attention backward and the loss (per-row losses), kept
    /// so that a step's layers allocate them once.
    linear_scratch: LinearScratch,
    attention_scratch: AttentionScratch,
    row_loss: Option<Buffer<f32>>,
}

/// Names an activation buffer that ran out of device memory.
fn for_activations(e: KernelError) -> KernelError {
    e.allocating("for the activations and scratch of a step")
}

/// A scratch buffer of exactly `len` elements, reallocated only when the length changes.
fn scratch<'a>(
    device: &Device,
    slot: &'a mut Option<Buffer<f32>>,
    len: usize,
) -> Result<&'a mut Buffer<f32>> {
    let buffer = match slot.take() {
        Some(b) if b.len() == len => b,
        _ => device.zeros(len)?,
    };
    Ok(slot.insert(buffer))
}

impl Kernels {
    /// Uploads `model`'s weights to `device`, with gradient buffers for the tensors `trainable`
    /// trains (none for evaluation). Fails, naming the option, for what the kernels do not cover
    /// (as [`Compute::check_model`](crate::backend::Compute::check_model) does).
    pub fn new(
        device: Device,
        model: &Llama<f32>,
        trainable: Option<TrainableSet>,
    ) -> Result<Self> {
        check_supported(&model.config, trainable, model.weights.max_lora_rank())?;
        Ok(Kernels {
            weights: upload_weights(&device, &model.weights)?,
            grads: zero_grads(&device, &model.weights, trainable)?,
            config: model.config.clone(),
            device,
            linear_scratch: LinearScratch::default(),
            attention_scratch: AttentionScratch::new(),
            row_loss: None,
        })
    }

    /// The device, dropping the model's buffers.
    pub fn into_device(self) -> Device {
        self.device
    }

    /// Overwrites the device copies of the tensors `which` selects with the host's `weights`.
    pub fn upload(
        &mut self,
        weights: &LlamaWeights<Param<f32>>,
        which: impl Fn(ParamId) -> bool,
    ) -> Result<()> {
        let device = &self.device;
        let mut result = Ok(());
        self.weights.visit_mut(|id, dev| {
            if result.is_ok() && which(id) {
                let host = weights
                    .param(id)
                    .expect("the device holds the host's tensors");
                result = dev.write(device, &host.data);
            }
        });
        result
    }

    /// Writes the device gradients, multiplied by `scale`, into `grads` (the trained set's).
    pub fn download_grads(&self, grads: &mut Grads<f32>, scale: f32) -> Result<()> {
        download_grads(&self.device, &self.grads, grads, scale)
    }

    /// The device, the weights on it and their gradients, for the optimizer step.
    pub(super) fn parts_mut(&mut self) -> (&Device, &mut DeviceWeights, &DeviceGrads) {
        (&self.device, &mut self.weights, &self.grads)
    }

    /// Zeroes the device gradients.
    pub fn zero_grads(&mut self) -> Result<()> {
        for (_, grad) in self.grads.present_mut() {
            self.device.fill_zeros(grad)?;
        }
        Ok(())
    }

    fn heads(&self) -> AttentionHeads {
        AttentionHeads {
            n_heads: self.config.num_attention_heads,
            n_kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim(),
        }
    }

    fn linear_shape(&self, id: LinearId, rows: usize) -> LinearShape {
        let (out_features, in_features) = id.features(&self.config);
        LinearShape {
            rows,
            in_features,
            out_features,
        }
    }
}

/// The error for a backward pass through weights uploaded without gradient buffers.
fn frozen(what: &str) -> Error {
    Error::option(
        "trainable",
        format!("{what}: the adapter has no gradient buffer on the device (opened for evaluation)"),
    )
}

impl Backend for Kernels {
    type Buffers = DeviceBuffers;

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn lora_rank(&self, id: LinearId) -> usize {
        self.weights.linear(id).lora_rank()
    }

    fn tensor(&mut self, len: usize) -> Result<Buffer<u16>> {
        Ok(self.device.zeros(len).map_err(for_activations)?)
    }
    fn stats(&mut self, len: usize) -> Result<Buffer<f32>> {
        Ok(self.device.zeros(len).map_err(for_activations)?)
    }
    fn ids(&mut self, values: &[u32]) -> Result<Buffer<u32>> {
        Ok(self.device.upload(values)?)
    }
    fn set_ids(&mut self, ids: &mut Buffer<u32>, values: &[u32]) -> Result<()> {
        Ok(self.device.write(ids, values)?)
    }
    fn labels(&mut self, values: &[i32]) -> Result<Buffer<i32>> {
        Ok(self.device.upload(values)?)
    }
    fn set_labels(&mut self, labels: &mut Buffer<i32>, values: &[i32]) -> Result<()> {
        Ok(self.device.write(labels, values)?)
    }
    fn rope_table(&mut self, seq_len: usize) -> Result<DeviceRopeTable> {
        let cfg = &self.config;
        Ok(DeviceRopeTable::new(
            &self.device,
            seq_len,
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.rope_scaling_factor,
        )?)
    }
    fn zero(&mut self, tensor: &mut Buffer<u16>) -> Result<()> {
        Ok(self.device.fill_zeros(tensor)?)
    }
    fn copy(&mut self, dst: &mut Buffer<u16>, src: &Buffer<u16>) -> Result<()> {
        Ok(self.device.copy(src, dst)?)
    }
    fn to_host(&mut self, tensor: &Buffer<u16>) -> Result<Vec<f32>> {
        Ok(kernels::from_bf16(&self.device.download(tensor)?))
    }

    fn embedding_forward(&mut self, out: &mut Buffer<u16>, tokens: &Buffer<u32>) -> Result<()> {
        let table = self.weights.embed_tokens.bf16();
        let d = self.config.hidden_size;
        Ok(kernels::embedding_forward(
            &self.device,
            out,
            tokens,
            table,
            d,
        )?)
    }

    fn embedding_backward(&mut self, dout: &Buffer<u16>, tokens: &Buffer<u32>) -> Result<()> {
        let d = self.config.hidden_size;
        match self.grads.embed_tokens.as_mut() {
            Some(dtable) => Ok(kernels::embedding_backward(
                &self.device,
                dtable,
                dout,
                tokens,
                d,
            )?),
            None => Ok(()),
        }
    }

    fn rmsnorm_forward(
        &mut self,
        id: NormId,
        out: &mut Buffer<u16>,
        rstd: &mut Buffer<f32>,
        x: &Buffer<u16>,
    ) -> Result<()> {
        let (d, eps) = (self.config.hidden_size, self.config.rms_norm_eps as f32);
        let weight = self.weights.norm(id).f32();
        Ok(kernels::rmsnorm_forward(
            &self.device,
            out,
            rstd,
            x,
            weight,
            d,
            eps,
        )?)
    }

    fn rmsnorm_backward(
        &mut self,
        id: NormId,
        dx: &mut Buffer<u16>,
        dout: &Buffer<u16>,
        x: &Buffer<u16>,
        rstd: &Buffer<f32>,
    ) -> Result<()> {
        let d = self.config.hidden_size;
        Ok(kernels::rmsnorm_backward(
            &self.device,
            dx,
            self.grads.norm_mut(id).as_mut(),
            dout,
            x,
            self.weights.norm(id).f32(),
            rstd,
            d,
        )?)
    }

    fn linear_forward(
        &mut self,
        id: LinearId,
        y: &mut Buffer<u16>,
        xa: Option<&mut Buffer<f32>>,
        x: &Buffer<u16>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let shape = self.linear_shape(id, rows);
        let lin = self.weights.linear(id);
        let lora = match (&lin.lora, xa) {
            (Some(l), Some(xa)) => Some((
                LoraAdapter {
                    a: l.a.bf16(),
                    b: l.b.bf16(),
                    rank: l.rank,
                    scale: l.scale(),
                },
                xa,
            )),
            _ => None,
        };
        let (device, weight) = (&self.device, lin.weight.bf16());
        let scratch = &mut self.linear_scratch;
        Ok(kernels::linear_forward(
            device, shape, x, weight, lora, y, accumulate, scratch,
        )?)
    }

    fn linear_backward(
        &mut self,
        id: LinearId,
        dx: &mut Buffer<u16>,
        dy: &Buffer<u16>,
        x: &Buffer<u16>,
        xa: Option<&Buffer<f32>>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        // The kernel adds into dx: overwriting is adding to zeros.
        if !accumulate {
            self.device.fill_zeros(dx)?;
        }
        let shape = self.linear_shape(id, rows);
        let Kernels {
            device,
            weights,
            grads,
            linear_scratch,
            ..
        } = self;
        let (lin, grad) = (weights.linear(id), grads.linear_mut(id));
        let lora = match (&lin.lora, xa) {
            (Some(l), Some(xa)) => {
                let g = grad
                    .lora
                    .as_mut()
                    .expect("the gradients mirror the weights");
                Some(LoraBackward {
                    adapter: LoraAdapter {
                        a: l.a.bf16(),
                        b: l.b.bf16(),
                        rank: l.rank,
                        scale: l.scale(),
                    },
                    xa,
                    grad_a: g.a.as_mut().ok_or_else(|| frozen("lora_A"))?,
                    grad_b: g.b.as_mut().ok_or_else(|| frozen("lora_B"))?,
                })
            }
            _ => None,
        };
        let weight = lin.weight.bf16();
        Ok(kernels::linear_backward(
            device,
            shape,
            dy,
            x,
            weight,
            lora,
            dx,
            linear_scratch,
        )?)
    }

    fn rope_forward(
        &mut self,
        x: &mut Buffer<u16>,
        rope: &DeviceRopeTable,
        positions: &Buffer<u32>,
        heads: usize,
    ) -> Result<()> {
        Ok(kernels::rope_forward(
            &self.device,
            x,
            rope,
            positions,
            heads,
        )?)
    }

    fn rope_backward(
        &mut self,
        dx: &mut Buffer<u16>,
        rope: &DeviceRopeTable,
        positions: &Buffer<u32>,
        heads: usize,
    ) -> Result<()> {
        Ok(kernels::rope_backward(
            &self.device,
            dx,
            rope,
            positions,
            heads,
        )?)
    }

    fn attention_forward(
        &mut self,
        out: &mut Buffer<u16>,
        lse: &mut Buffer<f32>,
        q: &Buffer<u16>,
        k: &Buffer<u16>,
        v: &Buffer<u16>,
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()> {
        let sequences = Sequences::equal(shape.batch, shape.seq_len);
        Ok(kernels::attention_forward(
            &self.device,
            out,
            lse,
            q,
            k,
            v,
            &sequences,
            self.heads(),
            mask,
            None,
        )?)
    }

    fn attention_backward(
        &mut self,
        dq: &mut Buffer<u16>,
        dk: &mut Buffer<u16>,
        dv: &mut Buffer<u16>,
        dout: &Buffer<u16>,
        q: &Buffer<u16>,
        k: &Buffer<u16>,
        v: &Buffer<u16>,
        out: &Buffer<u16>,
        lse: &Buffer<f32>,
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()> {
        let sequences = Sequences::equal(shape.batch, shape.seq_len);
        // The query-parallel dq rather than FlashAttention-2's atomics: on an H200 it was 2.5-4.8%
        // faster at every benched shape (REPORT.md, two machines), needs no f32 dq buffer, and adds
        // in a fixed order.
        let options = BackwardOptions {
            deterministic: true,
            accumulate: true,
        };
        Ok(kernels::attention_backward(
            &self.device,
            dq,
            dk,
            dv,
            dout,
            q,
            k,
            v,
            out,
            lse,
            &sequences,
            self.heads(),
            mask,
            options,
            &mut self.attention_scratch,
            None,
        )?)
    }

    fn swiglu_forward(
        &mut self,
        out: &mut Buffer<u16>,
        gate: &Buffer<u16>,
        up: &Buffer<u16>,
    ) -> Result<()> {
        Ok(kernels::swiglu_forward(&self.device, out, gate, up)?)
    }

    fn swiglu_backward(
        &mut self,
        dgate: &mut Buffer<u16>,
        dup: &mut Buffer<u16>,
        dout: &Buffer<u16>,
        gate: &Buffer<u16>,
        up: &Buffer<u16>,
        accumulate: bool,
    ) -> Result<()> {
        // The kernel adds into the gradients: overwriting is adding to zeros.
        if !accumulate {
            self.device.fill_zeros(dgate)?;
            self.device.fill_zeros(dup)?;
        }
        Ok(kernels::swiglu_backward(
            &self.device,
            dgate,
            dup,
            dout,
            gate,
            up,
        )?)
    }

    fn cross_entropy_forward(
        &mut self,
        lse: &mut Buffer<f32>,
        logits: &Buffer<u16>,
        labels: &Buffer<i32>,
    ) -> Result<f64> {
        let vocab = self.config.vocab_size;
        let row_loss = scratch(&self.device, &mut self.row_loss, labels.len())?;
        kernels::cross_entropy_forward(&self.device, lse, row_loss, logits, labels, vocab)?;
        // Summed on the host in row order, in f64, so the loss does not depend on scheduling.
        Ok(self
            .device
            .download(row_loss)?
            .iter()
            .map(|&l| l as f64)
            .sum())
    }

    fn cross_entropy_backward(
        &mut self,
        dlogits: &mut Buffer<u16>,
        logits: &Buffer<u16>,
        labels: &Buffer<i32>,
        lse: &Buffer<f32>,
        dloss: f64,
    ) -> Result<()> {
        let vocab = self.config.vocab_size;
        Ok(kernels::cross_entropy_backward(
            &self.device,
            dlogits,
            logits,
            labels,
            lse,
            vocab,
            dloss as f32,
        )?)
    }
}
