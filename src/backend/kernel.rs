//! The kernel backend: the decoder's ops as our CUDA kernels, on a GPU or in the CPU emulator.
//! Weights live on the device as bf16 copies of the host's f32 master weights (the RMSNorm
//! weights as f32 copies); the gradients of the trained tensors are f32 device buffers, added into
//! the host's gradients after each step.

use crate::backend::{Backend, LinearId, Memory, NormId, Proj};
use crate::error::{Error, Result};
use crate::kernels::{
    self, to_bf16, AttentionHeads, BackwardOptions, Buffer, Device, DeviceRopeTable, Element,
    LinearShape, LoraAdapter, LoraBackward, Sequences, MAX_LORA_RANK,
};
use crate::model::config::LlamaConfig;
use crate::model::weights::{Linear, LlamaWeights, Param};
use crate::model::{Llama, TrainableSet};
use crate::ops::attention::AttnMask;

/// Device memory: bf16 activations, f32 statistics.
pub struct DeviceMemory;

impl Memory for DeviceMemory {
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

/// One tensor on the device, in the element type its kernels read, and its gradient when it is
/// trained.
struct DeviceParam<T: Element = u16> {
    value: Buffer<T>,
    grad: Option<Buffer<f32>>,
}

/// An element type the device copies of the f32 master weights are kept in.
trait MasterCopy: Element {
    fn from_master(values: &[f32]) -> Vec<Self>;
}

/// The GEMM operands and the embedding table: bf16, as the tensor cores read them.
impl MasterCopy for u16 {
    fn from_master(values: &[f32]) -> Vec<u16> {
        to_bf16(values)
    }
}

/// The RMSNorm weights: they sit near 1, where bf16's spacing (2^-7 above 1) would hide every
/// update smaller than 2^-8 from the forward, and there are only `hidden_size` of them per norm.
impl MasterCopy for f32 {
    fn from_master(values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }
}

/// A device tensor of either element type, as the uploads and gradient transfers see it.
trait TrainedTensor {
    fn grad_mut(&mut self) -> Option<&mut Buffer<f32>>;
    /// Overwrites the device copy with `master`, converted.
    fn write(&mut self, device: &Device, master: &[f32]) -> Result<()>;
}

impl<T: MasterCopy> TrainedTensor for DeviceParam<T> {
    fn grad_mut(&mut self) -> Option<&mut Buffer<f32>> {
        self.grad.as_mut()
    }
    fn write(&mut self, device: &Device, master: &[f32]) -> Result<()> {
        Ok(device.write(&mut self.value, &T::from_master(master))?)
    }
}

struct DeviceLora {
    a: DeviceParam,
    b: DeviceParam,
    rank: usize,
    scale: f32,
}

struct DeviceLinear {
    weight: DeviceParam,
    lora: Option<DeviceLora>,
    in_features: usize,
    out_features: usize,
}

struct DeviceLayer {
    input_layernorm: DeviceParam<f32>,
    q_proj: DeviceLinear,
    k_proj: DeviceLinear,
    v_proj: DeviceLinear,
    o_proj: DeviceLinear,
    post_attention_layernorm: DeviceParam<f32>,
    gate_proj: DeviceLinear,
    up_proj: DeviceLinear,
    down_proj: DeviceLinear,
}

/// The model's weights on a [`Device`] and the kernels that run the decoder's ops on them.
pub struct Kernels {
    device: Device,
    config: LlamaConfig,
    embed_tokens: DeviceParam,
    layers: Vec<DeviceLayer>,
    norm: DeviceParam<f32>,
    lm_head: DeviceLinear,
    /// Scratch of the adapters' backward (`dY·B`) and of the loss (per-row losses).
    dy_b: Option<Buffer<f32>>,
    row_loss: Option<Buffer<f32>>,
}

impl<T: MasterCopy> DeviceParam<T> {
    fn new(device: &Device, param: &Param<f32>, trained: bool) -> Result<Self> {
        Ok(DeviceParam {
            value: device.upload(&T::from_master(&param.data))?,
            grad: if trained {
                Some(device.zeros(param.data.len())?)
            } else {
                None
            },
        })
    }
}

impl DeviceLinear {
    fn new(device: &Device, lin: &Linear<f32>, trains: &impl Fn(&str) -> bool) -> Result<Self> {
        let lora = match &lin.lora {
            Some(l) => Some(DeviceLora {
                a: DeviceParam::new(device, &l.a, trains(&l.a.name))?,
                b: DeviceParam::new(device, &l.b, trains(&l.b.name))?,
                rank: l.rank,
                scale: l.scale(),
            }),
            None => None,
        };
        Ok(DeviceLinear {
            weight: DeviceParam::new(device, &lin.weight, trains(&lin.weight.name))?,
            lora,
            in_features: lin.in_features(),
            out_features: lin.out_features(),
        })
    }

