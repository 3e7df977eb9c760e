//! Merging LoRA adapters into the base weights.

use crate::float::Float;
use crate::model::LlamaWeights;
use crate::ops::matmul::matmul_nn;

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
