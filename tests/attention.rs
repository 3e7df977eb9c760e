//! The tiled CPU attention against references that materialise the whole N×N score matrix: the
//! mask predicate, DESIGN §2's formula written out independently, the paper's roll-attend-unroll
//! construction, and central finite differences.

mod common;

use common::{assert_close, dot, numeric_grad, random_vec};
use longlora::ops::attention::{
    attention_backward, attention_forward, AttnMask, AttnMode, AttnShape, AttnStats,
};
use longlora::rng::Rng;
use proptest::prelude::*;

const MODES: [AttnMode; 4] = AttnMode::ALL;

fn shape(
    batch: usize,
    seq_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> AttnShape {
    AttnShape {
        batch,
        seq_len,
        n_heads,
        n_kv_heads,
        head_dim,
    }
}

fn mask(mode: AttnMode, group_size: usize) -> AttnMask {
    AttnMask::new(mode, group_size).unwrap()
}

fn q_len(s: &AttnShape) -> usize {
    s.batch * s.seq_len * s.n_heads * s.head_dim
}

fn kv_len(s: &AttnShape) -> usize {
    s.batch * s.seq_len * s.n_kv_heads * s.head_dim
}

/// Random q, k, v and an output gradient, never zero.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    dout: Vec<f64>,
}

fn inputs(seed: u64, s: &AttnShape) -> Inputs {
    let mut rng = Rng::new(seed);
    Inputs {
        q: random_vec(&mut rng, q_len(s), 1.5),
        k: random_vec(&mut rng, kv_len(s), 1.5),
        v: random_vec(&mut rng, kv_len(s), 1.0),
        dout: random_vec(&mut rng, q_len(s), 1.0),
    }
}

/// Forward outputs and gradients, from the tiled code or a reference.
struct Outputs {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

impl Outputs {
    fn assert_close_to(&self, want: &Outputs, what: &str, tol: f64) {
        assert_close(&format!("{what}: out"), &self.out, &want.out, tol);
        assert_close(&format!("{what}: lse"), &self.lse, &want.lse, tol);
        assert_close(&format!("{what}: dq"), &self.dq, &want.dq, tol);
        assert_close(&format!("{what}: dk"), &self.dk, &want.dk, tol);
        assert_close(&format!("{what}: dv"), &self.dv, &want.dv, tol);
    }
}

/// The tiled forward with NaN-poisoned outputs.
fn tiled_forward(s: &AttnShape, m: &AttnMask, x: &Inputs) -> (Vec<f64>, Vec<f64>, AttnStats) {
    let mut out = vec![f64::NAN; q_len(s)];
    let mut lse = vec![f64::NAN; s.batch * s.n_heads * s.seq_len];
    let stats = attention_forward(&mut out, &mut lse, &x.q, &x.k, &x.v, s, m);
    (out, lse, stats)
}

fn tiled(s: &AttnShape, m: &AttnMask, x: &Inputs) -> Outputs {
    let (out, lse, _) = tiled_forward(s, m, x);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; q_len(s)],
        vec![0.0; kv_len(s)],
        vec![0.0; kv_len(s)],
    );
    attention_backward(
        &mut dq, &mut dk, &mut dv, &x.dout, &x.q, &x.k, &x.v, &out, &lse, s, m,
    );
    Outputs {
        out,
        lse,
        dq,
        dk,
        dv,
    }
}

/// `[batch, seq, heads, d]` element offset.
fn at(b: usize, i: usize, h: usize, heads: usize, s: &AttnShape) -> usize {
    ((b * s.seq_len + i) * heads + h) * s.head_dim
}

fn row_dot(a: &[f64], ai: usize, b: &[f64], bi: usize, d: usize) -> f64 {
    (0..d).map(|c| a[ai + c] * b[bi + c]).sum()
}

