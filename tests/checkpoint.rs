//! Hugging Face format weights: round trips, sharding, dtype conversion, config.json in the
//! transformers 4 and 5 layouts, and errors that name the file, the key or the tensor.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use longlora::fs::write_atomic;
use longlora::hf::{
    config_to_json, load_config, load_model, load_tensors, save_model, save_model_sharded,
    save_tensors, save_tensors_renamed,
};
use longlora::model::{LlamaConfig, LlamaWeights, Param};
use longlora::rng::Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

/// A tiny model with GQA (4 query heads, 2 key/value heads) and RoPE interpolation factor 4.
fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        rope_scaling_factor: 4.0,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    }
}

fn random_weights(cfg: &LlamaConfig, seed: u64) -> LlamaWeights<Param<f32>> {
    LlamaWeights::random(cfg, 0.02, &mut Rng::new(seed))
}

/// Asserts equal names, shapes and bit patterns, naming the first tensor and index that differ.
fn assert_same_weights(got: &LlamaWeights<Param<f32>>, want: &LlamaWeights<Param<f32>>) {
    let (got, want) = (got.params(), want.params());
    assert_eq!(got.len(), want.len(), "number of tensors");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.name, &g.shape),
            (&w.name, &w.shape),
            "tensor name/shape"
        );
        assert_same_values(&g.name, &g.data, &w.data);
    }
}

fn assert_same_values(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{name}[{i}]: got {}, expected {}", got[i], want[i]);
    }
}

/// The error message of a call that must fail.
fn error_of<T>(result: longlora::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "error `{message}` does not mention `{part}`"
        );
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// A tensor of any dtype, as bytes, for writing files our own writer would not produce.
struct Raw {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn f32(p: &Param<f32>) -> Raw {
        Raw::encode(p, Dtype::F32, |v| v.to_le_bytes().to_vec())
    }

    fn encode(p: &Param<f32>, dtype: Dtype, f: impl Fn(f32) -> Vec<u8>) -> Raw {
        Raw {
            name: p.name.clone(),
            dtype,
            shape: p.shape.clone(),
            bytes: p.data.iter().flat_map(|&v| f(v)).collect(),
        }
    }
}

fn write_raw(path: &Path, tensors: &[Raw]) {
    let views = tensors.iter().map(|t| {
        let view =
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("consistent test tensor");
        (t.name.clone(), view)
    });
    fs::write(
        path,
        safetensors::serialize(views, None).expect("serialise"),
    )
    .expect("write");
}

/// Saves a random tiny model in `dir`, then rewrites its weights file with `edit` applied.
fn saved_model_with(dir: &Path, edit: impl FnOnce(&mut Vec<Raw>)) -> LlamaWeights<Param<f32>> {
    let w = random_weights(&tiny_config(), 7);
    save_model(dir, &tiny_config(), &w).expect("save");
    let mut raws: Vec<Raw> = w.params().into_iter().map(Raw::f32).collect();
    edit(&mut raws);
    write_raw(&dir.join("model.safetensors"), &raws);
    w
}

/// A minimal transformers config.json of the tiny model, with `extra` keys merged in.
fn write_config_json(dir: &Path, extra: Value) -> PathBuf {
    let mut cfg = json!({
        "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4,
    });
    let obj = cfg.as_object_mut().expect("object literal");
    obj.extend(extra.as_object().expect("extra keys are an object").clone());
    let path = dir.join("config.json");
    fs::write(&path, cfg.to_string()).expect("write config");
    path
}

fn shard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .collect();
    names.sort();
    names
}

#[test]
fn save_then_load_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 1);
    save_model(dir.path(), &cfg, &w).unwrap();
    let (cfg2, w2) = load_model(dir.path()).unwrap();
    assert_eq!(cfg2, cfg);
    assert_same_weights(&w2, &w);
}

