//! The one driver of the decoder: a [`Workspace`] owns the buffers of the passes over one backend
//! and runs forward, loss and backward in them. The CPU engine, the kernel engine and the plain
//! [`Llama`](crate::model::Llama) API all go through it.

use crate::backend::{Backend, BatchShape, Buffers};
use crate::error::{Error, Result};
use crate::model::activations::{Activations, BackwardBuffers, LossBuffers};
use crate::model::config::LlamaConfig;
use crate::model::decoder::{decoder_backward, decoder_forward, decoder_loss};
use crate::ops::attention::AttnMask;
use crate::ops::cross_entropy::{scored_count, IGNORE_INDEX};

/// The summed cross-entropy of a batch and the number of positions it scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    pub sum: f64,
    pub scored: usize,
}

impl Loss {
    /// The mean loss per scored position; 0 for a batch with nothing scored.
    pub fn mean(self) -> f64 {
        if self.scored == 0 {
            0.0
        } else {
            self.sum / self.scored as f64
        }
    }
}

/// The activations of the last forward, the loss's buffers and the backward's scratch on one
/// backend, allocated once per (batch, seq_len, mask, recompute) and reused by every pass of that
/// shape.
pub struct Workspace<M: Buffers> {
    /// Keep only each layer's input in the forward and recompute the layer inside its backward.
    recompute: bool,
    acts: Option<Activations<M>>,
    loss: Option<LossBuffers<M>>,
    scratch: Option<BackwardBuffers<M>>,
}

impl<M: Buffers> Workspace<M> {
    /// An empty workspace; the first forward allocates its buffers.
    pub fn new(recompute: bool) -> Self {
        Workspace {
            recompute,
            acts: None,
            loss: None,
            scratch: None,
        }
    }

    /// Runs the decoder on `batch` sequences of `seq_len` tokens (row-major) and keeps what the
    /// loss and the backward need.
    pub fn forward<B: Backend<Buffers = M>>(
        &mut self,
        b: &mut B,
        tokens: &[u32],
        batch: usize,
        seq_len: usize,
        mask: &AttnMask,
    ) -> Result<()> {
        let shape = BatchShape { batch, seq_len };
        check_tokens(b.config(), tokens, shape)?;
        let acts = match self.acts.take() {
            Some(acts) if acts.fits(shape, mask, self.recompute) => acts,
            _ => {
                self.loss = None;
                self.scratch = None;
                Activations::new(b, shape, mask, self.recompute)?
            }
        };
        decoder_forward(b, self.acts.insert(acts), tokens)
    }

    /// The cross-entropy of the last forward's logits against `targets` (−100 = not scored).
    pub fn loss<B: Backend<Buffers = M>>(&mut self, b: &mut B, targets: &[i32]) -> Result<Loss> {
        let acts = self.acts.as_ref().ok_or_else(no_forward)?;
        check_targets(b.config(), acts.shape.rows(), targets)?;
        let buffers = match self.loss.take() {
            Some(buffers) => buffers,
            None => LossBuffers::new(b, acts.shape.rows())?,
        };
        let sum = decoder_loss(b, acts, self.loss.insert(buffers), targets)?;
        Ok(Loss {
            sum,
            scored: scored_count(targets),
        })
    }

    /// Accumulates into the backend's gradients the gradient of `dloss · Σ(per-position loss)` of
    /// the last forward, and returns its loss. With `dloss = 1 / scored` this is the gradient of
    /// [`Loss::mean`].
    pub fn backward<B: Backend<Buffers = M>>(
        &mut self,
        b: &mut B,
        targets: &[i32],
        dloss: f64,
    ) -> Result<Loss> {
        let loss = self.loss(b, targets)?;
        let (Some(acts), Some(buffers)) = (&self.acts, &self.loss) else {
            unreachable!("the loss ran on this forward's buffers");
        };
        let scratch = match self.scratch.take() {
            Some(scratch) => scratch,
            None => BackwardBuffers::new(b, acts)?,
        };
        decoder_backward(b, acts, buffers, self.scratch.insert(scratch), dloss)?;
        Ok(loss)
    }

    /// The last forward's `[rows][vocab]` logits.
    pub fn logits(&self) -> Result<&M::Tensor> {
        Ok(&self.acts.as_ref().ok_or_else(no_forward)?.logits)
    }

    /// Elements the last forward kept for backward.
    pub fn saved_elements(&self) -> usize {
        self.acts.as_ref().map_or(0, Activations::saved_elements)
    }
}

fn no_forward() -> Error {
    Error::Data("no forward pass has run yet".into())
}

/// Checks a token batch against its shape and the vocabulary.
fn check_tokens(cfg: &LlamaConfig, tokens: &[u32], shape: BatchShape) -> Result<()> {
    if tokens.len() != shape.rows() || tokens.is_empty() {
        return Err(Error::Shape {
            what: "token batch".into(),
            expected: format!("{} × {} tokens (non-empty)", shape.batch, shape.seq_len),
            got: format!("{} tokens", tokens.len()),
        });
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {}",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// Checks labels against the number of rows and the vocabulary (−100 = not scored).
fn check_targets(cfg: &LlamaConfig, rows: usize, targets: &[i32]) -> Result<()> {
    if targets.len() != rows {
        return Err(Error::Shape {
            what: "targets".into(),
            expected: format!("{rows} labels"),
            got: format!("{}", targets.len()),
        });
    }
    let vocab = cfg.vocab_size as i32;
    match targets
        .iter()
        .find(|&&t| t != IGNORE_INDEX && !(0..vocab).contains(&t))
    {
        Some(bad) => Err(Error::Data(format!(
            "label {bad} is outside the vocabulary of {vocab} (and not -100)"
        ))),
        None => Ok(()),
    }
}
