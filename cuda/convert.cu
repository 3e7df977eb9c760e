// bf16 <-> f32 conversions: trainable tensors keep f32 master copies and are multiplied in bf16, and a
// LoRA rank-r product scaled by s and rounded before its second product (src/kernels/linear.rs).

#include "kernel.h"

#include "bf16.h"
#include "grid_stride.h"
#include "params.h"

extern "C" __global__ void f32_to_bf16_kernel(const ConvertParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, p.count) p.values_bf16[i] = float_to_bf16(p.values_f32[i]);
}
LONGLORA_EMU_ENTRY(f32_to_bf16_kernel, ConvertParams)

extern "C" __global__ void bf16_to_f32_kernel(const ConvertParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, p.count) p.values_f32[i] = bf16_to_float(p.values_bf16[i]);
}
LONGLORA_EMU_ENTRY(bf16_to_f32_kernel, ConvertParams)

extern "C" __global__ void scaled_f32_to_bf16_kernel(const ScaledConvertParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, p.count) p.output[i] = float_to_bf16(p.scale * p.input[i]);
}
LONGLORA_EMU_ENTRY(scaled_f32_to_bf16_kernel, ScaledConvertParams)
