//! The optimizer, schedules, clipping, data windows, the training loop and the perplexity
//! evaluation, each against its definition.

mod common;

use common::{assert_close, tiny_config};
use longlora::backend::Engine;
use longlora::data::{synthetic_corpus, WindowSampler};
use longlora::eval::{perplexity, window_starts};
use longlora::model::{Llama, LlamaWeights, Param, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::rng::Rng;
use longlora::train::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use longlora::train::{train, TrainConfig};

fn p(name: &str, data: Vec<f32>) -> Param<f32> {
    Param {
        name: name.into(),
        shape: vec![data.len()],
        data,
    }
}

#[test]
fn adamw_matches_the_pytorch_update_rule() {
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut w = p("w", vec![0.5, -1.0]);
    let grads = [vec![0.2f32, -0.4], vec![-0.1f32, 0.3]];
    let mut opt = AdamW::new(cfg, &[2]);
    let (mut m, mut v, mut want) = ([0.0f64; 2], [0.0f64; 2], [0.5f64, -1.0]);
    let lr = 0.01;
    for (t, g) in grads.iter().enumerate() {
        let gp = p("g", g.clone());
        opt.update(&mut [(&mut w, &gp)], lr);
        for i in 0..2 {
            let gi = g[i] as f64;
            want[i] *= 1.0 - lr * cfg.weight_decay;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            let mh = m[i] / (1.0 - cfg.beta1.powi(t as i32 + 1));
            let vh = v[i] / (1.0 - cfg.beta2.powi(t as i32 + 1));
            want[i] -= lr * mh / (vh.sqrt() + cfg.eps);
        }
    }
    let got: Vec<f64> = w.data.iter().map(|&x| x as f64).collect();
    assert_close("adamw weights", &got, &want, 1e-6);
}

#[test]
fn schedules_follow_hugging_face() {
    let s = Schedule::Constant;
    assert_eq!(s.lr(1.0, 0, 20, 100), 0.0);
    assert_eq!(s.lr(1.0, 10, 20, 100), 0.5);
    assert_eq!(s.lr(1.0, 20, 20, 100), 1.0);
    assert_eq!(s.lr(1.0, 99, 20, 100), 1.0);
    let c = Schedule::Cosine;
    assert_eq!(c.lr(1.0, 20, 20, 100), 1.0);
    assert!((c.lr(1.0, 60, 20, 100) - 0.5).abs() < 1e-12);
    assert!(c.lr(1.0, 99, 20, 100) < 0.01);
}

#[test]
fn clipping_scales_to_the_max_norm_and_reports_the_old_norm() {
    let mut a = p("a", vec![3.0, 0.0]);
    let mut b = p("b", vec![4.0]);
    let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    let new: f32 = (a.data[0].powi(2) + b.data[0].powi(2)).sqrt();
    assert!((new - 1.0).abs() < 1e-5, "clipped norm {new}");
    let mut c = p("c", vec![0.1]);
    clip_grad_norm(&mut [&mut c], 1.0);
    assert_eq!(c.data[0], 0.1, "a small gradient must not be scaled");
}

#[test]
fn windows_start_every_stride_and_drop_the_overhang() {
    assert_eq!(window_starts(10, 4, 3), vec![0, 3]);
    assert_eq!(window_starts(11, 4, 3), vec![0, 3, 6]);
    assert!(window_starts(4, 4, 1).is_empty());
}

fn tiny_model(seed: u64, lora: bool) -> Llama<f32> {
    let cfg = tiny_config();
    let mut w = LlamaWeights::<Param<f32>>::random(&cfg, 0.3, &mut Rng::new(seed));
    if lora {
        w.add_lora(2, 4.0, &mut Rng::new(seed + 1));
    }
    Llama::new(cfg, w).unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    synthetic_corpus(5, 1, n).iter().map(|&t| t % 11).collect()
}

#[test]
fn perplexity_is_exp_of_the_mean_window_loss() {
    let model = tiny_model(1, false);
    let toks = tokens(40);
    let (context, stride) = (8, 5);
    let got = perplexity(
        &mut Engine::cpu(model.clone()),
        toks.len(),
        |s, n| Ok(toks[s..s + n].to_vec()),
        context,
        stride,
        &AttnMask::dense(),
        |_, _| {},
    )
    .unwrap();
    let starts = window_starts(toks.len(), context, stride);
    let mut sum = 0.0;
    for &s in &starts {
        let mut acts = model
            .forward(&toks[s..s + context], 1, context, &AttnMask::dense())
            .unwrap();
        let targets: Vec<i32> = toks[s + 1..s + context + 1]
            .iter()
            .map(|&t| t as i32)
            .collect();
        sum += model.loss(&mut acts, &targets).unwrap().mean();
    }
    assert_eq!(got.windows, starts.len());
    assert_eq!(got.tokens_scored, starts.len() * context);
    assert!((got.mean_loss - sum / starts.len() as f64).abs() < 1e-9);
    assert!((got.perplexity - got.mean_loss.exp()).abs() < 1e-9);
}

fn run_config(steps: usize, batch: usize, accum: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: batch,
        grad_accum: accum,
        seq_len: 8,
        lr: 1e-2,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        attn: AttnMode::S2,
        group_ratio: 0.5,
        trainable: TrainableSet::LoraEmbedNorm,
        seed: 9,
    }
}

