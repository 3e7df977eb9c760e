// divergent_barrier_kernel: breaks a barrier or warp collective in one of the ways params.h lists, so
// that the emulator's tests can check each is reported as an error. Built only for the emulator: on a
// GPU these hang or read garbage. Needs at least two warps.

#include "kernel.h"

#include "params.h"

extern "C" __global__ void divergent_barrier_kernel(const DivergentBarrierParams p) {
    const unsigned lane = threadIdx.x % 32;
    float value = static_cast<float>(threadIdx.x);
    switch (p.divergence) {
        case DIVERGENCE_EARLY_EXIT:
            if (threadIdx.x >= blockDim.x / 2) return;
            __syncthreads();
            break;
        case DIVERGENCE_TWO_BARRIERS:
            if (threadIdx.x % 2 == 0) {
                __syncthreads();
            } else {
                __syncthreads();
            }
            break;
        case DIVERGENCE_SHUFFLE_EXIT:
            if (lane == 5) return;
            value = __shfl_xor_sync(0xffffffffu, value, 1);
            break;
        case DIVERGENCE_SHUFFLE_BARRIER:
            if (lane == 5) {
                __syncthreads();
            } else {
                value = __shfl_xor_sync(0xffffffffu, value, 1);
            }
            break;
    }
    p.out[threadIdx.x] = value;
}
LONGLORA_EMU_ENTRY(divergent_barrier_kernel, DivergentBarrierParams)
