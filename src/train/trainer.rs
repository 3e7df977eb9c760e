//! The training loop: sample windows, forward, backward into the trainable set's gradients,
//! clip, AdamW, each on the run's [`Engine`]. Deterministic given the seed on the CPU (every
//! reduction runs in a fixed order).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Compute, Engine};
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::model::{Llama, TrainableSet};
use crate::ops::attention::{AttnMask, AttnMode};
use crate::ops::cross_entropy::scored_count;
use crate::rng::Rng;
use crate::train::optim::{AdamW, AdamWConfig, Schedule};

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

/// The sampling stream and the progress of one run, driving an [`Engine`] that holds the model,
/// its gradients and the optimizer state.
pub struct Trainer {
    pub config: TrainConfig,
    /// The backend the forward and backward passes and the optimizer step run on.
    engine: Engine,
    mask: AttnMask,
    rng: Rng,
    step: usize,
    tokens: usize,
    /// Elements of the trained tensors.
    trained_params: usize,
    elapsed_before_s: f64,
    /// Set when the first step starts, so set-up and evaluation do not count against tokens/s.
    started: Option<Instant>,
}

impl Trainer {
    /// Prepares a run on the CPU reference ops; the model must already carry LoRA adapters when
    /// the set trains them.
    pub fn new(model: Llama<f32>, config: TrainConfig) -> Result<Self> {
        let engine = Engine::new(Compute::Cpu, model, Some(config.trainable), false)?;
        Self::with_engine(engine, config)
    }

    /// Prepares a run on `engine`, opened for `config.trainable`.
    pub fn with_engine(mut engine: Engine, config: TrainConfig) -> Result<Self> {
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
        let has_lora = engine.lora_rank() > 0;
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
        engine.start_optimizer(config.adamw)?;
        let trained = engine.trained_ids()?;
        let weights = &engine.model()?.weights;
        let trained_params = trained
            .iter()
            .filter_map(|&id| weights.param(id))
            .map(|p| p.data.len())
            .sum();
        Ok(Trainer {
            rng: Rng::derive(config.seed, 0x7261_696e),
            engine,
            mask,
            step: 0,
            tokens: 0,
            trained_params,
            elapsed_before_s: 0.0,
            started: None,
            config,
        })
    }

    /// Continues a run on `engine` from a checkpoint's progress and optimizer state; the engine's
    /// model must already hold the checkpoint's trained weights. Fails when the optimizer state
    /// does not fit the trained set.
    pub fn resume(
        engine: Engine,
        config: TrainConfig,
        progress: TrainerProgress,
        optimizer: AdamW,
    ) -> Result<Self> {
        let mut trainer = Trainer::with_engine(engine, config)?;
        let same_settings = optimizer.config == trainer.config.adamw;
        trainer.engine.set_optimizer(optimizer)?;
        if !same_settings {
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

    /// The backend the run's passes run on, which holds the model, its gradients and the optimizer
    /// state (also for evaluating the model being trained).
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The model as trained so far.
    pub fn model(&mut self) -> Result<&Llama<f32>> {
        self.engine.model()
    }

    /// The model as trained so far, ending the run.
    pub fn into_model(self) -> Result<Llama<f32>> {
        Ok(self.engine.into_parts()?.1)
    }

    /// Number of trained parameters.
    pub fn trained_params(&self) -> usize {
        self.trained_params
    }

    /// One optimizer step over `grad_accum` micro-batches. A non-finite loss stops the run with
    /// an error naming the step, before the weights are touched.
    pub fn step(&mut self, sampler: &dyn BatchSource) -> Result<StepReport> {
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
        self.engine.zero_grads()?;
        let mut loss = 0.0;
        for _ in 0..c.grad_accum {
            let batch = sampler.sample(c.batch_size, &mut self.rng);
            let engine = &mut self.engine;
            engine.forward(&batch.tokens, batch.batch, batch.seq_len, &self.mask)?;
            let count = scored_count(&batch.targets).max(1);
            let dloss = 1.0 / (count * c.grad_accum) as f32;
            let batch_loss = engine.backward(&batch.targets, dloss as f64)?;
            loss += batch_loss.mean() / c.grad_accum as f64;
            self.tokens += batch.tokens.len();
        }
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step: self.step + 1,
                loss,
                checkpoint: None,
            });
        }
        let lr = c.schedule.lr(c.lr, self.step, c.warmup_steps, c.steps);
        let grad_norm = self.engine.optimizer_step(lr, c.max_grad_norm)?;
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

/// Runs `config.steps` steps of `model` on the CPU, calling `on_step` after each; returns the
/// trained model and the reports.
pub fn train(
    model: Llama<f32>,
    sampler: &dyn BatchSource,
    config: TrainConfig,
    mut on_step: impl FnMut(&StepReport),
) -> Result<(Llama<f32>, Vec<StepReport>)> {
    let mut trainer = Trainer::new(model, config)?;
    let mut reports = Vec::with_capacity(trainer.config.steps);
    for _ in 0..trainer.config.steps {
        let r = trainer.step(sampler)?;
        on_step(&r);
        reports.push(r);
    }
    Ok((trainer.into_model()?, reports))
}
