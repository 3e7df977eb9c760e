//! The weight tree of a Llama decoder, generic over what each parameter is: the host's
//! [`Param`](crate::model::Param) tensors, a backend's device buffers, a gradient that may be
//! absent (`Option<..>`), or nothing at all (`()`). One traversal, [`LlamaWeights::into_map`],
//! defines the parameter order; every list of parameters (files, optimizer state, device buffers)
//! comes from it.

use crate::model::config::LlamaConfig;
use crate::model::ids::{LinearId, NormId, ParamId, Proj};

/// LoRA adapter of one linear layer: `ΔW = (alpha / rank) · B · A`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora<P> {
    /// `[rank, in_features]`, [`ParamId::LoraA`].
    pub a: P,
    /// `[out_features, rank]`, [`ParamId::LoraB`].
    pub b: P,
    pub rank: usize,
    pub alpha: f64,
}

/// A bias-free linear layer `y = x · Wᵀ (+ LoRA)`, `W: [out_features, in_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<P> {
    pub weight: P,
    pub lora: Option<Lora<P>>,
}

/// The weights of one decoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights<P> {
    pub input_layernorm: P,
    pub q_proj: Linear<P>,
    pub k_proj: Linear<P>,
    pub v_proj: Linear<P>,
    pub o_proj: Linear<P>,
    pub post_attention_layernorm: P,
    pub gate_proj: Linear<P>,
    pub up_proj: Linear<P>,
    pub down_proj: Linear<P>,
}

/// All weights of a Llama causal language model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaWeights<P> {
    pub embed_tokens: P,
    pub layers: Vec<LayerWeights<P>>,
    pub norm: P,
    pub lm_head: Linear<P>,
}

/// Gradients shaped like the host weights: `None` for a tensor that is not trained.
pub type Grads<T> = LlamaWeights<Option<crate::model::Param<T>>>;

impl<P> Lora<P> {
    /// The multiplier `alpha / rank` applied to the low-rank product.
    pub fn scale<T: crate::float::Float>(&self) -> T {
        crate::float::cst(self.alpha / self.rank as f64)
    }

    fn into_map<Q>(self, id: LinearId, f: &mut impl FnMut(ParamId, P) -> Q) -> Lora<Q> {
        // Struct fields are evaluated in the order written: A, then B.
        Lora {
            a: f(ParamId::LoraA(id), self.a),
            b: f(ParamId::LoraB(id), self.b),
            rank: self.rank,
            alpha: self.alpha,
        }
    }

    fn as_ref(&self) -> Lora<&P> {
        Lora {
            a: &self.a,
            b: &self.b,
            rank: self.rank,
            alpha: self.alpha,
        }
    }

    fn as_mut(&mut self) -> Lora<&mut P> {
        Lora {
            a: &mut self.a,
            b: &mut self.b,
            rank: self.rank,
            alpha: self.alpha,
        }
    }
}

impl<P> Linear<P> {
    /// Rank of the layer's adapter (0 without one): the width of the `x·Aᵀ` buffer it saves.
    pub fn lora_rank(&self) -> usize {
        self.lora.as_ref().map_or(0, |l| l.rank)
    }

    /// The base weight, then its adapter's A and B.
    fn into_map<Q>(self, id: LinearId, f: &mut impl FnMut(ParamId, P) -> Q) -> Linear<Q> {
        let weight = f(ParamId::Weight(id), self.weight);
        Linear {
            weight,
            lora: self.lora.map(|lora| lora.into_map(id, f)),
        }
    }

    fn as_ref(&self) -> Linear<&P> {
        Linear {
            weight: &self.weight,
            lora: self.lora.as_ref().map(Lora::as_ref),
        }
    }

    fn as_mut(&mut self) -> Linear<&mut P> {
        Linear {
            weight: &mut self.weight,
            lora: self.lora.as_mut().map(Lora::as_mut),
        }
    }
}

impl<P> LayerWeights<P> {
    /// The layer's linear `proj`.
    pub fn linear(&self, proj: Proj) -> &Linear<P> {
        match proj {
            Proj::Q => &self.q_proj,
            Proj::K => &self.k_proj,
            Proj::V => &self.v_proj,
            Proj::O => &self.o_proj,
            Proj::Gate => &self.gate_proj,
            Proj::Up => &self.up_proj,
            Proj::Down => &self.down_proj,
        }
    }

    pub fn linear_mut(&mut self, proj: Proj) -> &mut Linear<P> {
        match proj {
            Proj::Q => &mut self.q_proj,
            Proj::K => &mut self.k_proj,
            Proj::V => &mut self.v_proj,
            Proj::O => &mut self.o_proj,
            Proj::Gate => &mut self.gate_proj,
            Proj::Up => &mut self.up_proj,
            Proj::Down => &mut self.down_proj,
        }
    }

