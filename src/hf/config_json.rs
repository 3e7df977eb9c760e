//! The Hugging Face `config.json` of a Llama model: read in the layouts of transformers 4 and 5,
//! written so that both load it.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;

pub(crate) const CONFIG_FILE: &str = "config.json";

/// transformers' defaults for the optional keys.
const DEFAULT_ROPE_THETA: f64 = 10000.0;
const DEFAULT_RMS_NORM_EPS: f64 = 1e-6;
const DEFAULT_MAX_POSITIONS: usize = 2048;

/// A config and the one key that concerns the weights rather than the architecture.
pub(crate) struct HfConfig {
    pub cfg: LlamaConfig,
    /// `lm_head` shares `embed_tokens`, so the weights file may omit it.
    pub tie_word_embeddings: bool,
}

/// Reads `dir/config.json`. Only what this crate implements is accepted (Llama, SiLU, no biases,
/// linear or no RoPE scaling, `head_dim` = `hidden_size / num_attention_heads`): anything else
/// would load and then compute the wrong function.
pub fn load_config(dir: &Path) -> Result<LlamaConfig> {
    read_config(dir).map(|hf| hf.cfg)
}

pub(crate) fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let Value::Object(map) = value else {
        return Err(Error::BadFile {
            path,
            message: "expected a JSON object".into(),
        });
    };
    let fields = Fields {
        path: &path,
        parent: None,
        map: &map,
    };
    let hf = parse(&fields)?;
    hf.cfg.validate().map_err(|e| Error::BadFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    check_head_dim(&fields, &hf.cfg)?;
    Ok(hf)
}

fn parse(f: &Fields) -> Result<HfConfig> {
    check_supported(f)?;
    let num_attention_heads = f.required_usize("num_attention_heads")?;
    let (rope_theta, rope_scaling_factor) = rope(f)?;
    let cfg = LlamaConfig {
        vocab_size: f.required_usize("vocab_size")?,
        hidden_size: f.required_usize("hidden_size")?,
        intermediate_size: f.required_usize("intermediate_size")?,
        num_hidden_layers: f.required_usize("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads: f
            .usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads),
        rope_theta,
        rms_norm_eps: f.f64("rms_norm_eps")?.unwrap_or(DEFAULT_RMS_NORM_EPS),
        max_position_embeddings: f
            .usize("max_position_embeddings")?
            .unwrap_or(DEFAULT_MAX_POSITIONS),
        rope_scaling_factor,
        bos_token_id: f.token_id("bos_token_id")?,
        eos_token_id: f.token_id("eos_token_id")?,
    };
    let tie_word_embeddings = f.bool("tie_word_embeddings")?.unwrap_or(false);
    Ok(HfConfig {
        cfg,
        tie_word_embeddings,
    })
}

fn check_supported(f: &Fields) -> Result<()> {
    if let Some(t) = f.str("model_type")?.filter(|t| *t != "llama") {
        return Err(f.err(
            "model_type",
            format!("`{t}` is not supported, only `llama`"),
        ));
    }
    if let Some(act) = f.str("hidden_act")?.filter(|a| *a != "silu") {
        return Err(f.err(
            "hidden_act",
            format!("`{act}` is not supported, only `silu`"),
        ));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.bool(key)? == Some(true) {
            return Err(f.err(key, "biases are not supported"));
        }
    }
    Ok(())
}

/// transformers 5 writes `head_dim`, and some Llama variants set it apart from the width of the
/// model; this crate derives it from `hidden_size`, so a different value cannot be honoured.
/// Runs after validation, which rules out a division by zero.
fn check_head_dim(f: &Fields, cfg: &LlamaConfig) -> Result<()> {
    match f.usize("head_dim")? {
        Some(head_dim) if head_dim != cfg.head_dim() => Err(f.err(
            "head_dim",
            format!(
                "{head_dim} is not hidden_size / num_attention_heads = {}, the only one supported",
                cfg.head_dim()
            ),
        )),
        _ => Ok(()),
    }
}

/// `(rope_theta, linear factor)`. transformers 5 keeps both in `rope_parameters` (whose
/// `rope_theta` wins over a top-level one, as in transformers); transformers 4 has a top-level
/// `rope_theta` and an optional `rope_scaling`.
fn rope(f: &Fields) -> Result<(f64, f64)> {
    let top_theta = f.f64("rope_theta")?;
    if let Some(params) = f.object("rope_parameters")? {
        let theta = params.f64("rope_theta")?.or(top_theta);
        return Ok((theta.unwrap_or(DEFAULT_ROPE_THETA), linear_factor(&params)?));
    }
    let factor = match f.object("rope_scaling")? {
        Some(scaling) => linear_factor(&scaling)?,
        None => 1.0,
    };
    Ok((top_theta.unwrap_or(DEFAULT_ROPE_THETA), factor))
}

fn linear_factor(p: &Fields) -> Result<f64> {
    let (key, kind) = match p.str("rope_type")? {
        Some(kind) => ("rope_type", kind),
        None => (
            "type",
            p.str("type")?
                .ok_or_else(|| p.err("rope_type", "missing"))?,
        ),
    };
    match kind {
        "default" => Ok(1.0),
        "linear" => p.f64("factor")?.ok_or_else(|| p.err("factor", "missing")),
        other => Err(p.err(
            key,
            format!("RoPE scaling `{other}` is not supported, only `linear` (or `default`)"),
        )),
    }
}

/// The `config.json` content for `cfg`: a plain `LlamaForCausalLM` that transformers loads as is,
/// with the RoPE interpolation factor in the transformers 4 form, which transformers 5 still reads.
pub fn config_to_json(cfg: &LlamaConfig) -> Value {
    let rope_scaling = (cfg.rope_scaling_factor != 1.0).then(
        || json!({"type": "linear", "rope_type": "linear", "factor": cfg.rope_scaling_factor}),
    );
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    })
}

/// Writes `dir/config.json` (the directory must exist).
pub(crate) fn save_config(dir: &Path, cfg: &LlamaConfig) -> Result<()> {
    let text =
        serde_json::to_string_pretty(&config_to_json(cfg)).expect("a JSON value always serialises");
    crate::fs::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// One JSON object of a config file, with typed getters whose errors name the file and the full
/// key (`rope_scaling.factor`). A `null` value counts as absent, as it does in transformers.
struct Fields<'a> {
    path: &'a Path,
    parent: Option<&'a str>,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn err(&self, key: &str, message: impl Display) -> Error {
        let key = match self.parent {
            Some(parent) => format!("{parent}.{key}"),
            None => key.to_string(),
        };
        Error::BadFile {
            path: PathBuf::from(self.path),
            message: format!("key `{key}`: {message}"),
        }
    }

    fn get<T>(
        &self,
        key: &str,
        what: &str,
        read: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => read(v)
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected {what}, got {v}"))),
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    fn required_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .ok_or_else(|| self.err(key, "missing (required)"))
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key, "a number", Value::as_f64)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key, "true or false", Value::as_bool)
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key, "a string", Value::as_str)
    }

    /// A token id; newer configs may list several end-of-sequence ids, of which the first is the
    /// one generation stops on by default.
    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        self.get(key, "a token id or a list of them", |v| match v {
            Value::Array(ids) => ids.first().and_then(id),
            _ => id(v),
        })
    }

    fn object(&self, key: &'a str) -> Result<Option<Fields<'a>>> {
        let map = self.get(key, "an object", Value::as_object)?;
        Ok(map.map(|map| Fields {
            path: self.path,
            parent: Some(key),
            map,
        }))
    }
}
