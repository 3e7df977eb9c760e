//! `run.json`: the record a training command leaves in its output directory: what it trained
//! (the [`TrainConfig`], the context extension, the data), how it went (losses, throughput,
//! memory) and which version wrote it. `merge`, `eval --adapter` and `passkey --adapter` read a
//! fine-tune's extension back from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::train::TrainConfig;

/// The file name of the record in a run's output directory.
pub const RUN_FILE: &str = "run.json";

/// The layout this build writes. Files without a version are those written before the record
/// was versioned: a fine-tune's or a pre-training's record of the same fields, less the ones
/// marked new below, which read back as their defaults.
pub const RUN_RECORD_VERSION: u32 = 1;

/// The command that trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunCommand {
    /// Records without a command are fine-tunes': pre-training always wrote its name.
    #[default]
    Finetune,
    Pretrain,
}

/// The context extension a fine-tune trained for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// The context the run trained at (the merged model's `max_position_embeddings`).
    pub context: usize,
    /// Linear RoPE interpolation factor.
    pub rope_factor: f64,
}

/// Held-out losses (nats per token) a fine-tune measures around its training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldoutLosses {
    /// The base model at its original context.
    #[serde(default)]
    pub heldout_loss_base_at_original_context: Option<f64>,
    /// The extended model at the target context before training.
    #[serde(default)]
    pub heldout_loss_before: Option<f64>,
    /// ... and after.
    #[serde(default)]
    pub heldout_loss_after: Option<f64>,
}

/// Everything `run.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RUN_RECORD_VERSION`] when written; absent (0) before version 1.
    #[serde(default)]
    pub format_version: u32,
    #[serde(default)]
    pub command: RunCommand,
    /// The version of the tool that wrote the record.
    pub version: String,
    /// Where a fine-tune's base weights came from: a model directory or the built-in model.
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// The training data's path, when it was not the built-in corpus.
    #[serde(default)]
    pub data: Option<String>,
    /// Tokens of a pre-training's data.
    #[serde(default)]
    pub data_tokens: Option<usize>,
    /// A fine-tune's extension (`context` and `rope_factor` at the top level of the file).
    #[serde(flatten)]
    pub extension: Option<Extension>,
    /// The base model's context before a fine-tune extended it.
    #[serde(default)]
    pub original_context: Option<usize>,
    /// A pre-training's size preset.
    #[serde(default)]
    pub preset: Option<String>,
    /// A pre-training's architecture, as in its config.json.
    #[serde(default)]
    pub model: Option<Value>,
    pub train: TrainConfig,
    /// New in version 1: the run's `steps` when it started, then after each resume that extended
    /// it; the last is `train.steps`.
    #[serde(default)]
    pub step_targets: Vec<usize>,
    /// Pre-training wrote the same count (all parameters) as `parameters`.
    #[serde(alias = "parameters")]
    pub trained_parameters: usize,
    #[serde(flatten)]
    pub heldout: HeldoutLosses,
    pub first_step_loss: f64,
    pub last_step_loss: f64,
    /// Tokens per second of training; fine-tunes wrote it as `finetune_tokens_per_s` before
    /// version 1.
    #[serde(alias = "finetune_tokens_per_s")]
    pub tokens_per_s: f64,
    pub total_time_s: f64,
    #[serde(default)]
    pub peak_memory_mib: Option<f64>,
    /// The checkpoint the last segment of the run resumed from.
    #[serde(default)]
    pub resumed_from: Option<PathBuf>,
}

impl RunRecord {
    /// Reads the record at `path`, refusing one written by a newer layout.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let record: RunRecord = serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        if record.format_version > RUN_RECORD_VERSION {
            return Err(Error::BadFile {
                path: path.into(),
                message: format!(
                    "run record format {}, this build reads formats up to {RUN_RECORD_VERSION}",
                    record.format_version
                ),
            });
        }
        Ok(record)
    }

    /// Writes the record to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a run record serialises");
        write_atomic(path, text.as_bytes())
    }
}
