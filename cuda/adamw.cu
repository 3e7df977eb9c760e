// The optimizer step over every trainable tensor in one launch each: the global gradient norm (its
// sum of squares), then AdamW on the f32 master weights with clipping folded in as a gradient scale,
// also refreshing the bf16 copy the next forward multiplies with. Block (x, y) strides over tensor y.

#include <math.h>

#include "kernel.h"

#include "bf16.h"
#include "block_reduce.h"
#include "params.h"

// The elements of tensor blockIdx.y that this thread visits.
#define LONGLORA_FOR_EACH_TENSOR_ELEMENT(i, tensor)                                                    \
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (tensor).count; \
         i += static_cast<size_t>(gridDim.x) * blockDim.x)

extern "C" __global__ void grad_sum_squares_kernel(const GradSumSquaresParams p) {
    const OptimTensor tensor = p.tensors[blockIdx.y];
    float squares = 0.0f;
    LONGLORA_FOR_EACH_TENSOR_ELEMENT(i, tensor) squares += tensor.grad[i] * tensor.grad[i];
    squares = block_sum(squares);
    if (threadIdx.x == 0) atomicAdd(p.sum_squares, squares);
}
LONGLORA_EMU_ENTRY(grad_sum_squares_kernel, GradSumSquaresParams, kBlockSumSharedBytes)

extern "C" __global__ void adamw_kernel(const AdamwParams p) {
    const OptimTensor tensor = p.tensors[blockIdx.y];
    LONGLORA_FOR_EACH_TENSOR_ELEMENT(i, tensor) {
        const float g = p.grad_scale * tensor.grad[i];
        const float m = p.beta1 * tensor.m[i] + (1.0f - p.beta1) * g;
        const float v = p.beta2 * tensor.v[i] + (1.0f - p.beta2) * g * g;
        const float param = p.decay * tensor.param[i] - p.step_size * m / (sqrtf(v / p.bias_correction2) + p.eps);
        tensor.m[i] = m;
        tensor.v[i] = v;
        tensor.param[i] = param;
        if (tensor.param_bf16 != nullptr) tensor.param_bf16[i] = float_to_bf16(param);
    }
}
LONGLORA_EMU_ENTRY(adamw_kernel, AdamwParams)