/// Softmax(QKᵀ·scale) with `allow(head, i, j)` as a full N×N matrix per (batch, head), times V,
/// and the backward written out from the softmax Jacobian (its D is Σ_j P∘dP, not dO·O).
fn naive(s: &AttnShape, x: &Inputs, allow: impl Fn(usize, usize, usize) -> bool) -> Outputs {
    let (n, d, hs, hkv) = (s.seq_len, s.head_dim, s.n_heads, s.n_kv_heads);
    let scale = 1.0 / (d as f64).sqrt();
    let mut o = Outputs {
        out: vec![0.0; q_len(s)],
        lse: vec![0.0; s.batch * hs * n],
        dq: vec![0.0; q_len(s)],
        dk: vec![0.0; kv_len(s)],
        dv: vec![0.0; kv_len(s)],
    };
    for b in 0..s.batch {
        for h in 0..hs {
            let kh = h / (hs / hkv);
            let (qa, ka) = (|i| at(b, i, h, hs, s), |j| at(b, j, kh, hkv, s));
            let probs: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    let sc: Vec<f64> = (0..n)
                        .map(|j| match allow(h, i, j) {
                            true => scale * row_dot(&x.q, qa(i), &x.k, ka(j), d),
                            false => f64::NEG_INFINITY,
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let l: f64 = sc.iter().map(|v| (v - mx).exp()).sum();
                    o.lse[(b * hs + h) * n + i] = mx + l.ln();
                    sc.iter().map(|v| (v - mx).exp() / l).collect()
                })
                .collect();
            for (i, p) in probs.iter().enumerate() {
                let dp: Vec<f64> = (0..n)
                    .map(|j| row_dot(&x.dout, qa(i), &x.v, ka(j), d))
                    .collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (j, (&pij, &dpij)) in p.iter().zip(&dp).enumerate() {
                    let ds = pij * (dpij - delta);
                    for c in 0..d {
                        o.out[qa(i) + c] += pij * x.v[ka(j) + c];
                        o.dq[qa(i) + c] += scale * ds * x.k[ka(j) + c];
                        o.dk[ka(j) + c] += scale * ds * x.q[qa(i) + c];
                        o.dv[ka(j) + c] += pij * x.dout[qa(i) + c];
                    }
                }
            }
        }
    }
    o
}

fn naive_with_mask(s: &AttnShape, m: &AttnMask, x: &Inputs) -> Outputs {
    naive(s, x, |h, i, j| m.allows(h, s.n_heads, i, j, s.seq_len))
}

/// DESIGN §2 written out directly (not through `AttnMask`), including the rule that a
/// group covering the whole sequence means dense attention.
fn design_s2_allows(h: usize, n_heads: usize, g: usize, n: usize, i: usize, j: usize) -> bool {
    let o = if h < n_heads / 2 || g >= n { 0 } else { g / 2 };
    j <= i && (g >= n || (i + o) / g == (j + o) / g)
}

/// The paper's Algorithm 1: roll the shifted heads' q, k, v by -G/2 (torch.roll semantics:
/// `rolled[p] = x[(p + G/2) mod N]`), plain causal attention inside groups of G, roll back.
/// K and V are expanded per query head here, which the tiled code never does.
fn roll_attend_unroll(s: &AttnShape, g: usize, x: &Inputs) -> Outputs {
    let (n, d, hs, hkv) = (s.seq_len, s.head_dim, s.n_heads, s.n_kv_heads);
    let src = |h: usize, p: usize| if h >= hs / 2 { (p + g / 2) % n } else { p };
    let e = shape(s.batch, n, hs, hs, d);
    let mut r = Inputs {
        q: vec![0.0; q_len(s)],
        k: vec![0.0; q_len(s)],
        v: vec![0.0; q_len(s)],
        dout: vec![0.0; q_len(s)],
    };
    for (b, p, h) in positions(s) {
        let (to, from, kv) = (
            at(b, p, h, hs, s),
            at(b, src(h, p), h, hs, s),
            at(b, src(h, p), h / (hs / hkv), hkv, s),
        );
        r.q[to..to + d].copy_from_slice(&x.q[from..from + d]);
        r.dout[to..to + d].copy_from_slice(&x.dout[from..from + d]);
        r.k[to..to + d].copy_from_slice(&x.k[kv..kv + d]);
        r.v[to..to + d].copy_from_slice(&x.v[kv..kv + d]);
    }
    let ro = naive(&e, &r, |_, i, j| j <= i && i / g == j / g);
    let mut o = Outputs {
        out: vec![0.0; q_len(s)],
        lse: vec![0.0; s.batch * hs * n],
        dq: vec![0.0; q_len(s)],
        dk: vec![0.0; kv_len(s)],
        dv: vec![0.0; kv_len(s)],
    };
    for (b, p, h) in positions(s) {
        let (from, to, kv) = (
            at(b, p, h, hs, s),
            at(b, src(h, p), h, hs, s),
            at(b, src(h, p), h / (hs / hkv), hkv, s),
        );
        o.out[to..to + d].copy_from_slice(&ro.out[from..from + d]);
        o.dq[to..to + d].copy_from_slice(&ro.dq[from..from + d]);
        o.lse[(b * hs + h) * n + src(h, p)] = ro.lse[(b * hs + h) * n + p];
        for c in 0..d {
            o.dk[kv + c] += ro.dk[from + c];
            o.dv[kv + c] += ro.dv[from + c];
        }
    }
    o
}