#[test]
fn sharded_checkpoint_loads_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 2);
    save_model_sharded(dir.path(), &cfg, &w, 4096).unwrap();

    let shards = shard_files(dir.path());
    assert!(
        shards.len() >= 3,
        "expected at least 3 shards, got {shards:?}"
    );
    assert!(shards[0].ends_with(&format!("-of-{:05}.safetensors", shards.len())));
    assert!(!dir.path().join("model.safetensors").exists());
    let index: Value =
        serde_json::from_slice(&fs::read(dir.path().join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let total: usize = w.params().iter().map(|p| 4 * p.data.len()).sum();
    assert_eq!(index["metadata"]["total_size"], json!(total));
    for p in w.params() {
        let file = index["weight_map"][&p.name].as_str();
        assert!(
            file.is_some_and(|f| shards.iter().any(|s| s == f)),
            "{} not mapped to a shard",
            p.name
        );
    }

    let (cfg2, w2) = load_model(dir.path()).unwrap();
    assert_eq!(cfg2, cfg);
    assert_same_weights(&w2, &w);
}

#[test]
fn a_model_that_fits_one_shard_is_saved_as_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(&tiny_config(), 3);
    save_model_sharded(dir.path(), &tiny_config(), &w, usize::MAX).unwrap();
    assert!(dir.path().join("model.safetensors").exists());
    assert!(shard_files(dir.path()).is_empty());
    assert_same_weights(&load_model(dir.path()).unwrap().1, &w);
}

#[test]
fn saving_in_another_layout_replaces_the_old_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    save_model_sharded(dir.path(), &cfg, &random_weights(&cfg, 4), 4096).unwrap();
    let single = random_weights(&cfg, 5);
    save_model(dir.path(), &cfg, &single).unwrap();
    assert!(
        shard_files(dir.path()).is_empty(),
        "stale shards left behind"
    );
    assert!(!dir.path().join("model.safetensors.index.json").exists());
    assert_same_weights(&load_model(dir.path()).unwrap().1, &single);

    let sharded = random_weights(&cfg, 6);
    save_model_sharded(dir.path(), &cfg, &sharded, 4096).unwrap();
    assert!(
        !dir.path().join("model.safetensors").exists(),
        "stale single file left behind"
    );
    assert_same_weights(&load_model(dir.path()).unwrap().1, &sharded);
}

#[test]
fn bf16_and_f16_weights_load_as_their_rounded_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = random_weights(&tiny_config(), 8);
    save_model(dir.path(), &tiny_config(), &want).unwrap();
    let mut raws = Vec::new();
    for (i, p) in want.params_mut().into_iter().enumerate() {
        if i % 2 == 0 {
            raws.push(Raw::encode(p, Dtype::BF16, |v| {
                bf16::from_f32(v).to_le_bytes().to_vec()
            }));
            p.data
                .iter_mut()
                .for_each(|v| *v = bf16::from_f32(*v).to_f32());
        } else {
            raws.push(Raw::encode(p, Dtype::F16, |v| {
                f16::from_f32(v).to_le_bytes().to_vec()
            }));
            p.data
                .iter_mut()
                .for_each(|v| *v = f16::from_f32(*v).to_f32());
        }
    }
    write_raw(&dir.path().join("model.safetensors"), &raws);
    assert_same_weights(&load_model(dir.path()).unwrap().1, &want);
}

#[test]
fn f64_tensors_load_rounded_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let values = [0.1f64, -1.0 / 3.0, 1e300];
    let raw = Raw {
        name: "x".into(),
        dtype: Dtype::F64,
        shape: vec![3],
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    write_raw(&path, &[raw]);
    let loaded = load_tensors(&path).unwrap();
    let want: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    assert_same_values("x", &loaded[0].data, &want);
}

#[test]
fn truncated_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    save_model(
        dir.path(),
        &tiny_config(),
        &random_weights(&tiny_config(), 9),
    )
    .unwrap();
    let file = dir.path().join("model.safetensors");
    let len = fs::metadata(&file).unwrap().len();
    for cut_to in [len - 10, 20, 0] {
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut_to)
            .unwrap();
        let message = error_of(load_model(dir.path()));
        assert_mentions(&message, &[&path_text(&file), "truncated"]);
    }
}

