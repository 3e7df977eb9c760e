//! Hugging Face weight files: exact round trips, shards, bf16/f16, config.json spellings, PEFT
//! adapters, and errors that name the file and tensor.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::tiny_config;
use half::{bf16, f16};
use longlora::checkpoint::{
    config_to_json, load_config, load_model, save_model, save_model_sharded, save_tensors,
};
use longlora::lora::{load_adapter, merge_lora, save_adapter};
use longlora::model::{Llama, LlamaWeights};
use longlora::ops::attention::AttnMask;
use longlora::rng::Rng;
use safetensors::tensor::{Dtype, TensorView};

fn random_weights(seed: u64) -> LlamaWeights<f32> {
    LlamaWeights::random(&tiny_config(), 0.5, &mut Rng::new(seed))
}

fn err_text<T>(r: longlora::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn save_then_load_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(1);
    save_model(dir.path(), &tiny_config(), &w).unwrap();
    let (cfg, back) = load_model(dir.path()).unwrap();
    assert_eq!(cfg, tiny_config());
    assert_eq!(back, w);
}

#[test]
fn sharded_checkpoint_loads_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(2);
    save_model_sharded(dir.path(), &tiny_config(), &w, 1024).unwrap();
    let shards = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("model-0")
        })
        .count();
    assert!(shards >= 3, "only {shards} shards");
    let (_, back) = load_model(dir.path()).unwrap();
    assert_eq!(back, w);
}

/// Writes the model's tensors with a given dtype, converting each value with `encode`.
fn write_with_dtype(
    dir: &Path,
    w: &LlamaWeights<f32>,
    dtype: Dtype,
    encode: impl Fn(f32) -> [u8; 2],
) {
    longlora::checkpoint::save_model(dir, &tiny_config(), w).unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = w
        .params()
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.data.iter().flat_map(|&v| encode(v)).collect(),
                p.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| (n.as_str(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

#[test]
fn bf16_and_f16_weights_load_as_their_rounded_values() {
    let w = random_weights(3);
    for (dtype, round) in [
        (
            Dtype::BF16,
            (|v: f32| bf16::from_f32(v).to_f32()) as fn(f32) -> f32,
        ),
        (Dtype::F16, |v: f32| f16::from_f32(v).to_f32()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let encode = |v: f32| match dtype {
            Dtype::BF16 => bf16::from_f32(v).to_le_bytes(),
            _ => f16::from_f32(v).to_le_bytes(),
        };
        write_with_dtype(dir.path(), &w, dtype, encode);
        let (_, back) = load_model(dir.path()).unwrap();
        for (a, b) in w.params().iter().zip(back.params()) {
            let want: Vec<f32> = a.data.iter().map(|&v| round(v)).collect();
            assert_eq!(b.data, want, "{dtype:?} {}", a.name);
        }
    }
}

#[test]
fn truncated_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    save_model(dir.path(), &tiny_config(), &random_weights(4)).unwrap();
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_text(load_model(dir.path()));
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn wrong_shape_error_names_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(5);
    save_model(dir.path(), &tiny_config(), &w).unwrap();
    let mut cfg = tiny_config();
    cfg.intermediate_size = 16;
    longlora::checkpoint::save_config(dir.path(), &cfg).unwrap();
    let e = err_text(load_model(dir.path()));
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[12, 8]")
            && e.contains("[16, 8]"),
        "{e}"
    );
}

#[test]
fn missing_tensor_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(6);
    save_model(dir.path(), &tiny_config(), &w).unwrap();
    let kept: Vec<(String, &longlora::model::Param<f32>)> = w
        .params()
        .into_iter()
        .filter(|p| p.name != "model.norm.weight")
        .map(|p| (p.name.clone(), p))
        .collect();
    save_tensors(&dir.path().join("model.safetensors"), &kept, None).unwrap();
    let e = err_text(load_model(dir.path()));
    assert!(
        e.contains("model.norm.weight") && e.contains("model.safetensors"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(7);
    write_with_dtype(dir.path(), &w, Dtype::I16, |v| (v as i16).to_le_bytes());
    let e = err_text(load_model(dir.path()));
    assert!(
        e.contains("I16") && e.contains("model.embed_tokens.weight"),
        "{e}"
    );
}

#[test]
fn missing_shard_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    save_model_sharded(dir.path(), &tiny_config(), &random_weights(8), 1024).unwrap();
    let second = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("model-00002-of-")
        })
        .expect("a second shard");
    std::fs::remove_file(second).unwrap();
    let e = err_text(load_model(dir.path()));
    assert!(e.contains("model-00002-of-"), "{e}");
}