fn positions(s: &AttnShape) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    (0..s.batch)
        .flat_map(move |b| (0..s.seq_len).flat_map(move |p| (0..s.n_heads).map(move |h| (b, p, h))))
}

#[test]
fn tiled_attention_matches_naive_reference() {
    for n in [1, 5, 17, 64, 100, 130] {
        for (h, hkv) in [(4, 2), (4, 1), (3, 3)] {
            for g in [2, 6, 16, 48] {
                for mode in MODES {
                    let (s, m) = (shape(2, n, h, hkv, 8), mask(mode, g));
                    let x = inputs(n as u64 * 131 + g as u64, &s);
                    let (out, lse, _) = tiled_forward(&s, &m, &x);
                    let want = naive_with_mask(&s, &m, &x);
                    let what = format!("{mode} G={g} {s:?}");
                    assert_close(&format!("{what}: out"), &out, &want.out, 1e-10);
                    assert_close(&format!("{what}: lse"), &lse, &want.lse, 1e-10);
                }
            }
        }
    }
}

#[test]
fn tiled_backward_matches_naive_backward() {
    for n in [1, 17, 64, 100, 130] {
        for mode in MODES {
            let (s, m) = (shape(2, n, 4, 2, 8), mask(mode, 24));
            let x = inputs(7 + n as u64, &s);
            tiled(&s, &m, &x).assert_close_to(
                &naive_with_mask(&s, &m, &x),
                &format!("{mode} {s:?}"),
                1e-10,
            );
        }
    }
}

#[test]
fn s2_equals_dense_with_explicit_mask() {
    for (n, g, h, hkv) in [
        (100, 16, 4, 2),
        (130, 40, 4, 4),
        (130, 64, 2, 1),
        (37, 10, 6, 3),
        (64, 2, 2, 2),
    ] {
        let s = shape(2, n, h, hkv, 6);
        let x = inputs(11 + g as u64, &s);
        let want = naive(&s, &x, |hd, i, j| design_s2_allows(hd, h, g, n, i, j));
        tiled(&s, &mask(AttnMode::S2, g), &x).assert_close_to(
            &want,
            &format!("s2 G={g} {s:?}"),
            1e-10,
        );
    }
}

#[test]
fn s2_noshift_equals_dense_with_explicit_group_mask() {
    for (n, g, h, hkv) in [
        (100, 16, 4, 2),
        (130, 40, 4, 4),
        (37, 10, 6, 3),
        (64, 2, 2, 2),
    ] {
        let s = shape(2, n, h, hkv, 6);
        let x = inputs(29 + g as u64, &s);
        // The paper's "short attention": every head causal inside the same groups of G.
        let want = naive(&s, &x, |_, i, j| j <= i && i / g == j / g);
        tiled(&s, &mask(AttnMode::S2NoShift, g), &x).assert_close_to(
            &want,
            &format!("s2-noshift G={g} {s:?}"),
            1e-10,
        );
    }
}

#[test]
fn s2_roll_equals_roll_attend_unroll() {
    for (n, g, h, hkv) in [
        (100, 16, 4, 2),
        (130, 40, 4, 4),
        (130, 64, 2, 1),
        (37, 10, 6, 3),
        (9, 4, 2, 2),
        (70, 68, 4, 2),
    ] {
        let s = shape(2, n, h, hkv, 6);
        let x = inputs(13 + g as u64, &s);
        let want = roll_attend_unroll(&s, g, &x);
        tiled(&s, &mask(AttnMode::S2Roll, g), &x).assert_close_to(
            &want,
            &format!("s2-roll G={g} {s:?}"),
            1e-10,
        );
    }
}

#[test]
fn s2_roll_leaks_the_future_and_s2_does_not() {
    let (n, g, h) = (16, 8, 2);
    let future = |m: AttnMask| {
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|&(i, j)| m.allows(1, h, i, j, n))
            .count()
    };
    assert_eq!(future(mask(AttnMode::S2, g)), 0, "s2 must be causal");
    // Each of a shifted head's first G/2 queries sees the sequence's last G/2 keys.
    assert_eq!(
        future(mask(AttnMode::S2Roll, g)),
        (g / 2) * (g / 2),
        "s2-roll future pairs"
    );
}