#[test]
fn truncated_file_error_names_the_cut_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let a = Param::filled("a".into(), vec![4], 1.0f32);
    let b = Param::filled("b".into(), vec![4], 2.0f32);
    save_tensors(&path, &[&a, &b], None).unwrap();
    let len = fs::metadata(&path).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 2)
        .unwrap();
    assert_mentions(
        &error_of(load_tensors(&path)),
        &[&path_text(&path), "`b`", "truncated"],
    );
}

#[test]
fn wrong_shape_error_names_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    save_model(
        dir.path(),
        &tiny_config(),
        &random_weights(&tiny_config(), 10),
    )
    .unwrap();
    let wider = LlamaConfig {
        intermediate_size: 40,
        ..tiny_config()
    };
    fs::write(
        dir.path().join("config.json"),
        config_to_json(&wider).to_string(),
    )
    .unwrap();
    let message = error_of(load_model(dir.path()));
    assert_mentions(
        &message,
        &[
            &path_text(&dir.path().join("model.safetensors")),
            "model.layers.0.mlp.gate_proj.weight",
            "expected shape [40, 16], got [24, 16]",
        ],
    );
}

#[test]
fn missing_tensor_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let gone = "model.layers.1.self_attn.k_proj.weight";
    saved_model_with(dir.path(), |raws| raws.retain(|r| r.name != gone));
    let message = error_of(load_model(dir.path()));
    assert_mentions(
        &message,
        &[&path_text(&dir.path().join("model.safetensors")), gone],
    );
}

#[test]
fn unsupported_dtype_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    saved_model_with(dir.path(), |raws| {
        let norm = raws
            .iter_mut()
            .find(|r| r.name == "model.norm.weight")
            .unwrap();
        norm.dtype = Dtype::I64;
        norm.bytes = vec![0; 8 * 16];
    });
    let message = error_of(load_model(dir.path()));
    assert_mentions(
        &message,
        &[
            &path_text(&dir.path().join("model.safetensors")),
            "model.norm.weight",
            "I64",
        ],
    );
}

#[test]
fn unknown_tensors_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let want = saved_model_with(dir.path(), |raws| {
        let inv_freq = Param::filled(
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            vec![2],
            0.5,
        );
        raws.push(Raw::f32(&inv_freq));
        raws.push(Raw {
            name: "extra.ids".into(),
            dtype: Dtype::I64,
            shape: vec![1],
            bytes: vec![0; 8],
        });
    });
    assert_same_weights(&load_model(dir.path()).unwrap().1, &want);
}

#[test]
fn missing_shard_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    save_model_sharded(
        dir.path(),
        &tiny_config(),
        &random_weights(&tiny_config(), 11),
        4096,
    )
    .unwrap();
    let shards = shard_files(dir.path());
    fs::remove_file(dir.path().join(&shards[1])).unwrap();
    let message = error_of(load_model(dir.path()));
    assert_mentions(&message, &[&shards[1], "model.safetensors.index.json"]);
}

#[test]
fn missing_config_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = path_text(&dir.path().join("config.json"));
    assert_mentions(&error_of(load_model(dir.path())), &[&config]);
    assert_mentions(&error_of(load_config(dir.path())), &[&config]);
}

#[test]
fn missing_weights_error_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_config_json(dir.path(), json!({}));
    let message = error_of(load_model(dir.path()));
    assert_mentions(&message, &[&path_text(dir.path()), "model.safetensors"]);
}

#[test]
fn bad_config_errors_name_the_path_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_json(dir.path(), json!({}));
    let config = path_text(&path);

    let mut no_hidden: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    no_hidden.as_object_mut().unwrap().remove("hidden_size");
    fs::write(&path, no_hidden.to_string()).unwrap();
    assert_mentions(
        &error_of(load_config(dir.path())),
        &[&config, "hidden_size", "missing"],
    );

    write_config_json(dir.path(), json!({"num_hidden_layers": "two"}));
    assert_mentions(
        &error_of(load_config(dir.path())),
        &[&config, "num_hidden_layers"],
    );

    fs::write(&path, "{\"vocab_size\": 32,").unwrap();
    assert_mentions(&error_of(load_config(dir.path())), &[&config, "JSON"]);

    write_config_json(dir.path(), json!({"num_attention_heads": 3}));
    assert_mentions(
        &error_of(load_config(dir.path())),
        &[&config, "num_attention_heads"],
    );
}

