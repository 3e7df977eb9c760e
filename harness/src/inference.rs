//! The model `eval` and `passkey` run, and the engine they run it on: a model directory (or, for
//! `eval` without one, the built-in architecture with random weights), a fine-tune's output on top
//! (`--adapter`), and `--rope-factor` in place of the recorded RoPE factor.

use std::path::Path;

use longlora::backend::Engine;
use longlora::hf::load_model;
use longlora::hf::peft::load_with_adapter;
use longlora::model::{Llama, LlamaWeights, Param};
use longlora::rng::Rng;
use longlora::Result;

use crate::builtin;
use crate::device_arg::{self, DeviceArg, Workload};

/// Where the model comes from.
pub struct ModelSource<'a> {
    /// A Hugging Face directory; `None` for the built-in architecture with weights from `seed`.
    pub dir: Option<&'a Path>,
    /// A fine-tune's output directory to apply without merging.
    pub adapter: Option<&'a Path>,
    pub rope_factor: Option<f64>,
    pub seed: u64,
}

/// Loads the model `source` describes.
pub fn load(source: &ModelSource) -> Result<Llama<f32>> {
    let mut model = match (source.dir, source.adapter) {
        (Some(dir), Some(adapter)) => load_with_adapter(dir, adapter)?.0,
        (Some(dir), None) => {
            let (cfg, weights) = load_model(dir)?;
            Llama::new(cfg, weights)?
        }
        (None, _) => {
            let cfg = builtin::config();
            let weights =
                LlamaWeights::<Param<f32>>::random(&cfg, 0.02, &mut Rng::derive(source.seed, 1));
            Llama::new(cfg, weights)?
        }
    };
    if let Some(f) = source.rope_factor {
        model.config.rope_scaling_factor = f;
        model.config.validate()?;
    }
    Ok(model)
}

/// The engine `device` names for evaluating `model` (no training).
pub fn engine(device: DeviceArg, model: Llama<f32>) -> Result<Engine> {
    let work = Workload {
        config: &model.config,
        trainable: None,
        lora_rank: model.weights.max_lora_rank(),
    };
    let compute = device_arg::open(device, &work)?;
    Engine::new(compute, model, None, false)
}
