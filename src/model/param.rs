//! The weights on the host: named tensors ([`Param`]), and trees of them built as Hugging Face
//! builds a Llama (zeros, random initialisation, fresh LoRA adapters, another element type).

use crate::float::{cst, Float};
use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, ParamId, Proj};
use crate::model::weights::{LlamaWeights, Lora};
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

impl<T> crate::model::weights::Linear<Param<T>> {
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }
}

impl<T: Float> LlamaWeights<Param<T>> {
    /// Weights of the right shapes, all zero except the norms (one), as HF names them.
    pub fn zeros(cfg: &LlamaConfig) -> Self {
        LlamaWeights::skeleton(cfg).into_map(|id, ()| {
            let value = if matches!(id, ParamId::Norm(_)) {
                T::one()
            } else {
                T::zero()
            };
            Param::filled(id.hf_name(), id.shape(cfg, 0), value)
        })
    }

    /// Random weights as Hugging Face initialises a Llama: N(0, std) for matrices, ones for norms.
    pub fn random(cfg: &LlamaConfig, std: f64, rng: &mut Rng) -> Self {
        let mut w = Self::zeros(cfg);
        w.visit_mut(|id, p| {
            if !matches!(id, ParamId::Norm(_)) {
                p.data.iter_mut().for_each(|v| *v = cst(rng.normal() * std));
            }
        });
        w
    }

    /// Adds LoRA adapters to q, k, v and o of every layer, initialised as PEFT does: A
    /// Kaiming-uniform (bound 1/sqrt(in_features)), B zero, so the model's function is unchanged.
    pub fn add_lora(&mut self, rank: usize, alpha: f64, rng: &mut Rng) {
        for layer in 0..self.layers.len() {
            for proj in Proj::ATTENTION {
                let id = LinearId::Layer(layer, proj);
                let lin = self.linear_mut(id);
                let (out_f, in_f) = (lin.out_features(), lin.in_features());
                let bound = 1.0 / (in_f as f64).sqrt();
                let mut a =
                    Param::filled(ParamId::LoraA(id).hf_name(), vec![rank, in_f], T::zero());
                for v in a.data.iter_mut() {
                    *v = cst(rng.uniform_range(-bound, bound));
                }
                let b = Param::filled(ParamId::LoraB(id).hf_name(), vec![out_f, rank], T::zero());
                lin.lora = Some(Lora { a, b, rank, alpha });
            }
        }
    }

    /// Converts every tensor to another element type (e.g. f32 weights to f64 for a gradient check).
    pub fn cast<U: Float>(&self) -> LlamaWeights<Param<U>> {
        self.map(|_, p| p.cast())
    }
}
