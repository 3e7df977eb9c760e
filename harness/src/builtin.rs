//! The built-in model and corpus: a tiny byte-level Llama pre-trained in-process on synthetic
//! documents with long-range structure, so a complete LongLoRA run needs no download.

use longlora::data::{synthetic_corpus, WindowSampler};
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::TrainConfig;
use longlora::Result;

/// Bytes per synthetic document: long enough that recalls reach thousands of tokens back.
const DOC_BYTES: usize = 4096;

/// The built-in model's architecture.
pub fn config() -> LlamaConfig {
    LlamaConfig::builtin()
}

/// The training corpus (64 documents, about 260 k tokens).
pub fn train_corpus(seed: u64) -> Vec<u32> {
    synthetic_corpus(seed, 64, DOC_BYTES)
}

/// Held-out documents from an independent stream, for the before/after loss.
pub fn heldout_corpus(seed: u64) -> Vec<u32> {
    synthetic_corpus(seed ^ 0x0068_656c_646f_7574, 8, DOC_BYTES)
}

/// The built-in model's pre-training: random weights, the corpus in windows of its context, and
/// the schedule (all parameters, dense attention).
pub struct Pretraining {
    pub model: Llama<f32>,
    pub sampler: WindowSampler,
    pub config: TrainConfig,
}

/// The pre-training of `steps` steps that `seed` defines.
pub fn pretraining(seed: u64, steps: usize) -> Result<Pretraining> {
    let cfg = config();
    let context = cfg.max_position_embeddings;
    let weights = LlamaWeights::random(&cfg, 0.02, &mut Rng::derive(seed, 1));
    let model = Llama::new(cfg, weights)?;
    let sampler = WindowSampler::new(train_corpus(seed), context)?;
    let config = TrainConfig {
        steps,
        batch_size: 4,
        grad_accum: 1,
        seq_len: context,
        lr: 2e-3,
        warmup_steps: steps / 10,
        schedule: Schedule::Cosine,
        adamw: AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        attn: AttnMode::Dense,
        group_ratio: 1.0,
        trainable: TrainableSet::Full,
        seed,
    };
    Ok(Pretraining {
        model,
        sampler,
        config,
    })
}
