//! The step loop every training command shares: one metrics line per step, a progress bar,
//! checkpoints every K steps, a stop signal (finish the step, save, exit), and a clear stop on a
//! non-finite loss. A resumed run continues the same metrics file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use longlora::backend::Engine;
use longlora::data::BatchSource;
use longlora::fs::write_atomic;
use longlora::train::checkpoint::{
    remove_checkpoints, save_run_checkpoint, RunCheckpoint, RunMeta, RunOptions,
};
use longlora::train::optim::Schedule;
use longlora::train::run_record::RUN_RECORD_VERSION;
use longlora::train::{HeldoutLosses, RunCommand, RunRecord, StepReport, TrainConfig, Trainer};
use longlora::{Error, Result};
use serde_json::Value;

use crate::progress::{bar, peak_memory_mib};
use crate::run_dir::RunArgs;
use crate::signals;

/// One JSON object per optimizer step.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Where and when a run saves checkpoints, and what they record about it.
pub struct Checkpointing {
    pub run_dir: PathBuf,
    /// Save after every this many steps; `None` saves only when a signal stops the run.
    pub save_every: Option<usize>,
    /// How many of the newest checkpoints to keep.
    pub keep: usize,
    /// The checkpoint this run resumed from, if any: the last good one until a newer is saved.
    pub resumed_from: Option<PathBuf>,
    pub options: RunOptions,
    /// The run's `steps` at its start and after each resume that changed it.
    pub step_targets: Vec<usize>,
    pub notes: Value,
}

impl Checkpointing {
    fn save(&self, trainer: &mut Trainer) -> Result<PathBuf> {
        let meta = RunMeta {
            options: &self.options,
            step_targets: &self.step_targets,
            notes: &self.notes,
        };
        save_run_checkpoint(&self.run_dir, trainer, &meta, self.keep)
    }
}

/// Starts a run's trainer on `engine`, at step 0 or, resuming, at the checkpoint's step with its
/// weights put into the engine's model (which fails when `config` or `options` differ from the
/// run's), and
/// how it checkpoints into `run_dir`. The notes start as the checkpoint's (null for a new run).
pub fn start_run(
    args: &RunArgs,
    run_dir: PathBuf,
    options: RunOptions,
    config: TrainConfig,
    engine: Engine,
    resume: Option<RunCheckpoint>,
) -> Result<(Trainer, Checkpointing)> {
    let mut checkpointing = Checkpointing {
        run_dir,
        save_every: args.save_every,
        keep: args.keep_checkpoints,
        resumed_from: None,
        options,
        step_targets: vec![config.steps],
        notes: Value::Null,
    };
    let trainer = match resume {
        Some(ck) => {
            checkpointing.resumed_from = Some(ck.dir.clone());
            checkpointing.step_targets = ck.step_targets_with(config.steps);
            checkpointing.notes = ck.notes.clone();
            ck.resume(engine, config, &checkpointing.options)?
        }
        None => Trainer::with_engine(engine, config)?,
    };
    Ok((trainer, checkpointing))
}

/// The run record of a finished run of `command`, with what every training command records; the
/// command adds its own fields.
pub fn run_record(
    command: RunCommand,
    trainer: &Trainer,
    checkpointing: &Checkpointing,
    reports: &[StepReport],
    started: Instant,
) -> RunRecord {
    let (first, last) = (&reports[0], reports.last().expect("at least one step"));
    RunRecord {
        format_version: RUN_RECORD_VERSION,
        command,
        version: env!("CARGO_PKG_VERSION").into(),
        base_model: None,
        tokenizer: None,
        data: None,
        data_tokens: None,
        extension: None,
        original_context: None,
        preset: None,
        model: None,
        train: trainer.config.clone(),
        step_targets: checkpointing.step_targets.clone(),
        trained_parameters: trainer.trained_params(),
        heldout: HeldoutLosses::default(),
        first_step_loss: first.loss,
        last_step_loss: last.loss,
        tokens_per_s: last.tokens_per_s,
        total_time_s: started.elapsed().as_secs_f64(),
        peak_memory_mib: peak_memory_mib(),
        resumed_from: checkpointing.resumed_from.clone(),
    }
}

/// Shows one step on the progress bar.
pub fn show_step(pb: &ProgressBar, r: &StepReport) {
    pb.set_position(r.step as u64);
    pb.set_message(format!(
        "loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
        r.loss, r.lr, r.grad_norm, r.tokens_per_s
    ));
}

/// Runs `trainer` to its last step and returns the report of every step of the run, those before
/// a resume read back from the metrics file (whose lines past the resumed step are dropped: they
/// are about to be recomputed, as are the checkpoints past it). A run with a constant schedule
/// ends with a checkpoint of its last step, from which `--resume` can extend it.
pub fn run_steps(
    trainer: &mut Trainer,
    sampler: &dyn BatchSource,
    ck: &Checkpointing,
    label: &str,
) -> Result<Vec<StepReport>> {
    let metrics_path = ck.run_dir.join(METRICS_FILE);
    let start = trainer.progress().step;
    let mut reports = earlier_reports(&metrics_path, start)?;
    remove_checkpoints(&ck.run_dir, ck.resumed_from.as_ref().map(|_| start))?;
    let mut metrics = OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut last_checkpoint = ck.resumed_from.clone();
    let steps = trainer.config.steps;
    let pb = bar(steps, label);
    pb.set_position(start as u64);
    while trainer.progress().step < steps {
        if let Some(signal) = signals::requested() {
            pb.abandon();
            return Err(Error::Interrupted {
                signal,
                step: trainer.progress().step,
                checkpoint: ck.save(trainer)?,
                run_dir: ck.run_dir.clone(),
            });
        }
        let r = match trainer.step(sampler) {
            Ok(r) => r,
            Err(Error::Diverged { step, loss, .. }) => {
                pb.abandon();
                return Err(Error::Diverged {
                    step,
                    loss,
                    checkpoint: last_checkpoint,
                });
            }
            Err(e) => return Err(e),
        };
        show_step(&pb, &r);
        let line = serde_json::to_string(&r).expect("a step report serialises");
        writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        let last = r.step == steps && trainer.config.schedule == Schedule::Constant;
        if last || ck.save_every.is_some_and(|k| r.step % k == 0) {
            last_checkpoint = Some(ck.save(trainer)?);
        }
        reports.push(r);
    }
    pb.finish();
    Ok(reports)
}

/// The reports of steps up to `step` in `path`, rewriting the file to hold just those.
fn earlier_reports(path: &Path, step: usize) -> Result<Vec<StepReport>> {
    let mut reports = Vec::new();
    if step > 0 {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (i, line) in text.lines().enumerate() {
            let r: StepReport = serde_json::from_str(line).map_err(|e| Error::BadFile {
                path: path.into(),
                message: format!("line {}: {e}", i + 1),
            })?;
            if r.step <= step {
                reports.push(r);
            }
        }
    }
    let kept: String = reports
        .iter()
        .map(|r| serde_json::to_string(r).expect("a step report serialises") + "\n")
        .collect();
    write_atomic(path, kept.as_bytes())?;
    Ok(reports)
}
