//! The model on the backend a run chose: what the trainer and the evaluator call. An engine owns
//! the model, the decoder's workspace, and, when it trains, the gradients and the optimizer state:
//! the trainer drives it (zero the gradients, forward and backward per micro-batch, one optimizer
//! step) and reads the model back at checkpoints and at the end.

use std::path::Path;

use crate::backend::device_weights::check_supported;
use crate::backend::{CpuEngine, KernelEngine};
use crate::cost::memory::{check_device_memory, device_train_memory};
use crate::error::{Error, Result};
use crate::kernels::Device;
use crate::model::{Grads, Llama, LlamaConfig, Loss, Param, ParamId, TrainableSet};
use crate::ops::attention::AttnMask;
use crate::train::optim::{AdamW, AdamWConfig};

/// Where the model runs: the CPU reference ops, or the kernels on a device (a CUDA GPU or the CPU
/// emulator).
pub enum Compute {
    Cpu,
    Kernels(Device),
}

impl Compute {
    /// Checks, before any expensive work, that a model of `config` with adapters of `lora_rank` (0:
    /// none) can train `trainable` (none: evaluate) here.
    pub fn check_model(
        &self,
        config: &LlamaConfig,
        trainable: Option<TrainableSet>,
        lora_rank: usize,
    ) -> Result<()> {
        match self {
            Compute::Cpu => Ok(()),
            Compute::Kernels(_) => check_supported(config, trainable, lora_rank),
        }
    }

    /// Fails, before anything is allocated, when a training step of `tokens` tokens would not fit
    /// in the GPU's free memory by the memory model (DESIGN §3). Nothing to check on the CPU or in
    /// the emulator, whose buffers are host memory.
    pub fn check_memory(
        &self,
        config: &LlamaConfig,
        trainable: TrainableSet,
        lora_rank: usize,
        tokens: usize,
        recompute: bool,
    ) -> Result<()> {
        let Compute::Kernels(device) = self else {
            return Ok(());
        };
        let Some((free, total)) = device.memory_info()? else {
            return Ok(());
        };
        let need = device_train_memory(config, trainable, lora_rank, tokens);
        check_device_memory(&need, recompute, free, total)
    }

    /// What a run prints about where it runs.
    pub fn describe(&self) -> String {
        match self {
            Compute::Cpu => "CPU (reference ops, f32)".into(),
            Compute::Kernels(device) if device.is_emulator() => {
                "CUDA kernels in the CPU emulator (bf16)".into()
            }
            Compute::Kernels(device) => format!("CUDA GPU {} (bf16)", device.name()),
        }
    }
}

/// The decoder on one backend, with the model it owns.
pub enum Engine {
    Cpu(Box<CpuEngine>),
    Kernels(Box<KernelEngine>),
}

/// Runs `$body` with `$engine` bound to whichever engine `$self` holds.
macro_rules! on_engine {
    ($self:expr, $engine:ident => $body:expr) => {
        match $self {
            Engine::Cpu($engine) => $body,
            Engine::Kernels($engine) => $body,
        }
    };
}

impl Engine {
    /// Opens `model` on `compute`, with gradients for the tensors `trainable` trains (none for
    /// evaluation). `recompute` keeps only each layer's input in the forward and recomputes the
    /// layer inside its backward.
    pub fn new(
        compute: Compute,
        model: Llama<f32>,
        trainable: Option<TrainableSet>,
        recompute: bool,
    ) -> Result<Engine> {
        Ok(match compute {
            Compute::Cpu => Engine::Cpu(Box::new(CpuEngine::new(model, trainable, recompute))),
            Compute::Kernels(device) => Engine::Kernels(Box::new(KernelEngine::new(
                device, model, trainable, recompute,
            )?)),
        })
    }

    /// `model` on the CPU reference ops, for evaluation.
    pub fn cpu(model: Llama<f32>) -> Engine {
        Engine::Cpu(Box::new(CpuEngine::new(model, None, false)))
    }

    /// Checks that the engine can train `set`: it holds gradients only for the set it was opened
    /// with.
    pub fn check_trains(&self, set: TrainableSet) -> Result<()> {
        let opened = on_engine!(self, e => e.trains());
        if opened == Some(set) {
            return Ok(());
        }
        Err(Error::option(
            "trainable",
            format!(
                "the run trains `{set}` but the engine was opened for {}",
                opened.map_or("evaluation only".to_string(), |t| format!("`{t}`"))
            ),
        ))
    }

