//! The training loop: sample windows, forward, backward into the trainable set's gradients,
//! clip, AdamW. Deterministic given the seed (every reduction runs in a fixed order).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Engine;
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::model::trainable::trained_pairs;
use crate::model::{Llama, LlamaWeights, TrainableSet};
use crate::ops::attention::{AttnMask, AttnMode};
use crate::rng::Rng;
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};

/// Everything that defines a training run besides the model and the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    #[serde(with = "display_str")]
    pub schedule: Schedule,
    pub adamw: AdamWConfig,
    pub max_grad_norm: f64,
    #[serde(with = "display_str")]
    pub attn: AttnMode,
    pub group_ratio: f64,
    #[serde(with = "display_str")]
    pub trainable: TrainableSet,
    pub seed: u64,
}

/// Enumerations as their command-line spelling, e.g. `"lora+embed+norm"`.
mod display_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, D: Display>(v: &D, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, De: Deserializer<'de>, T: FromStr>(d: De) -> Result<T, De::Error>
    where
        T::Err: Display,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// 1-based step number.
    pub step: usize,
    /// Mean training loss of the step's micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens processed by this run so far.
    pub tokens: usize,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
}

/// Where a run stands between two steps. With the optimizer state and the trained weights this
/// is everything a resumed run needs to continue exactly as if it had never stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerProgress {
    /// Optimizer steps completed.
    pub step: usize,
    pub tokens: usize,
    /// Training time before this process, so elapsed time and tokens/s continue across a resume.
    pub elapsed_s: f64,
    /// The sampling stream. Every batch is drawn from it, so its state is the data position.
    pub rng: Rng,
}

/// Optimizer state, gradient buffers and the sampling stream of one run.
pub struct Trainer {
    pub config: TrainConfig,
    optimizer: AdamW,
    grads: LlamaWeights<f32>,
    /// The backend the forward and backward passes run on.
    engine: Engine,
    mask: AttnMask,
    rng: Rng,
    step: usize,
    tokens: usize,
    elapsed_before_s: f64,
    /// Set when the first step starts, so set-up and evaluation do not count against tokens/s.
    started: Option<Instant>,
}

impl Trainer {
    /// Prepares a run on the CPU reference ops; the model must already carry LoRA adapters when
    /// the set trains them.
    pub fn new(model: &Llama<f32>, config: TrainConfig) -> Result<Self> {
        Self::with_engine(model, config, Engine::cpu())
    }

    /// Prepares a run on `engine`, opened on `model` for `config.trainable`.
    pub fn with_engine(model: &Llama<f32>, config: TrainConfig, engine: Engine) -> Result<Self> {
        for (option, value) in [
            ("steps", config.steps),
            ("batch_size", config.batch_size),
            ("grad_accum", config.grad_accum),
        ] {
            if value == 0 {
                return Err(Error::option(option, "must be at least 1"));
            }
        }
        if !(config.lr >= 0.0 && config.lr.is_finite()) {
            return Err(Error::option(
                "lr",
                format!("must be a finite non-negative number, got {}", config.lr),
            ));
        }
        let has_lora = model.weights.layers[0].q_proj.lora.is_some();
        if config.trainable.uses_lora() != has_lora {
            return Err(Error::option(
                "trainable",
                format!(
                    "set `{}` does not match a model {} LoRA adapters",
                    config.trainable,
                    if has_lora { "with" } else { "without" }
                ),
            ));
        }
        engine.check_trains(config.trainable)?;
        let mask = AttnMask::from_ratio(config.attn, config.group_ratio, config.seq_len)?;
        let grads = config.trainable.grads_for(&model.weights);
        let sizes: Vec<usize> = grads
            .params()
            .iter()
            .filter(|g| !g.data.is_empty())
            .map(|g| g.data.len())
            .collect();
        Ok(Trainer {
            optimizer: AdamW::new(config.adamw, &sizes),
            rng: Rng::derive(config.seed, 0x7261_696e),
            grads,
            engine,
            mask,
            step: 0,
            tokens: 0,
            elapsed_before_s: 0.0,
            started: None,
            config,
        })
    }

