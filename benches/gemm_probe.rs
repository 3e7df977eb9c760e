//! The training step's projection products at one row count (tokens), each timed best of RUNS, as
//! GFLOP/s: `matmul_nt` (the forward, `x·Wᵀ`) and `matmul_nn` (the backward's input gradient,
//! `dY·W`) on the shapes of the bench model of `scripts/bench-vs-pytorch.sh` (d = 256, MLP 688,
//! vocabulary 258). For comparing two builds run alternately. `cargo bench --bench gemm_probe --
//! ROWS RUNS` (default 1024 5).

use std::time::Instant;

use longlora::ops::matmul::{matmul_nn, matmul_nt};
use longlora::rng::Rng;

/// The harness's allocator, so that the products' outputs are placed as a training step's are.
#[global_allocator]
static ALLOCATOR: longlora::allocator::LargeBlocks = longlora::allocator::LargeBlocks;

fn main() {
    // cargo passes `--bench` to every bench target: only the positional arguments are ours.
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("arguments: ROWS RUNS (counts)"))
        .collect();
    let (rows, runs) = (
        args.first().copied().unwrap_or(1024),
        args.get(1).copied().unwrap_or(5),
    );
    let mut rng = Rng::new(3);
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect()
    };
    println!(
        "rows {rows}, best of {runs}, {} threads",
        longlora::ops::pool::threads()
    );
    println!("| product | m | k | n | GFLOP/s |");
    println!("| --- | --- | --- | --- | --- |");
    let mut total = (0.0, 0.0);
    for (name, k, n) in [
        ("nt q/k/v/o", 256, 256),
        ("nt gate/up", 256, 688),
        ("nt down", 688, 256),
        ("nt lm head", 256, 258),
        ("nn q/k/v/o", 256, 256),
        ("nn gate/up", 688, 256),
        ("nn down", 256, 688),
    ] {
        let nt = name.starts_with("nt");
        let (x, w) = (random(rows * k), random(k * n));
        let mut out = vec![f32::NAN; rows * n];
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let start = Instant::now();
            if nt {
                matmul_nt(&mut out, &x, &w, rows, k, n, 1.0, false);
            } else {
                matmul_nn(&mut out, &x, &w, rows, k, n, 1.0, false);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        assert!(
            out.iter().all(|v| v.is_finite()),
            "{name}: output not written"
        );
        let flops = 2.0 * (rows * k * n) as f64;
        total = (total.0 + flops, total.1 + best);
        println!(
            "| {name} | {rows} | {k} | {n} | {:.1} |",
            flops / best / 1e9
        );
    }
    println!("| all | | | | {:.1} |", total.0 / total.1 / 1e9);
}
