//! The decoder on the kernel backend (the emulator, and the GPU when there is one) against the CPU
//! reference backend: training steps from the same weights and batches, activation recomputation,
//! and the errors for what the kernels do not cover.

mod common;

use common::device::{devices, BF16_BAND};
use common::kernel_model::{config, model, run_config, sampler, MODEL_GRADIENT_BAND, SEQ};
use common::rel_error;
use longlora::backend::{Compute, Engine};
use longlora::data::BatchSource;
use longlora::kernels::Device;
use longlora::model::{Grads, Llama, LlamaConfig, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::rng::Rng;
use longlora::train::Trainer;

type Values = Vec<(String, Vec<f64>)>;

fn values<'a>(tensors: impl IntoIterator<Item = &'a Param<f32>>) -> Values {
    tensors
        .into_iter()
        .map(|p| (p.name.clone(), p.data.iter().map(|&v| v as f64).collect()))
        .collect()
}

/// The gradients of the trained tensors.
fn grad_values(grads: &Grads<f32>) -> Values {
    values(grads.present().into_iter().map(|(_, g)| g))
}

/// The values of the tensors LongLoRA's default set trains.
fn trained_values(weights: &LlamaWeights<Param<f32>>) -> Values {
    let mut trained = Vec::new();
    weights.visit(|id, p| {
        if TrainableSet::LoraEmbedNorm.trains(id) {
            trained.push(p);
        }
    });
    values(trained)
}

/// Asserts every tensor of `got` is within `tol` of `want` (‖a−b‖/‖b‖), naming the worst.
fn assert_tensors_close(what: &str, got: &Values, want: &Values, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: different trained sets");
    for ((name, g), (_, w)) in got.iter().zip(want) {
        let err = rel_error(g, w);
        assert!(
            err <= tol,
            "{what} {name}: relative error {err:.3e} > {tol:.0e}"
        );
    }
}

#[test]
fn kernel_training_steps_match_the_cpu() {
    let steps = 2;
    let sampler = sampler();
    let mut cpu = Trainer::new(model(), run_config(steps)).expect("cpu trainer");
    let mut cpu_steps = Vec::new();
    for _ in 0..steps {
        let report = cpu.step(&sampler).expect("cpu step");
        let grads = grad_values(cpu.engine().grads().expect("cpu gradients"));
        let weights = trained_values(&cpu.model().expect("cpu model").weights);
        cpu_steps.push((report.loss, grads, weights));
    }
    for device in devices() {
        let name = device.name().to_string();
        let engine = Engine::new(
            Compute::Kernels(device),
            model(),
            Some(TrainableSet::LoraEmbedNorm),
            false,
        )
        .expect("kernel engine");
        let mut trainer = Trainer::with_engine(engine, run_config(steps)).expect("kernel trainer");
        for (step, (loss, grads, weights)) in cpu_steps.iter().enumerate() {
            let report = trainer.step(&sampler).expect("kernel step");
            let what = format!("{name} step {}", step + 1);
            let loss_err = (report.loss - loss).abs() / loss.abs();
            assert!(
                loss_err <= 1e-2,
                "{what}: loss {} vs CPU {loss} (relative {loss_err:.2e})",
                report.loss
            );
            assert!(
                report.grad_norm > 0.0,
                "{what}: no gradient reached the weights"
            );
            assert_tensors_close(
                &format!("{what} gradient"),
                &grad_values(trainer.engine().grads().expect("kernel gradients")),
                grads,
                MODEL_GRADIENT_BAND,
            );
            assert_tensors_close(
                &format!("{what} updated weight"),
                &trained_values(&trainer.model().expect("kernel model").weights),
                weights,
                BF16_BAND,
            );
        }
    }
}

/// How far a GPU's gradients may move between two runs of one pass: the order of the f32 atomic adds
/// (embedding and norm-weight gradients, the adapter gradients' row slices) is the only difference.
/// On an H200 (REPORT.md, 2026-12-04, when dQ was added atomically too) the worst tensor moved 1.2e-7
/// between two runs and 1.4e-7 under recomputation.
const ATOMIC_ORDER_BAND: f64 = 1e-4;

/// One forward and backward of a fixed batch; returns the summed loss, the gradients and the
/// activation elements kept.
fn pass(engine: &mut Engine) -> (f64, Grads<f32>, usize) {
    let batch = sampler().sample(2, &mut Rng::new(5));
    let mask = AttnMask::from_ratio(AttnMode::S2, 0.5, SEQ).expect("mask");
    engine.zero_grads().expect("zero gradients");
    engine
        .forward(&batch.tokens, batch.batch, batch.seq_len, &mask)
        .expect("forward");
    let saved = engine.saved_elements();
    let loss = engine.backward(&batch.targets, 1.0).expect("backward");
    let grads = engine.grads().expect("gradients").clone();
    (loss.sum, grads, saved)
}

