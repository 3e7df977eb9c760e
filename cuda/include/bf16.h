// bf16 storage as raw 16-bit patterns (uint16_t), identical under nvcc and the emulator: conversions
// round to nearest even, the way cvt.rn.bf16.f32 does, and keep NaN a NaN.
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

__device__ __forceinline__ uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

__device__ __forceinline__ uint16_t to_bf16(uint16_t value) { return value; }
__device__ __forceinline__ uint16_t to_bf16(float value) { return float_to_bf16(value); }

// Two values as one .b32 mma operand register: the lower index in the low half.
__device__ __forceinline__ uint32_t pack_bf16x2(float low, float high) {
    return static_cast<uint32_t>(float_to_bf16(low)) | (static_cast<uint32_t>(float_to_bf16(high)) << 16);
}
