//! Resumable training: a run interrupted by a checkpoint and resumed in a fresh model continues
//! bit for bit as if it had never stopped; checkpoints are found, replaced and checked.

mod common;

use std::path::Path;

use common::tiny_config;
use longlora::backend::{Compute, Engine};
use longlora::data::WindowSampler;
use longlora::model::{Llama, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::checkpoint::{
    load_latest_checkpoint, load_run_checkpoint, save_run_checkpoint, RunCheckpoint, RunMeta,
    RunOptions, CHECKPOINT_PREFIX,
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

fn options(lora_rank: usize) -> RunOptions {
    vec![
        ("lora_rank", json!(lora_rank)),
        ("data", json!({"size": 400})),
    ]
}

/// Saves a checkpoint of `trainer` into `dir` with the run options of `options(2)`.
fn save(dir: &Path, trainer: &mut Trainer, notes: &serde_json::Value) {
    let meta = RunMeta {
        options: &options(2),
        step_targets: &[trainer.config.steps],
        notes,
    };
    save_run_checkpoint(dir, trainer, &meta, 2).unwrap();
}

/// A fresh CPU engine on `model`, as a new process builds it to resume a run.
fn engine(model: Llama<f32>) -> Engine {
    Engine::new(
        Compute::Cpu,
        model,
        Some(TrainableSet::LoraEmbedNorm),
        false,
    )
    .unwrap()
}

/// The newest intact checkpoint in `dir`, which must hold one and none damaged.
fn latest(dir: &Path) -> RunCheckpoint {
    load_latest_checkpoint(dir, |e| panic!("damaged: {e}"))
        .unwrap()
        .expect("a checkpoint")
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
    save(dir.path(), &mut trainer, &notes);
    drop(trainer);

    // A new process: other adapter values, which the checkpoint must overwrite.
    let ck = latest(dir.path());
    assert_eq!(ck.progress.step, 3);
    assert_eq!(ck.notes, notes);
    assert_eq!(ck.step_targets, [STEPS]);
    let mut trainer = ck
        .resume(engine(model(99)), train_config(), &options(2))
        .unwrap();
    got.extend((3..STEPS).map(|_| trainer.step(&data).unwrap()));

    assert_eq!(bits(&got), bits(&want), "loss curves differ");
    assert_eq!(got.last().unwrap().tokens, want.last().unwrap().tokens);
    assert!(
        weight_bits(trainer.model().unwrap()) == weight_bits(&straight),
        "final weights differ"
    );
}

/// The option `err` names, which must be an invalid option.
fn invalid_option(err: &Error) -> &str {
    match err {
        Error::InvalidOption { option, .. } => option,
        other => panic!("expected an invalid option, got {other}"),
    }
}

#[test]
fn a_resume_with_a_different_option_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    save(dir.path(), &mut trainer, &json!(null));
    let ck = latest(dir.path());
    let other_lr = TrainConfig {
        lr: 3e-2,
        ..train_config()
    };
    let err = ck.check_options(&other_lr, &options(2)).unwrap_err();
    assert_eq!(invalid_option(&err), "lr");
    assert!(err.to_string().contains("0.01"), "{err}");
    assert!(
        !err.to_string().contains("--"),
        "a library error names a flag: {err}"
    );
    let other_decay = TrainConfig {
        adamw: AdamWConfig {
            weight_decay: 0.5,
            ..train_config().adamw
        },
        ..train_config()
    };
    let err = ck.check_options(&other_decay, &options(2)).unwrap_err();
    assert_eq!(invalid_option(&err), "weight_decay");
    let err = ck.check_options(&train_config(), &options(4)).unwrap_err();
    assert_eq!(invalid_option(&err), "lora_rank");
    ck.check_options(&train_config(), &options(2)).unwrap();
}

#[test]
fn a_resume_extends_a_constant_schedule_run_and_refuses_to_extend_a_cosine_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = sampler();
    let constant = |steps| TrainConfig {
        steps,
        schedule: Schedule::Constant,
        ..train_config()
    };
    // Straight through 8 steps, and 5 steps extended to 8: the same curve.
    let mut trainer = Trainer::new(model(2), constant(8)).unwrap();
    let want: Vec<StepReport> = (0..8).map(|_| trainer.step(&data).unwrap()).collect();
    let mut trainer = Trainer::new(model(2), constant(5)).unwrap();
    let mut got: Vec<StepReport> = (0..5).map(|_| trainer.step(&data).unwrap()).collect();
    save(dir.path(), &mut trainer, &json!(null));
    let ck = latest(dir.path());
    assert_eq!(ck.step_targets_with(8), [5, 8]);
    assert_eq!(ck.step_targets_with(5), [5]);
    let mut trainer = ck
        .resume(engine(model(99)), constant(8), &options(2))
        .unwrap();
    got.extend((5..8).map(|_| trainer.step(&data).unwrap()));
    assert_eq!(bits(&got), bits(&want), "the extended run differs");

    let cosine_dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    save(cosine_dir.path(), &mut trainer, &json!(null));
    let longer = TrainConfig {
        steps: STEPS + 4,
        ..train_config()
    };
    let err = latest(cosine_dir.path())
        .check_options(&longer, &options(2))
        .unwrap_err();
    assert_eq!(invalid_option(&err), "steps");
    assert!(err.to_string().contains("cosine"), "{err}");
}

#[test]
fn a_resume_with_another_trained_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    save(dir.path(), &mut trainer, &json!(null));
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

fn checkpoint_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(CHECKPOINT_PREFIX))
        .collect();
    names.sort();
    names
}

#[test]
fn only_the_newest_kept_checkpoints_stay_and_the_newest_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let data = sampler();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    assert!(load_latest_checkpoint(dir.path(), |_| ())
        .unwrap()
        .is_none());
    // What a crash in the middle of a save leaves: a hidden temporary directory.
    let abandoned = dir.path().join(".checkpoint-000009.tmp-1");
    std::fs::create_dir(&abandoned).unwrap();
    std::fs::write(abandoned.join("state.json"), "{").unwrap();
    assert!(
        load_latest_checkpoint(dir.path(), |_| ())
            .unwrap()
            .is_none(),
        "an unfinished save was found"
    );
    for _ in 0..3 {
        trainer.step(&data).unwrap();
        save(dir.path(), &mut trainer, &json!(null));
    }
    assert_eq!(
        checkpoint_names(dir.path()),
        ["checkpoint-000002", "checkpoint-000003"]
    );
    assert!(
        !abandoned.exists(),
        "the abandoned temporary directory was left"
    );
    let newest = dir.path().join("checkpoint-000003");
    assert_eq!(latest(dir.path()).dir, newest);
    assert_eq!(latest(&newest).dir, newest);
    let older = dir.path().join("checkpoint-000002");
    assert_eq!(
        latest(&older).dir,
        older,
        "a named checkpoint, not a newer one"
    );
}

#[test]
fn a_non_finite_loss_stops_before_the_weights_change_and_names_the_step() {
    let data = sampler();
    let mut trainer = Trainer::new(model(2), train_config()).unwrap();
    trainer.step(&data).unwrap();
    let mut norm = trainer.model().unwrap().weights.norm.clone();
    norm.data[0] = f32::INFINITY;
    trainer
        .engine()
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
