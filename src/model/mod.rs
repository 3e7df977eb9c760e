//! The Llama decoder: configuration, the weight tree and the names of its tensors, the decoder's
//! forward (saving what backward needs) and backward, and the workspace that drives them.

mod activations;
pub mod config;
mod decoder;
pub mod ids;
pub mod llama;
pub mod lora;
pub mod param;
pub mod trainable;
pub mod weights;
pub mod workspace;

pub use config::LlamaConfig;
pub use ids::{LinearId, NormId, ParamId, Proj};
pub use llama::{HostWorkspace, Llama};
pub use param::Param;
pub use trainable::TrainableSet;
pub use weights::{Grads, LayerWeights, Linear, LlamaWeights, Lora};
pub use workspace::{Loss, Workspace};
