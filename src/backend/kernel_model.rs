//! The decoder on the kernel backend, with its workspace: activation and backward buffers allocated
//! once per (batch, seq_len) and reused across steps.

use crate::backend::{Backend, DeviceMemory, Kernels};
use crate::error::{Error, Result};
use crate::kernels::Device;
use crate::model::decoder::{
    check_targets, check_tokens, decoder_backward, decoder_forward, decoder_loss, Activations,
    BackwardBuffers,
};
use crate::model::{Llama, TrainableSet};
use crate::ops::attention::AttnMask;
use crate::ops::cross_entropy::scored_count;

/// The decoder on the kernel backend, with its activation and backward buffers allocated once per
/// (batch, seq_len) and reused across steps.
pub struct KernelModel {
    kernels: Kernels,
    /// The set the device holds gradient buffers for (none: evaluation only).
    trainable: Option<TrainableSet>,
    recompute: bool,
    acts: Option<Activations<DeviceMemory>>,
    scratch: Option<BackwardBuffers<DeviceMemory>>,
}

impl KernelModel {
    /// Uploads `model` (see [`Kernels::new`]); with `recompute`, the forward keeps only each layer's
    /// input and the backward reruns each layer's forward before differentiating it.
    pub fn new(
        device: Device,
        model: &Llama<f32>,
        trainable: Option<TrainableSet>,
        recompute: bool,
    ) -> Result<Self> {
        Ok(KernelModel {
            kernels: Kernels::new(device, model, trainable)?,
            trainable,
            recompute,
            acts: None,
            scratch: None,
        })
    }

    /// The device, dropping the model's buffers.
    pub fn into_device(self) -> Device {
        self.kernels.into_device()
    }

    /// The set the device holds gradient buffers for (none: evaluation only).
    pub fn trainable(&self) -> Option<TrainableSet> {
        self.trainable
    }

    /// The weights and gradients on the device.
    pub fn kernels_mut(&mut self) -> &mut Kernels {
        &mut self.kernels
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens, keeping what backward needs.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        check_tokens(self.kernels.config(), tokens, batch, seq_len)?;
        let acts = match self.acts.take() {
            Some(acts) if acts.fits(batch, seq_len, mask, self.recompute) => acts,
            _ => {
                self.scratch = None;
                Activations::new(&mut self.kernels, batch, seq_len, mask, self.recompute)?
            }
        };
        let acts = self.acts.insert(acts);
        decoder_forward(&mut self.kernels, acts, tokens)
    }

    /// Backward buffers that fit the last forward.
    fn ensure_scratch(&mut self) -> Result<()> {
        let acts = self.acts.as_ref().ok_or_else(no_forward)?;
        if !self.scratch.as_ref().is_some_and(|s| s.fits(acts)) {
            self.scratch = Some(BackwardBuffers::new(&mut self.kernels, acts)?);
        }
        Ok(())
    }

    /// Mean cross-entropy of the last forward's logits against `targets` (−100 = not scored), and
    /// the number of scored positions.
    pub fn loss(&mut self, targets: &[i32]) -> Result<(f64, usize)> {
        self.ensure_scratch()?;
        let (Some(acts), Some(scratch)) = (&self.acts, &mut self.scratch) else {
            return Err(no_forward());
        };
        check_targets(self.kernels.config(), acts.rows(), targets)?;
        let sum = decoder_loss(&mut self.kernels, acts, scratch, targets)?;
        let count = scored_count(targets);
        Ok((if count == 0 { 0.0 } else { sum / count as f64 }, count))
    }

    /// Accumulates into the device gradients the gradient of `dloss · Σ(per-position loss)` of the
    /// last forward, and returns the summed loss.
    pub fn backward(&mut self, targets: &[i32], dloss: f64) -> Result<f64> {
        self.ensure_scratch()?;
        let (Some(acts), Some(scratch)) = (&self.acts, &mut self.scratch) else {
            return Err(no_forward());
        };
        check_targets(self.kernels.config(), acts.rows(), targets)?;
        decoder_backward(&mut self.kernels, acts, scratch, targets, dloss)
    }

    /// The last forward's logits (`[rows][vocab]`) on the host.
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        let acts = self.acts.as_ref().ok_or_else(no_forward)?;
        self.kernels.to_host(&acts.logits)
    }

    /// Elements the last forward kept for backward.
    pub fn saved_elements(&self) -> usize {
        self.acts.as_ref().map_or(0, Activations::saved_elements)
    }
}

fn no_forward() -> Error {
    Error::Data("no forward pass has run on the device yet".into())
}
