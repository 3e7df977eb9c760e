//! The decoder on the kernel backend: the host model (the f32 master weights), its device copy
//! and the device gradients ([`Kernels`]), the decoder's workspace on the device and, when
//! training, the host training state the device gradients are brought back into.

use std::path::Path;

use crate::backend::cpu_engine::evaluation_only;
use crate::backend::host_training::HostTraining;
use crate::backend::{DeviceBuffers, Kernels};
use crate::error::Result;
use crate::hf::assign_tensors;
use crate::kernels::Device;
use crate::model::{Grads, Llama, Loss, Param, ParamId, TrainableSet, Workspace};
use crate::ops::attention::AttnMask;
use crate::train::optim::{AdamW, AdamWConfig};

/// The model on a device, with its workspace and training state.
pub struct KernelEngine {
    model: Llama<f32>,
    kernels: Kernels,
    workspace: Workspace<DeviceBuffers>,
    training: Option<HostTraining>,
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
            training: trainable.map(|set| HostTraining::new(set, &model.weights)),
            workspace: Workspace::new(recompute),
            model,
        })
    }

    pub fn model(&self) -> &Llama<f32> {
        &self.model
    }

    /// The host model and the device, dropping the device's buffers.
    pub fn into_parts(self) -> (Device, Llama<f32>) {
        (self.kernels.into_device(), self.model)
    }

    pub fn trains(&self) -> Option<TrainableSet> {
        self.training.as_ref().map(HostTraining::set)
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
        crate::backend::Backend::to_host(&mut self.kernels, logits)
    }

    pub fn saved_elements(&self) -> usize {
        self.workspace.saved_elements()
    }

    fn training(&self) -> Result<&HostTraining> {
        self.training.as_ref().ok_or_else(evaluation_only)
    }

    fn training_mut(&mut self) -> Result<&mut HostTraining> {
        self.training.as_mut().ok_or_else(evaluation_only)
    }

    pub fn zero_grads(&mut self) -> Result<()> {
        self.training_mut()?.zero_grads();
        self.kernels.zero_grads()
    }

    /// The gradients accumulated on the device, brought back into the host's.
    pub fn grads(&mut self) -> Result<&Grads<f32>> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        self.kernels.take_grads(training.grads_mut())?;
        Ok(training.grads())
    }

    pub fn trained_ids(&self) -> Result<Vec<ParamId>> {
        Ok(self.training()?.trained_ids())
    }

    pub fn start_optimizer(&mut self, config: AdamWConfig) -> Result<()> {
        self.training_mut()?.start_optimizer(config);
        Ok(())
    }

    pub fn set_optimizer(&mut self, optimizer: AdamW) -> Result<()> {
        self.training_mut()?.set_optimizer(optimizer)
    }

    pub fn optimizer(&mut self) -> Result<&AdamW> {
        self.training()?.optimizer()
    }

    /// The host optimizer step on the gradients brought back from the device, then the updated
    /// tensors uploaded.
    pub fn optimizer_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        self.kernels.take_grads(training.grads_mut())?;
        let norm = training.step(&mut self.model.weights, lr, max_grad_norm)?;
        let set = training.set();
        self.kernels
            .upload(&self.model.weights, |id| set.trains(id))?;
        Ok(norm)
    }

    pub fn assign_tensors(&mut self, tensors: Vec<Param<f32>>, path: &Path) -> Result<()> {
        assign_tensors(&mut self.model.weights, tensors, path)?;
        self.kernels.upload(&self.model.weights, |_| true)
    }
}
