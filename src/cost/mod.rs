//! Cost models, counted rather than timed (DESIGN §3): FLOPs of attention and of a training step,
//! and training memory by category.

pub mod flops;
pub mod memory;

use crate::model::LlamaConfig;

/// Llama-2-7B's shape (Hugging Face's `meta-llama/Llama-2-7b-hf` config.json): the model of the
/// LongLoRA paper's cost figures, and of ours.
pub fn llama2_7b() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32000,
        hidden_size: 4096,
        intermediate_size: 11008,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 4096,
        rope_scaling_factor: 1.0,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    }
}
