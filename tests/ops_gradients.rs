//! Every CPU op's backward against central finite differences in f64 (DESIGN §4: ≤ 1e-6 relative
//! per tensor), on random inputs, with proptest over shapes.

mod common;

use common::{assert_close, dot, numeric_grad, random_vec};
use longlora::model::{Linear, Lora, Param};
use longlora::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward, IGNORE_INDEX};
use longlora::ops::embedding::{embedding_backward, embedding_forward};
use longlora::ops::linear::{linear_backward, linear_forward};
use longlora::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use longlora::ops::rope::{rope_backward, rope_forward, RopeTable};
use longlora::ops::swiglu::{swiglu_backward, swiglu_forward};
use longlora::rng::Rng;
use proptest::prelude::*;

const TOL: f64 = 1e-6;

fn param(name: &str, shape: Vec<usize>, data: Vec<f64>) -> Param<f64> {
    Param {
        name: name.into(),
        shape,
        data,
    }
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    let (vocab, dim) = (7, 5);
    let tokens = [3u32, 0, 3, 6, 1, 3];
    let table = random_vec(&mut rng, vocab * dim, 1.0);
    let r = random_vec(&mut rng, tokens.len() * dim, 1.0);
    let f = |t: &[f64]| {
        let mut out = vec![f64::NAN; tokens.len() * dim];
        embedding_forward(&mut out, &tokens, t, dim);
        dot(&out, &r)
    };
    let mut dtable = vec![0.0; vocab * dim];
    embedding_backward(&mut dtable, &r, &tokens, dim);
    assert_close("dtable", &dtable, &numeric_grad(&table, f), TOL);
}

fn check_rmsnorm(rows: usize, dim: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = random_vec(&mut rng, rows * dim, 2.0);
    let w = random_vec(&mut rng, dim, 1.5);
    let r = random_vec(&mut rng, rows * dim, 1.0);
    let eps = 1e-5;
    let run = |x: &[f64], w: &[f64]| {
        let mut out = vec![f64::NAN; rows * dim];
        let mut rstd = vec![f64::NAN; rows];
        rmsnorm_forward(&mut out, &mut rstd, x, w, dim, eps);
        (dot(&out, &r), rstd)
    };
    let (_, rstd) = run(&x, &w);
    let (mut dx, mut dw) = (vec![0.0; rows * dim], vec![0.0; dim]);
    rmsnorm_backward(&mut dx, Some(&mut dw), &r, &x, &w, &rstd, dim);
    assert_close("rmsnorm dx", &dx, &numeric_grad(&x, |x| run(x, &w).0), TOL);
    assert_close(
        "rmsnorm dweight",
        &dw,
        &numeric_grad(&w, |w| run(&x, w).0),
        TOL,
    );
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    check_rmsnorm(4, 9, 2);
    // Wider than one parallel task's columns of the weight gradient, the last task short.
    check_rmsnorm(3, 150, 2);
}

#[test]
fn rmsnorm_matches_its_definition() {
    let x = [3.0f64, -4.0];
    let (mut out, mut rstd) = ([0.0; 2], [0.0; 1]);
    rmsnorm_forward(&mut out, &mut rstd, &x, &[2.0, 1.0], 2, 0.0);
    let rms = (12.5f64).sqrt();
    assert_close("rmsnorm out", &out, &[6.0 / rms, -4.0 / rms], 1e-15);
}

fn lora_linear(rng: &mut Rng, n_in: usize, n_out: usize, rank: usize) -> Linear<Param<f64>> {
    Linear {
        weight: param("w", vec![n_out, n_in], random_vec(rng, n_out * n_in, 0.5)),
        lora: (rank > 0).then(|| Lora {
            a: param("a", vec![rank, n_in], random_vec(rng, rank * n_in, 0.5)),
            b: param("b", vec![n_out, rank], random_vec(rng, n_out * rank, 0.5)),
            rank,
            alpha: 16.0,
        }),
    }
}

fn linear_loss(lin: &Linear<Param<f64>>, x: &[f64], r: &[f64], m: usize) -> (f64, Vec<f64>) {
    let rank = lin.lora.as_ref().map_or(0, |l| l.rank);
    let mut y = vec![f64::NAN; m * lin.out_features()];
    let mut xa = vec![f64::NAN; m * rank];
    linear_forward(&mut y, &mut xa, x, lin, m, false);
    (dot(&y, r), xa)
}