#[test]
fn s2_with_group_at_least_seq_len_equals_dense() {
    for n in [1usize, 5, 17, 64, 100] {
        for g in [n.div_ceil(2) * 2, n.div_ceil(2) * 2 + 2, 2 * n + 2] {
            let s = shape(2, n, 4, 2, 4);
            let x = inputs(17 + n as u64, &s);
            let dense = tiled(&s, &AttnMask::dense(), &x);
            for mode in [AttnMode::S2, AttnMode::S2Roll, AttnMode::S2NoShift] {
                let m = mask(mode, g);
                for (h, i, j) in
                    (0..4).flat_map(|h| (0..n).flat_map(move |i| (0..n).map(move |j| (h, i, j))))
                {
                    assert_eq!(
                        m.allows(h, 4, i, j, n),
                        j <= i,
                        "{mode} G={g} N={n} head {h} ({i}, {j})"
                    );
                }
                tiled(&s, &m, &x).assert_close_to(&dense, &format!("{mode} G={g} N={n}"), 0.0);
            }
            tiled(&s, &AttnMask::dense(), &x).assert_close_to(
                &naive(&s, &x, |_, i, j| j <= i),
                "dense",
                1e-10,
            );
        }
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let s = shape(1, 70, 4, 2, 4);
    for mode in MODES {
        let m = mask(mode, 16);
        let x = inputs(19, &s);
        let r = random_vec(&mut Rng::new(23), q_len(&s), 1.0);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            let mut out = vec![f64::NAN; q_len(&s)];
            let mut lse = vec![f64::NAN; s.batch * s.n_heads * s.seq_len];
            attention_forward(&mut out, &mut lse, q, k, v, &s, &m);
            dot(&out, &r)
        };
        let got = tiled(
            &s,
            &m,
            &Inputs {
                dout: r.clone(),
                ..inputs(19, &s)
            },
        );
        assert_close(
            &format!("{mode}: dq"),
            &got.dq,
            &numeric_grad(&x.q, |q| loss(q, &x.k, &x.v)),
            1e-6,
        );
        assert_close(
            &format!("{mode}: dk"),
            &got.dk,
            &numeric_grad(&x.k, |k| loss(&x.q, k, &x.v)),
            1e-6,
        );
        assert_close(
            &format!("{mode}: dv"),
            &got.dv,
            &numeric_grad(&x.v, |v| loss(&x.q, &x.k, v)),
            1e-6,
        );
    }
}

#[test]
fn attention_backward_accumulates_into_gradients() {
    let (s, m) = (shape(2, 33, 4, 2, 4), mask(AttnMode::S2, 8));
    let x = inputs(29, &s);
    let once = tiled(&s, &m, &x);
    let start = random_vec(&mut Rng::new(31), q_len(&s) + 2 * kv_len(&s), 1.0);
    let (mut dq, rest) = (start[..q_len(&s)].to_vec(), &start[q_len(&s)..]);
    let (mut dk, mut dv) = (rest[..kv_len(&s)].to_vec(), rest[kv_len(&s)..].to_vec());
    attention_backward(
        &mut dq, &mut dk, &mut dv, &x.dout, &x.q, &x.k, &x.v, &once.out, &once.lse, &s, &m,
    );
    let plus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>();
    assert_close("dq", &dq, &plus(&start[..q_len(&s)], &once.dq), 1e-14);
    assert_close("dk", &dk, &plus(&rest[..kv_len(&s)], &once.dk), 1e-14);
    assert_close("dv", &dv, &plus(&rest[kv_len(&s)..], &once.dv), 1e-14);
}

