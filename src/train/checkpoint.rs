//! Checkpoints of a training run: the trained tensors, the AdamW moments, the trainer's progress
//! (step, tokens, RNG state) and the options the run was started with, in a directory
//! `checkpoint-NNNNNN` inside the run's output directory.
//!
//! A checkpoint is written into a hidden temporary directory, every file is synced, and the
//! directory is renamed into place and its parent synced, so a crash leaves the previous checkpoint
//! or the new one, never a partial one. Only the newest checkpoint is kept.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::hf::{load_tensors, save_tensors};
use crate::model::Param;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::{TrainConfig, Trainer, TrainerProgress};

/// Directory names of checkpoints start with this, followed by the zero-padded step.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
const STATE_FILE: &str = "state.json";
const TRAINED_FILE: &str = "trained.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Bumped when the layout changes, so an old checkpoint is refused rather than misread.
const FORMAT_VERSION: u32 = 1;

/// The options that define a run, under their command-line names, e.g. `("lr", 2e-5)`. A resume
/// must give the same values.
pub type RunOptions = Vec<(&'static str, Value)>;

#[derive(Serialize, Deserialize)]
struct StateFile {
    format_version: u32,
    progress: TrainerProgress,
    adamw: AdamWConfig,
    adamw_step: u64,
    /// Names of the trained tensors in the optimizer's order.
    trained: Vec<String>,
    options: Map<String, Value>,
    notes: Value,
}

/// A checkpoint read back from disk.
pub struct RunCheckpoint {
    pub dir: PathBuf,
    pub progress: TrainerProgress,
    pub optimizer: AdamW,
    /// The run's own record (e.g. held-out losses measured before training), stored as given.
    pub notes: Value,
    options: Map<String, Value>,
    trained: Vec<Param<f32>>,
}

/// Writes a checkpoint of `trainer` (its progress, optimizer state and trained tensors) into
/// `run_dir` and removes older ones. Returns the checkpoint's directory.
pub fn save_run_checkpoint(
    run_dir: &Path,
    trainer: &mut Trainer,
    options: &RunOptions,
    notes: &Value,
) -> Result<PathBuf> {
    let progress = trainer.progress();
    let name = format!("{CHECKPOINT_PREFIX}{:06}", progress.step);
    let dir = run_dir.join(&name);
    let tmp = run_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let engine = trainer.engine();
    let ids = engine.trained_ids()?;
    let names: Vec<String> = ids.iter().map(|id| id.hf_name()).collect();
    let optimizer = engine.optimizer()?;
    let (adamw, adamw_step) = (optimizer.config, optimizer.step);
    let moments = optimizer_tensors(optimizer, &names);
    save_tensors(
        &tmp.join(OPTIMIZER_FILE),
        &moments.iter().collect::<Vec<_>>(),
        None,
    )?;
    let weights = &engine.model()?.weights;
    let trained: Vec<&Param<f32>> = ids
        .iter()
        .map(|&id| {
            weights
                .param(id)
                .expect("the engine trains the model's tensors")
        })
        .collect();
    save_tensors(&tmp.join(TRAINED_FILE), &trained, None)?;
    let state = StateFile {
        format_version: FORMAT_VERSION,
        progress,
        adamw,
        adamw_step,
        trained: names,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        notes: notes.clone(),
    };
    let text = serde_json::to_string_pretty(&state).expect("the state serialises");
    write_atomic(&tmp.join(STATE_FILE), text.as_bytes())?;

    // A checkpoint of this very step already exists only when nothing ran since it was written
    // (a resume interrupted at once, see remove_checkpoints); determinism makes the two
    // identical, so the old one stays.
    if dir.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    } else {
        fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        fs::File::open(run_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(run_dir, e))?;
    }
    for old in checkpoints(run_dir)?
        .into_iter()
        .chain(abandoned_saves(run_dir)?)
    {
        if old != dir {
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
    }
    Ok(dir)
}

/// Temporary directories of saves that never finished (a kill in the middle of one).
fn abandoned_saves(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, e))? {
        let path = entry.map_err(|e| Error::io(run_dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&format!(".{CHECKPOINT_PREFIX}")) && name.contains(".tmp-") {
            found.push(path);
        }
    }
    Ok(found)
}