    /// Gives back where this engine runs and the model, to open another engine there.
    pub fn into_parts(self) -> Result<(Compute, Llama<f32>)> {
        Ok(match self {
            Engine::Cpu(e) => (Compute::Cpu, e.into_model()),
            Engine::Kernels(e) => {
                let (device, model) = e.into_parts()?;
                (Compute::Kernels(device), model)
            }
        })
    }

    /// The model with the weights the engine trained so far (on a device: copied to the host).
    pub fn model(&mut self) -> Result<&Llama<f32>> {
        match self {
            Engine::Cpu(e) => Ok(e.model()),
            Engine::Kernels(e) => e.model(),
        }
    }

    /// The largest LoRA rank of the model's adapters (0 without adapters).
    pub fn lora_rank(&self) -> usize {
        on_engine!(self, e => e.lora_rank())
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens, keeping what backward needs.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        on_engine!(self, e => e.forward(tokens, batch, seq_len, mask))
    }

    /// The loss of the last forward against `targets` (−100 = not scored).
    pub fn loss(&mut self, targets: &[i32]) -> Result<Loss> {
        on_engine!(self, e => e.loss(targets))
    }

    /// Accumulates into the engine's gradients the gradient of `dloss · Σ(per-position loss)` of
    /// the last forward, and returns its loss.
    pub fn backward(&mut self, targets: &[i32], dloss: f64) -> Result<Loss> {
        on_engine!(self, e => e.backward(targets, dloss))
    }

    /// The last forward's logits (`[rows][vocab]`) on the host, as f32.
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        on_engine!(self, e => e.logits())
    }

    /// Elements the last forward kept for backward.
    pub fn saved_elements(&self) -> usize {
        on_engine!(self, e => e.saved_elements())
    }

    /// Zeroes the gradients before a step's micro-batches.
    pub fn zero_grads(&mut self) -> Result<()> {
        on_engine!(self, e => e.zero_grads())
    }

    /// The gradients of the trained tensors: accumulated by the backward passes since
    /// [`Engine::zero_grads`], clipped once [`Engine::optimizer_step`] ran.
    pub fn grads(&mut self) -> Result<&Grads<f32>> {
        on_engine!(self, e => e.grads())
    }

    /// The trained tensors, in the optimizer's order.
    pub fn trained_ids(&self) -> Result<Vec<ParamId>> {
        on_engine!(self, e => e.trained_ids())
    }

    /// Zero AdamW moments for the trained tensors.
    pub fn start_optimizer(&mut self, config: AdamWConfig) -> Result<()> {
        on_engine!(self, e => e.start_optimizer(config))
    }

    /// Continues from a checkpoint's optimizer state.
    pub fn set_optimizer(&mut self, optimizer: AdamW) -> Result<()> {
        on_engine!(self, e => e.set_optimizer(optimizer))
    }

    /// The AdamW state, one pair of moments per [`Engine::trained_ids`] entry.
    pub fn optimizer(&mut self) -> Result<&AdamW> {
        on_engine!(self, e => e.optimizer())
    }

    /// Clips the gradients to a global norm of `max_grad_norm`, then updates the trained tensors
    /// with AdamW at learning rate `lr`. Returns the gradient norm before clipping.
    pub fn optimizer_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        on_engine!(self, e => e.optimizer_step(lr, max_grad_norm))
    }

    /// Overwrites the model's tensors named by `tensors` (read from `path`, e.g. a checkpoint's).
    pub fn assign_tensors(&mut self, tensors: Vec<Param<f32>>, path: &Path) -> Result<()> {
        on_engine!(self, e => e.assign_tensors(tensors, path))
    }
}

/// The error for training through an engine opened without gradients.
pub(super) fn evaluation_only() -> Error {
    Error::option(
        "trainable",
        "the engine was opened for evaluation only: it holds no gradients",
    )
}

/// The error for an optimizer step before the trainer started the optimizer.
pub(super) fn no_optimizer() -> Error {
    Error::option(
        "trainable",
        "the optimizer has not been started: the engine was opened for training but no trainer \
         drives it",
    )
}
