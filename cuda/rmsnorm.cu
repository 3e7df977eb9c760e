// RMSNorm as in Llama, one block per row: y = w ∘ x · rstd with rstd = 1 / sqrt(mean(x²) + eps), saved
// per row for the backward, which accumulates dx += rstd · (g − n · mean(g ∘ n)) with g = w ∘ dy and
// n = x · rstd, and dweight += dy ∘ n (f32, added atomically across rows).

#include "kernel.h"

#include "bf16.h"
#include "block_reduce.h"
#include "params.h"

extern "C" __global__ void rmsnorm_forward_kernel(const RmsnormForwardParams p) {
    const size_t offset = static_cast<size_t>(blockIdx.x) * p.dim;
    const uint16_t* x = p.x + offset;

    float squares = 0.0f;
    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) squares += bf16_to_float(x[i]) * bf16_to_float(x[i]);
    const float rstd = 1.0f / sqrtf(block_sum(squares) / static_cast<float>(p.dim) + p.eps);

    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
        p.out[offset + i] = float_to_bf16(bf16_to_float(p.weight[i]) * bf16_to_float(x[i]) * rstd);
    }
    if (threadIdx.x == 0) p.rstd[blockIdx.x] = rstd;
}
LONGLORA_EMU_ENTRY(rmsnorm_forward_kernel, RmsnormForwardParams)

extern "C" __global__ void rmsnorm_backward_kernel(const RmsnormBackwardParams p) {
    const size_t offset = static_cast<size_t>(blockIdx.x) * p.dim;
    const uint16_t *x = p.x + offset, *dy = p.dy + offset;
    const float rstd = p.rstd[blockIdx.x];

    float g_dot_n = 0.0f;
    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
        g_dot_n += bf16_to_float(p.weight[i]) * bf16_to_float(dy[i]) * bf16_to_float(x[i]) * rstd;
    }
    const float mean_g_n = block_sum(g_dot_n) / static_cast<float>(p.dim);

    for (unsigned i = threadIdx.x; i < p.dim; i += blockDim.x) {
        const float n = bf16_to_float(x[i]) * rstd, g = bf16_to_float(p.weight[i]) * bf16_to_float(dy[i]);
        uint16_t& dx = p.dx[offset + i];
        dx = float_to_bf16(bf16_to_float(dx) + rstd * (g - n * mean_g_n));
        if (p.dweight != nullptr) atomicAdd(&p.dweight[i], bf16_to_float(dy[i]) * n);
    }
}
LONGLORA_EMU_ENTRY(rmsnorm_backward_kernel, RmsnormBackwardParams)
