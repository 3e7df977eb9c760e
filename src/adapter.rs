//! A base model with a fine-tuned LongLoRA run on top, without merging: the PEFT adapter, the
//! trained embeddings and norms (`trainable_params.safetensors`) and the RoPE interpolation the
//! run trained with, as `harness finetune` writes them into its output directory.

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::{assign_tensors, load_model, load_tensors};
use crate::error::{Error, Result};
use crate::lora::{load_adapter, ADAPTER_CONFIG};
use crate::model::Llama;

/// LongLoRA's `trainable_params.bin`, as safetensors under Hugging Face names.
pub const TRAINABLE_PARAMS_FILE: &str = "trainable_params.safetensors";
/// The run record `harness finetune` writes; its `context` and `rope_factor` describe the extension.
pub const RUN_FILE: &str = "run.json";

/// The context extension a run trained for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extension {
    /// The context the run trained at (the merged model's `max_position_embeddings`).
    pub context: usize,
    /// Linear RoPE interpolation factor.
    pub rope_factor: f64,
}

/// The extension recorded in `adapter_dir/run.json`, or `None` for an adapter that has no run
/// record (one written by PEFT, or a run that has not finished).
pub fn read_extension(adapter_dir: &Path) -> Result<Option<Extension>> {
    let path = adapter_dir.join(RUN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let run: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    let context = run.get("context").and_then(Value::as_u64);
    let rope_factor = run.get("rope_factor").and_then(Value::as_f64);
    match (context, rope_factor) {
        (Some(context), Some(rope_factor)) => Ok(Some(Extension {
            context: context as usize,
            rope_factor,
        })),
        _ => Err(Error::BadFile {
            path,
            message: "expected a numeric `context` and `rope_factor`".into(),
        }),
    }
}

/// Loads the base model in `model_dir` and applies the run in `adapter_dir`: its LoRA adapter,
/// its trained embeddings and norms when the run saved them, and its RoPE interpolation factor
/// when it recorded one. Returns the model (adapters attached, unmerged) and the extension. A full
/// fine-tune's output has no adapter, only trainable params.
pub fn load_with_adapter(
    model_dir: &Path,
    adapter_dir: &Path,
) -> Result<(Llama<f32>, Option<Extension>)> {
    let (mut config, mut weights) = load_model(model_dir)?;
    let trainable = adapter_dir.join(TRAINABLE_PARAMS_FILE);
    let has_adapter = adapter_dir.join(ADAPTER_CONFIG).exists();
    if !has_adapter && !trainable.exists() {
        return Err(Error::BadFile {
            path: adapter_dir.into(),
            message: format!(
                "neither {ADAPTER_CONFIG} nor {TRAINABLE_PARAMS_FILE}: not a fine-tune's output"
            ),
        });
    }
    if has_adapter {
        load_adapter(adapter_dir, &mut weights)?;
    }
    if trainable.exists() {
        assign_tensors(&mut weights, load_tensors(&trainable)?, &trainable)?;
    }
    let extension = read_extension(adapter_dir)?;
    if let Some(ext) = extension {
        config.rope_scaling_factor = ext.rope_factor;
    }
    Ok((Llama::new(config, weights)?, extension))
}