#[test]
fn optional_config_keys_take_the_transformers_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write_config_json(
        dir.path(),
        json!({"bos_token_id": null, "eos_token_id": [7, 2]}),
    );
    let cfg = load_config(dir.path()).unwrap();
    assert_eq!(
        cfg.num_key_value_heads, 4,
        "num_key_value_heads defaults to the head count"
    );
    assert_eq!(cfg.rope_theta, 10000.0);
    assert_eq!(cfg.rms_norm_eps, 1e-6);
    assert_eq!(cfg.max_position_embeddings, 2048);
    assert_eq!(cfg.rope_scaling_factor, 1.0);
    assert_eq!(cfg.bos_token_id, None);
    assert_eq!(cfg.eos_token_id, Some(7), "the first of a list of eos ids");
}

#[test]
fn rope_scaling_is_read_from_transformers_4_and_5_configs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            json!({"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}),
            (500000.0, 4.0),
        ),
        (
            json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
            (10000.0, 2.0),
        ),
        (
            json!({"rope_scaling": null, "rope_theta": 20000.0}),
            (20000.0, 1.0),
        ),
        (
            json!({"rope_parameters": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}),
            (1e6, 8.0),
        ),
        (
            json!({"rope_theta": 3e5, "rope_parameters": {"rope_type": "default"}}),
            (3e5, 1.0),
        ),
    ];
    for (extra, (theta, factor)) in cases {
        write_config_json(dir.path(), extra.clone());
        let cfg = load_config(dir.path()).unwrap();
        assert_eq!(
            (cfg.rope_theta, cfg.rope_scaling_factor),
            (theta, factor),
            "config {extra}"
        );
    }
}

#[test]
fn unsupported_rope_types_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}),
            "`rope_scaling.type`",
            "`dynamic`",
        ),
        (
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "`rope_scaling.rope_type`",
            "`yarn`",
        ),
        (
            json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}),
            "`rope_parameters.rope_type`",
            "`llama3`",
        ),
    ];
    for (extra, key, kind) in cases {
        let path = write_config_json(dir.path(), extra);
        assert_mentions(
            &error_of(load_config(dir.path())),
            &[&path_text(&path), key, kind],
        );
    }
}

#[test]
fn unsupported_architecture_options_are_rejected_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (json!({"model_type": "mistral"}), "model_type"),
        (json!({"hidden_act": "gelu"}), "hidden_act"),
        (json!({"attention_bias": true}), "attention_bias"),
        (json!({"mlp_bias": true}), "mlp_bias"),
        (json!({"head_dim": 8}), "head_dim"),
    ];
    for (extra, key) in cases {
        let path = write_config_json(dir.path(), extra);
        assert_mentions(
            &error_of(load_config(dir.path())),
            &[&path_text(&path), key],
        );
    }
}

#[test]
fn tied_embeddings_copy_the_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let w = saved_model_with(dir.path(), |raws| {
        raws.retain(|r| r.name != "lm_head.weight")
    });
    let mut tied = config_to_json(&tiny_config());
    tied["tie_word_embeddings"] = json!(true);
    fs::write(dir.path().join("config.json"), tied.to_string()).unwrap();
    let (_, loaded) = load_model(dir.path()).unwrap();
    assert_same_values(
        "lm_head.weight",
        &loaded.lm_head.weight.data,
        &w.embed_tokens.data,
    );
    assert_same_values(
        "model.embed_tokens.weight",
        &loaded.embed_tokens.data,
        &w.embed_tokens.data,
    );

    tied["tie_word_embeddings"] = json!(false);
    fs::write(dir.path().join("config.json"), tied.to_string()).unwrap();
    assert_mentions(&error_of(load_model(dir.path())), &["lm_head.weight"]);
}