/// Zero gradients for every tensor of `lin`.
fn zero_grads(lin: &Linear<Param<f64>>) -> Linear<Option<Param<f64>>> {
    let zeros = |p: &Param<f64>| Some(param(&p.name, p.shape.clone(), vec![0.0; p.data.len()]));
    Linear {
        weight: zeros(&lin.weight),
        lora: lin.lora.as_ref().map(|l| Lora {
            a: zeros(&l.a),
            b: zeros(&l.b),
            rank: l.rank,
            alpha: l.alpha,
        }),
    }
}

fn check_linear(m: usize, n_in: usize, n_out: usize, rank: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let lin = lora_linear(&mut rng, n_in, n_out, rank);
    let x = random_vec(&mut rng, m * n_in, 1.0);
    let r = random_vec(&mut rng, m * n_out, 1.0);
    let (_, xa) = linear_loss(&lin, &x, &r, m);
    let mut grad = zero_grads(&lin);
    // Poisoned: without accumulating, every element must be written.
    let mut dx = vec![f64::NAN; m * n_in];
    linear_backward(Some(&mut dx), &mut grad, &r, &x, &lin, &xa, m, false);

    assert_close(
        "linear dx",
        &dx,
        &numeric_grad(&x, |x| linear_loss(&lin, x, &r, m).0),
        TOL,
    );
    let dw = numeric_grad(&lin.weight.data, |w| {
        let mut l = lin.clone();
        l.weight.data = w.to_vec();
        linear_loss(&l, &x, &r, m).0
    });
    assert_close("linear dW", &grad.weight.as_ref().unwrap().data, &dw, TOL);
    if let (Some(lora), Some(g)) = (&lin.lora, &grad.lora) {
        let da = numeric_grad(&lora.a.data, |a| {
            let mut l = lin.clone();
            l.lora.as_mut().unwrap().a.data = a.to_vec();
            linear_loss(&l, &x, &r, m).0
        });
        let db = numeric_grad(&lora.b.data, |b| {
            let mut l = lin.clone();
            l.lora.as_mut().unwrap().b.data = b.to_vec();
            linear_loss(&l, &x, &r, m).0
        });
        assert_close("lora dA", &g.a.as_ref().unwrap().data, &da, TOL);
        assert_close("lora dB", &g.b.as_ref().unwrap().data, &db, TOL);
    }
}

#[test]
fn linear_forward_with_accumulate_adds_the_product_to_its_output() {
    let mut rng = Rng::new(23);
    let (m, n_in, n_out) = (5, 7, 6);
    let lin = lora_linear(&mut rng, n_in, n_out, 3);
    let x = random_vec(&mut rng, m * n_in, 1.0);
    let start = random_vec(&mut rng, m * n_out, 1.0);
    let mut product = vec![f64::NAN; m * n_out];
    linear_forward(&mut product, &mut vec![f64::NAN; m * 3], &x, &lin, m, false);
    let mut sum = start.clone();
    linear_forward(&mut sum, &mut vec![f64::NAN; m * 3], &x, &lin, m, true);
    let want: Vec<f64> = start.iter().zip(&product).map(|(a, b)| a + b).collect();
    assert_close("accumulated linear output", &sum, &want, 1e-14);
}

#[test]
fn lora_linear_backward_matches_finite_differences() {
    check_linear(5, 6, 7, 3, 3);
}

#[test]
fn plain_linear_backward_matches_finite_differences() {
    check_linear(4, 5, 3, 0, 4);
}

#[test]
fn frozen_weight_gets_no_gradient_buffer_written() {
    let mut rng = Rng::new(5);
    let lin = lora_linear(&mut rng, 4, 3, 2);
    let x = random_vec(&mut rng, 8, 1.0);
    let r = random_vec(&mut rng, 6, 1.0);
    let (_, xa) = linear_loss(&lin, &x, &r, 2);
    let mut grad = zero_grads(&lin);
    grad.weight = None;
    linear_backward(None, &mut grad, &r, &x, &lin, &xa, 2, false);
    assert!(grad.weight.is_none());
    let da = grad.lora.unwrap().a.unwrap();
    assert!(da.data.iter().any(|&v| v != 0.0));
}

fn check_rope(rows: usize, heads: usize, head_dim: usize, factor: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    let table = RopeTable::<f64>::new(rows + 3, head_dim, 10000.0, factor);
    let positions: Vec<u32> = (0..rows).map(|i| (i * 7 % (rows + 3)) as u32).collect();
    let x = random_vec(&mut rng, rows * heads * head_dim, 1.0);
    let r = random_vec(&mut rng, x.len(), 1.0);
    let f = |x: &[f64]| {
        let mut y = x.to_vec();
        rope_forward(&mut y, &table, &positions, heads);
        dot(&y, &r)
    };
    let mut dx = r.clone();
    rope_backward(&mut dx, &table, &positions, heads);
    assert_close("rope dx", &dx, &numeric_grad(&x, f), TOL);
}

