//! longlora: LongLoRA fine-tuning (shifted sparse attention, LoRA, RoPE position interpolation)
//! with plain CPU reference ops and explicit backward passes.

pub mod adapter;
pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod float;
pub mod flops;
pub mod kernels;
pub mod lora;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod passkey;
pub mod rng;
pub mod sft;
pub mod token_file;
pub mod tokenizer;
pub mod train;
pub mod train_memory;

pub use error::{Error, Result};
