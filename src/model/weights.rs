//! The parameters of a Llama decoder, each named as Hugging Face names it, with optional LoRA
//! adapters on the attention projections.

use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::rng::Rng;

/// One named parameter tensor (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Param<T> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: Float> Param<T> {
    /// A tensor filled with `value`.
    pub fn filled(name: String, shape: Vec<usize>, value: T) -> Self {
        let n = shape.iter().product();
        Param {
            name,
            shape,
            data: vec![value; n],
        }
    }

    /// Number of elements the shape describes.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Converts the element type.
    pub fn cast<U: Float>(&self) -> Param<U> {
        Param {
            name: self.name.clone(),
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .map(|v| cst::<U>(v.to_f64().unwrap_or(f64::NAN)))
                .collect(),
        }
    }
}

/// LoRA adapter of one linear layer: `ΔW = (alpha / rank) · B · A`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora<T> {
    /// `[rank, in_features]`, HF/PEFT name `<layer>.lora_A.weight`.
    pub a: Param<T>,
    /// `[out_features, rank]`, HF/PEFT name `<layer>.lora_B.weight`.
    pub b: Param<T>,
    pub rank: usize,
    pub alpha: f64,
}

impl<T: Float> Lora<T> {
    /// The multiplier `alpha / rank` applied to the low-rank product.
    pub fn scale(&self) -> T {
        cst(self.alpha / self.rank as f64)
    }
}

/// A bias-free linear layer `y = x · Wᵀ (+ LoRA)`, `W: [out_features, in_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<T> {
    pub weight: Param<T>,
    pub lora: Option<Lora<T>>,
}

impl<T: Float> Linear<T> {
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }
}

/// The weights of one decoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights<T> {
    pub input_layernorm: Param<T>,
    pub q_proj: Linear<T>,
    pub k_proj: Linear<T>,
    pub v_proj: Linear<T>,
    pub o_proj: Linear<T>,
    pub post_attention_layernorm: Param<T>,
    pub gate_proj: Linear<T>,
    pub up_proj: Linear<T>,
    pub down_proj: Linear<T>,
}

/// All weights of a Llama causal language model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaWeights<T> {
    pub embed_tokens: Param<T>,
    pub layers: Vec<LayerWeights<T>>,
    pub norm: Param<T>,
    pub lm_head: Param<T>,
}

fn linear<T: Float>(name: String, out_f: usize, in_f: usize) -> Linear<T> {
    Linear {
        weight: Param::filled(name, vec![out_f, in_f], T::zero()),
        lora: None,
    }
}