#[test]
fn recomputing_layers_changes_memory_not_results() {
    let model = model();
    let computes = devices()
        .into_iter()
        .map(Compute::Kernels)
        .chain([Compute::Cpu]);
    for compute in computes {
        let name = compute.describe();
        let on_gpu = matches!(&compute, Compute::Kernels(device) if !device.is_emulator());
        let trained = Some(TrainableSet::LoraEmbedNorm);
        let mut keep = Engine::new(compute, model.clone(), trained, false).expect("engine");
        let (loss, grads, saved) = pass(&mut keep);
        let (_, grads_again, _) = pass(&mut keep);
        let compute = keep.into_parts().expect("engine parts").0;
        let mut recompute = Engine::new(compute, model.clone(), trained, true).expect("engine");
        let (loss_r, grads_r, saved_r) = pass(&mut recompute);
        assert_eq!(loss_r, loss, "{name}: loss changed under recomputation");
        let (grads, grads_again, grads_r) = (
            grad_values(&grads),
            grad_values(&grads_again),
            grad_values(&grads_r),
        );
        if on_gpu {
            // A GPU's atomic adds land in the order its blocks finish, so the same pass run twice
            // already differs in the last bits, which bf16 roundings downstream can widen.
            let worst = |other: &Values| {
                grads
                    .iter()
                    .zip(other)
                    .map(|((_, w), (_, g))| rel_error(g, w))
                    .fold(0.0, f64::max)
            };
            println!(
                "{name}: worst relative gradient change: the same pass again {:.2e}, recomputed {:.2e}",
                worst(&grads_again),
                worst(&grads_r)
            );
            assert_tensors_close(
                &format!("{name} run again"),
                &grads_again,
                &grads,
                ATOMIC_ORDER_BAND,
            );
            assert_tensors_close(
                &format!("{name} recomputed"),
                &grads_r,
                &grads,
                ATOMIC_ORDER_BAND,
            );
        } else {
            assert!(
                grads_again == grads,
                "{name}: the same pass gave other gradients"
            );
            assert!(
                grads_r == grads,
                "{name}: gradients changed under recomputation"
            );
        }
        assert!(
            grads.iter().any(|(_, g)| g.iter().any(|&v| v != 0.0)),
            "{name}: all gradients are zero"
        );
        // Recomputation drops every layer's cache but one (inputs are kept either way).
        let cfg = &model.config;
        let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
        let per_row = 5 * d + 2 * kv + 3 * ff + 2 + cfg.num_attention_heads + 4 * 8;
        let dropped = (cfg.num_hidden_layers - 1) * 2 * SEQ * per_row;
        assert_eq!(
            saved - saved_r,
            dropped,
            "{name}: recomputation kept {saved_r} elements, without it {saved}"
        );
    }
}

#[test]
fn the_kernels_refuse_what_they_do_not_cover_by_name() {
    let full = Engine::new(
        Compute::Kernels(Device::emulator()),
        model(),
        Some(TrainableSet::Full),
        false,
    );
    let message = full
        .err()
        .expect("full fine-tuning on the kernels")
        .to_string();
    assert!(
        message.contains("trainable") && message.contains("kernels") && !message.contains("--"),
        "{message}"
    );

    let eval_only = Engine::new(Compute::Kernels(Device::emulator()), model(), None, false);
    let trainer = Trainer::with_engine(eval_only.expect("engine"), run_config(1));
    let message = trainer
        .err()
        .expect("training on an evaluation engine")
        .to_string();
    assert!(
        message.contains("trainable") && message.contains("evaluation only"),
        "{message}"
    );

    let cfg = LlamaConfig {
        num_attention_heads: 4,
        num_key_value_heads: 4,
        ..config()
    };
    let narrow = Llama::new(cfg.clone(), LlamaWeights::zeros(&cfg)).expect("model");
    let heads = Engine::new(Compute::Kernels(Device::emulator()), narrow, None, false);
    let message = heads.err().expect("head dim 32 on the kernels").to_string();
    assert!(
        message.contains("head dim") && message.contains("32"),
        "{message}"
    );
}

#[test]
fn recomputation_refuses_layers_with_different_ranks() {
    let cfg = config();
    let mut rng = Rng::new(9);
    let mut weights = LlamaWeights::random(&cfg, 0.08, &mut rng);
    let mut narrow = weights.clone();
    weights.add_lora(8, 16.0, &mut rng);
    narrow.add_lora(4, 8.0, &mut rng);
    weights.layers[1] = narrow.layers[1].clone();
    let model = Llama::new(cfg, weights).expect("model");
    let batch = sampler().sample(1, &mut Rng::new(5));
    let mask = AttnMask::dense();
    let mut engine = Engine::new(Compute::Cpu, model, None, true).expect("engine");
    let err = engine
        .forward(&batch.tokens, 1, SEQ, &mask)
        .expect_err("mixed ranks under recomputation");
    let message = err.to_string();
    assert!(
        message.contains("recompute") && message.contains("rank 8") && message.contains('4'),
        "{message}"
    );
}
