//! Checkpoints of a training run: the trained tensors, the AdamW moments, the trainer's progress
//! (step, tokens, RNG state), the run's training configuration and the other options it was
//! started with, in a directory `checkpoint-NNNNNN` inside the run's output directory.
//!
//! A checkpoint is written into a hidden temporary directory, every file is synced, and the
//! directory is renamed into place and its parent synced, so a crash or a full disk leaves the
//! previous checkpoints as they were and the new one complete or absent. `state.json` records
//! the size and CRC-32 of each tensor file, so damage after the save is found when it is read.
//! The newest `keep` checkpoints are kept; a damaged newest one falls back to the one before.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::hf::{load_tensors, save_tensors};
use crate::model::Param;
use crate::train::optim::{AdamW, Schedule};
use crate::train::{TrainConfig, Trainer, TrainerProgress};

/// Directory names of checkpoints start with this, followed by the zero-padded step.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
const STATE_FILE: &str = "state.json";
const TRAINED_FILE: &str = "trained.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Bumped when the layout changes, so an old checkpoint is refused rather than misread.
/// Format 2: the training configuration typed, option names as in the configuration, step
/// targets, and file digests.
const FORMAT_VERSION: u32 = 2;

/// The options that define a run besides its [`TrainConfig`], under their configuration names,
/// e.g. `("lora_rank", 8)`. A resume must give the same values.
pub type RunOptions = Vec<(&'static str, Value)>;

/// What a checkpoint records about its run besides the trainer's state.
pub struct RunMeta<'a> {
    pub options: &'a RunOptions,
    /// The run's `steps` when it started and after each resume that extended it.
    pub step_targets: &'a [usize],
    /// The run's own record (e.g. held-out losses measured before training), stored as given.
    pub notes: &'a Value,
}

/// Size and CRC-32 of a file as it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Digest {
    bytes: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format_version: u32,
    progress: TrainerProgress,
    adamw_step: u64,
    /// Names of the trained tensors in the optimizer's order.
    trained: Vec<String>,
    train: TrainConfig,
    options: Map<String, Value>,
    step_targets: Vec<usize>,
    files: BTreeMap<String, Digest>,
    notes: Value,
}

/// A checkpoint read back from disk.
pub struct RunCheckpoint {
    pub dir: PathBuf,
    pub progress: TrainerProgress,
    pub optimizer: AdamW,
    /// The run's own record (e.g. held-out losses measured before training), stored as given.
    pub notes: Value,
    /// The run's `steps` when it started and after each resume that extended it.
    pub step_targets: Vec<usize>,
    train: TrainConfig,
    options: Map<String, Value>,
    trained: Vec<Param<f32>>,
}

/// Writes a checkpoint of `trainer` (its progress, optimizer state and trained tensors) into
/// `run_dir` and removes all but the newest `keep` (at least one: this one). Returns the
/// checkpoint's directory. On failure the checkpoints already there are untouched and the error
/// names the file.
pub fn save_run_checkpoint(
    run_dir: &Path,
    trainer: &mut Trainer,
    meta: &RunMeta,
    keep: usize,
) -> Result<PathBuf> {
    let progress = trainer.progress();
    let name = format!("{CHECKPOINT_PREFIX}{:06}", progress.step);
    let dir = run_dir.join(&name);
    let tmp = run_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write_checkpoint_files(&tmp, trainer, meta) {
        // Best effort: the write's own error is the one worth reporting; a leftover is removed
        // by the next save.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    // A checkpoint of this very step already exists only when nothing ran since it was written
    // (a resume interrupted at once); determinism makes the two identical, so the old one stays.
    if dir.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    } else {
        fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        fs::File::open(run_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(run_dir, e))?;
    }
    let all = checkpoints(run_dir)?;
    let old = all.len().saturating_sub(keep.max(1));
    for stale in all[..old].iter().chain(&abandoned_saves(run_dir)?) {
        if *stale != dir {
            fs::remove_dir_all(stale).map_err(|e| Error::io(stale, e))?;
        }
    }
    Ok(dir)
}

