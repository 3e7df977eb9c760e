//! One CPU attention shape, forward and backward timed apart, best of a few runs, as GFLOP/s (DESIGN
//! §3's count): small and quick, for comparing two builds run alternately, which criterion's
//! statistics over one build cannot do. `cargo bench --bench attention_probe -- N MODE RUNS HEADS
//! HEAD_DIM` (default 4096 dense 3 8 64; batch 1, group ratio 0.25 for s2).

use std::time::Instant;

use longlora::cost::flops::attention_forward_flops;
use longlora::ops::attention::{
    attention_backward, attention_forward, AttnMask, AttnMode, AttnShape,
};
use longlora::rng::Rng;

fn main() {
    // cargo passes `--bench` to every bench target: only the positional arguments are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let parse = |i: usize, default: &str| -> usize {
        let text = arg(i, default);
        text.parse()
            .unwrap_or_else(|_| panic!("argument {}: `{text}` is not a count", i + 1))
    };
    let (n, runs, heads, head_dim) = (
        parse(0, "4096"),
        parse(2, "3"),
        parse(3, "8"),
        parse(4, "64"),
    );
    let mode: AttnMode = arg(1, "dense")
        .parse()
        .expect("mode: dense, s2, s2-roll or s2-noshift");
    let shape = AttnShape {
        batch: 1,
        seq_len: n,
        n_heads: heads,
        n_kv_heads: heads,
        head_dim,
    };
    let mask = AttnMask::from_ratio(mode, 0.25, n).expect("a group ratio of 0.25 fits N");
    let mut rng = Rng::new(1);
    let len = n * heads * head_dim;
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect()
    };
    let (q, k, v, dout) = (random(len), random(len), random(len), random(len));
    let (mut out, mut lse) = (vec![0.0; len], vec![0.0; heads * n]);
    let (mut dq, mut dk, mut dv) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    let flops = attention_forward_flops(&shape, &mask);
    let (mut forward, mut backward) = (f64::MAX, f64::MAX);
    for _ in 0..runs {
        let start = Instant::now();
        attention_forward(&mut out, &mut lse, &q, &k, &v, &shape, &mask);
        forward = forward.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        attention_backward(
            &mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &out, &lse, &shape, &mask,
        );
        backward = backward.min(start.elapsed().as_secs_f64());
    }
    println!(
        "N={n} {mode} heads={heads}x{head_dim}: forward {forward:.4} s ({:.1} GFLOP/s), backward \
         {backward:.4} s ({:.1} GFLOP/s), both {:.1} GFLOP/s",
        flops / forward / 1e9,
        2.5 * flops / backward / 1e9,
        3.5 * flops / (forward + backward) / 1e9
    );
}
