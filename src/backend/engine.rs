//! The model on the backend a run chose: what the trainer and the evaluator call.

use crate::backend::kernel::check_supported;
use crate::backend::{Cpu, Host, KernelModel};
use crate::error::Result;
use crate::kernels::Device;
use crate::model::decoder::{
    check_targets, check_tokens, decoder_backward, decoder_forward, Activations, BackwardBuffers,
};
use crate::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use crate::ops::attention::AttnMask;

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

/// The decoder on one backend. The host `Llama<f32>` stays the master copy of the weights: the
/// kernel backend uploads device copies once (bf16; f32 for the RMSNorm weights) and refreshes the
/// trained ones after each update.
pub enum Engine {
    Cpu {
        recompute: bool,
        acts: Option<Box<Activations<Host<f32>>>>,
        /// The backward's scratch, kept across steps of one shape like the activations.
        scratch: Option<Box<BackwardBuffers<Host<f32>>>>,
    },
    Kernels(Box<KernelModel>),
}

impl Engine {
    /// Opens `model` on `compute`, with device gradients for the tensors `trainable` trains (none for
    /// evaluation). `recompute` keeps only each layer's input in the forward and recomputes the
    /// layer inside its backward.
    pub fn new(
        compute: Compute,
        model: &Llama<f32>,
        trainable: Option<TrainableSet>,
        recompute: bool,
    ) -> Result<Engine> {
        Ok(match compute {
            Compute::Cpu => Engine::Cpu {
                recompute,
                acts: None,
                scratch: None,
            },
            Compute::Kernels(device) => Engine::Kernels(Box::new(KernelModel::new(
                device, model, trainable, recompute,
            )?)),
        })
    }

    /// The CPU reference backend without recomputation.
    pub fn cpu() -> Engine {
        Engine::Cpu {
            recompute: false,
            acts: None,
            scratch: None,
        }
    }

    /// Checks that the engine can train `set`: the kernel backend holds gradient buffers only for
    /// the set it was opened with.
    pub fn check_trains(&self, set: TrainableSet) -> Result<()> {
        match self {
            Engine::Kernels(k) if k.trainable() != Some(set) => Err(crate::Error::option(
                "trainable",
                format!(
                    "the run trains `{set}` but the device was opened for {}",
                    k.trainable()
                        .map_or("evaluation only".to_string(), |t| format!("`{t}`"))
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Gives back where this engine runs, to open another model there.
    pub fn into_compute(self) -> Compute {
        match self {
            Engine::Cpu { .. } => Compute::Cpu,
            Engine::Kernels(k) => Compute::Kernels(k.into_device()),
        }
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens, keeping what backward needs.
    pub fn forward(
        &mut self,
        model: &Llama<f32>,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        match self {
            Engine::Cpu {
                recompute, acts, ..
            } => {
                check_tokens(&model.config, tokens, batch, seq_len)?;
                let mut cpu = Cpu::new(&model.config, &model.weights);
                let fresh = match acts.take() {
                    Some(a) if a.fits(batch, seq_len, mask, *recompute) => a,
                    _ => Box::new(Activations::new(
                        &mut cpu, batch, seq_len, mask, *recompute,
                    )?),
                };
                decoder_forward(&mut cpu, acts.insert(fresh), tokens)
            }
            Engine::Kernels(k) => k.forward(tokens, batch, seq_len, mask),
        }
    }

    /// Mean loss of the last forward against `targets` (−100 = not scored), and the scored count.
    pub fn loss(&mut self, model: &Llama<f32>, targets: &[i32]) -> Result<(f64, usize)> {
        match self {
            Engine::Cpu { acts, .. } => {
                let acts = acts.as_ref().ok_or_else(no_forward)?;
                let (mean, count) = model.loss(acts, targets)?;
                Ok((mean as f64, count))
            }
            Engine::Kernels(k) => k.loss(targets),
        }
    }

    /// Accumulates the gradient of `dloss · Σ(per-position loss)` of the last forward and returns
    /// the summed loss. The CPU adds into `grads` directly; the kernels into device buffers, which
    /// [`Engine::take_grads`] brings back.
    pub fn backward(
        &mut self,
        model: &Llama<f32>,
        targets: &[i32],
        dloss: f32,
        grads: &mut LlamaWeights<f32>,
    ) -> Result<f64> {
        match self {
            Engine::Cpu { acts, scratch, .. } => {
                let acts = acts.as_ref().ok_or_else(no_forward)?;
                check_targets(&model.config, acts.rows(), targets)?;
                let mut cpu = Cpu::with_grads(&model.config, &model.weights, grads);
                let scratch = match scratch.take() {
                    Some(s) if s.fits(acts) => scratch.insert(s),
                    _ => scratch.insert(Box::new(BackwardBuffers::new(&mut cpu, acts)?)),
                };
                decoder_backward(&mut cpu, acts, scratch, targets, dloss as f64)
            }
            Engine::Kernels(k) => k.backward(targets, dloss as f64),
        }
    }

    /// Adds the gradients held on the device into `grads` (nothing to do on the CPU).
    pub fn take_grads(&mut self, grads: &mut LlamaWeights<f32>) -> Result<()> {
        match self {
            Engine::Cpu { .. } => Ok(()),
            Engine::Kernels(k) => k.kernels_mut().take_grads(grads),
        }
    }

    /// Refreshes the backend's copy of the trained weights after the optimizer updated `model`.
    pub fn weights_updated(&mut self, model: &Llama<f32>) -> Result<()> {
        match self {
            Engine::Cpu { .. } => Ok(()),
            Engine::Kernels(k) => k.kernels_mut().upload_trained(&model.weights),
        }
    }

    /// The last forward's logits (`[rows][vocab]`) on the host, as f32.
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        match self {
            Engine::Cpu { acts, .. } => Ok(acts.as_ref().ok_or_else(no_forward)?.logits.clone()),
            Engine::Kernels(k) => k.logits(),
        }
    }

    /// Elements the last forward kept for backward.
    pub fn saved_elements(&self) -> usize {
        match self {
            Engine::Cpu { acts, .. } => acts.as_ref().map_or(0, |a| a.saved_elements()),
            Engine::Kernels(k) => k.saved_elements(),
        }
    }
}

fn no_forward() -> crate::Error {
    crate::Error::Data("no forward pass has run yet".into())
}
