//! The kernel engine's training state on the device (f32 master copies, AdamW moments, clipping in
//! the AdamW launch), through the emulator and, when one is present, on a GPU: its optimizer step
//! against the host's from the same gradients, and a run checkpointed and resumed through it.

mod common;

use std::path::Path;

use common::device::{devices, gpu, F32_BAND};
use common::kernel_model::{config, model, run_config, sampler, SEQ};
use common::{assert_close, rel_error};
use longlora::backend::{Compute, Engine};
use longlora::data::BatchSource;
use longlora::kernels::Device;
use longlora::model::{Grads, Llama, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::ops::cross_entropy::scored_count;
use longlora::rng::Rng;
use longlora::train::checkpoint::{load_latest_checkpoint, save_run_checkpoint, RunMeta};
use longlora::train::optim::{clip_grad_norm, global_norm, AdamW, AdamWConfig};
use longlora::train::{StepReport, Trainer};
use serde_json::json;

/// The change AdamW makes, compared in f32 as tests/kernels_optim.rs does.
const UPDATE_BAND: f64 = 1e-4;

fn f64s(data: &[f32]) -> Vec<f64> {
    data.iter().map(|&v| v as f64).collect()
}

/// The trained tensors of `weights`, by name, in parameter order.
fn trained(weights: &LlamaWeights<Param<f32>>) -> Vec<Param<f32>> {
    let mut out = Vec::new();
    weights.visit(|id, p| {
        if TrainableSet::LoraEmbedNorm.trains(id) {
            out.push(p.clone());
        }
    });
    out
}

/// One forward and backward of a fresh batch on `engine`, its gradients zeroed first.
fn accumulate_gradients(engine: &mut Engine, rng: &mut Rng) {
    let batch = sampler().sample(1, rng);
    let mask = AttnMask::from_ratio(AttnMode::S2, 0.5, SEQ).unwrap();
    engine.zero_grads().unwrap();
    engine
        .forward(&batch.tokens, batch.batch, batch.seq_len, &mask)
        .unwrap();
    let dloss = 1.0 / scored_count(&batch.targets) as f64;
    engine.backward(&batch.targets, dloss).unwrap();
}

/// The host's optimizer step, as the CPU engine runs it: clip, then AdamW on the trained tensors.
fn host_step(
    weights: &mut LlamaWeights<Param<f32>>,
    grads: &mut Grads<f32>,
    adamw: &mut AdamW,
    lr: f64,
    max_norm: f64,
) -> f64 {
    let mut present: Vec<&mut Param<f32>> =
        grads.present_mut().into_iter().map(|(_, g)| g).collect();
    let norm = clip_grad_norm(&mut present, max_norm);
    let mut pairs = Vec::new();
    weights.visit_mut(|id, p| {
        if let Some(Some(g)) = grads.param(id) {
            pairs.push((p, g));
        }
    });
    adamw.update(&mut pairs, lr);
    norm
}

#[test]
fn device_adamw_matches_the_host_optimizer_for_two_steps() {
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let lr = 1e-3;
    for device in devices() {
        let name = device.name().to_string();
        let mut engine = kernel_engine(device, model());
        engine.start_optimizer(config).unwrap();
        let mut weights = engine.model().unwrap().weights.clone();
        let sizes: Vec<usize> = trained(&weights).iter().map(|p| p.data.len()).collect();
        let mut adamw = AdamW::new(config, &sizes);
        let mut rng = Rng::new(5);
        for step in 1..=2 {
            accumulate_gradients(&mut engine, &mut rng);
            let mut grads = engine.grads().unwrap().clone();
            // The first step clips, the second does not.
            let norm = global_norm(
                &grads
                    .present()
                    .into_iter()
                    .map(|(_, g)| g)
                    .collect::<Vec<_>>(),
            );
            let max_norm = if step == 1 { norm / 2.0 } else { norm * 2.0 };
            let before = trained(&weights);
            let want_norm = host_step(&mut weights, &mut grads, &mut adamw, lr, max_norm);
            let got_norm = engine.optimizer_step(lr, max_norm).unwrap();
            let what = format!("{name} step {step}");
            assert!(
                (got_norm - want_norm).abs() <= F32_BAND * want_norm,
                "{what}: gradient norm {got_norm}, host {want_norm}"
            );
            let clipped = engine.grads().unwrap().clone();
            for ((_, got), (_, want)) in clipped.present().iter().zip(grads.present()) {
                let what = format!("{what} clipped gradient of {}", want.name);
                assert_close(&what, &f64s(&got.data), &f64s(&want.data), F32_BAND);
            }
            let got = trained(&engine.model().unwrap().weights);
            let want = trained(&weights);
            for ((got, want), old) in got.iter().zip(&want).zip(&before) {
                let delta = |p: &Param<f32>| -> Vec<f64> {
                    p.data
                        .iter()
                        .zip(&old.data)
                        .map(|(&a, &b)| a as f64 - b as f64)
                        .collect()
                };
                let what = format!("{what} update of {}", want.name);
                assert_close(&what, &delta(got), &delta(want), UPDATE_BAND);
            }
            let moments = engine.optimizer().unwrap();
            assert_eq!(moments.step, adamw.step, "{what}: AdamW step");
            for (i, name) in want.iter().map(|p| &p.name).enumerate() {
                let (m, v) = (f64s(&moments.m[i]), f64s(&moments.v[i]));
                assert_close(
                    &format!("{what} m of {name}"),
                    &m,
                    &f64s(&adamw.m[i]),
                    F32_BAND,
                );
                assert_close(
                    &format!("{what} v of {name}"),
                    &v,
                    &f64s(&adamw.v[i]),
                    F32_BAND,
                );
            }
        }
    }
}

/// A fresh device of the same kind as `device`.
fn same_kind(device: &Device) -> Device {
    if device.is_emulator() {
        Device::emulator()
    } else {
        gpu()
    }
}

/// `model` on `device`, opened to train LongLoRA's default set.
fn kernel_engine(device: Device, model: Llama<f32>) -> Engine {
    let set = Some(TrainableSet::LoraEmbedNorm);
    Engine::new(Compute::Kernels(device), model, set, false).unwrap()
}

fn kernel_trainer(device: Device, model: Llama<f32>, steps: usize) -> Trainer {
    Trainer::with_engine(kernel_engine(device, model), run_config(steps)).unwrap()
}

fn weight_values(trainer: &mut Trainer) -> Vec<(String, Vec<f64>)> {
    let weights = &trainer.model().unwrap().weights;
    trained(weights)
        .into_iter()
        .map(|p| (p.name, f64s(&p.data)))
        .collect()
}

/// The emulator runs a grid's blocks one after another, so its f32 atomics add in a fixed order
/// and a resumed run must repeat the uninterrupted one bit for bit; a GPU's atomics do not, so
/// there the runs agree to the bf16 band.
#[test]
fn a_run_checkpointed_and_resumed_on_the_device_continues_as_if_uninterrupted() {
    const STEPS: usize = 3;
    let data = sampler();
    for device in devices() {
        let exact = device.is_emulator();
        let name = device.name().to_string();
        let mut straight = kernel_trainer(same_kind(&device), model(), STEPS);
        let want: Vec<StepReport> = (0..STEPS).map(|_| straight.step(&data).unwrap()).collect();

        let dir = tempfile::tempdir().unwrap();
        let mut first = kernel_trainer(same_kind(&device), model(), STEPS);
        let mut got = vec![first.step(&data).unwrap()];
        let options = vec![("lora_rank", json!(2))];
        let meta = RunMeta {
            options: &options,
            step_targets: &[STEPS],
            notes: &json!(null),
        };
        save_run_checkpoint(dir.path(), &mut first, &meta, 1).unwrap();
        drop(first);

        // Other adapter values, which the checkpoint must overwrite.
        let mut other = model();
        for p in other.weights.params_mut() {
            if p.name.contains("lora_B") {
                p.data.fill(0.0);
            }
        }
        let ck = load_latest_checkpoint(dir.path(), |e| panic!("damaged: {e}"))
            .unwrap()
            .expect("a checkpoint");
        let engine = kernel_engine(device, other);
        let mut resumed = ck.resume(engine, run_config(STEPS), &options).unwrap();
        got.extend((1..STEPS).map(|_| resumed.step(&data).unwrap()));

        let (got_w, want_w) = (weight_values(&mut resumed), weight_values(&mut straight));
        for (g, w) in got.iter().zip(&want) {
            let what = format!("{name} step {}", w.step);
            if exact {
                assert_eq!(
                    (g.loss.to_bits(), g.grad_norm.to_bits()),
                    (w.loss.to_bits(), w.grad_norm.to_bits()),
                    "{what}: loss {} / {}, gradient norm {} / {}",
                    g.loss,
                    w.loss,
                    g.grad_norm,
                    w.grad_norm
                );
            } else {
                let err = (g.loss - w.loss).abs() / w.loss.abs();
                assert!(err <= 1e-2, "{what}: loss {} vs {}", g.loss, w.loss);
            }
        }
        for ((tensor, g), (_, w)) in got_w.iter().zip(&want_w) {
            if exact {
                assert!(g == w, "{name}: final {tensor} differs");
            } else {
                let err = rel_error(g, w);
                assert!(
                    err <= 1e-2,
                    "{name}: final {tensor}: relative error {err:.2e}"
                );
            }
        }
    }
}

/// Editing a tensor after device steps reads the trained tensors back first: it must not put the
/// host's stale copies over the device's.
#[test]
fn assigning_a_tensor_after_device_steps_keeps_what_they_trained() {
    let mut trainer = kernel_trainer(Device::emulator(), model(), 2);
    let before = weight_values(&mut trainer);
    trainer.step(&sampler()).unwrap();
    let ones = Param::filled("model.norm.weight".into(), vec![config().hidden_size], 1.0);
    let engine = trainer.engine();
    engine
        .assign_tensors(vec![ones], Path::new("edit"))
        .unwrap();
    let after = weight_values(&mut trainer);
    for ((tensor, old), (_, new)) in before.iter().zip(&after) {
        if tensor == "model.norm.weight" {
            assert!(
                new.iter().all(|&v| v == 1.0),
                "the assigned {tensor} was lost"
            );
        } else {
            assert!(old != new, "the step's update of {tensor} was lost");
        }
    }
}
