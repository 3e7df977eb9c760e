// RMSNorm as in Llama, one block per row: y = w ∘ x · rstd with rstd = 1 / sqrt(mean(x²) + eps), saved
// per row for the backward, which accumulates dx += rstd · (g − n · mean(g ∘ n)) with g = w ∘ dy and
// n = x · rstd, and dweight += Σ_rows dy ∘ n (f32). The weight w is f32 (see RmsnormForwardParams).

#include "kernel.h"

#include "bf16.h"
#include "block_reduce.h"
#include "params.h"
#include "shared_memory.h"

extern "C" __global__ void rmsnorm_forward_kernel(const RmsnormForwardParams p) {
    const size_t offset = static_cast<size_t>(blockIdx.x) * p.dim;
    const uint16_t* x = p.x + offset;

    float squares = 0.0f;
    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) squares += bf16_to_float(x[i]) * bf16_to_float(x[i]);
    const float rstd = 1.0f / sqrtf(block_sum(squares) / static_cast<float>(p.dim) + p.eps);

    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
        p.out[offset + i] = float_to_bf16(p.weight[i] * bf16_to_float(x[i]) * rstd);
    }
    if (threadIdx.x == 0) p.rstd[blockIdx.x] = rstd;
}
LONGLORA_EMU_ENTRY(rmsnorm_forward_kernel, RmsnormForwardParams, kBlockSumSharedBytes)

// Each block strides over rows and sums its rows' dweight in shared memory, adding it to dweight once:
// atomics per element drop from one per row to one per block. Thread t owns elements t, t + blockDim.x,
// ... of every row, so its shared partial sums need no barrier.
extern "C" __global__ void rmsnorm_backward_kernel(const RmsnormBackwardParams p) {
    float* dweight_partial = dynamic_shared<float>();  // [dim] when dweight is trained
    if (p.dweight != nullptr) {
        for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) dweight_partial[i] = 0.0f;
    }

    for (unsigned row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const size_t offset = static_cast<size_t>(row) * p.dim;
        const uint16_t *x = p.x + offset, *dy = p.dy + offset;
        const float rstd = p.rstd[row];

        float g_dot_n = 0.0f;
        for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
            g_dot_n += p.weight[i] * bf16_to_float(dy[i]) * bf16_to_float(x[i]) * rstd;
        }
        const float mean_g_n = block_sum(g_dot_n) / static_cast<float>(p.dim);

        for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
            const float n = bf16_to_float(x[i]) * rstd, g = p.weight[i] * bf16_to_float(dy[i]);
            uint16_t& dx = p.dx[offset + i];
            dx = float_to_bf16(bf16_to_float(dx) + rstd * (g - n * mean_g_n));
            if (p.dweight != nullptr) dweight_partial[i] += bf16_to_float(dy[i]) * n;
        }
    }

    if (p.dweight != nullptr) {
        for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) atomicAdd(&p.dweight[i], dweight_partial[i]);
    }
}
LONGLORA_EMU_ENTRY(rmsnorm_backward_kernel, RmsnormBackwardParams, kBlockSumSharedBytes)