    fn shape(&self, rows: usize) -> LinearShape {
        LinearShape {
            rows,
            in_features: self.in_features,
            out_features: self.out_features,
        }
    }
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

/// Fails, naming the option, for what the kernels do not cover: full fine-tuning (no weight-gradient
/// GEMM), head dims other than 64 and 128, LoRA ranks above 64.
pub fn check_supported(
    cfg: &LlamaConfig,
    trainable: Option<TrainableSet>,
    lora_rank: usize,
) -> Result<()> {
    if trainable == Some(TrainableSet::Full) {
        return Err(Error::option(
            "trainable",
            "full fine-tuning needs weight gradients of the base matrices, which the kernels \
             do not compute",
        ));
    }
    if !matches!(cfg.head_dim(), 64 | 128) {
        return Err(Error::option(
            "device",
            format!(
                "the attention kernels need a head dim of 64 or 128; this model's is {} (hidden \
                 {} / {} heads)",
                cfg.head_dim(),
                cfg.hidden_size,
                cfg.num_attention_heads
            ),
        ));
    }
    if lora_rank > MAX_LORA_RANK {
        return Err(Error::option(
            "lora_rank",
            format!("the LoRA kernels hold ranks up to {MAX_LORA_RANK}, got {lora_rank}"),
        ));
    }
    Ok(())
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
        let cfg = &model.config;
        let rank = model
            .weights
            .layers
            .iter()
            .flat_map(|l| [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj])
            .filter_map(|lin| lin.lora.as_ref().map(|l| l.rank))
            .max()
            .unwrap_or(0);
        check_supported(cfg, trainable, rank)?;
        let trains = |name: &str| trainable.is_some_and(|t| t.trains(name));
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    input_layernorm: DeviceParam::new(
                        &device,
                        &l.input_layernorm,
                        trains(&l.input_layernorm.name),
                    )?,
                    q_proj: DeviceLinear::new(&device, &l.q_proj, &trains)?,
                    k_proj: DeviceLinear::new(&device, &l.k_proj, &trains)?,
                    v_proj: DeviceLinear::new(&device, &l.v_proj, &trains)?,
                    o_proj: DeviceLinear::new(&device, &l.o_proj, &trains)?,
                    post_attention_layernorm: DeviceParam::new(
                        &device,
                        &l.post_attention_layernorm,
                        trains(&l.post_attention_layernorm.name),
                    )?,
                    gate_proj: DeviceLinear::new(&device, &l.gate_proj, &trains)?,
                    up_proj: DeviceLinear::new(&device, &l.up_proj, &trains)?,
                    down_proj: DeviceLinear::new(&device, &l.down_proj, &trains)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Kernels {
            embed_tokens: DeviceParam::new(&device, &w.embed_tokens, trains(&w.embed_tokens.name))?,
            layers,
            norm: DeviceParam::new(&device, &w.norm, trains(&w.norm.name))?,
            lm_head: DeviceLinear {
                weight: DeviceParam::new(&device, &w.lm_head, trains(&w.lm_head.name))?,
                lora: None,
                in_features: cfg.hidden_size,
                out_features: cfg.vocab_size,
            },
            config: cfg.clone(),
            device,
            dy_b: None,
            row_loss: None,
        })
    }

