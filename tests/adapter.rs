//! Adapters in PEFT's format: a fixture written by `peft` itself (scripts/make-peft-fixture.py)
//! loads and reproduces transformers' numbers; our own adapter files match PEFT's names, shapes and
//! config; and a merged model computes what base + adapter computes.

mod common;

use std::path::{Path, PathBuf};

use common::{rel_error, tiny_config};
use longlora::hf::peft::{
    load_adapter, load_with_adapter, save_adapter, save_trainable_params, ADAPTER_CONFIG,
    ADAPTER_WEIGHTS, TRAINABLE_PARAMS_FILE,
};
use longlora::hf::{load_model, load_tensors, save_model};
use longlora::model::lora::merge_lora;
use longlora::model::{Llama, LlamaWeights, ParamId, TrainableSet};
use longlora::ops::attention::AttnMask;
use longlora::rng::Rng;
use longlora::train::{Extension, RUN_FILE};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Logits and mean next-token loss of one sequence, as transformers computes them with
/// `labels = input_ids`.
fn logits_and_loss(model: &Llama<f32>, tokens: &[u32]) -> (Vec<f64>, f64) {
    let mut acts = model
        .forward(tokens, 1, tokens.len(), &AttnMask::dense())
        .unwrap();
    let mut targets: Vec<i32> = tokens[1..].iter().map(|&t| t as i32).collect();
    targets.push(-100);
    let loss = model.loss(&mut acts, &targets).unwrap().mean();
    let logits = acts.logits().unwrap();
    (logits.iter().map(|&v| v as f64).collect(), loss)
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    let rel = (got - want).abs() / want.abs().max(1e-30);
    assert!(
        rel <= tol,
        "{what}: got {got}, want {want} (relative {rel:.2e} > {tol:.0e})"
    );
}

#[test]
fn peft_fixture_loads_and_reproduces_transformers_loss_and_logits() {
    let want = expected();
    let tokens: Vec<u32> = floats(&want["tokens"]).iter().map(|&t| t as u32).collect();
    let (cfg, base) = load_model(&fixture().join("base")).unwrap();
    let (_, base_loss) = logits_and_loss(&Llama::new(cfg, base).unwrap(), &tokens);
    close(
        "base loss",
        base_loss,
        want["base_loss"].as_f64().unwrap(),
        1e-5,
    );

    let (model, extension) =
        load_with_adapter(&fixture().join("base"), &fixture().join("adapter")).unwrap();
    assert_eq!(extension, None, "a PEFT adapter has no run.json");
    let (logits, loss) = logits_and_loss(&model, &tokens);
    let adapter_loss = want["adapter_loss"].as_f64().unwrap();
    close("base + adapter loss", loss, adapter_loss, 1e-5);
    let err = rel_error(&logits, &floats(&want["adapter_logits"]));
    assert!(
        err <= 1e-5,
        "base + adapter logits: relative error {err:.2e}"
    );
    assert!(
        (adapter_loss - base_loss).abs() > 1e-3,
        "the fixture's adapter must change the loss, or this test proves nothing"
    );

    let mut merged = model.weights.clone();
    merge_lora(&mut merged);
    let merged = Llama::new(model.config.clone(), merged).unwrap();
    let (logits, loss) = logits_and_loss(&merged, &tokens);
    close(
        "merged loss",
        loss,
        want["merged_loss"].as_f64().unwrap(),
        1e-5,
    );
    let err = rel_error(&logits, &floats(&want["merged_logits"]));
    assert!(err <= 1e-5, "merged logits: relative error {err:.2e}");
}

#[test]
fn our_adapter_files_have_peft_names_shapes_and_config() {
    let peft_dir = fixture().join("adapter");
    let (_, mut weights) = load_model(&fixture().join("base")).unwrap();
    load_adapter(&peft_dir, &mut weights).unwrap();
    let ours = tempfile::tempdir().unwrap();
    save_adapter(ours.path(), &weights, "base").unwrap();

    let shapes = |dir: &Path| {
        let mut v: Vec<(String, Vec<usize>, Vec<u32>)> = load_tensors(&dir.join(ADAPTER_WEIGHTS))
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.name,
                    p.shape,
                    p.data.iter().map(|x| x.to_bits()).collect(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (peft, mine) = (shapes(&peft_dir), shapes(ours.path()));
    assert_eq!(peft.len(), 16, "2 layers x q,k,v,o x A,B");
    assert!(peft.iter().any(|(n, s, _)| n
        == "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"
        && s == &[8, 2]));
    assert_eq!(
        mine, peft,
        "names, shapes or values differ from PEFT's file"
    );

    let config = |dir: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap()
    };
    let (peft, mine) = (config(&peft_dir), config(ours.path()));
    for key in [
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "target_modules",
        "bias",
        "fan_in_fan_out",
        "use_rslora",
        "use_dora",
    ] {
        assert_eq!(mine[key], peft[key], "adapter_config.json `{key}`");
    }
}

#[test]
fn adapters_peft_reads_differently_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for f in [ADAPTER_WEIGHTS, ADAPTER_CONFIG] {
        std::fs::copy(fixture().join("adapter").join(f), dir.path().join(f)).unwrap();
    }
    let path = dir.path().join(ADAPTER_CONFIG);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["use_dora"] = Value::Bool(true);
    std::fs::write(&path, config.to_string()).unwrap();
    let (_, mut weights) = load_model(&fixture().join("base")).unwrap();
    let err = load_adapter(dir.path(), &mut weights).unwrap_err();
    assert!(err.to_string().contains("use_dora"), "{err}");
}

