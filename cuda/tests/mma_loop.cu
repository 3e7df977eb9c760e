// mma_loop_kernel: every warp runs `iterations` bf16 mmas on the same fragments, accumulating in f32,
// then stores its D fragment. Built only for the emulator, whose cost per warp-level mma it measures
// (benches/emulator.rs): a kernel's emulated run time is dominated by its collectives.

#include "kernel.h"

#include "mma.h"
#include "params.h"

extern "C" __global__ void mma_loop_kernel(const MmaLoopParams p) {
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    uint32_t a[4], b[2];
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 4; ++i) a[i] = p.a[lane * 4 + i];
    for (int i = 0; i < 2; ++i) b[i] = p.b[lane * 2 + i];
    for (uint32_t i = 0; i < p.iterations; ++i) mma_m16n8k16_bf16(d, a, b, d);
    for (int i = 0; i < 4; ++i) p.d[(warp * 32 + lane) * 4 + i] = d[i];
}
LONGLORA_EMU_ENTRY(mma_loop_kernel, MmaLoopParams)
