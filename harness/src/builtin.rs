//! The built-in model and corpus: a tiny byte-level Llama pre-trained in-process on synthetic
//! documents with long-range structure, so a complete LongLoRA run needs no download.

use longlora::data::{synthetic_corpus, WindowSampler, BYTE_BOS, BYTE_EOS, BYTE_VOCAB};
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::optim::{AdamWConfig, Schedule};
use longlora::rng::Rng;
use longlora::train::{train, StepReport, TrainConfig};
use longlora::Result;

/// The context the built-in model is pre-trained at (its `max_position_embeddings`).
pub const PRETRAIN_CONTEXT: usize = 256;

/// Bytes per synthetic document: long enough that recalls reach thousands of tokens back.
const DOC_BYTES: usize = 4096;

/// 4 layers, d = 256, 8 heads, byte vocabulary: about 3.3 M parameters.
pub fn config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: BYTE_VOCAB,
        hidden_size: 256,
        intermediate_size: 688,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 8,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: PRETRAIN_CONTEXT,
        rope_scaling_factor: 1.0,
        bos_token_id: Some(BYTE_BOS),
        eos_token_id: Some(BYTE_EOS),
    }
}

/// The training corpus (64 documents, about 260 k tokens).
pub fn train_corpus(seed: u64) -> Vec<u32> {
    synthetic_corpus(seed, 64, DOC_BYTES)
}

/// Held-out documents from an independent stream, for the before/after loss.
pub fn heldout_corpus(seed: u64) -> Vec<u32> {
    synthetic_corpus(seed ^ 0x0068_656c_646f_7574, 8, DOC_BYTES)
}

/// Pre-trains the built-in model from random weights (all parameters, dense attention).
pub fn pretrain(seed: u64, steps: usize, on_step: impl FnMut(&StepReport)) -> Result<Llama<f32>> {
    let cfg = config();
    let weights = LlamaWeights::random(&cfg, 0.02, &mut Rng::derive(seed, 1));
    let mut model = Llama::new(cfg, weights)?;
    let sampler = WindowSampler::new(train_corpus(seed), PRETRAIN_CONTEXT)?;
    let run = TrainConfig {
        steps,
        batch_size: 4,
        grad_accum: 1,
        seq_len: PRETRAIN_CONTEXT,
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
    train(&mut model, &sampler, run, on_step)?;
    Ok(model)
}