/// The tensor files and, last, `state.json` with their digests, into `dir`.
fn write_checkpoint_files(dir: &Path, trainer: &mut Trainer, meta: &RunMeta) -> Result<()> {
    let progress = trainer.progress();
    let train = trainer.config.clone();
    let engine = trainer.engine();
    let ids = engine.trained_ids()?;
    let names: Vec<String> = ids.iter().map(|id| id.hf_name()).collect();
    let optimizer = engine.optimizer()?;
    let adamw_step = optimizer.step;
    let moments = optimizer_tensors(optimizer, &names);
    let weights = &engine.model()?.weights;
    let trained: Vec<&Param<f32>> = ids
        .iter()
        .map(|&id| {
            weights
                .param(id)
                .expect("the engine trains the model's tensors")
        })
        .collect();
    save_tensors(&dir.join(TRAINED_FILE), &trained, None)?;
    save_tensors(
        &dir.join(OPTIMIZER_FILE),
        &moments.iter().collect::<Vec<_>>(),
        None,
    )?;
    let mut files = BTreeMap::new();
    for file in [TRAINED_FILE, OPTIMIZER_FILE] {
        files.insert(file.to_string(), digest(&dir.join(file))?);
    }
    let state = StateFile {
        format_version: FORMAT_VERSION,
        progress,
        adamw_step,
        trained: names,
        train,
        options: meta
            .options
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        step_targets: meta.step_targets.to_vec(),
        files,
        notes: meta.notes.clone(),
    };
    let text = serde_json::to_string_pretty(&state).expect("the state serialises");
    write_atomic(&dir.join(STATE_FILE), text.as_bytes())
}

/// The size and CRC-32 of the file at `path`, read through a memory map.
fn digest(path: &Path) -> Result<Digest> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map of a checkpoint file, which this crate never changes in place.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Digest {
        bytes: map.len() as u64,
        crc32: crc32fast::hash(&map),
    })
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

