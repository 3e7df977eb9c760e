//! The attention kernels on a CUDA GPU: forward and backward (atomic dQ, FlashAttention-2's way; and
//! the deterministic dQ, the training path), head dim 128, batch 1, 16 heads, N = 8k, 16k and 32k, dense (causal) and
//! S²-Attn (group ratio 0.25). FLOPs per DESIGN §3: forward 4·D per unmasked (query, key) pair,
//! counted exactly; backward 2.5x forward. Criterion's throughput is that FLOP count, so its "elem/s"
//! reads as FLOP/s; compare with PyTorch SDPA (flash backend) run on the same GPU at the same shapes.
//! Without a GPU it prints "skipped: no CUDA GPU" and measures nothing.
//! Run: cargo bench --bench attention_kernels

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longlora::cost::flops::attention_forward_flops;
use longlora::kernels::{
    attention_backward, attention_forward, AttentionHeads, AttentionScratch, BackwardOptions,
    Buffer, Device, Sequences,
};
use longlora::ops::attention::{AttnMask, AttnMode, AttnShape};
use longlora::rng::Rng;

const LENGTHS: [usize; 3] = [8192, 16384, 32768];
const MODES: [AttnMode; 2] = [AttnMode::Dense, AttnMode::S2];
const HEADS: usize = 16;
const HEAD_DIM: usize = 128;

struct Tensors {
    q: Buffer<u16>,
    k: Buffer<u16>,
    v: Buffer<u16>,
    dout: Buffer<u16>,
    out: Buffer<u16>,
    lse: Buffer<f32>,
    dq: Buffer<u16>,
    dk: Buffer<u16>,
    dv: Buffer<u16>,
    /// A one-element counter every launch adds to: downloading it waits for the launches.
    sync: Buffer<u32>,
}

fn tensors(device: &Device, n: usize) -> Tensors {
    let len = n * HEADS * HEAD_DIM;
    let mut rng = Rng::new(1);
    let mut random = || {
        let values: Vec<f32> = (0..len)
            .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
            .collect();
        device
            .upload(&longlora::kernels::to_bf16(&values))
            .expect("upload")
    };
    Tensors {
        q: random(),
        k: random(),
        v: random(),
        dout: random(),
        out: device.zeros(len).expect("alloc"),
        lse: device.zeros(n * HEADS).expect("alloc"),
        dq: device.zeros(len).expect("alloc"),
        dk: device.zeros(len).expect("alloc"),
        dv: device.zeros(len).expect("alloc"),
        sync: device.zeros(1).expect("alloc"),
    }
}

fn heads() -> AttentionHeads {
    AttentionHeads {
        n_heads: HEADS,
        n_kv_heads: HEADS,
        head_dim: HEAD_DIM,
    }
}

fn forward(device: &Device, t: &mut Tensors, sequences: &Sequences, mask: &AttnMask) {
    attention_forward(
        device,
        &mut t.out,
        &mut t.lse,
        &t.q,
        &t.k,
        &t.v,
        sequences,
        heads(),
        mask,
        Some(&mut t.sync),
    )
    .expect("forward");
    device.download(&t.sync).expect("sync");
}

fn backward(
    device: &Device,
    t: &mut Tensors,
    sequences: &Sequences,
    mask: &AttnMask,
    options: BackwardOptions,
    scratch: &mut AttentionScratch,
) {
    attention_backward(
        device,
        &mut t.dq,
        &mut t.dk,
        &mut t.dv,
        &t.dout,
        &t.q,
        &t.k,
        &t.v,
        &t.out,
        &t.lse,
        sequences,
        heads(),
        mask,
        options,
        scratch,
        Some(&mut t.sync),
    )
    .expect("backward");
    device.download(&t.sync).expect("sync");
}

fn bench_attention_kernels(c: &mut Criterion) {
    let Some(device) = common::gpu_or_skip() else {
        return;
    };
    println!(
        "{}: FLOPs per DESIGN §3 (criterion's elem/s = FLOP/s)",
        device.name()
    );
    let mut group = c.benchmark_group("attention_kernels_d128");
    for n in LENGTHS {
        let sequences = Sequences::equal(1, n);
        let mut t = tensors(&device, n);
        let mut scratch = AttentionScratch::new();
        let shape = AttnShape {
            batch: 1,
            seq_len: n,
            n_heads: HEADS,
            n_kv_heads: HEADS,
            head_dim: HEAD_DIM,
        };
        for mode in MODES {
            let mask = AttnMask::from_ratio(mode, 0.25, n).expect("an even group");
            let flops = attention_forward_flops(&shape, &mask);
            println!("  {mode} N={n}: forward {:.1} GFLOP", flops / 1e9);
            forward(&device, &mut t, &sequences, &mask);
            group.throughput(Throughput::Elements(flops as u64));
            group.bench_function(BenchmarkId::new(format!("forward_{mode}"), n), |b| {
                b.iter(|| forward(&device, &mut t, &sequences, &mask))
            });
            group.throughput(Throughput::Elements((2.5 * flops) as u64));
            for (name, deterministic) in [("backward", false), ("backward_deterministic", true)] {
                let options = BackwardOptions {
                    deterministic,
                    accumulate: false,
                };
                group.bench_function(BenchmarkId::new(format!("{name}_{mode}"), n), |b| {
                    b.iter(|| backward(&device, &mut t, &sequences, &mask, options, &mut scratch))
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_criterion();
    targets = bench_attention_kernels
}
criterion_main!(benches);