#[test]
fn rope_backward_matches_finite_differences() {
    check_rope(6, 3, 8, 4.0, 6);
    // More rows than one parallel task's, the last task short.
    check_rope(70, 1, 4, 2.0, 7);
}

#[test]
fn rope_matches_hugging_face_rotate_half() {
    // HF: q·cos + rotate_half(q)·sin with cos/sin of cat(freqs, freqs), positions divided by the factor.
    let (d, theta, factor, pos) = (4usize, 10000.0f64, 2.0, 5u32);
    let table = RopeTable::<f64>::new(8, d, theta, factor);
    let x = [0.3, -1.2, 0.7, 2.0];
    let mut y = x;
    rope_forward(&mut y, &table, &[pos], 1);
    let ang: Vec<f64> = (0..d / 2)
        .map(|k| pos as f64 / factor / theta.powf((2 * k) as f64 / d as f64))
        .collect();
    let rot = [-x[2], -x[3], x[0], x[1]];
    let want: Vec<f64> = (0..d)
        .map(|i| x[i] * ang[i % 2].cos() + rot[i] * ang[i % 2].sin())
        .collect();
    assert_close("rope vs HF", &y, &want, 1e-15);
}

#[test]
fn swiglu_mlp_backward_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let (m, d, ff) = (3, 4, 6);
    let gate_p = lora_linear(&mut rng, d, ff, 0);
    let up_p = lora_linear(&mut rng, d, ff, 0);
    let down_p = lora_linear(&mut rng, ff, d, 0);
    let x = random_vec(&mut rng, m * d, 1.0);
    let r = random_vec(&mut rng, m * d, 1.0);
    let mlp = |x: &[f64]| {
        let (mut g, mut u, mut a, mut y) = (
            vec![0.0; m * ff],
            vec![0.0; m * ff],
            vec![0.0; m * ff],
            vec![0.0; m * d],
        );
        linear_forward(&mut g, &mut [], x, &gate_p, m, false);
        linear_forward(&mut u, &mut [], x, &up_p, m, false);
        swiglu_forward(&mut a, &g, &u);
        linear_forward(&mut y, &mut [], &a, &down_p, m, false);
        (dot(&y, &r), g, u, a)
    };
    let (_, g, u, a) = mlp(&x);
    let frozen = |_: &Linear<Param<f64>>| Linear {
        weight: None,
        lora: None,
    };
    // As the decoder runs it: the first op to produce a gradient writes it, the next one adds.
    let mut da = vec![f64::NAN; m * ff];
    linear_backward(
        Some(&mut da),
        &mut frozen(&down_p),
        &r,
        &a,
        &down_p,
        &[],
        m,
        false,
    );
    let (mut dg, mut du) = (vec![f64::NAN; m * ff], vec![f64::NAN; m * ff]);
    swiglu_backward(&mut dg, &mut du, &da, &g, &u, false);
    let mut dx = vec![f64::NAN; m * d];
    linear_backward(
        Some(&mut dx),
        &mut frozen(&gate_p),
        &dg,
        &x,
        &gate_p,
        &[],
        m,
        false,
    );
    linear_backward(
        Some(&mut dx),
        &mut frozen(&up_p),
        &du,
        &x,
        &up_p,
        &[],
        m,
        true,
    );
    assert_close("mlp dx", &dx, &numeric_grad(&x, |x| mlp(x).0), TOL);
}

