//! Tiled CPU attention, dense vs S²-Attn (group ratio 0.25), f32, B=1, H=8, D=64, at N = 1024, 4096
//! and 16384 (forward + backward only at 16384: a dense pass there is ~1 TFLOP, seconds per
//! iteration, and criterion takes at least 10 samples).
//!
//! FLOPs follow DESIGN §3: forward = 4·D per unmasked (query, key) pair, counted exactly from the
//! mask (the causal halving and S²-Attn's groups included); backward = 2.5x forward. Criterion's
//! throughput is set to that FLOP count, so its "elem/s" reads as FLOP/s.

mod common;

use std::hint::black_box;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use longlora::ops::attention::{
    attention_backward, attention_forward, AttnMask, AttnMode, AttnShape,
};
use longlora::rng::Rng;

const LENGTHS: [usize; 3] = [1024, 4096, 16384];
/// The forward alone is timed up to this length.
const FORWARD_MAX: usize = 4096;
const MODES: [AttnMode; 2] = [AttnMode::Dense, AttnMode::S2];

fn shape(seq_len: usize) -> AttnShape {
    AttnShape {
        batch: 1,
        seq_len,
        n_heads: 8,
        n_kv_heads: 8,
        head_dim: 64,
    }
}

fn mask(mode: AttnMode, seq_len: usize) -> AttnMask {
    AttnMask::from_ratio(mode, 0.25, seq_len).expect("0.25 gives an even group at these lengths")
}

struct Buffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn buffers(s: &AttnShape) -> Buffers {
    let mut rng = Rng::new(1);
    let n = s.batch * s.seq_len * s.n_heads * s.head_dim;
    let mut random = |n: usize| {
        (0..n)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect::<Vec<f32>>()
    };
    Buffers {
        q: random(n),
        k: random(n),
        v: random(n),
        dout: random(n),
        out: vec![0.0; n],
        lse: vec![0.0; s.batch * s.n_heads * s.seq_len],
        dq: vec![0.0; n],
        dk: vec![0.0; n],
        dv: vec![0.0; n],
    }
}

fn forward(x: &mut Buffers, s: &AttnShape, m: &AttnMask) {
    black_box(attention_forward(
        &mut x.out, &mut x.lse, &x.q, &x.k, &x.v, s, m,
    ));
}

fn forward_backward(x: &mut Buffers, s: &AttnShape, m: &AttnMask) {
    forward(x, s, m);
    attention_backward(
        &mut x.dq, &mut x.dk, &mut x.dv, &x.dout, &x.q, &x.k, &x.v, &x.out, &x.lse, s, m,
    );
}

fn bench_attention(c: &mut Criterion) {
    println!("FLOPs per DESIGN §3 (criterion's elem/s = FLOP/s):");
    for n in LENGTHS {
        for mode in MODES {
            let (s, m) = (shape(n), mask(mode, n));
            let fwd = longlora::cost::flops::attention_forward_flops(&s, &m);
            println!(
                "  {mode:>5} N={n}: forward {:.3} GFLOP, forward+backward {:.3} GFLOP",
                fwd / 1e9,
                fwd * 3.5 / 1e9
            );
        }
    }
    for (name, pass, factor, max_len) in [
        (
            "forward",
            forward as fn(&mut Buffers, &AttnShape, &AttnMask),
            1.0,
            FORWARD_MAX,
        ),
        ("forward_backward", forward_backward, 3.5, usize::MAX),
    ] {
        let mut group = c.benchmark_group(format!("attention_{name}"));
        group.sampling_mode(SamplingMode::Flat);
        for n in LENGTHS.into_iter().filter(|&n| n <= max_len) {
            for mode in MODES {
                let (s, m) = (shape(n), mask(mode, n));
                let mut x = buffers(&s);
                group.throughput(Throughput::Elements(
                    (longlora::cost::flops::attention_forward_flops(&s, &m) * factor) as u64,
                ));
                group.bench_function(BenchmarkId::new(mode.to_string(), n), |b| {
                    b.iter(|| pass(&mut x, &s, &m))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::short_criterion();
    targets = bench_attention
}
criterion_main!(benches);
