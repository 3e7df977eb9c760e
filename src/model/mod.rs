//! The Llama decoder: configuration, weights, forward (saving what backward needs) and backward.

pub mod config;
pub mod weights;

pub use config::LlamaConfig;
pub use weights::{LayerWeights, Linear, LlamaWeights, Lora, Param};
