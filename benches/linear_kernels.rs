//! The linear layers on a CUDA GPU: a Llama-7B attention projection (4096 → 4096) over 16384 rows
//! (one 16k-token sequence), bf16 with f32 accumulation. Forward `y = x·Wᵀ` and input gradient
//! `dx += dY·W`, each four ways: cuBLAS plain, cuBLAS with a rank-8 adapter (what the training step
//! runs on a GPU: `kernels::linear_*`, the adapter's two thin products around our rounding kernel,
//! and in the backward dA, dB as two more), our fused kernel without an adapter, and our fused kernel
//! with the rank-8 adapter (its backward also accumulates dA, dB). A rank-8 time over cuBLAS's plain
//! time is what LoRA costs on top of the frozen product. FLOPs: 2·rows·in·out per product (the
//! adapter's rank-r products are under 0.5% more and not counted), so criterion's "elem/s" reads as
//! FLOP/s. Each timed iteration is ten launches and one wait, to keep the wait's round trip out of
//! the rate.
//! Without a GPU it prints "skipped: no CUDA GPU" and measures nothing.
//! Run: cargo bench --bench linear_kernels

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longlora::kernels::{
    linear_backward, linear_forward, lora_linear_backward, lora_linear_forward, to_bf16, Buffer,
    Device, LinearScratch, LinearShape, LoraAdapter, LoraBackward,
};
use longlora::rng::Rng;

const SHAPE: LinearShape = LinearShape {
    rows: 16384,
    in_features: 4096,
    out_features: 4096,
};
const RANK: usize = 8;
const LAUNCHES_PER_ITERATION: usize = 10;

struct Tensors {
    x: Buffer<u16>,
    weight: Buffer<u16>,
    lora_a: Buffer<u16>,
    lora_b: Buffer<u16>,
    dy: Buffer<u16>,
    y: Buffer<u16>,
    dx: Buffer<u16>,
    xa: Buffer<f32>,
    grad_a: Buffer<f32>,
    grad_b: Buffer<f32>,
    /// Downloading this waits for every launch before it.
    sync: Buffer<u16>,
}

fn random_bf16(device: &Device, rng: &mut Rng, len: usize, scale: f64) -> Buffer<u16> {
    let values: Vec<f32> = (0..len)
        .map(|_| rng.uniform_range(-scale, scale) as f32)
        .collect();
    device.upload(&to_bf16(&values)).expect("upload")
}

fn tensors(device: &Device) -> Tensors {
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = SHAPE;
    let mut rng = Rng::new(2);
    let w_scale = 1.0 / (in_features as f64).sqrt();
    Tensors {
        x: random_bf16(device, &mut rng, rows * in_features, 1.0),
        weight: random_bf16(device, &mut rng, out_features * in_features, w_scale),
        lora_a: random_bf16(device, &mut rng, RANK * in_features, w_scale),
        lora_b: random_bf16(device, &mut rng, out_features * RANK, 0.3),
        dy: random_bf16(device, &mut rng, rows * out_features, 1.0),
        y: device.zeros(rows * out_features).expect("alloc"),
        dx: device.zeros(rows * in_features).expect("alloc"),
        xa: device.zeros(rows * RANK).expect("alloc"),
        grad_a: device.zeros(RANK * in_features).expect("alloc"),
        grad_b: device.zeros(out_features * RANK).expect("alloc"),
        sync: device.zeros(1).expect("alloc"),
    }
}

/// Who runs the product: cuBLAS or our fused kernel, each with or without the adapter.
#[derive(Clone, Copy)]
enum Runner {
    Cublas,
    CublasRank8,
    OursPlain,
    OursRank8,
}

impl Runner {
    const ALL: [Runner; 4] = [
        Runner::Cublas,
        Runner::CublasRank8,
        Runner::OursPlain,
        Runner::OursRank8,
    ];

