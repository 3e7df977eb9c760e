//! The ops the Llama decoder is written against (DESIGN §1), so that one decoder runs on the CPU
//! reference ops ([`Cpu`], f32 or f64) and on our kernels ([`Kernels`], on a CUDA GPU or in the CPU
//! emulator). Every backward op accumulates into its outputs; the decoder zeroes what it reuses.

mod cpu;
mod cpu_engine;
mod device_training;
mod device_weights;
mod engine;
mod host_training;
mod kernel;
mod kernel_engine;

pub use cpu::{Cpu, HostBuffers};
pub use cpu_engine::CpuEngine;
pub use engine::{Compute, Engine};
pub use kernel::{DeviceBuffers, Kernels};
pub use kernel_engine::KernelEngine;

use crate::error::Result;
use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, NormId};
use crate::ops::attention::AttnMask;

/// The shape of a batch of equal-length sequences: the activation matrices have
/// `batch · seq_len` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub batch: usize,
    pub seq_len: usize,
}

impl BatchShape {
    pub fn rows(self) -> usize {
        self.batch * self.seq_len
    }
}

/// The buffer types a backend allocates: activations, f32 statistics (RMSNorm's rstd, attention's
/// and the loss's log-sum-exp, LoRA's `x·Aᵀ`), token ids and positions, labels, and the RoPE table.
pub trait Buffers {
    type Tensor;
    type Stats;
    type Ids;
    type Labels;
    type Rope;

    fn tensor_len(tensor: &Self::Tensor) -> usize;
    fn stats_len(stats: &Self::Stats) -> usize;
}

pub type Tensor<B> = <<B as Backend>::Buffers as Buffers>::Tensor;
pub type Stats<B> = <<B as Backend>::Buffers as Buffers>::Stats;
pub type Ids<B> = <<B as Backend>::Buffers as Buffers>::Ids;
pub type Labels<B> = <<B as Backend>::Buffers as Buffers>::Labels;
pub type Rope<B> = <<B as Backend>::Buffers as Buffers>::Rope;

/// The ops of the decoder. Tensors are row-major `[rows][features]`; the backend owns the weights
/// (named by [`LinearId`] / [`NormId`]) and the gradients of the trained ones.
pub trait Backend {
    type Buffers: Buffers;

    fn config(&self) -> &LlamaConfig;
    /// Rank of a linear layer's LoRA adapter, 0 without one.
    fn lora_rank(&self, id: LinearId) -> usize;

    /// A zeroed activation tensor of `len` elements.
    fn tensor(&mut self, len: usize) -> Result<Tensor<Self>>;
    fn stats(&mut self, len: usize) -> Result<Stats<Self>>;
    fn ids(&mut self, values: &[u32]) -> Result<Ids<Self>>;
    fn set_ids(&mut self, ids: &mut Ids<Self>, values: &[u32]) -> Result<()>;
    fn labels(&mut self, values: &[i32]) -> Result<Labels<Self>>;
    fn set_labels(&mut self, labels: &mut Labels<Self>, values: &[i32]) -> Result<()>;
    fn rope_table(&mut self, seq_len: usize) -> Result<Rope<Self>>;
    fn zero(&mut self, tensor: &mut Tensor<Self>) -> Result<()>;
    fn copy(&mut self, dst: &mut Tensor<Self>, src: &Tensor<Self>) -> Result<()>;
    /// The tensor's values on the host, as f32.
    fn to_host(&mut self, tensor: &Tensor<Self>) -> Result<Vec<f32>>;

    fn embedding_forward(&mut self, out: &mut Tensor<Self>, tokens: &Ids<Self>) -> Result<()>;
    fn embedding_backward(&mut self, dout: &Tensor<Self>, tokens: &Ids<Self>) -> Result<()>;

    fn rmsnorm_forward(
        &mut self,
        id: NormId,
        out: &mut Tensor<Self>,
        rstd: &mut Stats<Self>,
        x: &Tensor<Self>,
    ) -> Result<()>;
    fn rmsnorm_backward(
        &mut self,
        id: NormId,
        dx: &mut Tensor<Self>,
        dout: &Tensor<Self>,
        x: &Tensor<Self>,
        rstd: &Stats<Self>,
    ) -> Result<()>;

    /// `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ` over `rows` rows, saving `xa = x·Aᵀ` (given exactly when the
    /// layer has an adapter); with `accumulate`, `y +=` instead.
    fn linear_forward(
        &mut self,
        id: LinearId,
        y: &mut Tensor<Self>,
        xa: Option<&mut Stats<Self>>,
        x: &Tensor<Self>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()>;
    /// `dx = dy·W + s·(dy·B)·A` over `rows` rows (with `accumulate`, `dx +=`), and the layer's
    /// trained weights' gradients added to the backend's.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &mut self,
        id: LinearId,
        dx: &mut Tensor<Self>,
        dy: &Tensor<Self>,
        x: &Tensor<Self>,
        xa: Option<&Stats<Self>>,
        rows: usize,
        accumulate: bool,
    ) -> Result<()>;

    /// Rotates `x` (`[rows][heads][head_dim]`) in place.
    fn rope_forward(
        &mut self,
        x: &mut Tensor<Self>,
        rope: &Rope<Self>,
        positions: &Ids<Self>,
        heads: usize,
    ) -> Result<()>;
    fn rope_backward(
        &mut self,
        dx: &mut Tensor<Self>,
        rope: &Rope<Self>,
        positions: &Ids<Self>,
        heads: usize,
    ) -> Result<()>;

    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &mut self,
        out: &mut Tensor<Self>,
        lse: &mut Stats<Self>,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &mut self,
        dq: &mut Tensor<Self>,
        dk: &mut Tensor<Self>,
        dv: &mut Tensor<Self>,
        dout: &Tensor<Self>,
        q: &Tensor<Self>,
        k: &Tensor<Self>,
        v: &Tensor<Self>,
        out: &Tensor<Self>,
        lse: &Stats<Self>,
        shape: BatchShape,
        mask: &AttnMask,
    ) -> Result<()>;

    fn swiglu_forward(
        &mut self,
        out: &mut Tensor<Self>,
        gate: &Tensor<Self>,
        up: &Tensor<Self>,
    ) -> Result<()>;
    /// `dgate` and `dup` from `dout` (with `accumulate`, added to them).
    fn swiglu_backward(
        &mut self,
        dgate: &mut Tensor<Self>,
        dup: &mut Tensor<Self>,
        dout: &Tensor<Self>,
        gate: &Tensor<Self>,
        up: &Tensor<Self>,
        accumulate: bool,
    ) -> Result<()>;

    /// Writes each row's log-sum-exp and returns the summed loss of the scored rows.
    fn cross_entropy_forward(
        &mut self,
        lse: &mut Stats<Self>,
        logits: &Tensor<Self>,
        labels: &Labels<Self>,
    ) -> Result<f64>;
    fn cross_entropy_backward(
        &mut self,
        dlogits: &mut Tensor<Self>,
        logits: &Tensor<Self>,
        labels: &Labels<Self>,
        lse: &Stats<Self>,
        dloss: f64,
    ) -> Result<()>;
}
