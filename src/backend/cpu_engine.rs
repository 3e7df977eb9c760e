//! The decoder on the CPU reference ops (f32): the model, whose weights are the master copy the
//! optimizer updates, the decoder's workspace and, when training, the host training state.

use std::path::Path;

use crate::backend::engine::evaluation_only;
use crate::backend::host_training::HostTraining;
use crate::backend::{Cpu, HostBuffers};
use crate::error::Result;
use crate::hf::assign_tensors;
use crate::model::{Grads, Llama, Loss, Param, ParamId, TrainableSet, Workspace};
use crate::ops::attention::AttnMask;
use crate::train::optim::{AdamW, AdamWConfig};

/// The model on the CPU, with its workspace and training state.
pub struct CpuEngine {
    model: Llama<f32>,
    workspace: Workspace<HostBuffers<f32>>,
    training: Option<HostTraining>,
}

impl CpuEngine {
    /// Opens `model` with gradients for the tensors `trainable` trains (none: evaluation).
    pub fn new(model: Llama<f32>, trainable: Option<TrainableSet>, recompute: bool) -> Self {
        CpuEngine {
            training: trainable.map(|set| HostTraining::new(set, &model.weights)),
            workspace: Workspace::new(recompute),
            model,
        }
    }

    pub fn model(&self) -> &Llama<f32> {
        &self.model
    }

    /// The largest LoRA rank of the model's adapters.
    pub fn lora_rank(&self) -> usize {
        self.model.weights.max_lora_rank()
    }

    pub fn into_model(self) -> Llama<f32> {
        self.model
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
        let mut cpu = Cpu::new(&self.model.config, &self.model.weights);
        self.workspace
            .forward(&mut cpu, tokens, batch, seq_len, mask)
    }

    pub fn loss(&mut self, targets: &[i32]) -> Result<Loss> {
        let mut cpu = Cpu::new(&self.model.config, &self.model.weights);
        self.workspace.loss(&mut cpu, targets)
    }

    pub fn backward(&mut self, targets: &[i32], dloss: f64) -> Result<Loss> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        let (config, weights) = (&self.model.config, &self.model.weights);
        let mut cpu = Cpu::with_grads(config, weights, training.grads_mut());
        self.workspace.backward(&mut cpu, targets, dloss)
    }

    pub fn logits(&self) -> Result<Vec<f32>> {
        Ok(self.workspace.logits()?.clone())
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
        Ok(())
    }

    pub fn grads(&mut self) -> Result<&Grads<f32>> {
        Ok(self.training()?.grads())
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

    pub fn optimizer_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        let training = self.training.as_mut().ok_or_else(evaluation_only)?;
        training.step(&mut self.model.weights, lr, max_grad_norm)
    }

    pub fn assign_tensors(&mut self, tensors: Vec<Param<f32>>, path: &Path) -> Result<()> {
        assign_tensors(&mut self.model.weights, tensors, path)
    }
}