/// Written by transformers 5.24 (`AutoConfig.from_pretrained` of one of our configs, then
/// `save_pretrained`): rope settings move into `rope_parameters`; `head_dim`, `dtype` appear.
const TRANSFORMERS_5_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "dtype": "float32", "eos_token_id": 2, "head_dim": 4, "hidden_act": "silu",
  "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 24,
  "max_position_embeddings": 64, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
  "pad_token_id": null, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 4.0, "rope_theta": 10000.0, "rope_type": "linear", "type": "linear"
  },
  "tie_word_embeddings": false, "transformers_version": "5.24.0", "use_cache": true,
  "vocab_size": 32
}"#;

#[test]
fn a_config_saved_by_transformers_5_loads_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), TRANSFORMERS_5_CONFIG).unwrap();
    assert_eq!(load_config(dir.path()).unwrap(), tiny_config());
}

#[test]
fn config_json_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let unscaled = LlamaConfig {
        rope_scaling_factor: 1.0,
        eos_token_id: None,
        ..tiny_config()
    };
    for cfg in [tiny_config(), unscaled] {
        let json = config_to_json(&cfg);
        assert_eq!(json["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(json["model_type"], "llama");
        let want_scaling = if cfg.rope_scaling_factor == 1.0 {
            Value::Null
        } else {
            json!({"type": "linear", "rope_type": "linear", "factor": cfg.rope_scaling_factor})
        };
        assert_eq!(json["rope_scaling"], want_scaling);
        fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
        assert_eq!(load_config(dir.path()).unwrap(), cfg);
    }
}

#[test]
fn save_model_leaves_lora_adapters_out() {
    let (plain_dir, lora_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let w = random_weights(&tiny_config(), 12);
    let mut with_lora = w.clone();
    with_lora.add_lora(2, 4.0, &mut Rng::new(13));
    save_model(plain_dir.path(), &tiny_config(), &w).unwrap();
    save_model(lora_dir.path(), &tiny_config(), &with_lora).unwrap();
    let file = |d: &Path| fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        file(plain_dir.path()) == file(lora_dir.path()),
        "LoRA tensors changed model.safetensors"
    );

    save_model_sharded(lora_dir.path(), &tiny_config(), &with_lora, 4096).unwrap();
    assert_same_weights(&load_model(lora_dir.path()).unwrap().1, &w);
}

#[test]
fn renamed_tensors_and_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    let mut rng = Rng::new(14);
    let mut a = Param::filled("a".into(), vec![2, 3], 0.0f32);
    a.data.iter_mut().for_each(|v| *v = rng.normal() as f32);
    let b = Param::filled("b".into(), vec![3], -1.5f32);
    let names = [
        "base_model.model.x.lora_A.weight",
        "base_model.model.x.lora_B.weight",
    ];
    let metadata = HashMap::from([("note".to_string(), "peft".to_string())]);
    save_tensors_renamed(
        &path,
        &[(names[0].into(), &a), (names[1].into(), &b)],
        Some(metadata),
    )
    .unwrap();

    let loaded = load_tensors(&path).unwrap();
    let got: Vec<(&str, &[usize])> = loaded
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    assert_eq!(got, [(names[0], &[2, 3][..]), (names[1], &[3][..])]);
    assert_same_values(names[0], &loaded[0].data, &a.data);
    assert_same_values(names[1], &loaded[1].data, &b.data);

    let bytes = fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let stored = header.metadata().clone().unwrap_or_default();
    assert_eq!(stored.get("note").map(String::as_str), Some("peft"));
    assert_eq!(
        stored.get("format").map(String::as_str),
        Some("pt"),
        "transformers needs format=pt"
    );
}

#[test]
fn saving_a_name_twice_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let a = Param::filled("a".into(), vec![1], 1.0f32);
    assert_mentions(
        &error_of(save_tensors(&path, &[&a, &a], None)),
        &["`a`", "twice"],
    );
    assert!(!path.exists());
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second, longer");
    let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "temporary files left: {entries:?}");

    let nowhere = dir.path().join("missing").join("out.bin");
    assert_mentions(
        &error_of(write_atomic(&nowhere, b"x")),
        &[&path_text(&nowhere)],
    );
}
