//! Which parameters a run trains, and gradients for exactly those.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::float::Float;
use crate::model::ids::ParamId;
use crate::model::param::Param;
use crate::model::weights::{Grads, LlamaWeights};

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
    /// Whether the parameter `id` is trained.
    pub fn trains(self, id: ParamId) -> bool {
        match self {
            TrainableSet::Lora => id.is_lora(),
            TrainableSet::LoraEmbedNorm => {
                id.is_lora() || matches!(id, ParamId::Embedding | ParamId::Norm(_))
            }
            TrainableSet::Full => !id.is_lora(),
        }
    }

    /// Whether this set trains LoRA adapters (so the model needs them attached).
    pub fn uses_lora(self) -> bool {
        self != TrainableSet::Full
    }

    /// The tensors of `weights` this set trains, in parameter order.
    pub fn trained_ids<P>(self, weights: &LlamaWeights<P>) -> Vec<ParamId> {
        let mut ids = Vec::new();
        weights.visit(|id, _| {
            if self.trains(id) {
                ids.push(id);
            }
        });
        ids
    }

    /// Zero gradients for the tensors of `weights` this set trains.
    pub fn grads_for<T: Float>(self, weights: &LlamaWeights<Param<T>>) -> Grads<T> {
        weights.map(|id, p| {
            self.trains(id)
                .then(|| Param::filled(p.name.clone(), p.shape.clone(), T::zero()))
        })
    }
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
