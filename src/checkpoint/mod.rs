//! Model weights in the Hugging Face layout (`config.json` plus safetensors, single or sharded), so
//! that checkpoints move freely between this crate and `transformers`/`peft`.
//!
//! Reading memory-maps the files and converts F32, BF16, F16 and F64 to f32; every error names the
//! file and, where there is one, the tensor. Every write goes through [`write_atomic`], so a crash
//! never leaves a half-written file under a final name.

mod assign;
mod atomic;
mod config_json;
mod model;
mod run_state;
mod safetensors_file;

pub use assign::assign_tensors;
pub use atomic::write_atomic;
pub use config_json::{config_to_json, load_config};
pub use model::{load_model, save_model, save_model_sharded};
pub use run_state::{
    find_checkpoint, load_run_checkpoint, remove_checkpoints, save_run_checkpoint, RunCheckpoint,
    RunOptions, CHECKPOINT_PREFIX,
};
pub use safetensors_file::{load_tensors, save_tensors, save_tensors_renamed};
