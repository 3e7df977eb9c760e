//! LoRA adapters outside the forward pass: merging them into the base weights, and the adapter
//! files in PEFT's format.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use crate::checkpoint::{load_tensors, save_tensors_renamed, write_atomic};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::{LlamaWeights, Param, TrainableSet};
use crate::ops::matmul::matmul_nn;

/// PEFT's prefix in front of the base model's tensor names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The projections LongLoRA adapts (PEFT's `target_modules`).
pub const TARGET_MODULES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// Folds every adapter into its base weight (`W += (alpha/r)·B·A`) and removes the adapters, so
/// the model computes the same function without them.
pub fn merge_lora<T: Float>(weights: &mut LlamaWeights<T>) {
    for layer in &mut weights.layers {
        for lin in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
        ] {
            if let Some(lora) = lin.lora.take() {
                let (out_f, in_f) = (lin.out_features(), lin.in_features());
                matmul_nn(
                    &mut lin.weight.data,
                    &lora.b.data,
                    &lora.a.data,
                    out_f,
                    lora.rank,
                    in_f,
                    lora.scale(),
                    true,
                );
            }
        }
    }
}

/// Writes `adapter_model.safetensors` (PEFT's tensor names) and `adapter_config.json` into `dir`,
/// so `peft.PeftModel.from_pretrained(base, dir)` loads the adapter. Fails when the model has no
/// adapters.
pub fn save_adapter(dir: &Path, weights: &LlamaWeights<f32>, base_model: &str) -> Result<()> {
    let lora = weights.layers[0]
        .q_proj
        .lora
        .as_ref()
        .ok_or_else(|| Error::option("trainable", "the model has no LoRA adapters to save"))?;
    let (rank, alpha) = (lora.rank, lora.alpha);
    let tensors: Vec<(String, &Param<f32>)> = weights
        .params()
        .into_iter()
        .filter(|p| p.name.contains(".lora_"))
        .map(|p| (format!("{PEFT_PREFIX}{}", p.name), p))
        .collect();
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
pub fn load_adapter(dir: &Path, weights: &mut LlamaWeights<f32>) -> Result<()> {
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
    weights.add_lora(rank, alpha, &mut crate::rng::Rng::new(0));
    for p in weights
        .params_mut()
        .into_iter()
        .filter(|p| p.name.contains(".lora_"))
    {
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

/// Writes the trained non-LoRA tensors (embedding and norms for `lora+embed+norm`) under their
/// Hugging Face names: LongLoRA's `trainable_params.bin`, as safetensors.
pub fn save_trainable_params(
    path: &Path,
    weights: &LlamaWeights<f32>,
    set: TrainableSet,
) -> Result<()> {
    let tensors: Vec<(String, &Param<f32>)> = weights
        .params()
        .into_iter()
        .filter(|p| set.trains(&p.name) && !p.name.contains(".lora_"))
        .map(|p| (p.name.clone(), p))
        .collect();
    save_tensors_renamed(path, &tensors, None)
}

/// File names of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
