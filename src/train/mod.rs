//! Training: the trainer (sample, forward, backward, clip, AdamW), the optimizer and schedules,
//! the run checkpoints that let an interrupted run resume bit for bit, and the run record.

pub mod checkpoint;
pub mod optim;
pub mod run_record;
mod trainer;

pub use run_record::{Extension, HeldoutLosses, RunCommand, RunRecord, RUN_FILE};
pub use trainer::{train, StepReport, TrainConfig, Trainer, TrainerProgress};