    /// The device, dropping the model's buffers.
    pub fn into_device(self) -> Device {
        self.device
    }

    /// The device, and the device tensors in the order of [`LlamaWeights::params`].
    fn params_mut(&mut self) -> (&Device, Vec<&mut dyn TrainedTensor>) {
        let mut out: Vec<&mut dyn TrainedTensor> = vec![&mut self.embed_tokens];
        for l in &mut self.layers {
            out.push(&mut l.input_layernorm);
            for lin in [&mut l.q_proj, &mut l.k_proj, &mut l.v_proj, &mut l.o_proj] {
                out.push(&mut lin.weight);
                if let Some(lora) = &mut lin.lora {
                    out.push(&mut lora.a);
                    out.push(&mut lora.b);
                }
            }
            out.push(&mut l.post_attention_layernorm);
            for lin in [&mut l.gate_proj, &mut l.up_proj, &mut l.down_proj] {
                out.push(&mut lin.weight);
            }
        }
        out.push(&mut self.norm);
        out.push(&mut self.lm_head.weight);
        (&self.device, out)
    }

    /// Re-uploads the trained tensors from the host's master weights (after an optimizer step).
    pub fn upload_trained(&mut self, weights: &LlamaWeights<f32>) -> Result<()> {
        let (device, params) = self.params_mut();
        for (dev, host) in params.into_iter().zip(weights.params()) {
            if dev.grad_mut().is_some() {
                dev.write(device, &host.data)?;
            }
        }
        Ok(())
    }

    /// Adds the device gradients into `grads` (shaped like the weights, empty = frozen) and zeroes
    /// them on the device.
    pub fn take_grads(&mut self, grads: &mut LlamaWeights<f32>) -> Result<()> {
        let (device, params) = self.params_mut();
        for (dev, host) in params.into_iter().zip(grads.params_mut()) {
            let Some(grad) = dev.grad_mut() else {
                continue;
            };
            if host.data.len() != grad.len() {
                return Err(Error::Shape {
                    what: format!("gradient of {}", host.name),
                    expected: format!("{} values, as on the device", grad.len()),
                    got: format!("{}", host.data.len()),
                });
            }
            for (h, d) in host.data.iter_mut().zip(device.download(grad)?) {
                *h += d;
            }
            device.fill_zeros(grad)?;
        }
        Ok(())
    }
}

impl Kernels {
    fn heads(&self) -> AttentionHeads {
        AttentionHeads {
            n_heads: self.config.num_attention_heads,
            n_kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim(),
        }
    }

    /// The equal-length documents of a batch whose query tensor has `q_len` elements.
    fn sequences(&self, batch: usize, q_len: usize) -> Sequences {
        let tokens = q_len / self.config.hidden_size;
        Sequences::equal(batch, tokens / batch.max(1))
    }
}

fn norm_param<'a>(
    layers: &'a mut [DeviceLayer],
    norm: &'a mut DeviceParam<f32>,
    id: NormId,
) -> &'a mut DeviceParam<f32> {
    match id {
        NormId::Input(l) => &mut layers[l].input_layernorm,
        NormId::PostAttention(l) => &mut layers[l].post_attention_layernorm,
        NormId::Final => norm,
    }
}

fn linear<'a>(
    layers: &'a mut [DeviceLayer],
    lm_head: &'a mut DeviceLinear,
    id: LinearId,
) -> &'a mut DeviceLinear {
    let LinearId::Layer(l, proj) = id else {
        return lm_head;
    };
    let layer = &mut layers[l];
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

/// The error for a backward pass through weights uploaded without gradient buffers.
fn frozen(what: &str) -> Error {
    Error::option(
        "trainable",
        format!("{what}: the adapter has no gradient buffer on the device (opened for evaluation)"),
    )
}

