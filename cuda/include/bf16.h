// bf16 storage as raw 16-bit patterns (uint16_t, the kernels' tensors), identical under nvcc and the
// emulator, and packed pairs (the .b32 registers of mma fragments: the lower index in the low half).
// Conversions round to nearest even, as cvt.rn and the Rust side's `half::bf16::from_f32` do.
#pragma once

#include <cstring>

#include "kernel.h"

// The quiet NaN that float_to_bf16 makes of a NaN: what kernels write to mark an invalid input.
constexpr uint16_t kBf16NaN = 0x7fc0;

__device__ __forceinline__ float bf16_to_float(uint16_t value) {
    const uint32_t bits = static_cast<uint32_t>(value) << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

// Integer rounding, so a single value converts the same way on both backends; a NaN stays a quiet
// NaN with its sign and payload (as `half` does).
__device__ __forceinline__ uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

__device__ __forceinline__ uint16_t to_bf16(uint16_t value) { return value; }
__device__ __forceinline__ uint16_t to_bf16(float value) { return float_to_bf16(value); }

#if defined(LONGLORA_EMU)
// What cvt.rn.bf16x2.f32 does to one value: round to nearest even, any NaN to the canonical NaN.
inline uint32_t emu_cvt_rn_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (bits + 0x7fffu + (bits >> 16 & 1u)) >> 16;
}
#endif

// (lo, hi) as a bf16 pair: one cvt instruction on the GPU, for the hot P·V and dS paths.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(LONGLORA_EMU)
    return emu_cvt_rn_bf16(lo) | emu_cvt_rn_bf16(hi) << 16;
#else
    uint32_t packed;
    // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half.
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
#endif
}

__device__ __forceinline__ float bf16x2_low(uint32_t pair) { return bf16_to_float(static_cast<uint16_t>(pair)); }

__device__ __forceinline__ float bf16x2_high(uint32_t pair) { return bf16_to_float(static_cast<uint16_t>(pair >> 16)); }
