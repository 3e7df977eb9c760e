//! The Llama architecture hyper-parameters (the fields of a Hugging Face `config.json` we use).

use serde::{Deserialize, Serialize};

use crate::data::{BYTE_BOS, BYTE_EOS, BYTE_VOCAB};
use crate::error::{Error, Result};

/// Dimensions and constants of a Llama decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// The context the base model was trained at (`max_position_embeddings` of the original model).
    pub max_position_embeddings: usize,
    /// Linear RoPE interpolation factor: positions are divided by it (1 = no interpolation).
    pub rope_scaling_factor: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl LlamaConfig {
    /// The built-in model of `harness finetune`: 4 layers, d = 256, 4 heads of 64, the byte
    /// vocabulary, trained at context 256; about 3.3 M parameters, small enough to pre-train on 2 CPU
    /// cores in under a minute.
    pub fn builtin() -> Self {
        LlamaConfig {
            vocab_size: BYTE_VOCAB,
            hidden_size: 256,
            intermediate_size: 688,
            num_hidden_layers: 4,
            // Heads of 64, a width the attention kernels support (--device cuda|emu).
            num_attention_heads: 4,
            num_key_value_heads: 4,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 256,
            rope_scaling_factor: 1.0,
            bos_token_id: Some(BYTE_BOS),
            eos_token_id: Some(BYTE_EOS),
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Width of the K and V projections (all key/value heads).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// Checks the relations between the dimensions that the model relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.num_attention_heads == 0
            || self.num_key_value_heads == 0
        {
            return bad(format!("every dimension must be positive: {self:?}"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dimension {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not divisible by num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rope_scaling_factor >= 1.0 && self.rope_scaling_factor.is_finite()) {
            return bad(format!(
                "rope scaling factor must be a finite number >= 1, got {}",
                self.rope_scaling_factor
            ));
        }
        if !(self.rope_theta > 0.0 && self.rms_norm_eps >= 0.0) {
            return bad(format!(
                "rope_theta must be positive and rms_norm_eps non-negative, got {} and {}",
                self.rope_theta, self.rms_norm_eps
            ));
        }
        Ok(())
    }

    /// Number of parameters of the base model (without LoRA).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let per_layer = 2 * d + 2 * d * d + 2 * d * self.kv_dim() + 3 * d * self.intermediate_size;
        2 * self.vocab_size * d + self.num_hidden_layers * per_layer + d
    }
}