    /// Continues a run on `engine` from a checkpoint's progress and optimizer state; `model` must
    /// already hold the checkpoint's trained weights. Fails when the optimizer state does not fit the trained set.
    pub fn resume(
        model: &Llama<f32>,
        config: TrainConfig,
        progress: TrainerProgress,
        optimizer: AdamW,
        engine: Engine,
    ) -> Result<Self> {
        let mut trainer = Trainer::with_engine(model, config, engine)?;
        // The engine may hold device copies of the weights from before the checkpoint's were loaded.
        trainer.engine.weights_updated(model)?;
        let sizes = |o: &AdamW| -> (Vec<usize>, Vec<usize>) {
            (
                o.m.iter().map(Vec::len).collect(),
                o.v.iter().map(Vec::len).collect(),
            )
        };
        if sizes(&optimizer) != sizes(&trainer.optimizer) {
            return Err(Error::option(
                "trainable",
                "the checkpoint's optimizer state does not match the tensors this run trains",
            ));
        }
        if optimizer.config != trainer.optimizer.config {
            return Err(Error::option(
                "weight_decay",
                "the checkpoint's AdamW settings differ from this run's",
            ));
        }
        if progress.step > trainer.config.steps {
            return Err(Error::option(
                "steps",
                format!(
                    "the checkpoint is at step {}, past the run's {} steps",
                    progress.step, trainer.config.steps
                ),
            ));
        }
        trainer.optimizer = optimizer;
        trainer.rng = progress.rng;
        trainer.step = progress.step;
        trainer.tokens = progress.tokens;
        trainer.elapsed_before_s = progress.elapsed_s;
        Ok(trainer)
    }

    /// Where the run stands now (see [`TrainerProgress`]).
    pub fn progress(&self) -> TrainerProgress {
        TrainerProgress {
            step: self.step,
            tokens: self.tokens,
            elapsed_s: self.elapsed_before_s
                + self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            rng: self.rng.clone(),
        }
    }

    /// The AdamW moments, one entry per name of [`Trainer::trained_names`].
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Names of the trained tensors, in the optimizer's order.
    pub fn trained_names(&self) -> Vec<&str> {
        self.grads
            .params()
            .into_iter()
            .filter(|g| !g.data.is_empty())
            .map(|g| g.name.as_str())
            .collect()
    }

    /// The backend the run's passes run on (also for evaluating the model being trained).
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The last step's gradients (after clipping), shaped like the weights, empty where frozen.
    pub fn grads(&self) -> &LlamaWeights<f32> {
        &self.grads
    }

    /// Number of trained parameters.
    pub fn trained_params(&self) -> usize {
        self.grads.params().iter().map(|g| g.data.len()).sum()
    }

    /// One optimizer step over `grad_accum` micro-batches. A non-finite loss stops the run with
    /// an error naming the step, before the weights are touched.
    pub fn step(
        &mut self,
        model: &mut Llama<f32>,
        sampler: &dyn BatchSource,
    ) -> Result<StepReport> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let c = &self.config;
        if sampler.seq_len() != c.seq_len {
            return Err(Error::option(
                "seq_len",
                format!(
                    "the sampler yields windows of {} tokens but the run trains at {}",
                    sampler.seq_len(),
                    c.seq_len
                ),
            ));
        }
        for g in self.grads.params_mut() {
            g.data.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut loss = 0.0;
        for _ in 0..c.grad_accum {
            let batch = sampler.sample(c.batch_size, &mut self.rng);
            let engine = &mut self.engine;
            engine.forward(model, &batch.tokens, batch.batch, batch.seq_len, &self.mask)?;
            let count = crate::ops::cross_entropy::scored_count(&batch.targets).max(1);
            let dloss = 1.0 / (count * c.grad_accum) as f32;
            let sum = engine.backward(model, &batch.targets, dloss, &mut self.grads)?;
            loss += sum / count as f64 / c.grad_accum as f64;
            self.tokens += batch.tokens.len();
        }
        self.engine.take_grads(&mut self.grads)?;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss,
                checkpoint: None,
            });
        }
        let mut grads: Vec<_> = self
            .grads
            .params_mut()
            .into_iter()
            .filter(|g| !g.data.is_empty())
            .collect();
        let grad_norm = clip_grad_norm(&mut grads, c.max_grad_norm);
        let lr = c.schedule.lr(c.lr, self.step, c.warmup_steps, c.steps);
        self.optimizer
            .update(&mut trained_pairs(&mut model.weights, &self.grads), lr);
        self.engine.weights_updated(model)?;
        self.step += 1;
        let elapsed_s = self.elapsed_before_s + started.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm,
            tokens: self.tokens,
            elapsed_s,
            tokens_per_s: self.tokens as f64 / elapsed_s.max(1e-9),
        })
    }
}

/// Runs `config.steps` steps, calling `on_step` after each.
pub fn train(
    model: &mut Llama<f32>,
    sampler: &dyn BatchSource,
    config: TrainConfig,
    mut on_step: impl FnMut(&StepReport),
) -> Result<Vec<StepReport>> {
    let mut trainer = Trainer::new(model, config)?;
    let mut reports = Vec::with_capacity(trainer.config.steps);
    for _ in 0..trainer.config.steps {
        let r = trainer.step(model, sampler)?;
        on_step(&r);
        reports.push(r);
    }
    Ok(reports)
}