    /// The layer's tensors in the model's parameter order: the fields below are evaluated in the
    /// order written, and that order is the one of Hugging Face's module tree.
    fn into_map<Q>(self, layer: usize, f: &mut impl FnMut(ParamId, P) -> Q) -> LayerWeights<Q> {
        let lin = |proj| LinearId::Layer(layer, proj);
        LayerWeights {
            input_layernorm: f(ParamId::Norm(NormId::Input(layer)), self.input_layernorm),
            q_proj: self.q_proj.into_map(lin(Proj::Q), f),
            k_proj: self.k_proj.into_map(lin(Proj::K), f),
            v_proj: self.v_proj.into_map(lin(Proj::V), f),
            o_proj: self.o_proj.into_map(lin(Proj::O), f),
            post_attention_layernorm: f(
                ParamId::Norm(NormId::PostAttention(layer)),
                self.post_attention_layernorm,
            ),
            gate_proj: self.gate_proj.into_map(lin(Proj::Gate), f),
            up_proj: self.up_proj.into_map(lin(Proj::Up), f),
            down_proj: self.down_proj.into_map(lin(Proj::Down), f),
        }
    }

    fn as_ref(&self) -> LayerWeights<&P> {
        LayerWeights {
            input_layernorm: &self.input_layernorm,
            q_proj: self.q_proj.as_ref(),
            k_proj: self.k_proj.as_ref(),
            v_proj: self.v_proj.as_ref(),
            o_proj: self.o_proj.as_ref(),
            post_attention_layernorm: &self.post_attention_layernorm,
            gate_proj: self.gate_proj.as_ref(),
            up_proj: self.up_proj.as_ref(),
            down_proj: self.down_proj.as_ref(),
        }
    }

    fn as_mut(&mut self) -> LayerWeights<&mut P> {
        LayerWeights {
            input_layernorm: &mut self.input_layernorm,
            q_proj: self.q_proj.as_mut(),
            k_proj: self.k_proj.as_mut(),
            v_proj: self.v_proj.as_mut(),
            o_proj: self.o_proj.as_mut(),
            post_attention_layernorm: &mut self.post_attention_layernorm,
            gate_proj: self.gate_proj.as_mut(),
            up_proj: self.up_proj.as_mut(),
            down_proj: self.down_proj.as_mut(),
        }
    }
}

impl LlamaWeights<()> {
    /// The tree of a model of `cfg` without adapters, holding nothing.
    pub fn skeleton(cfg: &LlamaConfig) -> Self {
        let linear = || Linear {
            weight: (),
            lora: None,
        };
        let layer = || LayerWeights {
            input_layernorm: (),
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            o_proj: linear(),
            post_attention_layernorm: (),
            gate_proj: linear(),
            up_proj: linear(),
            down_proj: linear(),
        };
        LlamaWeights {
            embed_tokens: (),
            layers: (0..cfg.num_hidden_layers).map(|_| layer()).collect(),
            norm: (),
            lm_head: linear(),
        }
    }
}

impl<P> LlamaWeights<P> {
    /// Calls `f` on every parameter with its id, in the model's parameter order (embedding, each
    /// layer's tensors, final norm, lm_head; a linear's adapter right after its weight), and
    /// returns the tree of the results. This is the one definition of that order.
    pub fn into_map<Q>(self, mut f: impl FnMut(ParamId, P) -> Q) -> LlamaWeights<Q> {
        LlamaWeights {
            embed_tokens: f(ParamId::Embedding, self.embed_tokens),
            layers: self
                .layers
                .into_iter()
                .enumerate()
                .map(|(layer, weights)| weights.into_map(layer, &mut f))
                .collect(),
            norm: f(ParamId::Norm(NormId::Final), self.norm),
            lm_head: self.lm_head.into_map(LinearId::LmHead, &mut f),
        }
    }

    /// The same tree over references.
    pub fn as_ref(&self) -> LlamaWeights<&P> {
        LlamaWeights {
            embed_tokens: &self.embed_tokens,
            layers: self.layers.iter().map(LayerWeights::as_ref).collect(),
            norm: &self.norm,
            lm_head: self.lm_head.as_ref(),
        }
    }

    /// The same tree over mutable references.
    pub fn as_mut(&mut self) -> LlamaWeights<&mut P> {
        LlamaWeights {
            embed_tokens: &mut self.embed_tokens,
            layers: self.layers.iter_mut().map(LayerWeights::as_mut).collect(),
            norm: &mut self.norm,
            lm_head: self.lm_head.as_mut(),
        }
    }

    /// A tree of the same shape holding `f(id, param)` (see [`LlamaWeights::into_map`]).
    pub fn map<'a, Q>(&'a self, f: impl FnMut(ParamId, &'a P) -> Q) -> LlamaWeights<Q> {
        self.as_ref().into_map(f)
    }

