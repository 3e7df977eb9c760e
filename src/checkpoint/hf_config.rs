//! `config.json` of a Hugging Face `LlamaForCausalLM`: reading (transformers 4 and 5 spellings of
//! linear RoPE scaling) and writing.

use std::path::Path;

use serde_json::{json, Value};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::model::LlamaConfig;

fn bad(path: &Path, message: String) -> Error {
    Error::BadFile {
        path: path.into(),
        message,
    }
}

fn usize_field(v: &Value, path: &Path, key: &str, default: Option<usize>) -> Result<usize> {
    match v.get(key) {
        Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
            bad(
                path,
                format!("`{key}` must be a non-negative integer, got {x}"),
            )
        }),
        None => default.ok_or_else(|| bad(path, format!("missing required key `{key}`"))),
    }
}

fn f64_field(v: &Value, path: &Path, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(path, format!("`{key}` must be a number, got {x}"))),
    }
}

/// The first token id of a field that is an integer or a list of integers (newer configs list
/// several EOS ids).
fn token_id(v: &Value, key: &str) -> Option<u32> {
    match v.get(key)? {
        Value::Array(a) => a.first()?.as_u64().map(|n| n as u32),
        x => x.as_u64().map(|n| n as u32),
    }
}

/// The linear RoPE factor from `rope_scaling` (transformers 4) or `rope_parameters`
/// (transformers 5), and a `rope_theta` found inside the latter.
fn rope_scaling(v: &Value, path: &Path) -> Result<(f64, Option<f64>)> {
    for key in ["rope_scaling", "rope_parameters"] {
        let Some(s) = v.get(key).filter(|s| !s.is_null()) else {
            continue;
        };
        let theta = f64_field(s, path, "rope_theta")?;
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        return match kind {
            "linear" => {
                let f = f64_field(s, path, "factor")?
                    .ok_or_else(|| bad(path, format!("`{key}` of type linear has no `factor`")))?;
                Ok((f, theta))
            }
            "default" => Ok((1.0, theta)),
            other => Err(bad(
                path,
                format!(
                    "`{key}` type `{other}` is not supported (only linear position interpolation)"
                ),
            )),
        };
    }
    Ok((1.0, None))
}

fn check_architecture(v: &Value, path: &Path) -> Result<()> {
    if let Some(t) = v.get("model_type").and_then(Value::as_str) {
        if t != "llama" {
            return Err(bad(
                path,
                format!("model_type `{t}` is not supported; expected `llama`"),
            ));
        }
    }
    if let Some(a) = v.get("hidden_act").and_then(Value::as_str) {
        if a != "silu" {
            return Err(bad(
                path,
                format!("hidden_act `{a}` is not supported; expected `silu`"),
            ));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if v.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                path,
                format!("`{key}: true` is not supported (Llama has no biases)"),
            ));
        }
    }
    Ok(())
}

/// Parses a config.json value; `path` is only used in messages.
pub(crate) fn parse_config(v: &Value, path: &Path) -> Result<(LlamaConfig, bool)> {
    check_architecture(v, path)?;
    let heads = usize_field(v, path, "num_attention_heads", None)?;
    let (factor, theta_in_params) = rope_scaling(v, path)?;
    let cfg = LlamaConfig {
        vocab_size: usize_field(v, path, "vocab_size", None)?,
        hidden_size: usize_field(v, path, "hidden_size", None)?,
        intermediate_size: usize_field(v, path, "intermediate_size", None)?,
        num_hidden_layers: usize_field(v, path, "num_hidden_layers", None)?,
        num_attention_heads: heads,
        num_key_value_heads: usize_field(v, path, "num_key_value_heads", Some(heads))?,
        rope_theta: theta_in_params
            .or(f64_field(v, path, "rope_theta")?)
            .unwrap_or(10000.0),
        rms_norm_eps: f64_field(v, path, "rms_norm_eps")?.unwrap_or(1e-6),
        max_position_embeddings: usize_field(v, path, "max_position_embeddings", Some(2048))?,
        rope_scaling_factor: factor,
        bos_token_id: token_id(v, "bos_token_id"),
        eos_token_id: token_id(v, "eos_token_id"),
    };
    cfg.validate().map_err(|e| bad(path, e.to_string()))?;
    let tied = v
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((cfg, tied))
}

/// Reads `dir/config.json` and whether it ties the output head to the embedding.
pub(crate) fn read_config(dir: &Path) -> Result<(LlamaConfig, bool)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    parse_config(&v, &path)
}

/// Reads `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<LlamaConfig> {
    Ok(read_config(dir)?.0)
}

/// The config.json content transformers writes for a Llama, with linear RoPE scaling when the
/// factor is not 1 (in both the transformers 4 and 5 keys, so either version reads it).
pub fn config_to_json(cfg: &LlamaConfig) -> Value {
    let scaling = (cfg.rope_scaling_factor != 1.0).then(
        || json!({"type": "linear", "rope_type": "linear", "factor": cfg.rope_scaling_factor}),
    );
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling,
        "rms_norm_eps": cfg.rms_norm_eps,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "use_cache": true,
    })
}

/// Writes `dir/config.json` (atomically), creating `dir`.
pub fn save_config(dir: &Path, cfg: &LlamaConfig) -> Result<()> {
    let text = serde_json::to_string_pretty(&config_to_json(cfg)).expect("JSON values serialise");
    write_atomic(&dir.join("config.json"), text.as_bytes())
}
