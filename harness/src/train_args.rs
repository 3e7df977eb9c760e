//! The optimizer options every training command takes, and their one conversion to a
//! [`TrainConfig`]. Each command sets its own defaults on top (`mut_arg` in its arguments).

use clap::Args;
use longlora::model::TrainableSet;
use longlora::ops::attention::AttnMode;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::TrainConfig;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Optimizer steps.
    #[arg(long)]
    pub steps: usize,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Learning-rate schedule after warmup: constant (LongLoRA's) or cosine (to zero at the last
    /// step).
    #[arg(long)]
    pub schedule: Schedule,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Random seed: initial weights (LoRA adapters, or the whole model when it is trained from
    /// scratch) and data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What a command decides itself rather than through the optimizer options: the sequence length,
/// the attention and the trained set, and the defaults that depend on the run.
pub struct RunShape {
    pub seq_len: usize,
    pub attn: AttnMode,
    pub group_ratio: f64,
    pub trainable: TrainableSet,
    /// The learning rate without `--lr`.
    pub default_lr: f64,
    /// Warmup steps without `--warmup-steps`.
    pub default_warmup_steps: usize,
}

impl TrainArgs {
    /// The run's training configuration.
    pub fn config(&self, shape: RunShape) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            seq_len: shape.seq_len,
            lr: self.lr.unwrap_or(shape.default_lr),
            warmup_steps: self.warmup_steps.unwrap_or(shape.default_warmup_steps),
            schedule: self.schedule,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            max_grad_norm: self.max_grad_norm,
            attn: shape.attn,
            group_ratio: shape.group_ratio,
            trainable: shape.trainable,
            seed: self.seed,
        }
    }
}