fn case() -> impl Strategy<Value = (AttnShape, AttnMask, u64)> {
    (
        1usize..=100,
        1usize..=3,
        1usize..=3,
        1usize..=4,
        1usize..=2,
        1usize..=60,
        0usize..3,
        any::<u64>(),
    )
        .prop_map(|(n, hkv, per_kv, half_d, batch, half_g, mode, seed)| {
            (
                shape(batch, n, hkv * per_kv, hkv, 2 * half_d),
                mask(MODES[mode], 2 * half_g),
                seed,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn tiled_attention_matches_naive_over_shapes((s, m, seed) in case()) {
        let x = inputs(seed, &s);
        tiled(&s, &m, &x).assert_close_to(&naive_with_mask(&s, &m, &x), &format!("{m:?} {s:?}"), 1e-9);
    }
}

#[test]
fn invalid_group_sizes_are_rejected_naming_the_option() {
    for (mode, g) in [
        (AttnMode::S2, 7),
        (AttnMode::S2, 0),
        (AttnMode::S2Roll, 1),
        (AttnMode::S2Roll, 0),
        (AttnMode::S2NoShift, 5),
    ] {
        let err = AttnMask::new(mode, g).unwrap_err().to_string();
        assert!(
            err.contains("group_size") && err.contains(&format!("got {g}")),
            "{mode} G={g}: {err}"
        );
    }
    assert_eq!(
        AttnMask::new(AttnMode::Dense, 7).unwrap(),
        AttnMask::dense()
    );
    assert_eq!(AttnMask::new(AttnMode::S2, 2).unwrap().group_size, 2);
}

#[test]
fn group_ratio_errors_name_the_option_ratio_context_and_group_size() {
    let err = AttnMask::from_ratio(AttnMode::S2, 0.25, 1028)
        .unwrap_err()
        .to_string();
    for part in ["group_ratio", "0.25", "1028", "group size 257", "odd"] {
        assert!(err.contains(part), "missing `{part}` in: {err}");
    }
    let err = AttnMask::from_ratio(AttnMode::S2Roll, 0.001, 100)
        .unwrap_err()
        .to_string();
    for part in ["group_ratio", "0.001", "100", "group size 0", "below 2"] {
        assert!(err.contains(part), "missing `{part}` in: {err}");
    }
    for ratio in [0.0, -0.5, 1.5, f64::NAN] {
        for mode in MODES {
            let err = AttnMask::from_ratio(mode, ratio, 1024)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("group_ratio") && err.contains("(0, 1]") && !err.contains("--"),
                "{ratio}: {err}"
            );
        }
    }
    assert_eq!(
        AttnMask::from_ratio(AttnMode::S2, 0.25, 1026).unwrap(),
        mask(AttnMode::S2, 256)
    );
    assert_eq!(
        AttnMask::from_ratio(AttnMode::S2Roll, 1.0, 100).unwrap(),
        mask(AttnMode::S2Roll, 100)
    );
    assert_eq!(
        AttnMask::from_ratio(AttnMode::Dense, 0.25, 1028).unwrap(),
        AttnMask::dense()
    );
}

#[test]
fn attn_mode_parses_and_prints_its_cli_names() {
    for (name, mode) in [
        ("dense", AttnMode::Dense),
        ("s2", AttnMode::S2),
        ("s2-roll", AttnMode::S2Roll),
        ("s2-noshift", AttnMode::S2NoShift),
    ] {
        assert_eq!(name.parse::<AttnMode>().unwrap(), mode);
        assert_eq!(mode.to_string(), name);
    }
    let err = "flash".parse::<AttnMode>().unwrap_err().to_string();
    for part in ["attn", "flash", "dense", "s2", "s2-roll", "s2-noshift"] {
        assert!(err.contains(part), "missing `{part}` in: {err}");
    }
}

#[test]
#[should_panic(expected = "`k` has 5 elements")]
fn attention_forward_names_a_tensor_of_the_wrong_length() {
    let s = shape(1, 4, 2, 1, 4);
    let x = inputs(1, &s);
    let (mut out, mut lse) = (vec![0.0; q_len(&s)], vec![0.0; 8]);
    attention_forward(
        &mut out,
        &mut lse,
        &x.q,
        &x.k[..5],
        &x.v,
        &s,
        &AttnMask::dense(),
    );
}

#[test]
fn s2_visits_about_a_quarter_of_dense_tiles() {
    let s = shape(1, 1024, 2, 1, 4);
    let x = inputs(37, &s);
    let (_, _, dense) = tiled_forward(&s, &AttnMask::dense(), &x);
    let (_, _, s2) = tiled_forward(
        &s,
        &AttnMask::from_ratio(AttnMode::S2, 0.25, 1024).unwrap(),
        &x,
    );
    assert_eq!(dense.tiles_total, s2.tiles_total);
    assert!(
        dense.tiles_visited < dense.tiles_total * 6 / 10,
        "dense skips the upper triangle: {dense:?}"
    );
    let ratio = s2.tiles_visited as f64 / dense.tiles_visited as f64;
    assert!(
        (0.2..=0.35).contains(&ratio),
        "s2/dense visited tiles {ratio:.3}: {s2:?} vs {dense:?}"
    );
}

#[test]
fn f32_forward_matches_f64() {
    let s = shape(2, 100, 4, 2, 16);
    let x = inputs(41, &s);
    for mode in MODES {
        let m = mask(mode, 32);
        let (out, lse, _) = tiled_forward(&s, &m, &x);
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (mut out32, mut lse32) = (vec![f32::NAN; out.len()], vec![f32::NAN; lse.len()]);
        attention_forward(&mut out32, &mut lse32, &f(&x.q), &f(&x.k), &f(&x.v), &s, &m);
        let g = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        assert_close(&format!("{mode}: f32 out"), &g(&out32), &out, 1e-5);
        assert_close(&format!("{mode}: f32 lse"), &g(&lse32), &lse, 1e-5);
    }
}
