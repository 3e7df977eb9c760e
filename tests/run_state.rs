//! Resumable training: a run interrupted by a checkpoint and resumed in a fresh model continues
//! bit for bit as if it had never stopped; checkpoints are found, replaced and checked.

mod common;

use common::tiny_config;
use std::path::Path;

use longlora::backend::{Compute, Engine};
use longlora::data::WindowSampler;
use longlora::model::{Llama, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::checkpoint::{
    find_checkpoint, load_run_checkpoint, save_run_checkpoint, RunOptions, CHECKPOINT_PREFIX,
};
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{StepReport, TrainConfig, Trainer};
use longlora::Error;
use serde_json::json;

const STEPS: usize = 8;

fn train_config() -> TrainConfig {
    TrainConfig {
        steps: STEPS,
        batch_size: 2,
        grad_accum: 2,
        seq_len: 8,
        lr: 1e-2,
        warmup_steps: 2,
        schedule: Schedule::Cosine,
        adamw: AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        attn: AttnMode::S2,
        group_ratio: 0.5,
        trainable: TrainableSet::LoraEmbedNorm,
        seed: 7,
    }
}

/// The base model; `lora_seed` sets the adapters' initial values.
fn model(lora_seed: u64) -> Llama<f32> {
    let cfg = tiny_config();
    let mut w = LlamaWeights::random(&cfg, 0.5, &mut Rng::new(1));
    w.add_lora(2, 4.0, &mut Rng::new(lora_seed));
    Llama::new(cfg, w).unwrap()
}

fn sampler() -> WindowSampler {
    let mut rng = Rng::new(3);
    let tokens = (0..400).map(|_| rng.below(11) as u32).collect();
    WindowSampler::new(tokens, 8).unwrap()
}

fn options(lr: f64) -> RunOptions {
    vec![("lr", json!(lr)), ("context", json!(8))]
}

fn bits(reports: &[StepReport]) -> Vec<(usize, u64, u64, u64)> {
    reports
        .iter()
        .map(|r| {
            (
                r.step,
                r.loss.to_bits(),
                r.grad_norm.to_bits(),
                r.lr.to_bits(),
            )
        })
        .collect()
}

fn weight_bits(m: &Llama<f32>) -> Vec<(String, Vec<u32>)> {
    m.weights
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn interrupted_and_resumed_training_matches_uninterrupted_bit_for_bit() {
    let data = sampler();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    let want: Vec<StepReport> = (0..STEPS).map(|_| trainer.step(&data).unwrap()).collect();
    let straight = trainer.into_model().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    let mut got: Vec<StepReport> = (0..3).map(|_| trainer.step(&data).unwrap()).collect();
    let notes = json!({"heldout": 1.5});
    save_run_checkpoint(dir.path(), &mut trainer, &options(1e-2), &notes).unwrap();
    drop(trainer);

    // A new process: other adapter values, which the checkpoint must overwrite.
    let engine = Engine::new(
        Compute::Cpu,
        model(99),
        Some(TrainableSet::LoraEmbedNorm),
        false,
    );
    let ck = load_run_checkpoint(&find_checkpoint(dir.path()).unwrap()).unwrap();
    assert_eq!(ck.progress.step, 3);
    assert_eq!(ck.notes, notes);
    let mut trainer = ck
        .resume(engine.unwrap(), train_config(), &options(1e-2))
        .unwrap();
    got.extend((3..STEPS).map(|_| trainer.step(&data).unwrap()));

    assert_eq!(bits(&got), bits(&want), "loss curves differ");
    assert_eq!(got.last().unwrap().tokens, want.last().unwrap().tokens);
    assert!(
        weight_bits(trainer.model().unwrap()) == weight_bits(&straight),
        "final weights differ"
    );
}

#[test]
fn a_resume_with_a_different_option_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    save_run_checkpoint(dir.path(), &mut trainer, &options(1e-2), &json!(null)).unwrap();
    let ck = load_run_checkpoint(&find_checkpoint(dir.path()).unwrap()).unwrap();
    let err = ck.check_options(&options(3e-2)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { option: "lr", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0.01"), "{err}");
}

#[test]
fn a_resume_with_another_trained_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    save_run_checkpoint(dir.path(), &mut trainer, &options(1e-2), &json!(null)).unwrap();
    let ck = load_run_checkpoint(
        dir.path()
            .join(format!("{CHECKPOINT_PREFIX}000000"))
            .as_path(),
    )
    .unwrap();
    let lora_only = TrainConfig {
        trainable: TrainableSet::Lora,
        ..train_config()
    };
    let engine = Engine::new(Compute::Cpu, model(2), Some(TrainableSet::Lora), false).unwrap();
    let err = Trainer::resume(engine, lora_only, ck.progress.clone(), ck.optimizer.clone())
        .err()
        .expect("a mismatched optimizer state is refused");
    assert!(err.to_string().contains("trainable"), "{err}");
}

#[test]
fn only_the_newest_complete_checkpoint_is_kept_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let data = sampler();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    let none = find_checkpoint(dir.path()).unwrap_err();
    assert!(none.to_string().contains("--save-every"), "{none}");
    // What a crash in the middle of a save leaves: a hidden temporary directory.
    let abandoned = dir.path().join(".checkpoint-000009.tmp-1");
    std::fs::create_dir(&abandoned).unwrap();
    std::fs::write(abandoned.join("state.json"), "{").unwrap();
    assert!(
        find_checkpoint(dir.path()).is_err(),
        "an unfinished save was found"
    );
    for _ in 0..2 {
        trainer.step(&data).unwrap();
        save_run_checkpoint(dir.path(), &mut trainer, &options(1e-2), &json!(null)).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(CHECKPOINT_PREFIX))
        .collect();
    assert_eq!(names, ["checkpoint-000002"]);
    assert!(
        !abandoned.exists(),
        "the abandoned temporary directory was left"
    );
    let found = find_checkpoint(dir.path()).unwrap();
    assert_eq!(found, dir.path().join("checkpoint-000002"));
    assert_eq!(find_checkpoint(&found).unwrap(), found);
}

#[test]
fn a_non_finite_loss_stops_before_the_weights_change_and_names_the_step() {
    let data = sampler();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    trainer.step(&data).unwrap();
    let mut norm = trainer.model().unwrap().weights.norm.clone();
    norm.data[0] = f32::INFINITY;
    let engine = trainer.engine();
    engine
        .assign_tensors(vec![norm], Path::new("edit"))
        .unwrap();
    let before = weight_bits(trainer.model().unwrap());
    let err = trainer.step(&data).unwrap_err();
    assert!(
        matches!(err, Error::Diverged { step: 2, .. }),
        "expected divergence at step 2, got {err}"
    );
    assert!(err.to_string().contains("step 2"), "{err}");
    assert!(
        weight_bits(trainer.model().unwrap()) == before,
        "a diverged step changed weights"
    );
}