#[test]
fn training_is_deterministic_given_the_seed() {
    let sampler = WindowSampler::new(tokens(300), 8).unwrap();
    let (a, ra) = train(tiny_model(2, true), &sampler, run_config(3, 2, 1), |_| {}).unwrap();
    let (b, rb) = train(tiny_model(2, true), &sampler, run_config(3, 2, 1), |_| {}).unwrap();
    let losses =
        |r: &[longlora::train::StepReport]| r.iter().map(|s| s.loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(&ra), losses(&rb));
    assert_eq!(a.weights, b.weights);
}

#[test]
fn gradient_accumulation_equals_the_larger_batch() {
    let sampler = WindowSampler::new(tokens(300), 8).unwrap();
    let (a, ra) = train(tiny_model(3, true), &sampler, run_config(1, 2, 1), |_| {}).unwrap();
    let (b, rb) = train(tiny_model(3, true), &sampler, run_config(1, 1, 2), |_| {}).unwrap();
    assert!(
        (ra[0].loss - rb[0].loss).abs() < 1e-5,
        "{} vs {}",
        ra[0].loss,
        rb[0].loss
    );
    for (x, y) in a.weights.params().iter().zip(b.weights.params()) {
        let xs: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
        let ys: Vec<f64> = y.data.iter().map(|&v| v as f64).collect();
        assert_close(&x.name, &xs, &ys, 1e-5);
    }
}

#[test]
fn training_lowers_the_loss_and_touches_only_the_trainable_set() {
    let sampler = WindowSampler::new(tokens(400), 8).unwrap();
    let model = tiny_model(4, true);
    let before = model.weights.clone();
    let (model, reports) = train(model, &sampler, run_config(60, 4, 1), |_| {}).unwrap();
    let first: f64 = reports[..5].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    let last: f64 = reports[55..].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    assert!(last < first * 0.9, "loss did not fall: {first} -> {last}");
    before.visit(|id, old| {
        let changed = old.data != model.weights.param(id).unwrap().data;
        assert_eq!(
            changed,
            TrainableSet::LoraEmbedNorm.trains(id),
            "{}",
            old.name
        );
    });
}

#[test]
fn a_context_the_group_ratio_cannot_split_is_rejected() {
    let model = tiny_model(5, true);
    let mut cfg = run_config(1, 1, 1);
    cfg.seq_len = 10;
    cfg.group_ratio = 0.3;
    let err = longlora::train::Trainer::new(model, cfg)
        .err()
        .expect("odd group must fail");
    assert!(err.to_string().contains("group"), "{err}");
}

#[test]
fn data_shorter_than_one_window_is_an_error() {
    let err = WindowSampler::new(vec![1, 2, 3], 8).unwrap_err();
    assert!(err.to_string().contains("3 tokens"), "{err}");
}
