//! The model's weights on a [`Device`]: the same [`LlamaWeights`] tree as the host's, over device
//! buffers, and its gradient companion for the trained tensors.

use crate::error::{Error, Result};
use crate::kernels::{to_bf16, Buffer, Device, MAX_LORA_RANK};
use crate::model::config::LlamaConfig;
use crate::model::{Grads, LlamaWeights, Param, ParamId, TrainableSet};

/// One weight on the device, in the element type its kernels read.
pub enum DeviceParam {
    /// The GEMM operands and the embedding table: bf16, as the tensor cores read them.
    Bf16(Buffer<u16>),
    /// The RMSNorm weights: they sit near 1, where bf16's spacing (2^-7 above 1) would hide every
    /// update smaller than 2^-8 from the forward, and there are only `hidden_size` of them per norm.
    F32(Buffer<f32>),
}

/// The weights on the device.
pub type DeviceWeights = LlamaWeights<DeviceParam>;
/// The f32 gradients of the trained tensors on the device; `None` for a frozen one.
pub type DeviceGrads = LlamaWeights<Option<Buffer<f32>>>;

impl DeviceParam {
    /// A device copy of the f32 master values of `id`.
    fn upload(device: &Device, id: ParamId, master: &[f32]) -> Result<Self> {
        Ok(match id {
            ParamId::Norm(_) => DeviceParam::F32(device.upload(master)?),
            _ => DeviceParam::Bf16(device.upload(&to_bf16(master))?),
        })
    }

    /// Overwrites the device copy with `master`, converted.
    pub fn write(&mut self, device: &Device, master: &[f32]) -> Result<()> {
        match self {
            DeviceParam::Bf16(buffer) => device.write(buffer, &to_bf16(master))?,
            DeviceParam::F32(buffer) => device.write(buffer, master)?,
        }
        Ok(())
    }

    /// The bf16 copy of a GEMM operand or the embedding table.
    pub fn bf16(&self) -> &Buffer<u16> {
        match self {
            DeviceParam::Bf16(buffer) => buffer,
            DeviceParam::F32(_) => unreachable!("only the RMSNorm weights are kept in f32"),
        }
    }

    /// The f32 copy of an RMSNorm weight.
    pub fn f32(&self) -> &Buffer<f32> {
        match self {
            DeviceParam::F32(buffer) => buffer,
            DeviceParam::Bf16(_) => unreachable!("the RMSNorm weights are kept in f32"),
        }
    }
}

/// Uploads `weights` to `device`.
pub fn upload_weights(
    device: &Device,
    weights: &LlamaWeights<Param<f32>>,
) -> Result<DeviceWeights> {
    weights.try_map(|id, p| {
        DeviceParam::upload(device, id, &p.data)
            .map_err(|e| allocating(e, format!("for the weight {}", id.hf_name())))
    })
}

/// Zero device gradients for the tensors of `weights` that `trainable` trains (none for
/// evaluation).
pub fn zero_grads(
    device: &Device,
    weights: &LlamaWeights<Param<f32>>,
    trainable: Option<TrainableSet>,
) -> Result<DeviceGrads> {
    weights.try_map(|id, p| match trainable {
        Some(set) if set.trains(id) => device.zeros(p.data.len()).map(Some).map_err(|e| {
            e.allocating(format!("for the gradient of {}", id.hf_name()))
                .into()
        }),
        _ => Ok(None),
    })
}

/// Writes the device gradients, multiplied by `scale`, into `host` (the same trained set).
pub fn download_grads(
    device: &Device,
    grads: &DeviceGrads,
    host: &mut Grads<f32>,
    scale: f32,
) -> Result<()> {
    for (id, h) in host.present_mut() {
        let Some(Some(grad)) = grads.param(id) else {
            return Err(Error::option(
                "trainable",
                format!(
                    "{} is trained on the host but not on the device",
                    id.hf_name()
                ),
            ));
        };
        h.data = device.download(grad)?;
        if scale != 1.0 {
            h.data.iter_mut().for_each(|v| *v *= scale);
        }
    }
    Ok(())
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

/// `e` naming the allocation when it ran out of device memory.
pub(crate) fn allocating(e: Error, what: String) -> Error {
    match e {
        Error::Kernel(k) => Error::Kernel(k.allocating(what)),
        other => other,
    }
}
