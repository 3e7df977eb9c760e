//! Training: the trainer (sample, forward, backward, clip, AdamW), the optimizer and schedules, and
//! the run checkpoints that let an interrupted run resume bit for bit.

pub mod checkpoint;
pub mod optim;
mod trainer;

pub use trainer::{train, StepReport, TrainConfig, Trainer, TrainerProgress};
