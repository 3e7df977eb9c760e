//! A fine-tune's files in PEFT's and LongLoRA's formats: the LoRA adapter (`adapter_model.safetensors`,
//! `adapter_config.json`), the trained embeddings and norms (`trainable_params.safetensors`), and a
//! base model loaded with a fine-tune's output on top, without merging.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::hf::{assign_tensors, load_model, load_tensors, save_tensors_renamed};
use crate::model::{Llama, LlamaWeights, Param, TrainableSet};
use crate::train::{Extension, RunRecord, RUN_FILE};

/// PEFT's prefix in front of the base model's tensor names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The projections LongLoRA adapts (PEFT's `target_modules`).
pub const TARGET_MODULES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// Writes `adapter_model.safetensors` (PEFT's tensor names) and `adapter_config.json` into `dir`,
/// so `peft.PeftModel.from_pretrained(base, dir)` loads the adapter. Fails when the model has no
/// adapters.
pub fn save_adapter(
    dir: &Path,
    weights: &LlamaWeights<Param<f32>>,
    base_model: &str,
) -> Result<()> {
    let lora = weights.layers[0]
        .q_proj
        .lora
        .as_ref()
        .ok_or_else(|| Error::option("trainable", "the model has no LoRA adapters to save"))?;
    let (rank, alpha) = (lora.rank, lora.alpha);
    let mut tensors: Vec<(String, &Param<f32>)> = Vec::new();
    weights.visit(|id, p| {
        if id.is_lora() {
            tensors.push((format!("{PEFT_PREFIX}{}", p.name), p));
        }
    });
    save_tensors_renamed(&dir.join(ADAPTER_WEIGHTS), &tensors, None)?;
    // PEFT declares `lora_alpha` an int and writes e.g. `16`; an integral alpha is written the same.
    let alpha = if alpha.fract() == 0.0 && alpha.abs() < 1e15 {
        json!(alpha as i64)
    } else {
        json!(alpha)
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": TARGET_MODULES,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
    });
    write_atomic(
        &dir.join(ADAPTER_CONFIG),
        serde_json::to_string_pretty(&config)
            .expect("JSON")
            .as_bytes(),
    )
}

/// Attaches the adapter saved in `dir` by [`save_adapter`] (or by PEFT) to `weights`.
pub fn load_adapter(dir: &Path, weights: &mut LlamaWeights<Param<f32>>) -> Result<()> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: cfg_path.clone(),
        source: e,
    })?;
    let field = |k: &str| {
        cfg.get(k)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| Error::BadFile {
                path: cfg_path.clone(),
                message: format!("missing numeric `{k}`"),
            })
    };
    let (rank, alpha) = (field("r")? as usize, field("lora_alpha")?);
    if rank == 0 {
        return Err(Error::BadFile {
            path: cfg_path,
            message: "`r` must be at least 1".into(),
        });
    }
    // Variants that change the update's formula or vary r per layer would load without error
    // and compute something else, so they are refused by name.
    for flag in ["use_rslora", "use_dora"] {
        if cfg.get(flag).and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(Error::BadFile {
                path: cfg_path,
                message: format!("`{flag}` adapters are not supported"),
            });
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if cfg
            .get(pattern)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(Error::BadFile {
                path: cfg_path,
                message: format!("a non-empty `{pattern}` is not supported"),
            });
        }
    }
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut tensors: HashMap<String, Param<f32>> = load_tensors(&path)?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    check_rank(&cfg_path, &path, rank, weights, &tensors)?;
    weights.add_lora(rank, alpha, &mut crate::rng::Rng::new(0));
    let mut adapters = Vec::new();
    weights.visit_mut(|id, p| {
        if id.is_lora() {
            adapters.push(p);
        }
    });
    for p in adapters {
        let key = format!("{PEFT_PREFIX}{}", p.name);
        let t = tensors.remove(&key).ok_or_else(|| Error::MissingTensor {
            path: path.clone(),
            tensor: key.clone(),
        })?;
        if t.shape != p.shape {
            return Err(Error::BadTensor {
                path: path.clone(),
                tensor: key,
                message: format!("shape {:?}, expected {:?} for r = {rank}", t.shape, p.shape),
            });
        }
        p.data = t.data;
    }
    match tensors.into_keys().min() {
        Some(extra) => Err(Error::BadTensor {
            path,
            tensor: extra,
            message: format!(
                "not an adapter of {}: only those projections are adapted here",
                TARGET_MODULES.join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// Fails unless `rank` fits the model (at most its hidden size) and every LoRA tensor of the file
/// has it, before the adapters are allocated: what they take is then bounded by the model, not
/// by what adapter_config.json claims.
fn check_rank(
    cfg_path: &Path,
    path: &Path,
    rank: usize,
    weights: &LlamaWeights<Param<f32>>,
    tensors: &HashMap<String, Param<f32>>,
) -> Result<()> {
    let hidden = weights.embed_tokens.shape.get(1).copied().unwrap_or(0);
    if rank > hidden {
        return Err(Error::BadFile {
            path: cfg_path.into(),
            message: format!("`r` = {rank} exceeds the model's hidden size {hidden}"),
        });
    }
    for (name, t) in tensors {
        let rank_dim = match () {
            _ if name.contains(".lora_A") => t.shape.first(),
            _ if name.contains(".lora_B") => t.shape.get(1),
            _ => continue,
        };
        if t.shape.len() != 2 || rank_dim != Some(&rank) {
            return Err(Error::BadTensor {
                path: path.into(),
                tensor: name.clone(),
                message: format!("shape {:?} is not of rank r = {rank}", t.shape),
            });
        }
    }
    Ok(())
}

/// Writes the trained non-LoRA tensors (embedding and norms for `lora+embed+norm`) under their
/// Hugging Face names: LongLoRA's `trainable_params.bin`, as safetensors.
pub fn save_trainable_params(
    path: &Path,
    weights: &LlamaWeights<Param<f32>>,
    set: TrainableSet,
) -> Result<()> {
    let mut tensors: Vec<(String, &Param<f32>)> = Vec::new();
    weights.visit(|id, p| {
        if set.trains(id) && !id.is_lora() {
            tensors.push((p.name.clone(), p));
        }
    });
    save_tensors_renamed(path, &tensors, None)
}

/// File names of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// LongLoRA's `trainable_params.bin`, as safetensors under Hugging Face names.
pub const TRAINABLE_PARAMS_FILE: &str = "trainable_params.safetensors";

/// The extension recorded in `adapter_dir/run.json`, or `None` for an adapter that has no run
/// record (one written by PEFT, or a run that has not finished).
pub fn read_extension(adapter_dir: &Path) -> Result<Option<Extension>> {
    let path = adapter_dir.join(RUN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    match RunRecord::load(&path)?.extension {
        Some(extension) => Ok(Some(extension)),
        None => Err(Error::BadFile {
            path,
            message: "not a fine-tune's record: no numeric `context` and `rope_factor`".into(),
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