#[test]
fn missing_config_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(load_model(dir.path()));
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 8}").unwrap();
    let e = err_text(load_config(dir.path()));
    assert!(
        e.contains("config.json") && e.contains("num_attention_heads"),
        "{e}"
    );
}

fn config_with(extra: serde_json::Value) -> longlora::Result<longlora::model::LlamaConfig> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = config_to_json(&tiny_config());
    v.as_object_mut().unwrap().remove("rope_scaling");
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    load_config(dir.path())
}

#[test]
fn rope_scaling_is_read_from_transformers_4_and_5_configs() {
    let t4 = config_with(serde_json::json!({"rope_scaling": {"type": "linear", "factor": 8.0}}))
        .unwrap();
    assert_eq!(t4.rope_scaling_factor, 8.0);
    let t5 = config_with(serde_json::json!({"rope_parameters": {"rope_type": "linear", "factor": 3.0, "rope_theta": 500000.0}})).unwrap();
    assert_eq!((t5.rope_scaling_factor, t5.rope_theta), (3.0, 500000.0));
    let none = config_with(serde_json::json!({"rope_scaling": null})).unwrap();
    assert_eq!(none.rope_scaling_factor, 1.0);
    let e = err_text(config_with(
        serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
    ));
    assert!(e.contains("yarn") && e.contains("config.json"), "{e}");
}

#[test]
fn config_json_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config();
    cfg.bos_token_id = Some(1);
    cfg.eos_token_id = Some(2);
    longlora::checkpoint::save_config(dir.path(), &cfg).unwrap();
    assert_eq!(load_config(dir.path()).unwrap(), cfg);
}

#[test]
fn tied_embeddings_copy_the_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(9);
    let mut v = config_to_json(&tiny_config());
    v["tie_word_embeddings"] = true.into();
    let kept: Vec<(String, &longlora::model::Param<f32>)> = w
        .params()
        .into_iter()
        .filter(|p| p.name != "lm_head.weight")
        .map(|p| (p.name.clone(), p))
        .collect();
    save_tensors(
        &dir.path().join("model.safetensors"),
        &kept,
        Some(HashMap::new()),
    )
    .unwrap();
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let (_, back) = load_model(dir.path()).unwrap();
    assert_eq!(back.lm_head.data, w.embed_tokens.data);
}

#[test]
fn lora_tensors_are_not_part_of_a_saved_model() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let w = random_weights(10);
    let mut with_lora = w.clone();
    with_lora.add_lora(2, 4.0, &mut Rng::new(1));
    save_model(a.path(), &tiny_config(), &w).unwrap();
    save_model(b.path(), &tiny_config(), &with_lora).unwrap();
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(read(a.path()), read(b.path()));
}

#[test]
fn adapter_round_trips_with_peft_names_and_merging_keeps_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = random_weights(11);
    w.add_lora(2, 4.0, &mut Rng::new(2));
    for p in w
        .params_mut()
        .into_iter()
        .filter(|p| p.name.contains("lora_B"))
    {
        p.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 * 0.37).sin() * 0.2);
    }
    save_adapter(dir.path(), &w, "base").unwrap();
    let names: Vec<String> =
        longlora::checkpoint::load_tensors(&dir.path().join("adapter_model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
    assert!(
        names.contains(
            &"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight".to_string()
        ),
        "{names:?}"
    );
    assert_eq!(names.len(), 2 * 4 * tiny_config().num_hidden_layers);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            cfg["r"].as_u64(),
            cfg["lora_alpha"].as_f64(),
            cfg["task_type"].as_str()
        ),
        (Some(2), Some(4.0), Some("CAUSAL_LM"))
    );

    let mut back = random_weights(11);
    load_adapter(dir.path(), &mut back).unwrap();
    assert_eq!(back, w);

    let tokens: Vec<u32> = (0..12).map(|i| (i * 7 % 11) as u32).collect();
    let logits = |weights: LlamaWeights<f32>| {
        let m = Llama::new(tiny_config(), weights.cast::<f64>()).unwrap();
        m.forward(&tokens, 2, 6, &AttnMask::dense()).unwrap().logits
    };
    let mut merged = w.clone();
    merge_lora(&mut merged);
    let (a, b) = (logits(w), logits(merged));
    let err = common::rel_error(&b, &a);
    assert!(
        err < 1e-6,
        "merged model differs from base + adapter: {err:e}"
    );
}
