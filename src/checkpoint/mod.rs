//! Weights in Hugging Face's format: `config.json` plus safetensors files (one file, or shards with
//! `model.safetensors.index.json`), f32/bf16/f16/f64 on load, memory-mapped. Every error names the
//! file and, where there is one, the tensor.

mod hf_config;
mod model_io;
mod tensors;

pub use hf_config::{config_to_json, load_config, save_config};
pub use model_io::{load_model, save_model, save_model_sharded};
pub use tensors::{load_tensors, save_tensors, write_atomic, NamedTensor};