    /// Like [`LlamaWeights::map`], stopping at the first error.
    pub fn try_map<'a, Q, E>(
        &'a self,
        mut f: impl FnMut(ParamId, &'a P) -> Result<Q, E>,
    ) -> Result<LlamaWeights<Q>, E> {
        let mut error = None;
        let mapped = self.map(|id, p| match error {
            Some(_) => None,
            None => f(id, p).map_err(|e| error = Some(e)).ok(),
        });
        match error {
            Some(e) => Err(e),
            None => Ok(mapped.into_map(|_, q| q.expect("every parameter was mapped"))),
        }
    }

    /// Calls `f` on every parameter in the model's parameter order.
    pub fn visit<'a>(&'a self, f: impl FnMut(ParamId, &'a P)) {
        self.as_ref().into_map(f);
    }

    /// Calls `f` on every parameter, mutable, in the model's parameter order.
    pub fn visit_mut<'a>(&'a mut self, f: impl FnMut(ParamId, &'a mut P)) {
        self.as_mut().into_map(f);
    }

    /// Every parameter, in the model's parameter order.
    pub fn params(&self) -> Vec<&P> {
        let mut out = Vec::new();
        self.visit(|_, p| out.push(p));
        out
    }

    /// Every parameter, mutable, in the model's parameter order.
    pub fn params_mut(&mut self) -> Vec<&mut P> {
        let mut out = Vec::new();
        self.visit_mut(|_, p| out.push(p));
        out
    }

    pub fn linear(&self, id: LinearId) -> &Linear<P> {
        match id {
            LinearId::Layer(layer, proj) => self.layers[layer].linear(proj),
            LinearId::LmHead => &self.lm_head,
        }
    }

    pub fn linear_mut(&mut self, id: LinearId) -> &mut Linear<P> {
        match id {
            LinearId::Layer(layer, proj) => self.layers[layer].linear_mut(proj),
            LinearId::LmHead => &mut self.lm_head,
        }
    }

    pub fn norm(&self, id: NormId) -> &P {
        match id {
            NormId::Input(layer) => &self.layers[layer].input_layernorm,
            NormId::PostAttention(layer) => &self.layers[layer].post_attention_layernorm,
            NormId::Final => &self.norm,
        }
    }

    pub fn norm_mut(&mut self, id: NormId) -> &mut P {
        match id {
            NormId::Input(layer) => &mut self.layers[layer].input_layernorm,
            NormId::PostAttention(layer) => &mut self.layers[layer].post_attention_layernorm,
            NormId::Final => &mut self.norm,
        }
    }

    /// The parameter `id` names; none for the adapter of a linear that has none.
    pub fn param(&self, id: ParamId) -> Option<&P> {
        match id {
            ParamId::Embedding => Some(&self.embed_tokens),
            ParamId::Norm(norm) => Some(self.norm(norm)),
            ParamId::Weight(lin) => Some(&self.linear(lin).weight),
            ParamId::LoraA(lin) => self.linear(lin).lora.as_ref().map(|l| &l.a),
            ParamId::LoraB(lin) => self.linear(lin).lora.as_ref().map(|l| &l.b),
        }
    }

    pub fn param_mut(&mut self, id: ParamId) -> Option<&mut P> {
        match id {
            ParamId::Embedding => Some(&mut self.embed_tokens),
            ParamId::Norm(norm) => Some(self.norm_mut(norm)),
            ParamId::Weight(lin) => Some(&mut self.linear_mut(lin).weight),
            ParamId::LoraA(lin) => self.linear_mut(lin).lora.as_mut().map(|l| &mut l.a),
            ParamId::LoraB(lin) => self.linear_mut(lin).lora.as_mut().map(|l| &mut l.b),
        }
    }

    /// The largest LoRA rank of any adapted projection (0 without adapters).
    pub fn max_lora_rank(&self) -> usize {
        let adapted = |l: &LayerWeights<P>| Proj::ATTENTION.map(|proj| l.linear(proj).lora_rank());
        self.layers.iter().flat_map(adapted).max().unwrap_or(0)
    }
}

impl<P> LlamaWeights<Option<P>> {
    /// The parameters that are present (for gradients: the trained ones), in parameter order.
    pub fn present(&self) -> Vec<(ParamId, &P)> {
        let mut out = Vec::new();
        self.visit(|id, p| out.extend(p.as_ref().map(|p| (id, p))));
        out
    }

    /// The parameters that are present, mutable, in parameter order.
    pub fn present_mut(&mut self) -> Vec<(ParamId, &mut P)> {
        let mut out = Vec::new();
        self.visit_mut(|id, p| out.extend(p.as_mut().map(|p| (id, p))));
        out
    }
}
