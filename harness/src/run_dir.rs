//! A training run's output directory: where it is (`--output`, a dated default, or the directory of
//! the run `--resume` continues), one run at a time in it (a lock), no mixing with an old run's
//! files, and the checkpoint a resume starts from.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use longlora::fs::{lock_dir, DirLock, LOCK_FILE};
use longlora::train::checkpoint::{load_latest_checkpoint, RunCheckpoint, CHECKPOINT_PREFIX};
use longlora::{Error, Result};

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
    /// OUTPUT/checkpoint-NNNNNN. A stop signal (Ctrl-C, SIGTERM, SIGHUP) saves one whether or not
    /// this is set, and a run with a constant schedule saves its last step.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// How many of the newest checkpoints to keep: a resume falls back to an older one when the
    /// newest is damaged.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Continue a run from its output directory (its newest intact checkpoint) or from one
    /// checkpoint directory. Give the options the run was started with (a larger --steps extends
    /// a constant-schedule run); it writes into its own output directory and continues
    /// metrics.jsonl.
    #[arg(long, conflicts_with_all = ["output", "overwrite"])]
    pub resume: Option<PathBuf>,
}

/// A run's output directory, locked for this process while the value lives.
pub struct RunDir {
    pub path: PathBuf,
    _lock: DirLock,
}

impl RunArgs {
    /// Opens the run directory for `command`: the resumed run's, else `--output`, else
    /// `runs/<command>-<UTC date-time>`, created and locked. Fails at once, naming the other
    /// process, when another run holds it.
    pub fn open(&self, command: &str) -> Result<RunDir> {
        if self.save_every == Some(0) {
            return Err(Error::option("save_every", "must be at least 1"));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::option("keep_checkpoints", "must be at least 1"));
        }
        let path = match &self.resume {
            Some(dir) if !dir.is_dir() => {
                let message = format!("{} is not a directory", dir.display());
                return Err(Error::option("resume", message));
            }
            Some(dir) => run_dir_of(dir),
            None => self
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{command}-{}", utc_stamp()))),
        };
        let lock = match &self.resume {
            Some(_) => lock_dir(&path, &holder())?,
            None => prepare_run_output(&path, self.overwrite)?,
        };
        Ok(RunDir { path, _lock: lock })
    }
}

/// The run directory `--resume DIR` names: DIR, or its parent when DIR is one checkpoint.
fn run_dir_of(dir: &Path) -> PathBuf {
    let is_checkpoint = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(CHECKPOINT_PREFIX));
    match dir.parent() {
        Some(parent) if is_checkpoint && !parent.as_os_str().is_empty() => parent.to_path_buf(),
        Some(_) if is_checkpoint => PathBuf::from("."),
        _ => dir.to_path_buf(),
    }
}

/// This process, as the lock file names it to another run: its pid and command line.
fn holder() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("pid {}: {}", std::process::id(), args.join(" "))
}

/// Creates and locks a new run's output directory. A non-empty one needs `overwrite`; one that
/// another run holds is refused whatever the options, naming that run.
fn prepare_run_output(dir: &Path, overwrite: bool) -> Result<DirLock> {
    if dir.join(LOCK_FILE).exists() {
        // Locking an existing lock file creates nothing, and names a live holder.
        drop(lock_dir(dir, &holder())?);
    }
    prepare_output(dir, overwrite, "output")?;
    lock_dir(dir, &holder())
}

/// The newest intact checkpoint `dir` names (see `load_latest_checkpoint`), saying on stderr
/// which damaged ones it passed over; `None` when `dir` holds none.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<RunCheckpoint>> {
    let found = load_latest_checkpoint(dir, |damaged| {
        eprintln!("warning: {damaged}; falling back to the previous checkpoint");
    })?;
    if let Some(ck) = &found {
        eprintln!("resuming {} at step {}", ck.dir.display(), ck.progress.step);
    }
    Ok(found)
}

/// The error for a `--resume` directory without a checkpoint.
pub fn no_checkpoint(dir: &Path) -> Error {
    Error::option(
        "resume",
        format!(
            "{} holds no checkpoint (checkpoint-* directory); was the run saved?",
            dir.display()
        ),
    )
}

/// UTC date-time for default run directory names.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), so run directories sort by time without a date crate.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Creates the output directory given by `option`, refusing to mix with a previous run's files
/// (a lock file alone is no run's files).
pub fn prepare_output(dir: &Path, overwrite: bool, option: &'static str) -> Result<()> {
    let non_empty =
        fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.file_name() != LOCK_FILE));
    if non_empty && !overwrite {
        return Err(Error::option(
            option,
            format!(
                "{} exists and is not empty; choose another --{option} or pass --overwrite",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}
