//! AdamW on f32 master weights with f32 state, global-norm gradient clipping, and the learning-rate
//! schedules LongLoRA uses (linear warmup then constant; cosine as an option), all as PyTorch and
//! Hugging Face define them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::float::{cst, Float};
use crate::model::Param;

/// AdamW hyper-parameters (PyTorch's defaults, LongLoRA's weight decay of 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The first and second moments of every trained tensor, in the order the trainer passes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for tensors of these sizes.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> Self {
        AdamW {
            config,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Fails unless these moments are for tensors of exactly `sizes` (a checkpoint's state must
    /// match the tensors the run trains).
    pub fn check_sizes(&self, sizes: &[usize]) -> crate::Result<()> {
        let lens = |moments: &[Vec<f32>]| moments.iter().map(Vec::len).collect::<Vec<_>>();
        if lens(&self.m) == sizes && lens(&self.v) == sizes {
            return Ok(());
        }
        Err(Error::option(
            "trainable",
            "the checkpoint's optimizer state does not match the tensors this run trains",
        ))
    }

    /// One decoupled-weight-decay Adam update of each `(param, grad)` pair at learning rate `lr`.
    pub fn update<T: Float>(&mut self, pairs: &mut [(&mut Param<T>, &Param<T>)], lr: f64) {
        assert_eq!(pairs.len(), self.m.len(), "AdamW: tensor count changed");
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let decay = 1.0 - lr * c.weight_decay;
        let step_size = lr / bc1;
        for ((p, g), (m, v)) in pairs.iter_mut().zip(self.m.iter_mut().zip(&mut self.v)) {
            assert_eq!(p.data.len(), m.len(), "AdamW: {} changed size", p.name);
            for ((w, gr), (mi, vi)) in p
                .data
                .iter_mut()
                .zip(&g.data)
                .zip(m.iter_mut().zip(v.iter_mut()))
            {
                let gr = gr.to_f32().unwrap_or(f32::NAN);
                *mi = b1 * *mi + (1.0 - b1) * gr;
                *vi = b2 * *vi + (1.0 - b2) * gr * gr;
                let denom = (*vi as f64 / bc2).sqrt() + c.eps;
                let wv = w.to_f64().unwrap_or(f64::NAN) * decay - step_size * (*mi as f64) / denom;
                *w = cst(wv);
            }
        }
    }
}

/// The global L2 norm of all gradients.
pub fn global_norm<T: Float>(grads: &[&Param<T>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.data.iter())
        .map(|v| {
            let v = v.to_f64().unwrap_or(f64::NAN);
            v * v
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients so their global norm is at most `max_norm` (as `clip_grad_norm_` does)
/// and returns the norm before clipping.
pub fn clip_grad_norm<T: Float>(grads: &mut [&mut Param<T>], max_norm: f64) -> f64 {
    let norm = global_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>());
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            g.data.iter_mut().for_each(|v| *v *= cst(coef));
        }
    }
    norm
}

/// How the learning rate evolves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Schedule {
    /// Linear warmup, then constant (LongLoRA's `constant_with_warmup`).
    #[default]
    Constant,
    /// Linear warmup, then a half cosine down to zero at the last step.
    Cosine,
}

impl Schedule {
    /// Learning rate for the update made at `step` (0-based), as Hugging Face's schedulers give it:
    /// the first update of a warmup uses `base · 0`.
    pub fn lr(self, base: f64, step: usize, warmup: usize, total: usize) -> f64 {
        if step < warmup {
            return base * step as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = (step - warmup) as f64 / span;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        })
    }
}

impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            o => Err(Error::option(
                "schedule",
                format!("expected constant or cosine; got `{o}`"),
            )),
        }
    }
}
