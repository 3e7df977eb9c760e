//! What one parallel region costs beyond its work: the ops' pool (`longlora::ops::pool`) against
//! rayon's global pool, side by side in one run. Each region is one task per thread of `WORK` µs,
//! behind a serial stretch of `GAP` µs on the caller (the shape of a training step: short regions
//! between short serial ops); the overhead is the time per region minus GAP + WORK.
//!
//! `cargo bench --bench fork_join [-- REGIONS]` (default 2000 regions per row).

use std::hint::black_box;
use std::time::Instant;

use longlora::ops::pool;
use rayon::prelude::*;

/// Busy work for `us` microseconds.
fn spin(us: f64) {
    let start = Instant::now();
    let mut x = 1.0f64;
    while start.elapsed().as_secs_f64() * 1e6 < us {
        x = black_box(x * 1.000_000_1 + 1e-9);
    }
}

/// Microseconds per region of `regions` regions run by `region`.
fn per_region(regions: usize, gap: f64, region: impl Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..regions {
        spin(gap);
        region();
    }
    start.elapsed().as_secs_f64() * 1e6 / regions as f64
}

fn main() {
    let regions = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(2000);
    let (ours, theirs) = (pool::threads(), rayon::current_num_threads());
    println!("{regions} regions per row; ops pool {ours} threads, rayon {theirs} threads");
    println!("| gap µs | work µs | ops pool overhead µs | rayon overhead µs |");
    println!("| --- | --- | --- | --- |");
    for (gap, work) in [
        (0.0, 200.0),
        (20.0, 200.0),
        (100.0, 200.0),
        (500.0, 200.0),
        (20.0, 50.0),
    ] {
        let ideal = gap + work;
        let pool_us = per_region(regions, gap, || pool::for_each(ours, |_| spin(work)));
        let rayon_us = per_region(regions, gap, || {
            (0..theirs).into_par_iter().for_each(|_| spin(work))
        });
        println!(
            "| {gap} | {work} | {:.1} | {:.1} |",
            pool_us - ideal,
            rayon_us - ideal
        );
    }
}
