//! A Llama causal language model on the CPU reference ops (f32 or f64): the decoder of
//! [`crate::model::decoder`] on [`Cpu`].

use crate::backend::{Cpu, Host};
use crate::error::{Error, Result};
use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::model::decoder::{
    check_targets, check_tokens, decoder_backward, decoder_forward, Activations, BackwardBuffers,
};
use crate::model::weights::LlamaWeights;
use crate::ops::attention::AttnMask;
use crate::ops::cross_entropy::{cross_entropy_forward, scored_count};

/// A Llama causal language model.
#[derive(Clone, Debug)]
pub struct Llama<T> {
    pub config: LlamaConfig,
    pub weights: LlamaWeights<T>,
}

fn zeros<T: Float>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

impl<T: Float> Llama<T> {
    /// Wraps weights after checking them against the config.
    pub fn new(config: LlamaConfig, weights: LlamaWeights<T>) -> Result<Self> {
        config.validate()?;
        let expected = LlamaWeights::<T>::zeros(&config);
        let base: Vec<_> = weights
            .params()
            .into_iter()
            .filter(|p| !p.name.contains(".lora_"))
            .collect();
        if base.len() != expected.params().len() {
            return Err(Error::Shape {
                what: "model weights".into(),
                expected: format!("{} layers from the config", config.num_hidden_layers),
                got: format!("{} layers", weights.layers.len()),
            });
        }
        for (p, e) in base.into_iter().zip(expected.params()) {
            if p.name != e.name || p.shape != e.shape || p.data.len() != e.numel() {
                return Err(Error::Shape {
                    what: format!("parameter {}", e.name),
                    expected: format!("{:?}", e.shape),
                    got: format!("{} {:?} with {} values", p.name, p.shape, p.data.len()),
                });
            }
        }
        Ok(Llama { config, weights })
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens (row-major) and keeps the
    /// activations for [`Llama::backward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<Activations<Host<T>>> {
        check_tokens(&self.config, tokens, batch, seq_len)?;
        let mut cpu = Cpu::new(&self.config, &self.weights);
        let mut acts = Activations::new(&mut cpu, batch, seq_len, mask, false)?;
        decoder_forward(&mut cpu, &mut acts, tokens)?;
        Ok(acts)
    }

    /// Mean cross-entropy of the logits against `targets` (−100 = not scored), and the number of
    /// scored positions. A batch with nothing scored has loss 0.
    pub fn loss(&self, acts: &Activations<Host<T>>, targets: &[i32]) -> Result<(T, usize)> {
        check_targets(&self.config, acts.rows(), targets)?;
        let mut lse = zeros(acts.rows());
        let sum = cross_entropy_forward(&mut lse, &acts.logits, targets, self.config.vocab_size);
        let count = scored_count(targets);
        Ok((
            if count == 0 {
                T::zero()
            } else {
                sum / cst(count as f64)
            },
            count,
        ))
    }

    /// Accumulates into `grads` the gradient of `dloss · Σ(per-position loss)` for every tensor
    /// whose gradient buffer is non-empty, and returns the summed loss. With
    /// `dloss = 1 / scored_count` this is the gradient of the mean loss that [`Llama::loss`] reports.
    pub fn backward(
        &self,
        acts: &Activations<Host<T>>,
        targets: &[i32],
        dloss: T,
        grads: &mut LlamaWeights<T>,
    ) -> Result<T> {
        check_targets(&self.config, acts.rows(), targets)?;
        let mut cpu = Cpu::with_grads(&self.config, &self.weights, grads);
        let mut scratch = BackwardBuffers::new(&mut cpu, acts)?;
        let dloss = dloss.to_f64().unwrap_or(f64::NAN);
        let sum = decoder_backward(&mut cpu, acts, &mut scratch, targets, dloss)?;
        Ok(cst(sum))
    }
}
