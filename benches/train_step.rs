//! One LongLoRA training step (forward + backward + AdamW) of the built-in default model
//! (4 layers, d = 256, 8 heads, byte vocabulary) at context 1024, S²-Attn against dense attention.
//! Prints the step's FLOPs (DESIGN §3, `longlora::flops`) so throughput can be read next to the time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use longlora::data::{synthetic_corpus, WindowSampler};
use longlora::flops::train_step_flops;
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::optim::{AdamWConfig, Schedule};
use longlora::rng::Rng;
use longlora::train::{TrainConfig, Trainer};

const CONTEXT: usize = 1024;

fn default_config() -> LlamaConfig {
    LlamaConfig {
        rope_scaling_factor: 4.0,
        ..LlamaConfig::builtin()
    }
}

fn bench_train_step(c: &mut Criterion) {
    longlora::memory::retain_freed_memory();
    let cfg = default_config();
    let sampler = WindowSampler::new(synthetic_corpus(1, 8, 4096), CONTEXT).expect("corpus");
    let mut group = c.benchmark_group("train_step_ctx1024");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CONTEXT as u64));
    for attn in [AttnMode::S2, AttnMode::Dense] {
        let mut weights = LlamaWeights::<f32>::random(&cfg, 0.02, &mut Rng::new(1));
        weights.add_lora(8, 16.0, &mut Rng::new(2));
        let mut model = Llama::new(cfg.clone(), weights).expect("model");
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
        let mut trainer = Trainer::new(&model, run).expect("trainer");
        let mask = AttnMask::from_ratio(attn, 0.25, CONTEXT).expect("even group");
        let flops = train_step_flops(&cfg, 1, CONTEXT, &mask, TrainableSet::LoraEmbedNorm);
        eprintln!(
            "train step {attn}: {:.2} GFLOP (longlora::flops::train_step_flops)",
            flops / 1e9
        );
        group.bench_function(attn.to_string(), |b| {
            b.iter(|| trainer.step(&mut model, &sampler).expect("step"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
