//! Hugging Face formats, so that models move freely between this crate and `transformers`/`peft`:
//! `config.json`, safetensors files (single or sharded, memory-mapped, F32/BF16/F16/F64 read as
//! f32), model directories, and a fine-tune's PEFT adapter files. Every error names the file and,
//! where there is one, the tensor; every write goes through [`crate::fs::write_atomic`].

mod assign;
mod config_json;
mod model_dir;
pub mod peft;
mod safetensors_file;

pub use assign::assign_tensors;
pub use config_json::{config_to_json, load_config};
pub use model_dir::{load_model, save_model, save_model_sharded};
pub use safetensors_file::{load_tensors, save_tensors, save_tensors_renamed};