impl<T: Float> LlamaWeights<T> {
    /// Weights of the right shapes, all zero except the norms (one), as HF names them.
    pub fn zeros(cfg: &LlamaConfig) -> Self {
        let d = cfg.hidden_size;
        let kv = cfg.kv_dim();
        let ff = cfg.intermediate_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                LayerWeights {
                    input_layernorm: Param::filled(
                        format!("{p}.input_layernorm.weight"),
                        vec![d],
                        T::one(),
                    ),
                    q_proj: linear(format!("{p}.self_attn.q_proj.weight"), d, d),
                    k_proj: linear(format!("{p}.self_attn.k_proj.weight"), kv, d),
                    v_proj: linear(format!("{p}.self_attn.v_proj.weight"), kv, d),
                    o_proj: linear(format!("{p}.self_attn.o_proj.weight"), d, d),
                    post_attention_layernorm: Param::filled(
                        format!("{p}.post_attention_layernorm.weight"),
                        vec![d],
                        T::one(),
                    ),
                    gate_proj: linear(format!("{p}.mlp.gate_proj.weight"), ff, d),
                    up_proj: linear(format!("{p}.mlp.up_proj.weight"), ff, d),
                    down_proj: linear(format!("{p}.mlp.down_proj.weight"), d, ff),
                }
            })
            .collect();
        LlamaWeights {
            embed_tokens: Param::filled(
                "model.embed_tokens.weight".into(),
                vec![cfg.vocab_size, d],
                T::zero(),
            ),
            layers,
            norm: Param::filled("model.norm.weight".into(), vec![d], T::one()),
            lm_head: Param::filled("lm_head.weight".into(), vec![cfg.vocab_size, d], T::zero()),
        }
    }

    /// Random weights as Hugging Face initialises a Llama: N(0, std) for matrices, ones for norms.
    pub fn random(cfg: &LlamaConfig, std: f64, rng: &mut Rng) -> Self {
        let mut w = Self::zeros(cfg);
        for p in w.params_mut() {
            if !p.name.contains("norm") {
                for v in p.data.iter_mut() {
                    *v = cst(rng.normal() * std);
                }
            }
        }
        w
    }

    /// The largest LoRA rank of any adapted projection (0 without adapters).
    pub fn max_lora_rank(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj])
            .filter_map(|lin| lin.lora.as_ref().map(|lora| lora.rank))
            .max()
            .unwrap_or(0)
    }

    /// Adds LoRA adapters to q, k, v and o of every layer, initialised as PEFT does: A
    /// Kaiming-uniform (bound 1/sqrt(in_features)), B zero, so the model's function is unchanged.
    pub fn add_lora(&mut self, rank: usize, alpha: f64, rng: &mut Rng) {
        for layer in &mut self.layers {
            for lin in [
                &mut layer.q_proj,
                &mut layer.k_proj,
                &mut layer.v_proj,
                &mut layer.o_proj,
            ] {
                let base = lin.weight.name.trim_end_matches(".weight").to_string();
                let (out_f, in_f) = (lin.out_features(), lin.in_features());
                let bound = 1.0 / (in_f as f64).sqrt();
                let mut a =
                    Param::filled(format!("{base}.lora_A.weight"), vec![rank, in_f], T::zero());
                for v in a.data.iter_mut() {
                    *v = cst(rng.uniform_range(-bound, bound));
                }
                let b = Param::filled(
                    format!("{base}.lora_B.weight"),
                    vec![out_f, rank],
                    T::zero(),
                );
                lin.lora = Some(Lora { a, b, rank, alpha });
            }
        }
    }

    /// Every parameter, in a fixed order (embedding, layers in order, final norm, lm_head).
    pub fn params(&self) -> Vec<&Param<T>> {
        let mut out = vec![&self.embed_tokens];
        for l in &self.layers {
            out.push(&l.input_layernorm);
            for lin in [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj] {
                out.push(&lin.weight);
                if let Some(lora) = &lin.lora {
                    out.push(&lora.a);
                    out.push(&lora.b);
                }
            }
            out.push(&l.post_attention_layernorm);
            for lin in [&l.gate_proj, &l.up_proj, &l.down_proj] {
                out.push(&lin.weight);
            }
        }
        out.push(&self.norm);
        out.push(&self.lm_head);
        out
    }

    /// Every parameter, mutable, in the order of [`LlamaWeights::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        let mut out = vec![&mut self.embed_tokens];
        for l in &mut self.layers {
            out.push(&mut l.input_layernorm);
            for lin in [&mut l.q_proj, &mut l.k_proj, &mut l.v_proj, &mut l.o_proj] {
                out.push(&mut lin.weight);
                if let Some(lora) = &mut lin.lora {
                    out.push(&mut lora.a);
                    out.push(&mut lora.b);
                }
            }
            out.push(&mut l.post_attention_layernorm);
            for lin in [&mut l.gate_proj, &mut l.up_proj, &mut l.down_proj] {
                out.push(&mut lin.weight);
            }
        }
        out.push(&mut self.norm);
        out.push(&mut self.lm_head);
        out
    }

    /// Converts every tensor to another element type (e.g. f32 weights to f64 for a gradient check).
    pub fn cast<U: Float>(&self) -> LlamaWeights<U> {
        let lin = |l: &Linear<T>| Linear {
            weight: l.weight.cast(),
            lora: l.lora.as_ref().map(|lo| Lora {
                a: lo.a.cast(),
                b: lo.b.cast(),
                rank: lo.rank,
                alpha: lo.alpha,
            }),
        };
        LlamaWeights {
            embed_tokens: self.embed_tokens.cast(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerWeights {
                    input_layernorm: l.input_layernorm.cast(),
                    q_proj: lin(&l.q_proj),
                    k_proj: lin(&l.k_proj),
                    v_proj: lin(&l.v_proj),
                    o_proj: lin(&l.o_proj),
                    post_attention_layernorm: l.post_attention_layernorm.cast(),
                    gate_proj: lin(&l.gate_proj),
                    up_proj: lin(&l.up_proj),
                    down_proj: lin(&l.down_proj),
                })
                .collect(),
            norm: self.norm.cast(),
            lm_head: self.lm_head.cast(),
        }
    }
}
