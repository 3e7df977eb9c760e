//! A whole Llama model as a Hugging Face directory: config.json and the base weights in one
//! safetensors file or in shards listed by `model.safetensors.index.json`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::checkpoint::hf_config::{read_config, save_config};
use crate::checkpoint::tensors::{to_f32, MappedFile};
use crate::checkpoint::{save_tensors, write_atomic, NamedTensor};
use crate::error::{Error, Result};
use crate::model::{LlamaConfig, LlamaWeights, Param};

const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// transformers refuses safetensors files whose metadata lacks a known `format`.
fn pt_metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string())]))
}

fn base_tensors(w: &LlamaWeights<f32>) -> Vec<NamedTensor<'_>> {
    w.params()
        .into_iter()
        .filter(|p| !p.name.contains(".lora_"))
        .map(|p| (p.name.clone(), p))
        .collect()
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Writes config.json and the base weights (LoRA adapters are not part of a model) to one f32
/// safetensors file, creating `dir`.
pub fn save_model(dir: &Path, cfg: &LlamaConfig, w: &LlamaWeights<f32>) -> Result<()> {
    save_config(dir, cfg)?;
    remove_if_present(&dir.join(INDEX_FILE))?;
    save_tensors(&dir.join(SINGLE_FILE), &base_tensors(w), pt_metadata())
}

/// Like [`save_model`], split into shards of at most `max_shard_bytes` (a tensor larger than
/// that gets a shard of its own), as transformers' `save_pretrained(max_shard_size=...)` does.
pub fn save_model_sharded(
    dir: &Path,
    cfg: &LlamaConfig,
    w: &LlamaWeights<f32>,
    max_shard_bytes: usize,
) -> Result<()> {
    save_config(dir, cfg)?;
    remove_if_present(&dir.join(SINGLE_FILE))?;
    let mut shards: Vec<Vec<NamedTensor<'_>>> = vec![Vec::new()];
    let mut size = 0;
    for t in base_tensors(w) {
        let bytes = 4 * t.1.data.len();
        if size + bytes > max_shard_bytes && !shards.last().expect("non-empty").is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("non-empty").push(t);
    }
    let total = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{total:05}.safetensors", i + 1);
        save_tensors(&dir.join(&file), shard, pt_metadata())?;
        for (name, p) in shard {
            weight_map.insert(name.clone(), file.clone());
            total_size += 4 * p.data.len();
        }
    }
    let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    write_atomic(
        &dir.join(INDEX_FILE),
        serde_json::to_string_pretty(&index)
            .expect("JSON")
            .as_bytes(),
    )
}

/// The tensor → file map of a sharded checkpoint (`None` for a single file).
type WeightMap = Option<HashMap<String, PathBuf>>;

/// Which file holds each tensor: every name in the single file, or the index's weight map.
fn weight_files(dir: &Path) -> Result<(WeightMap, Vec<PathBuf>)> {
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        let single = dir.join(SINGLE_FILE);
        if !single.exists() {
            return Err(Error::BadFile {
                path: dir.into(),
                message: format!("no {SINGLE_FILE} or {INDEX_FILE} in the model directory"),
            });
        }
        return Ok((None, vec![single]));
    }
    let text = fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index_path.clone(),
        source: e,
    })?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadFile {
            path: index_path.clone(),
            message: "no `weight_map` object".into(),
        })?;
    let mut by_name = HashMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| Error::BadFile {
            path: index_path.clone(),
            message: format!("weight_map entry for `{name}` is not a file name"),
        })?;
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path.clone());
        }
        by_name.insert(name.clone(), path);
    }
    Ok((Some(by_name), files))
}

/// Loads a Hugging Face Llama directory as f32 weights (bf16, f16 and f64 are converted).
/// With `tie_word_embeddings`, a missing `lm_head.weight` is a copy of the embedding (the copy
/// is untied: training the embedding afterwards leaves it unchanged).
pub fn load_model(dir: &Path) -> Result<(LlamaConfig, LlamaWeights<f32>)> {
    let (cfg, tied) = read_config(dir)?;
    let (index, files) = weight_files(dir)?;
    let mapped = files
        .iter()
        .map(|f| MappedFile::open(f))
        .collect::<Result<Vec<_>>>()?;
    let parsed = mapped
        .iter()
        .map(MappedFile::parse)
        .collect::<Result<Vec<_>>>()?;
    let mut weights = LlamaWeights::<f32>::zeros(&cfg);
    let mut lm_head_missing = false;
    for p in weights.params_mut() {
        let file_idx = match &index {
            Some(map) => map
                .get(&p.name)
                .map(|f| files.iter().position(|x| x == f).expect("listed")),
            None => Some(0),
        };
        let found = file_idx.and_then(|i| parsed[i].tensor(&p.name).ok().map(|v| (i, v)));
        let Some((i, view)) = found else {
            if p.name == "lm_head.weight" && tied {
                lm_head_missing = true;
                continue;
            }
            let path = file_idx.map_or_else(|| dir.join(INDEX_FILE), |i| files[i].clone());
            return Err(Error::MissingTensor {
                path,
                tensor: p.name.clone(),
            });
        };
        fill(p, &files[i], &view)?;
    }
    if lm_head_missing {
        weights.lm_head.data = weights.embed_tokens.data.clone();
    }
    Ok((cfg, weights))
}

fn fill(p: &mut Param<f32>, path: &Path, view: &safetensors::tensor::TensorView<'_>) -> Result<()> {
    if view.shape() != p.shape.as_slice() {
        return Err(Error::BadTensor {
            path: path.into(),
            tensor: p.name.clone(),
            message: format!(
                "shape {:?}, expected {:?} from config.json",
                view.shape(),
                p.shape
            ),
        });
    }
    p.data = to_f32(path, &p.name, view)?;
    Ok(())
}
