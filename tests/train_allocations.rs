//! Heap allocations of a CPU training step once the run has warmed up, counted by a global
//! allocator (its own test binary: the allocator is process-wide).

#[path = "alloc/counting.rs"]
mod counting;

use std::sync::atomic::Ordering::SeqCst;

use counting::{ALLOCATED_BYTES, ALLOCATIONS};
use longlora::data::{synthetic_corpus, WindowSampler};
use longlora::model::{Llama, LlamaConfig, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{TrainConfig, Trainer};

/// Allocations (count, bytes) of the third step of a LongLoRA run of the built-in model's shape.
fn warm_step_allocations(context: usize) -> (usize, usize) {
    let cfg = LlamaConfig {
        rope_scaling_factor: 4.0,
        ..LlamaConfig::builtin()
    };
    let sampler = WindowSampler::new(synthetic_corpus(1, 4, 2048), context).expect("corpus");
    let mut weights = LlamaWeights::<Param<f32>>::random(&cfg, 0.02, &mut Rng::new(1));
    weights.add_lora(8, 16.0, &mut Rng::new(2));
    let model = Llama::new(cfg, weights).expect("model");
    let run = TrainConfig {
        steps: 10,
        batch_size: 1,
        grad_accum: 1,
        seq_len: context,
        lr: 1e-3,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        attn: AttnMode::S2,
        group_ratio: 0.25,
        trainable: TrainableSet::LoraEmbedNorm,
        seed: 3,
    };
    let mut trainer = Trainer::new(model, run).expect("trainer");
    // Two steps so that every worker thread has met every shape.
    for _ in 0..2 {
        trainer.step(&sampler).expect("warm-up step");
    }
    let (count, bytes) = (ALLOCATIONS.load(SeqCst), ALLOCATED_BYTES.load(SeqCst));
    trainer.step(&sampler).expect("step");
    (
        ALLOCATIONS.load(SeqCst) - count,
        ALLOCATED_BYTES.load(SeqCst) - bytes,
    )
}

/// What a warm step still allocates is small and does not grow with the context: faer's task
/// records and workspace in each of the ~75 linear-layer products (about 50 bytes each; their
/// number grows with the row blocks the products are split into, 944 allocations at 256 and 2,785
/// at 1024 with this model, about 140 KB), the sampled batch, and the trainer's per-step lists of
/// gradient references. Activations, backward scratch, the LoRA backward's `dY·B` and the
/// attention's tile buffers and head-major K/V are all reused.
#[test]
fn a_warm_cpu_training_step_allocates_the_same_at_any_context() {
    let (short_count, short_bytes) = warm_step_allocations(256);
    let (count, bytes) = warm_step_allocations(1024);
    println!(
        "a warm training step allocates: context 256: {short_count} times, {short_bytes} bytes; \
         context 1024: {count} times, {bytes} bytes"
    );
    // Activations at 1024 are 4x those at 256 (tens of MiB more): a per-step allocation of any of
    // them would show as a change far beyond this margin.
    assert!(
        bytes.abs_diff(short_bytes) < 1 << 20,
        "bytes allocated per step changed with the context: {short_bytes} -> {bytes}"
    );
    assert!(
        bytes < 4 << 20,
        "a warm step allocated {bytes} bytes at context 1024, expected under 4 MiB"
    );
}
