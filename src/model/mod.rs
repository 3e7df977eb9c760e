//! The Llama decoder: configuration, weights, forward (saving what backward needs) and backward.

pub mod config;
pub mod decoder;
pub mod llama;
pub mod lora;
pub mod trainable;
pub mod weights;

pub use config::LlamaConfig;
pub use decoder::Activations;
pub use llama::Llama;
pub use trainable::TrainableSet;
pub use weights::{LayerWeights, Linear, LlamaWeights, Lora, Param};
