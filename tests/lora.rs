//! LoRA adapters: PEFT's file format, loading back, and merging into the base weights.

mod common;

use common::tiny_config;
use longlora::hf::peft::{load_adapter, save_adapter};
use longlora::model::lora::merge_lora;
use longlora::model::{Llama, LlamaWeights, Param};
use longlora::ops::attention::AttnMask;
use longlora::rng::Rng;

fn random_weights(seed: u64) -> LlamaWeights<Param<f32>> {
    LlamaWeights::random(&tiny_config(), 0.5, &mut Rng::new(seed))
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
        longlora::hf::load_tensors(&dir.path().join("adapter_model.safetensors"))
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
    let logits = |weights: LlamaWeights<Param<f32>>| {
        let m = Llama::new(tiny_config(), weights.cast::<f64>()).unwrap();
        let workspace = m.forward(&tokens, 2, 6, &AttnMask::dense()).unwrap();
        workspace.logits().unwrap().clone()
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
