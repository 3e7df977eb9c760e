//! A whole Llama model directory as transformers saves it: `config.json` and the weights in one
//! `model.safetensors` or in shards listed by `model.safetensors.index.json`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::config_json::{read_config, save_config};
use super::safetensors_file::{save_tensors, MappedFile};
use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::model::{LinearId, LlamaWeights, Param, ParamId};

const WEIGHTS_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// Saves `config.json` and `model.safetensors` (f32), creating `dir`. LoRA adapters are left out:
/// PEFT keeps them in an adapter file of their own, and the base file holds the base model only.
pub fn save_model(dir: &Path, cfg: &LlamaConfig, w: &LlamaWeights<Param<f32>>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_tensors(&dir.join(WEIGHTS_FILE), &base_params(w), None)?;
    remove_stale_weights(dir, &[WEIGHTS_FILE.to_string()])?;
    save_config(dir, cfg)
}

/// Saves like [`save_model`] but in shards of at most `max_shard_bytes` (a larger tensor gets a
/// shard of its own), filled in parameter order, with the index transformers reads. As in
/// transformers, a model that fits in one shard is saved as a single `model.safetensors`.
pub fn save_model_sharded(
    dir: &Path,
    cfg: &LlamaConfig,
    w: &LlamaWeights<Param<f32>>,
    max_shard_bytes: usize,
) -> Result<()> {
    let params = base_params(w);
    let shards = plan_shards(&params, max_shard_bytes);
    if shards.len() <= 1 {
        return save_model(dir, cfg, w);
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut weight_map = BTreeMap::new();
    let mut written = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len());
        save_tensors(&dir.join(&file), shard, None)?;
        weight_map.extend(shard.iter().map(|p| (p.name.clone(), file.clone())));
        written.push(file);
    }
    let total_size: usize = params.iter().map(|p| p.data.len() * size_of::<f32>()).sum();
    let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    let text = serde_json::to_string_pretty(&index).expect("a JSON value always serialises");
    crate::fs::write_atomic(&dir.join(INDEX_FILE), text.as_bytes())?;
    written.push(INDEX_FILE.to_string());
    remove_stale_weights(dir, &written)?;
    save_config(dir, cfg)
}

/// The base model's tensors: every parameter except LoRA adapters.
fn base_params(w: &LlamaWeights<Param<f32>>) -> Vec<&Param<f32>> {
    let mut base = Vec::new();
    w.visit(|id, p| {
        if !id.is_lora() {
            base.push(p);
        }
    });
    base
}

fn plan_shards<'a>(params: &[&'a Param<f32>], max_bytes: usize) -> Vec<Vec<&'a Param<f32>>> {
    let mut shards: Vec<Vec<&Param<f32>>> = Vec::new();
    let mut filled = 0;
    for &p in params {
        let bytes = p.data.len() * size_of::<f32>();
        match shards.last_mut() {
            Some(shard) if filled + bytes <= max_bytes => {
                shard.push(p);
                filled += bytes;
            }
            _ => {
                shards.push(vec![p]);
                filled = bytes;
            }
        }
    }
    shards
}