    fn name(self) -> &'static str {
        match self {
            Runner::Cublas => "cublas",
            Runner::CublasRank8 => "cublas_lora_r8",
            Runner::OursPlain => "ours_plain",
            Runner::OursRank8 => "ours_lora_r8",
        }
    }
}

/// The rank-8 adapter of `a` and `b` (alpha 16).
fn adapter<'a>(a: &'a Buffer<u16>, b: &'a Buffer<u16>) -> LoraAdapter<'a> {
    LoraAdapter {
        a,
        b,
        rank: RANK,
        scale: 2.0,
    }
}

fn forward(device: &Device, t: &mut Tensors, runner: Runner, scratch: &mut LinearScratch) {
    let adapter = adapter(&t.lora_a, &t.lora_b);
    let (x, weight, y) = (&t.x, &t.weight, &mut t.y);
    match runner {
        Runner::Cublas => linear_forward(device, SHAPE, x, weight, None, y, false, scratch),
        Runner::CublasRank8 => {
            let lora = Some((adapter, &mut t.xa));
            linear_forward(device, SHAPE, x, weight, lora, y, false, scratch)
        }
        Runner::OursPlain => lora_linear_forward(device, SHAPE, x, weight, None, y, scratch),
        Runner::OursRank8 => {
            let lora = Some((adapter, &mut t.xa));
            lora_linear_forward(device, SHAPE, x, weight, lora, y, scratch)
        }
    }
    .expect("forward");
}

fn backward(device: &Device, t: &mut Tensors, runner: Runner, scratch: &mut LinearScratch) {
    let adapter = adapter(&t.lora_a, &t.lora_b);
    let (dy, x, weight, dx) = (&t.dy, &t.x, &t.weight, &mut t.dx);
    match runner {
        Runner::Cublas => linear_backward(device, SHAPE, dy, x, weight, None, dx, scratch),
        Runner::OursPlain => lora_linear_backward(device, SHAPE, dy, x, weight, None, dx, scratch),
        Runner::CublasRank8 | Runner::OursRank8 => {
            let lora = Some(LoraBackward {
                adapter,
                xa: &t.xa,
                grad_a: &mut t.grad_a,
                grad_b: &mut t.grad_b,
            });
            match runner {
                Runner::CublasRank8 => {
                    linear_backward(device, SHAPE, dy, x, weight, lora, dx, scratch)
                }
                _ => lora_linear_backward(device, SHAPE, dy, x, weight, lora, dx, scratch),
            }
        }
    }
    .expect("backward");
}

type Pass = fn(&Device, &mut Tensors, Runner, &mut LinearScratch);

fn bench_linear_kernels(c: &mut Criterion) {
    let Some(device) = common::gpu_or_skip() else {
        return;
    };
    let flops = 2 * SHAPE.rows * SHAPE.in_features * SHAPE.out_features;
    println!(
        "{}: {} x {} -> {}, {:.1} GFLOP per product (criterion's elem/s = FLOP/s)",
        device.name(),
        SHAPE.rows,
        SHAPE.in_features,
        SHAPE.out_features,
        flops as f64 / 1e9
    );
    let mut t = tensors(&device);
    let mut scratch = LinearScratch::default();
    let mut group = c.benchmark_group("linear_kernels_16384x4096x4096");
    group.throughput(Throughput::Elements(
        (LAUNCHES_PER_ITERATION * flops) as u64,
    ));
    let passes: [(&str, Pass); 2] = [("forward", forward), ("backward_input", backward)];
    for (pass_name, pass) in passes {
        for runner in Runner::ALL {
            pass(&device, &mut t, runner, &mut scratch);
            group.bench_function(BenchmarkId::new(pass_name, runner.name()), |b| {
                b.iter(|| {
                    for _ in 0..LAUNCHES_PER_ITERATION {
                        pass(&device, &mut t, runner, &mut scratch);
                    }
                    device.download(&t.sync).expect("sync")
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_criterion();
    targets = bench_linear_kernels
}
criterion_main!(benches);