impl Backend for Kernels {
    type Memory = DeviceMemory;

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn lora_rank(&self, id: LinearId) -> usize {
        match id {
            LinearId::Layer(l, proj) => {
                let layer = &self.layers[l];
                let lin = match proj {
                    Proj::Q => &layer.q_proj,
                    Proj::K => &layer.k_proj,
                    Proj::V => &layer.v_proj,
                    Proj::O => &layer.o_proj,
                    Proj::Gate => &layer.gate_proj,
                    Proj::Up => &layer.up_proj,
                    Proj::Down => &layer.down_proj,
                };
                lin.lora.as_ref().map_or(0, |l| l.rank)
            }
            LinearId::LmHead => 0,
        }
    }

    fn tensor(&mut self, len: usize) -> Result<Buffer<u16>> {
        Ok(self.device.zeros(len)?)
    }
    fn stats(&mut self, len: usize) -> Result<Buffer<f32>> {
        Ok(self.device.zeros(len)?)
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
        let table = &self.embed_tokens.value;
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
        match self.embed_tokens.grad.as_mut() {
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
        let Kernels {
            device,
            layers,
            norm,
            ..
        } = self;
        let weight = &norm_param(layers, norm, id).value;
        Ok(kernels::rmsnorm_forward(
            device, out, rstd, x, weight, d, eps,
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
        let Kernels {
            device,
            layers,
            norm,
            ..
        } = self;
        let DeviceParam { value, grad } = norm_param(layers, norm, id);
        Ok(kernels::rmsnorm_backward(
            device,
            dx,
            grad.as_mut(),
            dout,
            x,
            value,
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
        accumulate: bool,
    ) -> Result<()> {
        let Kernels {
            device,
            layers,
            lm_head,
            ..
        } = self;
        let lin = linear(layers, lm_head, id);
        let shape = lin.shape(x.len() / lin.in_features);
        let (weight, lora) = (&lin.weight.value, lin.lora.as_ref());
        let lora = match (lora, xa) {
            (Some(l), Some(xa)) => Some((
                LoraAdapter {
                    a: &l.a.value,
                    b: &l.b.value,
                    rank: l.rank,
                    scale: l.scale,
                },
                xa,
            )),
            _ => None,
        };
        if accumulate {
            kernels::lora_linear_forward_accumulate(device, shape, x, weight, lora, y)?;
        } else {
            kernels::lora_linear_forward(device, shape, x, weight, lora, y)?;
        }
        Ok(())
    }

    fn linear_backward(
        &mut self,
        id: LinearId,
        dx: &mut Buffer<u16>,
        dy: &Buffer<u16>,
        x: &Buffer<u16>,
        xa: Option<&Buffer<f32>>,
    ) -> Result<()> {
        let Kernels {
            device,
            layers,
            lm_head,
            dy_b,
            ..
        } = self;
        let lin = linear(layers, lm_head, id);
        let shape = lin.shape(x.len() / lin.in_features);
        let (weight, lora) = (&lin.weight.value, lin.lora.as_mut());
        let lora = match (lora, xa) {
            (Some(DeviceLora { a, b, rank, scale }), Some(xa)) => Some(LoraBackward {
                adapter: LoraAdapter {
                    a: &a.value,
                    b: &b.value,
                    rank: *rank,
                    scale: *scale,
                },
                xa,
                dy_b: scratch(device, dy_b, shape.rows * *rank)?,
                grad_a: a.grad.as_mut().ok_or_else(|| frozen("lora_A"))?,
                grad_b: b.grad.as_mut().ok_or_else(|| frozen("lora_B"))?,
            }),
            _ => None,
        };
        Ok(kernels::lora_linear_backward(
            device, shape, dy, x, weight, lora, dx,
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
        batch: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        let sequences = self.sequences(batch, q.len());
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
        batch: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        let sequences = self.sequences(batch, q.len());
        // Deterministic, so that a training step (and activation recomputation) is reproducible.
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
    ) -> Result<()> {
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
