//! longlora: LongLoRA fine-tuning (shifted sparse attention, LoRA, RoPE position interpolation)
//! with plain CPU reference ops and explicit backward passes, and CUDA kernels that run on a GPU
//! or, for tests, in a CPU emulator.

pub mod allocator;
pub mod backend;
pub mod cost;
pub mod data;
pub mod error;
pub mod eval;
pub mod float;
pub mod fs;
pub mod hf;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod rng;
pub mod train;

pub use error::{Error, Result};
