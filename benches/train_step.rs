//! One LongLoRA training step (forward + backward + AdamW) of the built-in default model
//! (4 layers, d = 256, 4 heads of 64, byte vocabulary) at context 1024, S²-Attn against dense
//! attention, on the CPU and, when one is present, on a CUDA GPU (our kernels). Prints the step's
//! FLOPs (DESIGN §3, `longlora::cost::flops`) so throughput can be read next to the time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use longlora::backend::{Compute, Engine};
use longlora::cost::flops::train_step_flops;
use longlora::data::{synthetic_corpus, WindowSampler};
use longlora::kernels::{built_with_kernels, Device};
use longlora::model::{Llama, LlamaConfig, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::rng::Rng;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{TrainConfig, Trainer};

/// The harness's allocator, so that the step is timed as `harness finetune` runs it.
#[global_allocator]
static ALLOCATOR: longlora::allocator::LargeBlocks = longlora::allocator::LargeBlocks;

const CONTEXT: usize = 1024;

fn default_config() -> LlamaConfig {
    LlamaConfig {
        rope_scaling_factor: 4.0,
        ..LlamaConfig::builtin()
    }
}

fn bench_train_step(c: &mut Criterion) {
    longlora::allocator::retain_freed_memory();
    let cfg = default_config();
    let sampler = WindowSampler::new(synthetic_corpus(1, 8, 4096), CONTEXT).expect("corpus");
    let mut group = c.benchmark_group("train_step_ctx1024");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CONTEXT as u64));
    let gpu = built_with_kernels() && Device::cuda_device_count() > 0;
    if !gpu {
        eprintln!("train step on the GPU: skipped (no CUDA GPU or no embedded kernels)");
    }
    for attn in [AttnMode::S2, AttnMode::Dense] {
        let mask = AttnMask::from_ratio(attn, 0.25, CONTEXT).expect("even group");
        let flops = train_step_flops(&cfg, 1, CONTEXT, &mask, TrainableSet::LoraEmbedNorm);
        eprintln!(
            "train step {attn}: {:.2} GFLOP (longlora::cost::flops::train_step_flops)",
            flops / 1e9
        );
        for on_gpu in [false, true].into_iter().filter(|&g| !g || gpu) {
            let mut weights = LlamaWeights::<Param<f32>>::random(&cfg, 0.02, &mut Rng::new(1));
            weights.add_lora(8, 16.0, &mut Rng::new(2));
            let model = Llama::new(cfg.clone(), weights).expect("model");
            let run = TrainConfig {
                steps: 1_000_000,
                batch_size: 1,
                grad_accum: 1,
                seq_len: CONTEXT,
                lr: 2e-5,
                warmup_steps: 0,
                schedule: Schedule::Constant,
                adamw: AdamWConfig::default(),
                max_grad_norm: 1.0,
                attn,
                group_ratio: 0.25,
                trainable: TrainableSet::LoraEmbedNorm,
                seed: 3,
            };
            let compute = if on_gpu {
                Compute::Kernels(Device::cuda(0).expect("GPU 0"))
            } else {
                Compute::Cpu
            };
            let engine = Engine::new(compute, model, Some(run.trainable), false).expect("engine");
            let mut trainer = Trainer::with_engine(engine, run).expect("trainer");
            let name = format!("{attn}/{}", if on_gpu { "cuda" } else { "cpu" });
            group.bench_function(name, |b| b.iter(|| trainer.step(&sampler).expect("step")));
        }
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
