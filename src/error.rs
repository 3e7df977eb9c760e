//! The library's error type: every variant names the file, tensor or option at fault.

use std::path::PathBuf;

/// Errors returned by the library. Panics are reserved for bugs in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    #[error("{path}: tensor `{tensor}`: {message}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },

    /// An option with a value that cannot work, named as in the library's configuration types
    /// (e.g. `group_ratio`, `lora_rank`); a command line maps the name to its own spelling.
    #[error("invalid option {option}: {message}")]
    InvalidOption { option: String, message: String },

    #[error("invalid model config: {0}")]
    InvalidConfig(String),

    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    #[error("data: {0}")]
    Data(String),

    #[error("training diverged at step {step}: loss is {loss}; {}", last_good(.checkpoint))]
    Diverged {
        step: usize,
        loss: f64,
        /// The last checkpoint written before the divergence, kept as it was.
        checkpoint: Option<PathBuf>,
    },

    #[error(
        "interrupted by {} after step {step}; checkpoint saved in {}",
        signal_name(*.signal),
        .checkpoint.display()
    )]
    Interrupted {
        /// The signal that stopped the run.
        signal: i32,
        step: usize,
        checkpoint: PathBuf,
        /// The run's output directory, which a resume names.
        run_dir: PathBuf,
    },

    #[error("{path} is locked: another run is writing into this directory ({holder})")]
    Locked { path: PathBuf, holder: String },

    #[error(
        "a training step needs about {needed_mib} MiB of GPU memory (weights and master copies \
         {weights_mib}, gradients {gradients_mib}, AdamW state {optimizer_mib}, activations \
         {activations_mib}{}) but the GPU has {free_mib} of {total_mib} MiB free",
        if *.recompute { ", recomputed per layer" } else { "" }
    )]
    DeviceMemory {
        needed_mib: usize,
        weights_mib: usize,
        gradients_mib: usize,
        optimizer_mib: usize,
        activations_mib: usize,
        /// Whether the activations were counted with per-layer recomputation.
        recompute: bool,
        free_mib: usize,
        total_mib: usize,
    },

    #[error(transparent)]
    Kernel(#[from] crate::kernels::KernelError),
}

fn last_good(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(dir) => format!("the last good checkpoint is {}", dir.display()),
        None => "no checkpoint was saved".into(),
    }
}

/// A signal's conventional name, e.g. `SIGTERM`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An invalid command-line or config option, with what was expected.
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            option: option.into(),
            message: message.into(),
        }
    }
}
