// SwiGLU, elementwise: out = silu(gate) · up; the backward accumulates
// dgate += dout · up · silu'(gate), silu'(g) = σ(g)·(1 + g·(1 − σ(g))), and dup += dout · silu(gate).

#include <math.h>

#include "kernel.h"

#include "bf16.h"
#include "grid_stride.h"
#include "params.h"

namespace {

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

}  // namespace

extern "C" __global__ void swiglu_forward_kernel(const SwigluParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, p.count) {
        const float g = bf16_to_float(p.gate[i]);
        p.out[i] = float_to_bf16(g * sigmoid(g) * bf16_to_float(p.up[i]));
    }
}
LONGLORA_EMU_ENTRY(swiglu_forward_kernel, SwigluParams)

extern "C" __global__ void swiglu_backward_kernel(const SwigluBackwardParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, p.count) {
        const float g = bf16_to_float(p.gate[i]), u = bf16_to_float(p.up[i]), d = bf16_to_float(p.dout[i]);
        const float s = sigmoid(g);
        p.dgate[i] = float_to_bf16(bf16_to_float(p.dgate[i]) + d * u * s * (1.0f + g * (1.0f - s)));
        p.dup[i] = float_to_bf16(bf16_to_float(p.dup[i]) + d * g * s);
    }
}
LONGLORA_EMU_ENTRY(swiglu_backward_kernel, SwigluBackwardParams)
