//! LoRA adapters outside the forward pass: merging them into the base weights, and the adapter
//! files in PEFT's format.

use crate::float::Float;
use crate::model::LlamaWeights;
use crate::ops::matmul::matmul_nn;

/// PEFT's prefix in front of the base model's tensor names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The projections LongLoRA adapts (PEFT's `target_modules`).
pub const TARGET_MODULES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// Folds every adapter into its base weight (`W += (alpha/r)·B·A`) and removes the adapters, so
/// the model computes the same function without them.
pub fn merge_lora<T: Float>(weights: &mut LlamaWeights<T>) {
    for layer in &mut weights.layers {
        for lin in [
            &mut layer.q_proj,
            &mut layer.k_proj,
            &mut layer.v_proj,
            &mut layer.o_proj,
        ] {
            if let Some(lora) = lin.lora.take() {
                let (out_f, in_f) = (lin.out_features(), lin.in_features());
                matmul_nn(
                    &mut lin.weight.data,
                    &lora.b.data,
                    &lora.a.data,
                    out_f,
                    lora.rank,
                    in_f,
                    lora.scale(),
                    true,
                );
            }
        }
    }
}