/// With `accumulate`, linear and SwiGLU backward add to what the gradient tensors held: the values
/// they write into poisoned tensors without it, plus the old ones.
#[test]
fn input_gradients_accumulate_onto_what_the_tensors_held() {
    let mut rng = Rng::new(9);
    let (m, n_in, n_out) = (3, 5, 4);
    let lin = lora_linear(&mut rng, n_in, n_out, 2);
    let x = random_vec(&mut rng, m * n_in, 1.0);
    let r = random_vec(&mut rng, m * n_out, 1.0);
    let (_, xa) = linear_loss(&lin, &x, &r, m);
    let held = random_vec(&mut rng, m * n_in, 1.0);
    let mut written = vec![f64::NAN; m * n_in];
    linear_backward(
        Some(&mut written),
        &mut zero_grads(&lin),
        &r,
        &x,
        &lin,
        &xa,
        m,
        false,
    );
    let mut added = held.clone();
    linear_backward(
        Some(&mut added),
        &mut zero_grads(&lin),
        &r,
        &x,
        &lin,
        &xa,
        m,
        true,
    );
    let sum = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
    assert_close(
        "linear dx accumulated",
        &added,
        &sum(&held, &written),
        1e-12,
    );

    let (gate, up, dout) = (
        random_vec(&mut rng, 7, 3.0),
        random_vec(&mut rng, 7, 3.0),
        random_vec(&mut rng, 7, 1.0),
    );
    let (held_g, held_u) = (random_vec(&mut rng, 7, 1.0), random_vec(&mut rng, 7, 1.0));
    let (mut dg, mut du) = (vec![f64::NAN; 7], vec![f64::NAN; 7]);
    swiglu_backward(&mut dg, &mut du, &dout, &gate, &up, false);
    let (mut dg_added, mut du_added) = (held_g.clone(), held_u.clone());
    swiglu_backward(&mut dg_added, &mut du_added, &dout, &gate, &up, true);
    assert_close(
        "swiglu dgate accumulated",
        &dg_added,
        &sum(&held_g, &dg),
        1e-12,
    );
    assert_close(
        "swiglu dup accumulated",
        &du_added,
        &sum(&held_u, &du),
        1e-12,
    );
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let mut rng = Rng::new(8);
    let n = 11;
    let gate = random_vec(&mut rng, n, 3.0);
    let up = random_vec(&mut rng, n, 3.0);
    let r = random_vec(&mut rng, n, 1.0);
    let f = |g: &[f64], u: &[f64]| {
        let mut out = vec![f64::NAN; n];
        swiglu_forward(&mut out, g, u);
        dot(&out, &r)
    };
    let (mut dg, mut du) = (vec![f64::NAN; n], vec![f64::NAN; n]);
    swiglu_backward(&mut dg, &mut du, &r, &gate, &up, false);
    assert_close(
        "swiglu dgate",
        &dg,
        &numeric_grad(&gate, |g| f(g, &up)),
        TOL,
    );
    assert_close("swiglu dup", &du, &numeric_grad(&up, |u| f(&gate, u)), TOL);
}

#[test]
fn cross_entropy_backward_matches_finite_differences_and_ignores_masked_labels() {
    let mut rng = Rng::new(9);
    let vocab = 6;
    let targets = [2, IGNORE_INDEX, 5, 0, IGNORE_INDEX];
    let logits = random_vec(&mut rng, targets.len() * vocab, 3.0);
    let f = |l: &[f64]| {
        let mut lse = vec![0.0; targets.len()];
        cross_entropy_forward(&mut lse, l, &targets, vocab) / 3.0
    };
    let mut lse = vec![0.0; targets.len()];
    cross_entropy_forward(&mut lse, &logits, &targets, vocab);
    let mut d = vec![0.0; logits.len()];
    cross_entropy_backward(&mut d, &logits, &targets, &lse, vocab, 1.0 / 3.0);
    assert_close("dlogits", &d, &numeric_grad(&logits, f), TOL);
    assert!(
        d[vocab..2 * vocab].iter().all(|&v| v == 0.0),
        "ignored row got a gradient"
    );
    // Loss of one row equals −log softmax at the target.
    let row = &logits[0..vocab];
    let z: f64 = row.iter().map(|v| v.exp()).sum();
    let mut lse1 = vec![0.0; 1];
    let one = cross_entropy_forward(&mut lse1, row, &[2], vocab);
    assert_close("ce row", &[one], &[-(row[2].exp() / z).ln()], 1e-14);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    // dim ≥ 2: with one element RMSNorm is w·sign(x) and its input gradient is O(eps), below the
    // finite differences' own rounding error relative to it.
    #[test]
    fn rmsnorm_gradients_hold_over_shapes(rows in 1usize..6, dim in 2usize..12, seed in 0u64..1000) {
        check_rmsnorm(rows, dim, seed);
    }

    #[test]
    fn linear_gradients_hold_over_shapes(m in 1usize..5, n_in in 1usize..7, n_out in 1usize..7, rank in 0usize..4, seed in 0u64..1000) {
        check_linear(m, n_in, n_out, rank, seed);
    }

    #[test]
    fn rope_gradients_hold_over_shapes(rows in 1usize..6, heads in 1usize..3, half in 1usize..5, seed in 0u64..1000) {
        check_rope(rows, heads, 2 * half, 1.0 + (seed % 4) as f64, seed);
    }
}
