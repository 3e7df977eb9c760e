//! The decoder on the kernel backend: the host model, its device copy and the device gradients
//! ([`Kernels`]), the decoder's workspace on the device and, when training, the f32 master copies
//! and AdamW moments on the device ([`DeviceOptimizer`]). A training step touches only the device;
//! the host model's trained tensors are brought up to date when they are asked for.

use std::path::Path;

use crate::backend::device_training::DeviceOptimizer;
use crate::backend::engine::{evaluation_only, no_optimizer};
use crate::backend::{Backend, DeviceBuffers, Kernels};
use crate::error::Result;
use crate::hf::assign_tensors;
use crate::kernels::Device;
use crate::model::{Grads, Llama, Loss, Param, ParamId, TrainableSet, Workspace};
use crate::ops::attention::AttnMask;
use crate::train::optim::{AdamW, AdamWConfig};

/// The model on a device, with its workspace and training state.
pub struct KernelEngine {
    /// The architecture and the frozen weights; the trained tensors as of the last
    /// [`KernelEngine::model`].
    model: Llama<f32>,
    kernels: Kernels,
    workspace: Workspace<DeviceBuffers>,
    training: Option<DeviceTraining>,
}

/// What training adds to the kernel engine.
struct DeviceTraining {
    set: TrainableSet,
    /// Started by the trainer.
    optimizer: Option<DeviceOptimizer>,
    /// The clipping factor of the last optimizer step; 1 once the gradients are zeroed.
    clip: f32,
    /// Whether the device's trained tensors moved since the host model last saw them.
    host_stale: bool,
    /// Host copies of the gradients and of the moments, written when asked for.
    grads: Option<Grads<f32>>,
    moments: Option<AdamW>,
}

impl KernelEngine {
    /// Uploads `model` (see [`Kernels::new`]); with `recompute`, the forward keeps only each
    /// layer's input and the backward reruns each layer's forward before differentiating it.
    pub fn new(
        device: Device,
        model: Llama<f32>,
        trainable: Option<TrainableSet>,
        recompute: bool,
    ) -> Result<Self> {
        Ok(KernelEngine {
            kernels: Kernels::new(device, &model, trainable)?,
            training: trainable.map(|set| DeviceTraining {
                set,
                optimizer: None,
                clip: 1.0,
                host_stale: false,
                grads: None,
                moments: None,
            }),
            workspace: Workspace::new(recompute),
            model,
        })
    }

    /// The host model, its trained tensors brought up to date from the device.
    pub fn model(&mut self) -> Result<&Llama<f32>> {
        if let Some(t) = self.training.as_mut().filter(|t| t.host_stale) {
            let optimizer = t.optimizer.as_ref().ok_or_else(no_optimizer)?;
            let (device, weights, _) = self.kernels.parts_mut();
            optimizer.download_trained(device, weights, &mut self.model.weights)?;
            t.host_stale = false;
        }
        Ok(&self.model)
    }

    /// The largest LoRA rank of the model's adapters.
    pub fn lora_rank(&self) -> usize {
        self.model.weights.max_lora_rank()
    }

    /// The host model (up to date) and the device, dropping the device's buffers.
    pub fn into_parts(mut self) -> Result<(Device, Llama<f32>)> {
        self.model()?;
        Ok((self.kernels.into_device(), self.model))
    }

    pub fn trains(&self) -> Option<TrainableSet> {
        self.training.as_ref().map(|t| t.set)
    }

    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        self.workspace
            .forward(&mut self.kernels, tokens, batch, seq_len, mask)
    }

    pub fn loss(&mut self, targets: &[i32]) -> Result<Loss> {
        self.workspace.loss(&mut self.kernels, targets)
    }

    pub fn backward(&mut self, targets: &[i32], dloss: f64) -> Result<Loss> {
        self.training()?;
        self.workspace.backward(&mut self.kernels, targets, dloss)
    }

    pub fn logits(&mut self) -> Result<Vec<f32>> {
        let logits = self.workspace.logits()?;
        self.kernels.to_host(logits)
    }

    pub fn saved_elements(&self) -> usize {
        self.workspace.saved_elements()
    }

    fn training(&mut self) -> Result<&mut DeviceTraining> {
        self.training.as_mut().ok_or_else(evaluation_only)
    }

    pub fn zero_grads(&mut self) -> Result<()> {
        self.training()?.clip = 1.0;
        self.kernels.zero_grads()
    }

    /// The device gradients (clipped once the optimizer step ran), copied to the host.
    pub fn grads(&mut self) -> Result<&Grads<f32>> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        let set = training.set;
        let grads = training
            .grads
            .get_or_insert_with(|| set.grads_for(&self.model.weights));
        self.kernels.download_grads(grads, training.clip)?;
        Ok(grads)
    }

    pub fn trained_ids(&self) -> Result<Vec<ParamId>> {
        let training = self.training.as_ref().ok_or_else(evaluation_only)?;
        Ok(training.set.trained_ids(&self.model.weights))
    }

    /// Zero moments, and master copies of the trained tensors' current values, on the device.
    pub fn start_optimizer(&mut self, config: AdamWConfig) -> Result<()> {
        self.model()?;
        let set = self.training()?.set;
        let (device, _, _) = self.kernels.parts_mut();
        let optimizer = DeviceOptimizer::new(device, &self.model.weights, set, config)?;
        self.training()?.optimizer = Some(optimizer);
        Ok(())
    }

    pub fn set_optimizer(&mut self, optimizer: AdamW) -> Result<()> {
        if self.training()?.optimizer.is_none() {
            self.start_optimizer(optimizer.config)?;
        }
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        let device_optimizer = training.optimizer.as_mut().ok_or_else(no_optimizer)?;
        device_optimizer.load_moments(self.kernels.parts_mut().0, &optimizer)
    }

    /// The moments, copied from the device.
    pub fn optimizer(&mut self) -> Result<&AdamW> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        let optimizer = training.optimizer.as_ref().ok_or_else(no_optimizer)?;
        let moments = optimizer.download(self.kernels.parts_mut().0)?;
        Ok(training.moments.insert(moments))
    }

    /// Clips the device gradients to a global norm of `max_grad_norm` and updates the trained
    /// tensors with AdamW at `lr`, in two launches on the device. Returns the norm before clipping.
    pub fn optimizer_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        let optimizer = training.optimizer.as_mut().ok_or_else(no_optimizer)?;
        let (device, weights, grads) = self.kernels.parts_mut();
        let (norm, clip) = optimizer.step(device, weights, grads, lr, max_grad_norm)?;
        training.clip = clip;
        training.host_stale = true;
        Ok(norm)
    }

    /// Overwrites the host model's tensors named by `tensors`, then every device copy (and master
    /// copy) from the host.
    pub fn assign_tensors(&mut self, tensors: Vec<Param<f32>>, path: &Path) -> Result<()> {
        self.model()?;
        assign_tensors(&mut self.model.weights, tensors, path)?;
        self.kernels.upload(&self.model.weights, |_| true)?;
        if let Some(optimizer) = self.training.as_mut().and_then(|t| t.optimizer.as_mut()) {
            optimizer.upload_masters(self.kernels.parts_mut().0, &self.model.weights)?;
        }
        Ok(())
    }
}
