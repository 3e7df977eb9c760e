//! Names of the model's tensors: which projection, which linear layer, which norm, which parameter.
//! Every part of the crate that addresses a tensor (the backends, the optimizer, the file writers)
//! names it with these, and [`ParamId::hf_name`] is the one place its Hugging Face name is spelt.

use crate::model::config::LlamaConfig;

/// A projection of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    /// The attention projections, the ones LoRA adapts (PEFT's `target_modules`).
    pub const ATTENTION: [Proj; 4] = [Proj::Q, Proj::K, Proj::V, Proj::O];

    /// The module inside a decoder layer, as Hugging Face names it.
    fn module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }
}

/// A linear layer of the model: a layer's projection, or the output head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearId {
    Layer(usize, Proj),
    LmHead,
}

impl LinearId {
    /// `(out_features, in_features)` of the layer's weight.
    pub fn features(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (d, kv, ff) = (cfg.hidden_size, cfg.kv_dim(), cfg.intermediate_size);
        match self {
            LinearId::Layer(_, Proj::Q | Proj::O) => (d, d),
            LinearId::Layer(_, Proj::K | Proj::V) => (kv, d),
            LinearId::Layer(_, Proj::Gate | Proj::Up) => (ff, d),
            LinearId::Layer(_, Proj::Down) => (d, ff),
            LinearId::LmHead => (cfg.vocab_size, d),
        }
    }

    fn module(self) -> String {
        match self {
            LinearId::Layer(layer, proj) => format!("model.layers.{layer}.{}", proj.module()),
            LinearId::LmHead => "lm_head".into(),
        }
    }
}

/// An RMSNorm of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormId {
    Input(usize),
    PostAttention(usize),
    Final,
}

/// One parameter tensor of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamId {
    /// `embed_tokens`, `[vocab, hidden]`.
    Embedding,
    /// An RMSNorm's weight, `[hidden]`.
    Norm(NormId),
    /// A linear layer's base weight, `[out_features, in_features]`.
    Weight(LinearId),
    /// A LoRA adapter's `A`, `[rank, in_features]`.
    LoraA(LinearId),
    /// A LoRA adapter's `B`, `[out_features, rank]`.
    LoraB(LinearId),
}

impl ParamId {
    /// The tensor's name in Hugging Face's files (PEFT's names for the adapters, without PEFT's
    /// `base_model.model.` prefix).
    pub fn hf_name(self) -> String {
        match self {
            ParamId::Embedding => "model.embed_tokens.weight".into(),
            ParamId::Norm(NormId::Input(l)) => format!("model.layers.{l}.input_layernorm.weight"),
            ParamId::Norm(NormId::PostAttention(l)) => {
                format!("model.layers.{l}.post_attention_layernorm.weight")
            }
            ParamId::Norm(NormId::Final) => "model.norm.weight".into(),
            ParamId::Weight(id) => format!("{}.weight", id.module()),
            ParamId::LoraA(id) => format!("{}.lora_A.weight", id.module()),
            ParamId::LoraB(id) => format!("{}.lora_B.weight", id.module()),
        }
    }

    /// The tensor's shape in a model of `cfg` whose adapters have rank `rank`.
    pub fn shape(self, cfg: &LlamaConfig, rank: usize) -> Vec<usize> {
        match self {
            ParamId::Embedding => vec![cfg.vocab_size, cfg.hidden_size],
            ParamId::Norm(_) => vec![cfg.hidden_size],
            ParamId::Weight(id) => {
                let (out_f, in_f) = id.features(cfg);
                vec![out_f, in_f]
            }
            ParamId::LoraA(id) => vec![rank, id.features(cfg).1],
            ParamId::LoraB(id) => vec![id.features(cfg).0, rank],
        }
    }

    /// Whether this is a LoRA adapter's tensor.
    pub fn is_lora(self) -> bool {
        matches!(self, ParamId::LoraA(_) | ParamId::LoraB(_))
    }
}