/// Deletes every checkpoint in `run_dir`: a new run writing into an overwritten directory must
/// not leave a previous run's checkpoints for a later `--resume` to pick up.
pub fn remove_checkpoints(run_dir: &Path) -> Result<()> {
    for old in checkpoints(run_dir)? {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// PyTorch's names for the moments: `exp_avg.NAME` and `exp_avg_sq.NAME`, flat.
fn optimizer_tensors(optimizer: &AdamW, names: &[String]) -> Vec<Param<f32>> {
    let flat = |prefix: &str, name: &str, data: &[f32]| Param {
        name: format!("{prefix}.{name}"),
        shape: vec![data.len()],
        data: data.to_vec(),
    };
    names
        .iter()
        .zip(optimizer.m.iter().zip(&optimizer.v))
        .flat_map(|(n, (m, v))| [flat("exp_avg", n, m), flat("exp_avg_sq", n, v)])
        .collect()
}

/// Complete checkpoint directories in `run_dir`, oldest first (temporary ones are hidden names).
fn checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, e))? {
        let path = entry.map_err(|e| Error::io(run_dir, e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
            .and_then(|s| s.parse().ok());
        if let Some(step) = step {
            if path.join(STATE_FILE).is_file() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The checkpoint `dir` names: `dir` itself when it is one, else the newest one inside it.
pub fn find_checkpoint(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.is_dir() {
        return Err(Error::option(
            "resume",
            format!("{} is not a directory", dir.display()),
        ));
    }
    checkpoints(dir)?.pop().ok_or_else(|| {
        Error::option(
            "resume",
            format!(
                "{} holds no checkpoint ({CHECKPOINT_PREFIX}* with {STATE_FILE}); was the run \
                 started with --save-every?",
                dir.display()
            ),
        )
    })
}

/// Reads the checkpoint in `dir` (see [`find_checkpoint`] to locate one).
pub fn load_run_checkpoint(dir: &Path) -> Result<RunCheckpoint> {
    let state_path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: StateFile = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: state_path.clone(),
        source: e,
    })?;
    if state.format_version != FORMAT_VERSION {
        return Err(Error::BadFile {
            path: state_path,
            message: format!(
                "checkpoint format {}, this build reads format {FORMAT_VERSION}",
                state.format_version
            ),
        });
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let mut moments: std::collections::HashMap<String, Vec<f32>> = load_tensors(&opt_path)?
        .into_iter()
        .map(|p| (p.name, p.data))
        .collect();
    let mut take = |prefix: &str, name: &str| {
        let key = format!("{prefix}.{name}");
        moments.remove(&key).ok_or_else(|| Error::MissingTensor {
            path: opt_path.clone(),
            tensor: key,
        })
    };
    let mut optimizer = AdamW::new(state.adamw, &[]);
    optimizer.step = state.adamw_step;
    for name in &state.trained {
        optimizer.m.push(take("exp_avg", name)?);
        optimizer.v.push(take("exp_avg_sq", name)?);
    }
    Ok(RunCheckpoint {
        dir: dir.to_path_buf(),
        progress: state.progress,
        optimizer,
        notes: state.notes,
        options: state.options,
        trained: load_tensors(&dir.join(TRAINED_FILE))?,
    })
}

impl RunCheckpoint {
    /// Continues the run: checks `options` against the checkpoint's, puts its trained tensors into
    /// the model of `engine` (built as the run built it, adapters attached) and returns the
    /// trainer at the checkpoint's step.
    pub fn resume(
        self,
        mut engine: Engine,
        config: TrainConfig,
        options: &RunOptions,
    ) -> Result<Trainer> {
        self.check_options(options)?;
        engine.assign_tensors(self.trained, &self.dir.join(TRAINED_FILE))?;
        Trainer::resume(engine, config, self.progress, self.optimizer)
    }

    /// Fails, naming the first option that differs, unless `options` are the ones the run was
    /// started with.
    pub fn check_options(&self, options: &RunOptions) -> Result<()> {
        for (name, given) in options {
            let saved = self.options.get(*name).unwrap_or(&Value::Null);
            if !same_value(saved, given) {
                return Err(Error::option(
                    name,
                    format!(
                        "the checkpoint in {} was made with --{name} {saved}, this command gives \
                         {given}; a resumed run must use the options it was started with",
                        self.dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// JSON equality, except that numbers compare as f64: a float may come back from its decimal
/// text one unit in the last place off.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
        _ => a == b,
    }
}
