// bf16 values as raw 16-bit patterns (the kernels' tensors are uint16_t) and packed pairs (the .b32
// registers of mma fragments: the lower index in the low half). Conversions to bf16 round to nearest
// even, as the Rust side's `half::bf16::from_f32` does.
#pragma once

#include "kernel.h"

#if defined(LONGLORA_EMU)
#include <cstring>
#endif

__device__ __forceinline__ float bf16_to_float(uint16_t bits) {
#if defined(LONGLORA_EMU)
    uint32_t wide = uint32_t{bits} << 16;
    float value;
    std::memcpy(&value, &wide, sizeof value);
    return value;
#else
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
#endif
}

#if defined(LONGLORA_EMU)
// Round to nearest even on the upper 16 bits; NaN becomes the canonical NaN, as cvt.rn does.
inline uint32_t emu_float_to_bf16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (bits + 0x7fffu + (bits >> 16 & 1u)) >> 16;
}
#endif

// (lo, hi) as a bf16 pair: lo in bits 0..15, hi in bits 16..31.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(LONGLORA_EMU)
    return emu_float_to_bf16(lo) | emu_float_to_bf16(hi) << 16;
#else
    uint32_t packed;
    // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half.
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
#endif
}

__device__ __forceinline__ uint16_t float_to_bf16(float value) {
    return static_cast<uint16_t>(pack_bf16x2(value, 0.0f) & 0xffffu);
}

__device__ __forceinline__ float bf16x2_low(uint32_t pair) { return bf16_to_float(static_cast<uint16_t>(pair)); }

__device__ __forceinline__ float bf16x2_high(uint32_t pair) { return bf16_to_float(static_cast<uint16_t>(pair >> 16)); }
