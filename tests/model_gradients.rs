//! The whole decoder's explicit backward against finite differences (f64), for each trainable set,
//! and the properties of a fresh LoRA adapter.

mod common;

use common::{assert_close, numeric_grad, tiny_config};
use longlora::model::{Llama, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::ops::cross_entropy::IGNORE_INDEX;
use longlora::rng::Rng;

const BATCH: usize = 2;
const SEQ: usize = 6;

fn tokens_and_targets() -> (Vec<u32>, Vec<i32>) {
    let tokens: Vec<u32> = (0..BATCH * SEQ).map(|i| (i * 5 % 11) as u32).collect();
    let mut targets: Vec<i32> = (0..BATCH * SEQ)
        .map(|i| ((i * 3 + 1) % 11) as i32)
        .collect();
    targets[2] = IGNORE_INDEX;
    targets[SEQ + 4] = IGNORE_INDEX;
    (tokens, targets)
}

/// A random model whose LoRA B matrices are non-zero, so every adapter gradient is exercised.
fn random_model(seed: u64, with_lora: bool) -> Llama<f64> {
    let cfg = tiny_config();
    let mut rng = Rng::new(seed);
    let mut w = LlamaWeights::<Param<f64>>::random(&cfg, 0.5, &mut rng);
    for p in w.params_mut() {
        if p.name.ends_with("norm.weight") {
            p.data
                .iter_mut()
                .for_each(|v| *v = 1.0 + 0.3 * rng.normal());
        }
    }
    if with_lora {
        w.add_lora(2, 4.0, &mut rng);
        for p in w
            .params_mut()
            .into_iter()
            .filter(|p| p.name.contains("lora_B"))
        {
            p.data.iter_mut().for_each(|v| *v = 0.5 * rng.normal());
        }
    }
    Llama::new(cfg, w).unwrap()
}

fn mean_loss(model: &Llama<f64>, mask: &AttnMask) -> f64 {
    let (tokens, targets) = tokens_and_targets();
    let mut acts = model.forward(&tokens, BATCH, SEQ, mask).unwrap();
    model.loss(&mut acts, &targets).unwrap().mean()
}

fn check_model_gradients(set: TrainableSet, mask: AttnMask) {
    let model = random_model(11, set.uses_lora());
    let (tokens, targets) = tokens_and_targets();
    let mut acts = model.forward(&tokens, BATCH, SEQ, &mask).unwrap();
    let count = model.loss(&mut acts, &targets).unwrap().scored;
    let mut grads = set.grads_for(&model.weights);
    model
        .backward(&mut acts, &targets, 1.0 / count as f64, &mut grads)
        .unwrap();

    let mut checked = 0;
    grads.visit(|id, g| {
        let Some(g) = g else {
            assert!(
                !set.trains(id),
                "{set}: trainable {} has no gradient",
                id.hf_name()
            );
            return;
        };
        assert!(set.trains(id), "{set}: frozen {} has a gradient", g.name);
        let base = model.weights.param(id).unwrap().data.clone();
        let numeric = numeric_grad(&base, |v| {
            let mut m = model.clone();
            m.weights.param_mut(id).unwrap().data.copy_from_slice(v);
            mean_loss(&m, &mask)
        });
        assert_close(&format!("{set} {}", g.name), &g.data, &numeric, 1e-6);
        checked += 1;
    });
    assert!(checked > 0, "{set}: no parameter was checked");
}

#[test]
fn model_backward_matches_finite_differences_for_lora() {
    check_model_gradients(TrainableSet::Lora, AttnMask::new(AttnMode::S2, 4).unwrap());
}

#[test]
fn model_backward_matches_finite_differences_for_lora_embed_norm() {
    check_model_gradients(
        TrainableSet::LoraEmbedNorm,
        AttnMask::new(AttnMode::S2, 4).unwrap(),
    );
}

#[test]
fn model_backward_matches_finite_differences_for_full() {
    check_model_gradients(TrainableSet::Full, AttnMask::dense());
}

#[test]
fn model_backward_matches_finite_differences_with_s2_roll() {
    check_model_gradients(
        TrainableSet::LoraEmbedNorm,
        AttnMask::new(AttnMode::S2Roll, 4).unwrap(),
    );
}

#[test]
fn model_backward_matches_finite_differences_with_s2_noshift() {
    check_model_gradients(
        TrainableSet::LoraEmbedNorm,
        AttnMask::new(AttnMode::S2NoShift, 4).unwrap(),
    );
}

#[test]
fn fresh_lora_adapter_leaves_the_output_unchanged() {
    let base = random_model(12, false);
    let mut adapted = base.clone();
    adapted.weights.add_lora(8, 16.0, &mut Rng::new(3));
    let (tokens, _) = tokens_and_targets();
    let mask = AttnMask::new(AttnMode::S2, 4).unwrap();
    let a = base.forward(&tokens, BATCH, SEQ, &mask).unwrap();
    let b = adapted.forward(&tokens, BATCH, SEQ, &mask).unwrap();
    assert_eq!(
        a.logits().unwrap(),
        b.logits().unwrap(),
        "a fresh adapter changed the logits"
    );
    let lora = adapted.weights.layers[0].q_proj.lora.as_ref().unwrap();
    assert!(
        lora.b.data.iter().all(|&v| v == 0.0),
        "LoRA B must start at zero"
    );
    let bound = 1.0 / (tiny_config().hidden_size as f64).sqrt();
    assert!(lora.a.data.iter().all(|v| v.abs() <= bound) && lora.a.data.iter().any(|&v| v != 0.0));
}

#[test]
fn out_of_vocabulary_tokens_are_an_error_not_a_panic() {
    let model = random_model(13, false);
    let Err(err) = model.forward(&[1, 2, 99], 1, 3, &AttnMask::dense()) else {
        panic!("token 99 was accepted with a vocabulary of 11");
    };
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn weights_that_do_not_match_the_config_are_rejected() {
    let cfg = tiny_config();
    let mut w = LlamaWeights::<Param<f64>>::zeros(&cfg);
    w.layers.pop();
    let err = Llama::new(cfg.clone(), w).expect_err("a missing layer must be rejected");
    assert!(err.to_string().contains("layers"), "{err}");
    let mut w = LlamaWeights::<Param<f64>>::zeros(&cfg);
    w.layers[1].k_proj.weight.shape = vec![8, 8];
    let err = Llama::new(cfg, w).expect_err("a wrong shape must be rejected");
    assert!(
        err.to_string()
            .contains("model.layers.1.self_attn.k_proj.weight"),
        "{err}"
    );
}