/// The run.json `harness finetune` wrote before the record had a version (context 16, factor 3).
const UNVERSIONED_RUN_JSON: &str = r#"{
  "base_model": "base",
  "tokenizer": "builtin byte-level",
  "context": 16,
  "original_context": 8,
  "rope_factor": 3.0,
  "train": {
    "steps": 3, "batch_size": 1, "grad_accum": 1, "seq_len": 16, "lr": 0.01, "warmup_steps": 5,
    "schedule": "constant",
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "max_grad_norm": 1.0, "attn": "s2", "group_ratio": 0.25, "trainable": "lora+embed+norm",
    "seed": 42
  },
  "trained_parameters": 1234,
  "heldout_loss_base_at_original_context": 2.5,
  "heldout_loss_before": 3.0,
  "heldout_loss_after": 2.75,
  "first_step_loss": 3.1,
  "last_step_loss": 2.9,
  "finetune_tokens_per_s": 1000.0,
  "total_time_s": 4.5,
  "peak_memory_mib": 120.0,
  "resumed_from": null,
  "version": "0.1.0"
}"#;

/// A fine-tune's output: base model, adapter with non-zero B, changed embeddings and norms, and
/// a run.json with the extension, as a previous version of the tool wrote it.
fn fine_tuned_run(dir: &Path) -> Llama<f32> {
    let mut cfg = tiny_config();
    cfg.rope_scaling_factor = 1.0;
    let mut w = LlamaWeights::random(&cfg, 0.5, &mut Rng::new(5));
    save_model(&dir.join("base"), &cfg, &w).unwrap();
    w.add_lora(2, 4.0, &mut Rng::new(6));
    let mut rng = Rng::new(7);
    w.visit_mut(|id, p| {
        if TrainableSet::LoraEmbedNorm.trains(id) && !matches!(id, ParamId::LoraA(_)) {
            p.data
                .iter_mut()
                .for_each(|v| *v += rng.normal() as f32 * 0.3);
        }
    });
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    save_adapter(&run, &w, "base").unwrap();
    save_trainable_params(
        &run.join(TRAINABLE_PARAMS_FILE),
        &w,
        TrainableSet::LoraEmbedNorm,
    )
    .unwrap();
    std::fs::write(run.join(RUN_FILE), UNVERSIONED_RUN_JSON).unwrap();
    cfg.rope_scaling_factor = 3.0;
    Llama::new(cfg, w).unwrap()
}

#[test]
fn merged_model_evaluates_like_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let trained = fine_tuned_run(dir.path());
    let (model, extension) =
        load_with_adapter(&dir.path().join("base"), &dir.path().join("run")).unwrap();
    assert_eq!(
        extension,
        Some(Extension {
            context: 16,
            rope_factor: 3.0
        })
    );
    assert_eq!(model.config.rope_scaling_factor, 3.0);
    assert!(
        model.weights == trained.weights,
        "base + run files differ from the trained model"
    );

    let mut merged = model.weights.clone();
    merge_lora(&mut merged);
    let mut merged_cfg = model.config.clone();
    merged_cfg.max_position_embeddings = 16;
    save_model(&dir.path().join("merged"), &merged_cfg, &merged).unwrap();
    let (cfg, w) = load_model(&dir.path().join("merged")).unwrap();
    assert_eq!(cfg.rope_scaling_factor, 3.0, "config.json keeps the factor");
    let merged = Llama::new(cfg, w).unwrap();

    let mut rng = Rng::new(8);
    let tokens: Vec<u32> = (0..16).map(|_| rng.below(11) as u32).collect();
    let (want, want_loss) = logits_and_loss(&model, &tokens);
    let (got, got_loss) = logits_and_loss(&merged, &tokens);
    let err = rel_error(&got, &want);
    assert!(err <= 1e-6, "merged logits: relative error {err:.2e}");
    close("merged loss", got_loss, want_loss, 1e-6);
}
