//! The training state on the host: the gradients of the trained tensors, their AdamW moments, and
//! the optimizer step over them (clip to the global norm, then AdamW on the f32 master weights).

use crate::backend::engine::no_optimizer;
use crate::error::Result;
use crate::model::{Grads, LlamaWeights, Param, ParamId, TrainableSet};
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig};

/// Gradients of the tensors one trainable set trains, and the optimizer's state for them.
pub struct HostTraining {
    set: TrainableSet,
    grads: Grads<f32>,
    /// None until [`HostTraining::start_optimizer`] or [`HostTraining::set_optimizer`].
    optimizer: Option<AdamW>,
}

impl HostTraining {
    /// Zero gradients for the tensors of `weights` that `set` trains.
    pub fn new(set: TrainableSet, weights: &LlamaWeights<Param<f32>>) -> Self {
        HostTraining {
            set,
            grads: set.grads_for(weights),
            optimizer: None,
        }
    }

    pub fn set(&self) -> TrainableSet {
        self.set
    }

    pub fn grads(&self) -> &Grads<f32> {
        &self.grads
    }

    pub fn grads_mut(&mut self) -> &mut Grads<f32> {
        &mut self.grads
    }

    /// The trained tensors, in the optimizer's order.
    pub fn trained_ids(&self) -> Vec<ParamId> {
        self.grads.present().into_iter().map(|(id, _)| id).collect()
    }

    fn trained_sizes(&self) -> Vec<usize> {
        let present = self.grads.present();
        present.into_iter().map(|(_, g)| g.data.len()).collect()
    }

    pub fn zero_grads(&mut self) {
        for (_, g) in self.grads.present_mut() {
            g.data.fill(0.0);
        }
    }

    /// Zero AdamW moments for the trained tensors.
    pub fn start_optimizer(&mut self, config: AdamWConfig) {
        self.optimizer = Some(AdamW::new(config, &self.trained_sizes()));
    }

    /// Continues from `optimizer`'s state (a checkpoint's), which must hold moments for exactly
    /// the trained tensors.
    pub fn set_optimizer(&mut self, optimizer: AdamW) -> Result<()> {
        optimizer.check_sizes(&self.trained_sizes())?;
        self.optimizer = Some(optimizer);
        Ok(())
    }

    pub fn optimizer(&self) -> Result<&AdamW> {
        self.optimizer.as_ref().ok_or_else(no_optimizer)
    }

    /// Clips the gradients to a global norm of `max_grad_norm` and applies one AdamW update at
    /// learning rate `lr` to the trained tensors of `weights`. Returns the norm before clipping.
    pub fn step(
        &mut self,
        weights: &mut LlamaWeights<Param<f32>>,
        lr: f64,
        max_grad_norm: f64,
    ) -> Result<f64> {
        let optimizer = self.optimizer.as_mut().ok_or_else(no_optimizer)?;
        let mut grads: Vec<&mut Param<f32>> = self
            .grads
            .present_mut()
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        let norm = clip_grad_norm(&mut grads, max_grad_norm);
        let mut pairs = Vec::new();
        let all_grads = &self.grads;
        weights.visit_mut(|id, p| {
            if let Some(Some(g)) = all_grads.param(id) {
                pairs.push((p, g));
            }
        });
        optimizer.update(&mut pairs, lr);
        Ok(norm)
    }
}
