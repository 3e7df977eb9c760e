//! The step loop every training command shares: one metrics line per step, a progress bar,
//! checkpoints every K steps, Ctrl-C (finish the step, save, exit), and a clear stop on a
//! non-finite loss. A resumed run continues the same metrics file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use clap::Args;
use indicatif::ProgressBar;
use longlora::data::BatchSource;
use longlora::fs::write_atomic;
use longlora::train::checkpoint::{
    find_checkpoint, load_run_checkpoint, remove_checkpoints, save_run_checkpoint, RunCheckpoint,
    RunOptions,
};
use longlora::train::{StepReport, TrainConfig, Trainer};
use longlora::{Error, Result};
use serde_json::{json, Value};

use crate::finetune::utc_stamp;
use crate::progress::bar;

/// One JSON object per optimizer step.
pub const METRICS_FILE: &str = "metrics.jsonl";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C a request to stop after the current step; a second one exits at once,
/// for a user who does not want to wait.
fn watch_ctrl_c() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to quit now)");
        });
        if let Err(e) = installed {
            eprintln!("warning: Ctrl-C cannot save a checkpoint: {e}");
        }
    });
}

/// Where a training run writes and how it survives interruption: options shared by every command
/// that trains.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Output directory. Default: runs/<command>-<UTC date-time>.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Allow writing into a non-empty output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// Save a checkpoint every K steps (trained weights, optimizer state, step, RNG state) into
    /// OUTPUT/checkpoint-NNNNNN, keeping only the newest. Ctrl-C saves one whether or not this is set.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Continue an interrupted run from its output directory (its newest checkpoint) or from one
    /// checkpoint directory. Give the options the run was started with; it writes into its own
    /// output directory and continues metrics.jsonl.
    #[arg(long, conflicts_with_all = ["output", "overwrite"])]
    pub resume: Option<PathBuf>,
}

impl RunArgs {
    /// The checkpoint `--resume` names (read), and the run directory: the resumed run's, else
    /// `--output`, else `runs/<command>-<UTC date-time>`.
    pub fn open(&self, command: &str) -> Result<(PathBuf, Option<RunCheckpoint>)> {
        if self.save_every == Some(0) {
            return Err(Error::option("save-every", "must be at least 1"));
        }
        let Some(dir) = &self.resume else {
            let out = self
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{command}-{}", utc_stamp())));
            return Ok((out, None));
        };
        let checkpoint = load_run_checkpoint(&find_checkpoint(dir)?)?;
        eprintln!(
            "resuming {} at step {}",
            checkpoint.dir.display(),
            checkpoint.progress.step
        );
        let out = checkpoint
            .dir
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok((out, Some(checkpoint)))
    }
}

/// The optimizer options that define a run (a resume must repeat them), for the run's options list.
pub fn optimizer_options(config: &TrainConfig) -> RunOptions {
    vec![
        ("steps", json!(config.steps)),
        ("batch-size", json!(config.batch_size)),
        ("grad-accum", json!(config.grad_accum)),
        ("lr", json!(config.lr)),
        ("warmup-steps", json!(config.warmup_steps)),
        ("schedule", json!(config.schedule.to_string())),
        ("weight-decay", json!(config.adamw.weight_decay)),
        ("max-grad-norm", json!(config.max_grad_norm)),
    ]
}

/// Where and when a run saves checkpoints, and what they record about it.
pub struct Checkpointing<'a> {
    pub run_dir: &'a Path,
    /// Save after every this many steps; `None` saves only on Ctrl-C.
    pub save_every: Option<usize>,
    /// The checkpoint this run resumed from, if any: the last good one until a newer is saved.
    pub resumed_from: Option<PathBuf>,
    pub options: &'a RunOptions,
    pub notes: &'a Value,
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
/// are about to be recomputed).
pub fn run_steps(
    trainer: &mut Trainer,
    sampler: &dyn BatchSource,
    checkpointing: &Checkpointing,
    label: &str,
) -> Result<Vec<StepReport>> {
    let ck = checkpointing;
    let metrics_path = ck.run_dir.join(METRICS_FILE);
    let mut reports = earlier_reports(&metrics_path, trainer.progress().step)?;
    if ck.resumed_from.is_none() {
        remove_checkpoints(ck.run_dir)?;
    }
    let mut metrics = OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut last_checkpoint = ck.resumed_from.clone();
    let save =
        |trainer: &mut Trainer| save_run_checkpoint(ck.run_dir, trainer, ck.options, ck.notes);
    watch_ctrl_c();
    let steps = trainer.config.steps;
    let pb = bar(steps, label);
    pb.set_position(trainer.progress().step as u64);
    while trainer.progress().step < steps {
        if INTERRUPTED.load(Ordering::SeqCst) {
            pb.abandon();
            return Err(Error::Interrupted {
                step: trainer.progress().step,
                checkpoint: save(trainer)?,
                run_dir: ck.run_dir.to_path_buf(),
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
        if ck.save_every.is_some_and(|k| r.step % k == 0) {
            last_checkpoint = Some(save(trainer)?);
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