/// Deletes weight files of an earlier save in another layout or shard count: a loader would
/// otherwise pick the old single file over a new index, or a reader see a mix of both.
fn remove_stale_weights(dir: &Path, keep: &[String]) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if is_weights_file(name) && !keep.iter().any(|k| k == name) {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

fn is_weights_file(name: &str) -> bool {
    let shard =
        name.starts_with("model-") && name.contains("-of-") && name.ends_with(".safetensors");
    shard || name == WEIGHTS_FILE || name == INDEX_FILE
}

/// Loads a model directory saved by transformers or by [`save_model`]. Tensors the model does not
/// use (e.g. an old `rotary_emb.inv_freq`) are ignored. With `tie_word_embeddings` and no
/// `lm_head.weight` in the files, `lm_head` starts as a copy of `embed_tokens`; the copy is
/// untied afterwards (training updates each on its own, and a save writes both).
pub fn load_model(dir: &Path) -> Result<(LlamaConfig, LlamaWeights<Param<f32>>)> {
    let hf = read_config(dir)?;
    let source = WeightFiles::open(dir)?;
    let lm_head = ParamId::Weight(LinearId::LmHead);
    let copy_embedding = hf.tie_word_embeddings && !source.contains(&lm_head.hf_name());
    check_fits(dir, &hf.cfg, copy_embedding, &source)?;
    let mut w = LlamaWeights::zeros(&hf.cfg);
    let mut result = Ok(());
    w.visit_mut(|id, p| {
        if result.is_ok() && !(copy_embedding && id == lm_head) {
            result = source.file_of(&p.name).and_then(|file| file.read_into(p));
        }
    });
    result?;
    if copy_embedding {
        w.lm_head.weight.data.clone_from(&w.embed_tokens.data);
    }
    Ok((hf.cfg, w))
}

/// Fails unless the weight files are large enough for the model config.json describes, at two
/// bytes a value (bf16 or f16), before any memory is set aside for it: the model in memory then
/// takes at most twice the files' size, whatever config.json claims.
fn check_fits(
    dir: &Path,
    cfg: &LlamaConfig,
    without_lm_head: bool,
    source: &WeightFiles,
) -> Result<()> {
    let [vocab, d, inter, layers, kv] = [
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        cfg.kv_dim(),
    ]
    .map(|x| x as u128);
    let per_layer = (2 * d)
        .saturating_add(d.saturating_mul(d).saturating_mul(2))
        .saturating_add(d.saturating_mul(kv).saturating_mul(2))
        .saturating_add(d.saturating_mul(inter).saturating_mul(3));
    let embeddings = if without_lm_head { 1 } else { 2 };
    let values = vocab
        .saturating_mul(d)
        .saturating_mul(embeddings)
        .saturating_add(layers.saturating_mul(per_layer))
        .saturating_add(d);
    let need = values.saturating_mul(2);
    let have = source.bytes() as u128;
    if need > have {
        return Err(Error::BadFile {
            path: dir.join(super::config_json::CONFIG_FILE),
            message: format!(
                "describes a model of {values} values, at least {need} bytes, but its weight \
                 files hold {have} bytes"
            ),
        });
    }
    Ok(())
}

/// The mapped weight files of a model directory and which one holds each tensor.
enum WeightFiles {
    Single(MappedFile),
    Sharded {
        index: PathBuf,
        /// By file name.
        shards: HashMap<String, MappedFile>,
        /// Tensor name to file name, as the index lists them.
        shard_of: BTreeMap<String, String>,
    },
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl WeightFiles {
    /// Prefers `model.safetensors` over an index, as transformers does.
    fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(WEIGHTS_FILE);
        if single.exists() {
            return MappedFile::open(&single).map(WeightFiles::Single);
        }
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            return Self::open_sharded(dir, index);
        }
        Err(Error::BadFile {
            path: dir.into(),
            message: format!("no weights: neither {WEIGHTS_FILE} nor {INDEX_FILE}"),
        })
    }

    fn open_sharded(dir: &Path, index: PathBuf) -> Result<Self> {
        let bytes = fs::read(&index).map_err(|e| Error::io(&index, e))?;
        let parsed: ShardIndex = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: index.clone(),
            source,
        })?;
        let mut shards = HashMap::new();
        for file in parsed.weight_map.values() {
            if !shards.contains_key(file) {
                shards.insert(file.clone(), open_shard(&index, dir, file)?);
            }
        }
        Ok(WeightFiles::Sharded {
            index,
            shards,
            shard_of: parsed.weight_map,
        })
    }

    /// The total size of the weight files.
    fn bytes(&self) -> usize {
        match self {
            WeightFiles::Single(file) => file.len(),
            WeightFiles::Sharded { shards, .. } => shards.values().map(MappedFile::len).sum(),
        }
    }

    fn contains(&self, tensor: &str) -> bool {
        match self {
            WeightFiles::Single(file) => file.contains(tensor),
            WeightFiles::Sharded { shard_of, .. } => shard_of.contains_key(tensor),
        }
    }

    /// The file that should hold `tensor`; a tensor missing from the index is reported there.
    fn file_of(&self, tensor: &str) -> Result<&MappedFile> {
        match self {
            WeightFiles::Single(file) => Ok(file),
            WeightFiles::Sharded {
                index,
                shards,
                shard_of,
            } => shard_of
                .get(tensor)
                .map(|file| &shards[file])
                .ok_or_else(|| Error::MissingTensor {
                    path: index.clone(),
                    tensor: tensor.into(),
                }),
        }
    }
}

/// Opens a shard, saying which index named it when it is not a file of the model's directory.
fn open_shard(index: &Path, dir: &Path, name: &str) -> Result<MappedFile> {
    let shard = dir.join(name);
    let plain_name = matches!(
        Path::new(name).components().collect::<Vec<_>>()[..],
        [std::path::Component::Normal(_)]
    );
    if !plain_name || !shard.is_file() {
        return Err(Error::BadFile {
            path: index.into(),
            message: format!(
                "names shard `{name}`, which is not a file in {}",
                dir.display()
            ),
        });
    }
    MappedFile::open(&shard)
}
