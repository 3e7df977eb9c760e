//! Which parameters a run trains, and gradient buffers for exactly those.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::float::Float;
use crate::model::weights::{LlamaWeights, Param};

/// The trainable sets LongLoRA compares (its Table 2): LoRA only, LoRA plus embeddings and norms
/// (LongLoRA's default), or every base weight (full fine-tuning, no adapters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrainableSet {
    Lora,
    #[default]
    LoraEmbedNorm,
    Full,
}

impl TrainableSet {
    /// Whether the parameter with this Hugging Face name is trained.
    pub fn trains(self, name: &str) -> bool {
        let is_lora = name.contains(".lora_");
        match self {
            TrainableSet::Lora => is_lora,
            TrainableSet::LoraEmbedNorm => {
                is_lora || name.contains("embed_tokens") || name.ends_with("norm.weight")
            }
            TrainableSet::Full => !is_lora,
        }
    }

    /// Whether this set trains LoRA adapters (so the model needs them attached).
    pub fn uses_lora(self) -> bool {
        self != TrainableSet::Full
    }

    /// Gradient buffers shaped like `weights`: zeros for trained tensors, empty (frozen) otherwise.
    pub fn grads_for<T: Float>(self, weights: &LlamaWeights<T>) -> LlamaWeights<T> {
        let mut grads = weights.clone();
        for g in grads.params_mut() {
            if self.trains(&g.name) {
                g.data.iter_mut().for_each(|v| *v = T::zero());
            } else {
                g.data = Vec::new();
            }
        }
        grads
    }
}

/// The parameters that have gradient buffers (the trained ones), paired with their gradients.
pub fn trained_pairs<'a, T: Float>(
    weights: &'a mut LlamaWeights<T>,
    grads: &'a LlamaWeights<T>,
) -> Vec<(&'a mut Param<T>, &'a Param<T>)> {
    weights
        .params_mut()
        .into_iter()
        .zip(grads.params())
        .filter(|(_, g)| !g.data.is_empty())
        .collect()
}

impl fmt::Display for TrainableSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrainableSet::Lora => "lora",
            TrainableSet::LoraEmbedNorm => "lora+embed+norm",
            TrainableSet::Full => "full",
        })
    }
}

impl FromStr for TrainableSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "lora" => Ok(TrainableSet::Lora),
            "lora+embed+norm" => Ok(TrainableSet::LoraEmbedNorm),
            "full" => Ok(TrainableSet::Full),
            other => Err(Error::option(
                "trainable",
                format!("expected one of lora, lora+embed+norm, full; got `{other}`"),
            )),
        }
    }
}
