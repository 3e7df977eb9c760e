//! A Llama causal language model on the CPU reference ops (f32 or f64): the decoder's
//! [`Workspace`] on [`Cpu`].

use crate::backend::{Cpu, HostBuffers};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::config::LlamaConfig;
use crate::model::param::Param;
use crate::model::weights::{Grads, LlamaWeights};
use crate::model::workspace::{Loss, Workspace};
use crate::ops::attention::AttnMask;

/// A Llama causal language model.
#[derive(Clone, Debug)]
pub struct Llama<T> {
    pub config: LlamaConfig,
    pub weights: LlamaWeights<Param<T>>,
}

/// The workspace of a model on the CPU reference ops.
pub type HostWorkspace<T> = Workspace<HostBuffers<T>>;

impl<T: Float> Llama<T> {
    /// Wraps weights after checking them against the config.
    pub fn new(config: LlamaConfig, weights: LlamaWeights<Param<T>>) -> Result<Self> {
        config.validate()?;
        if weights.layers.len() != config.num_hidden_layers {
            return Err(Error::Shape {
                what: "model weights".into(),
                expected: format!("{} layers from the config", config.num_hidden_layers),
                got: format!("{} layers", weights.layers.len()),
            });
        }
        let rank = weights.max_lora_rank();
        let mut bad = None;
        weights.visit(|id, p| {
            let (name, shape) = (id.hf_name(), id.shape(&config, rank));
            let fits = p.name == name && p.shape == shape && p.data.len() == p.numel();
            if !fits && !id.is_lora() && bad.is_none() {
                bad = Some(Error::Shape {
                    what: format!("parameter {name}"),
                    expected: format!("{shape:?}"),
                    got: format!("{} {:?} with {} values", p.name, p.shape, p.data.len()),
                });
            }
        });
        match bad {
            Some(e) => Err(e),
            None => Ok(Llama { config, weights }),
        }
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens (row-major); the returned
    /// workspace holds the activations for [`Llama::loss`] and [`Llama::backward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<HostWorkspace<T>> {
        let mut workspace = Workspace::new(false);
        let mut cpu = Cpu::new(&self.config, &self.weights);
        workspace.forward(&mut cpu, tokens, batch, seq_len, mask)?;
        Ok(workspace)
    }

    /// The cross-entropy of the last forward's logits against `targets` (−100 = not scored).
    pub fn loss(&self, workspace: &mut HostWorkspace<T>, targets: &[i32]) -> Result<Loss> {
        workspace.loss(&mut Cpu::new(&self.config, &self.weights), targets)
    }

    /// Accumulates into `grads` (the trained tensors' gradients) the gradient of
    /// `dloss · Σ(per-position loss)` of the last forward, and returns its loss. With
    /// `dloss = 1 / scored` this is the gradient of the mean loss that [`Llama::loss`] reports.
    pub fn backward(
        &self,
        workspace: &mut HostWorkspace<T>,
        targets: &[i32],
        dloss: f64,
        grads: &mut Grads<T>,
    ) -> Result<Loss> {
        let mut cpu = Cpu::with_grads(&self.config, &self.weights, grads);
        workspace.backward(&mut cpu, targets, dloss)
    }
}
