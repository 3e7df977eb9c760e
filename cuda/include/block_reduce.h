// Reductions across the threads of a block (blockDim.x a multiple of 32, at most 1024): shuffles within
// each warp, then one value per warp through shared memory. Every thread receives the result, and the
// scratch is free again on return, so a kernel may reduce several times in a row.
#pragma once

#include <math.h>

#include "kernel.h"

// The static shared memory each reduction adds to a kernel that calls it (for LONGLORA_EMU_ENTRY).
constexpr unsigned kBlockSumSharedBytes = 32 * sizeof(float);
constexpr unsigned kBlockLogSumExpSharedBytes = 32 * 2 * sizeof(float);

__device__ __forceinline__ float warp_sum(float value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

__device__ __forceinline__ float block_sum(float value) {
    __shared__ float warp_totals[kBlockSumSharedBytes / sizeof(float)];
    value = warp_sum(value);
    if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = value;
    __syncthreads();
    float total = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += warp_totals[w];
    __syncthreads();
    return total;
}

// A running log-sum-exp, sum = Σ exp(v − max), so that no exponent overflows; -inf max means empty.
struct LogSumExp {
    float max;
    float sum;
};
static_assert(sizeof(LogSumExp) * 32 == kBlockLogSumExpSharedBytes, "one running log-sum-exp per warp");

__device__ __forceinline__ LogSumExp lse_add(LogSumExp a, LogSumExp b) {
    const float max = fmaxf(a.max, b.max);
    if (max == -INFINITY) return a;
    return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ __forceinline__ LogSumExp block_logsumexp(LogSumExp value) {
    __shared__ LogSumExp warp_totals[kBlockLogSumExpSharedBytes / sizeof(LogSumExp)];
    for (int offset = 16; offset > 0; offset /= 2) {
        const LogSumExp other = {__shfl_xor_sync(0xffffffffu, value.max, offset),
                                 __shfl_xor_sync(0xffffffffu, value.sum, offset)};
        value = lse_add(value, other);
    }
    if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = value;
    __syncthreads();
    LogSumExp total = {-INFINITY, 0.0f};
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total = lse_add(total, warp_totals[w]);
    __syncthreads();
    return total;
}
