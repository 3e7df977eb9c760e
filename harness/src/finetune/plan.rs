//! The extension a fine-tune performs, validated before any expensive work starts.

use longlora::model::LlamaConfig;
use longlora::ops::attention::AttnMask;
use longlora::{Error, Result};

use super::FinetuneArgs;

/// The base model's context, the target context and the RoPE factor between them.
pub struct Plan {
    pub original: usize,
    pub context: usize,
    pub factor: f64,
}

/// The plan `args` describe for a base model of architecture `base`; fails on options that
/// cannot work together (a group size the context cannot split, LoRA of rank 0, a RoPE factor the
/// model cannot take).
pub fn plan(args: &FinetuneArgs, base: &LlamaConfig) -> Result<Plan> {
    let original = base.max_position_embeddings;
    let context = args.context.unwrap_or(4 * original);
    let factor = match args.rope_factor {
        Some(f) => f,
        None => (context as f64 / original as f64).ceil().max(1.0),
    };
    AttnMask::from_ratio(args.attn, args.group_ratio, context)?;
    if args.trainable.uses_lora() && args.lora_rank == 0 {
        return Err(Error::option("lora_rank", "must be at least 1"));
    }
    let mut extended = base.clone();
    extended.rope_scaling_factor = factor;
    extended.validate()?;
    Ok(Plan {
        original,
        context,
        factor,
    })
}
