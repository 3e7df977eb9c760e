//! Shared helpers for the test binaries: random inputs, finite differences, and comparisons that
//! say which tensor and which index failed.
#![allow(dead_code)]

pub mod device;
pub mod kernel_model;

use longlora::rng::Rng;

pub mod probe;

/// `n` values uniform in [-scale, scale) (never all zero).
pub fn random_vec(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.uniform_range(-scale, scale)).collect()
}

/// Central-difference gradient of `f` at `x`, step 1e-5 relative to each element's magnitude.
pub fn numeric_grad(x: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            xp[i] = x[i] + h;
            let fp = f(&xp);
            xp[i] = x[i] - h;
            let fm = f(&xp);
            xp[i] = x[i];
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// ‖got − want‖ / ‖want‖ (absolute when `want` is zero); NaN anywhere gives infinity.
pub fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    if got.iter().chain(want).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| b * b).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// Asserts `rel_error(got, want) <= tol`, naming the tensor and its worst element.
pub fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    let err = rel_error(got, want);
    if err.is_nan() || err > tol {
        let (worst, _) = got
            .iter()
            .zip(want)
            .enumerate()
            .map(|(i, (a, b))| {
                (
                    i,
                    if a.is_nan() {
                        f64::INFINITY
                    } else {
                        (a - b).abs()
                    },
                )
            })
            .fold((0, -1.0), |acc, x| if x.1 > acc.1 { x } else { acc });
        panic!(
            "{name}: relative error {err:.3e} > {tol:.1e}; worst at index {worst}: got {}, expected {} (len {})",
            got[worst],
            want[worst],
            got.len()
        );
    }
}

/// Sum of `out ∘ weights`: the scalar whose gradient w.r.t. `out` is `weights`.
pub fn dot(out: &[f64], weights: &[f64]) -> f64 {
    out.iter().zip(weights).map(|(a, b)| a * b).sum()
}

/// A tiny Llama config for whole-model checks: GQA, two layers, a rope interpolation factor.
pub fn tiny_config() -> longlora::model::LlamaConfig {
    longlora::model::LlamaConfig {
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 4,
        rope_scaling_factor: 2.0,
        bos_token_id: None,
        eos_token_id: None,
    }
}

/// A short run of LoRA-only training at sequence length 4 with a constant schedule, for tests of
/// what surrounds training (checkpoints, files) rather than of training itself.
pub fn short_run_config() -> longlora::train::TrainConfig {
    longlora::train::TrainConfig {
        steps: 4,
        batch_size: 1,
        grad_accum: 1,
        seq_len: 4,
        lr: 1e-2,
        warmup_steps: 0,
        schedule: longlora::train::optim::Schedule::Constant,
        adamw: longlora::train::optim::AdamWConfig::default(),
        max_grad_norm: 1.0,
        attn: longlora::ops::attention::AttnMode::Dense,
        group_ratio: 1.0,
        trainable: longlora::model::TrainableSet::Lora,
        seed: 3,
    }
}
