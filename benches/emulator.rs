//! What the CPU emulator costs per warp-level mma, the collective that dominates an emulated attention
//! kernel: four warps (an attention block's shape) each run a chain of bf16 mma.m16n8k16. The
//! throughput is warp-level mmas per second. Run: cargo bench --bench emulator

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use longlora::kernels::self_test::mma_loop;
use longlora::kernels::Device;

const WARPS: u32 = 4;
const ITERATIONS: u32 = 256;

fn warp_mma(c: &mut Criterion) {
    let device = Device::emulator();
    // bf16 pairs of 1/64 and 1/128: the accumulators stay far from overflow over the whole chain.
    let a = [0x3c80_3c80u32; 128];
    let b = [0x3c00_3c00u32; 64];
    let mut group = c.benchmark_group("emulator");
    group.throughput(Throughput::Elements(u64::from(WARPS * ITERATIONS)));
    group.bench_function("warp_mma_bf16", |bencher| {
        bencher.iter(|| mma_loop(&device, &a, &b, WARPS, ITERATIONS).unwrap())
    });
    group.finish();
}

criterion_group!(benches, warp_mma);
criterion_main!(benches);
