//! Training memory by category (DESIGN §3): weights, gradients, optimizer state, and the
//! activations backward needs, with and without per-layer recomputation, for each trainable set.
//! The activation count is the one this crate's forward actually keeps (a test checks it against
//! the buffers of a real forward pass).

use crate::error::{Error, Result};
use crate::model::{LlamaConfig, TrainableSet};

/// Bytes of one training configuration, by category.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainMemory {
    pub weights: f64,
    pub gradients: f64,
    pub optimizer: f64,
    pub activations: f64,
    /// Activations when each layer keeps only its input and is recomputed inside its backward
    /// (`--recompute`).
    pub activations_recomputed: f64,
}

impl TrainMemory {
    pub fn total(&self, recompute: bool) -> f64 {
        let act = if recompute {
            self.activations_recomputed
        } else {
            self.activations
        };
        self.weights + self.gradients + self.optimizer + act
    }
}

/// Parameters of the LoRA adapters on q, k, v and o of every layer.
pub fn lora_params(cfg: &LlamaConfig, rank: usize) -> usize {
    let (d, kv) = (cfg.hidden_size, cfg.kv_dim());
    let per_layer = rank * (d + d) + rank * (d + kv) * 2 + rank * (d + d);
    cfg.num_hidden_layers * per_layer
}

/// Parameters the set trains.
pub fn trained_params(cfg: &LlamaConfig, set: TrainableSet, rank: usize) -> usize {
    let norms = (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size;
    match set {
        TrainableSet::Full => cfg.num_params(),
        TrainableSet::Lora => lora_params(cfg, rank),
        TrainableSet::LoraEmbedNorm => {
            lora_params(cfg, rank) + cfg.vocab_size * cfg.hidden_size + norms
        }
    }
}

/// Elements one layer keeps per token for backward.
fn layer_elements_per_token(cfg: &LlamaConfig, rank: usize) -> usize {
    let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
    6 * d + 2 * kv + 3 * ff + 2 + cfg.num_attention_heads + 4 * rank
}

/// Elements the forward keeps for backward over `tokens` tokens (see
/// [`crate::model::Workspace::saved_elements`]).
pub fn activation_elements(cfg: &LlamaConfig, tokens: usize, rank: usize) -> usize {
    let final_norm = 2 * cfg.hidden_size + 1 + cfg.vocab_size;
    tokens * (cfg.num_hidden_layers * layer_elements_per_token(cfg, rank) + final_norm)
}

/// Memory of training `cfg` on `tokens` tokens per step with f32 weights, gradients and AdamW
/// state (two moments), as the CPU path stores them. `rank` is 0 for full fine-tuning.
pub fn train_memory(
    cfg: &LlamaConfig,
    set: TrainableSet,
    rank: usize,
    tokens: usize,
) -> TrainMemory {
    let rank = if set.uses_lora() { rank } else { 0 };
    let trained = trained_params(cfg, set, rank) as f64;
    let per_layer = tokens * layer_elements_per_token(cfg, rank);
    let all = activation_elements(cfg, tokens, rank);
    let recomputed = all - cfg.num_hidden_layers * per_layer
        + cfg.num_hidden_layers * tokens * cfg.hidden_size
        + per_layer;
    TrainMemory {
        weights: 4.0 * (cfg.num_params() + lora_params(cfg, rank)) as f64,
        gradients: 4.0 * trained,
        optimizer: 8.0 * trained,
        activations: 4.0 * all as f64,
        activations_recomputed: 4.0 * recomputed as f64,
    }
}

/// Memory of the same training on the GPU kernels, as the kernel engine holds it: bf16 weights and
/// adapters, and for each trained tensor an f32 master copy, an f32 gradient and two f32 AdamW
/// moments; bf16 activations. Kernel scratch and the allocator's slack come on top.
pub fn device_train_memory(
    cfg: &LlamaConfig,
    set: TrainableSet,
    rank: usize,
    tokens: usize,
) -> TrainMemory {
    let host = train_memory(cfg, set, rank, tokens);
    TrainMemory {
        weights: host.weights / 2.0 + host.gradients,
        gradients: host.gradients,
        optimizer: host.optimizer,
        activations: host.activations / 2.0,
        activations_recomputed: host.activations_recomputed / 2.0,
    }
}

/// Fails when `need` (with or without recomputation) exceeds the `free` bytes of a device of
/// `total`, saying what the step needs by category, so that a run that cannot fit stops before it
/// allocates anything.
pub fn check_device_memory(
    need: &TrainMemory,
    recompute: bool,
    free: usize,
    total: usize,
) -> Result<()> {
    let needed = need.total(recompute);
    if needed <= free as f64 {
        return Ok(());
    }
    let mib = |bytes: f64| (bytes / f64::from(1 << 20)).ceil() as usize;
    Err(Error::DeviceMemory {
        needed_mib: mib(needed),
        weights_mib: mib(need.weights),
        gradients_mib: mib(need.gradients),
        optimizer_mib: mib(need.optimizer),
        activations_mib: mib(needed - need.weights - need.gradients - need.optimizer),
        recompute,
        free_mib: free >> 20,
        total_mib: total >> 20,
    })
}
