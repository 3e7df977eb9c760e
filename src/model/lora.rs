//! Merging LoRA adapters into the base weights.

use crate::float::Float;
use crate::model::ids::{LinearId, Proj};
use crate::model::{LlamaWeights, Param};
use crate::ops::matmul::matmul_nn;

/// Folds every adapter into its base weight (`W += (alpha/r)·B·A`) and removes the adapters, so
/// the model computes the same function without them.
pub fn merge_lora<T: Float>(weights: &mut LlamaWeights<Param<T>>) {
    for layer in 0..weights.layers.len() {
        for proj in Proj::ATTENTION {
            let lin = weights.linear_mut(LinearId::Layer(layer, proj));
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