/// Deletes the checkpoints in `run_dir` past `step` (all of them for `None`): a new run writing
/// into an overwritten directory must not leave a previous run's checkpoints for a later
/// `--resume` to pick up, and a run resumed from an older checkpoint replaces the newer ones.
pub fn remove_checkpoints(run_dir: &Path, after: Option<usize>) -> Result<()> {
    for (step, old) in checkpoint_steps(run_dir)? {
        if after.is_none_or(|s| step > s) {
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
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

/// Checkpoint directories in `run_dir` with their steps, oldest first (temporary ones have hidden
/// names). A directory is listed whether or not it is intact: reading it tells.
fn checkpoint_steps(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, e))? {
        let path = entry.map_err(|e| Error::io(run_dir, e))?.path();
        if let Some(step) = checkpoint_step(&path) {
            if path.is_dir() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(checkpoint_steps(run_dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// The step in a checkpoint directory's name.
fn checkpoint_step(path: &Path) -> Option<usize> {
    path.file_name()?
        .to_str()?
        .strip_prefix(CHECKPOINT_PREFIX)?
        .parse()
        .ok()
}

/// The checkpoints `dir` names, newest first: `dir` itself when it is one, then the older ones
/// beside it; else those inside it.
fn candidates(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::BadFile {
            path: dir.into(),
            message: "not a directory: neither a checkpoint nor a run's output".into(),
        });
    }
    let (run_dir, newest) = match checkpoint_step(dir) {
        Some(step) => match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => (p, Some(step)),
            _ => (Path::new("."), Some(step)),
        },
        None => (dir, None),
    };
    let mut found: Vec<PathBuf> = checkpoint_steps(run_dir)?
        .into_iter()
        .filter(|(step, _)| newest.is_none_or(|n| *step <= n))
        .map(|(_, p)| p)
        .collect();
    found.reverse();
    Ok(found)
}

/// Reads the newest intact checkpoint `dir` names (a run directory or one checkpoint in it):
/// when it is damaged, the next older one kept beside it, and so on, calling `on_damaged` with
/// the error of each one passed over. `None` when `dir` holds no checkpoint; the oldest one's
/// error when none is intact.
pub fn load_latest_checkpoint(
    dir: &Path,
    mut on_damaged: impl FnMut(&Error),
) -> Result<Option<RunCheckpoint>> {
    let candidates = candidates(dir)?;
    for (i, candidate) in candidates.iter().enumerate() {
        match load_run_checkpoint(candidate) {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(e) if i + 1 < candidates.len() => on_damaged(&e),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Reads the checkpoint in `dir`, checking each tensor file against its recorded digest.
pub fn load_run_checkpoint(dir: &Path) -> Result<RunCheckpoint> {
    let state_path = dir.join(STATE_FILE);
    let state = read_state(&state_path)?;
    for file in [TRAINED_FILE, OPTIMIZER_FILE] {
        let path = dir.join(file);
        let Some(want) = state.files.get(file) else {
            return Err(Error::BadFile {
                path: state_path,
                message: format!("no digest of {file}"),
            });
        };
        let got = digest(&path)?;
        if got != *want {
            return Err(Error::BadFile {
                path,
                message: format!(
                    "damaged: {} bytes with CRC-32 {:08x}, but the checkpoint was saved with {} \
                     bytes and CRC-32 {:08x}",
                    got.bytes, got.crc32, want.bytes, want.crc32
                ),
            });
        }
    }
    let optimizer = read_moments(&dir.join(OPTIMIZER_FILE), &state)?;
    Ok(RunCheckpoint {
        dir: dir.to_path_buf(),
        progress: state.progress,
        optimizer,
        notes: state.notes,
        step_targets: state.step_targets,
        train: state.train,
        options: state.options,
        trained: load_tensors(&dir.join(TRAINED_FILE))?,
    })
}

fn read_state(path: &Path) -> Result<StateFile> {
    let text = fs::read(path).map_err(|e| Error::io(path, e))?;
    let version: Value = serde_json::from_slice(&text).map_err(|e| Error::Json {
        path: path.into(),
        source: e,
    })?;
    let found = version.get("format_version").and_then(Value::as_u64);
    if found != Some(u64::from(FORMAT_VERSION)) {
        return Err(Error::BadFile {
            path: path.into(),
            message: format!(
                "checkpoint format {}, this build reads format {FORMAT_VERSION}",
                found.map_or("unknown".into(), |v| v.to_string())
            ),
        });
    }
    serde_json::from_value(version).map_err(|e| Error::Json {
        path: path.into(),
        source: e,
    })
}

/// The AdamW state: the moments of each trained tensor from `path`, in the state's order.
fn read_moments(path: &Path, state: &StateFile) -> Result<AdamW> {
    let mut moments: std::collections::HashMap<String, Vec<f32>> = load_tensors(path)?
        .into_iter()
        .map(|p| (p.name, p.data))
        .collect();
    let mut take = |prefix: &str, name: &str| {
        let key = format!("{prefix}.{name}");
        moments.remove(&key).ok_or_else(|| Error::MissingTensor {
            path: path.into(),
            tensor: key,
        })
    };
    let mut optimizer = AdamW::new(state.train.adamw, &[]);
    optimizer.step = state.adamw_step;
    for name in &state.trained {
        optimizer.m.push(take("exp_avg", name)?);
        optimizer.v.push(take("exp_avg_sq", name)?);
    }
    Ok(optimizer)
}

impl RunCheckpoint {
    /// Continues the run: checks `config` and `options` against the checkpoint's, puts its
    /// trained tensors into the model of `engine` (built as the run built it, adapters attached)
    /// and returns the trainer at the checkpoint's step.
    pub fn resume(
        self,
        mut engine: Engine,
        config: TrainConfig,
        options: &RunOptions,
    ) -> Result<Trainer> {
        self.check_options(&config, options)?;
        engine.assign_tensors(self.trained, &self.dir.join(TRAINED_FILE))?;
        Trainer::resume(engine, config, self.progress, self.optimizer)
    }

    /// Fails, naming the first option that differs, unless `config` and `options` are the ones
    /// the run was started with. `steps` alone may change, with a constant schedule: a resume
    /// may extend a run (or end it sooner).
    pub fn check_options(&self, config: &TrainConfig, options: &RunOptions) -> Result<()> {
        let saved = flat_config(&self.train);
        for (name, given) in flat_config(config) {
            if name != "steps" {
                self.check_option(&name, saved.get(&name), &given)?;
            }
        }
        for (name, given) in options {
            self.check_option(name, self.options.get(*name), given)?;
        }
        if config.steps != self.train.steps && self.train.schedule == Schedule::Cosine {
            return Err(Error::option(
                "steps",
                format!(
                    "the checkpoint in {} is of a run of {} steps with a cosine schedule, which \
                     ends at its last step; this command gives {}: a cosine run cannot be \
                     extended (a constant schedule can)",
                    self.dir.display(),
                    self.train.steps,
                    config.steps
                ),
            ));
        }
        Ok(())
    }

    fn check_option(&self, name: &str, saved: Option<&Value>, given: &Value) -> Result<()> {
        let saved = saved.unwrap_or(&Value::Null);
        if same_value(saved, given) {
            return Ok(());
        }
        Err(Error::option(
            name.to_string(),
            format!(
                "the checkpoint in {} was made with {name} = {saved}, this command gives {given}; \
                 a resumed run must use the options it was started with",
                self.dir.display()
            ),
        ))
    }

    /// The step targets of the run continued with `steps`: the checkpoint's, plus `steps` when it
    /// changes the run's length.
    pub fn step_targets_with(&self, steps: usize) -> Vec<usize> {
        let mut targets = self.step_targets.clone();
        if targets.last() != Some(&steps) {
            targets.push(steps);
        }
        targets
    }
}

/// A configuration's fields by name, nested ones (the AdamW settings) under their own names.
fn flat_config(config: &TrainConfig) -> Map<String, Value> {
    let Value::Object(fields) = serde_json::to_value(config).expect("a config serialises") else {
        unreachable!("a struct serialises to an object")
    };
    let mut flat = Map::new();
    for (name, value) in fields {
        match value {
            Value::Object(inner) => flat.extend(inner),
            value => {
                flat.insert(name, value);
            }
        }
    }
    flat
}

/// JSON equality, except that numbers compare as f64: a float may come back from its decimal
/// text one unit in the last place off.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
        _ => a == b,
    }
}
