// The two warp-level products of the attention kernels, on 16-row slabs with f32 accumulators, and
// the register conversion that links them. A 16 x kSlab f32 result (kSlab = 64, or 32 where registers
// are short) lives in c[kSlab / 8][4]: c[nt] is the C fragment of columns nt*8..nt*8+7, so lane
// (g = lane / 4, t = lane % 4) holds rows g (c[nt][0..1]) and g + 8 (c[nt][2..3]) at columns nt*8 + 2t
// and nt*8 + 2t + 1.
#pragma once

#include "bf16.h"
#include "kernel.h"
#include "mma.h"
#include "tile.h"

constexpr int kTileRows = 64;  // rows of every K/V/Q tile

// c = A · Bᵀ for A = rows a_row0..a_row0+15 of tile `a` and B = rows b_row0..b_row0+kSlab-1 of tile
// `b`, both kK elements wide (Q·Kᵀ: a is the Q tile, b the K tile). c is 16 x kSlab.
template <int kK, int kSlab = kTileRows>
__device__ __forceinline__ void warp_gemm_abt(float c[kSlab / 8][4], const uint16_t* a, int a_row0,
                                              const uint16_t* b, int b_row0, int lane) {
    LONGLORA_UNROLL
    for (int nt = 0; nt < kSlab / 8; ++nt) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) c[nt][i] = 0.0f;
    }
    LONGLORA_UNROLL
    for (int k0 = 0; k0 < kK; k0 += 16) {
        uint32_t a_fragment[4];
        load_a<kK>(a_fragment, a, a_row0, k0, lane);
        LONGLORA_UNROLL
        for (int n0 = 0; n0 < kSlab; n0 += 16) {
            uint32_t b_fragments[4];
            load_b_pair_from_n_rows<kK>(b_fragments, b, b_row0 + n0, k0, lane);
            mma_m16n8k16_bf16(c[n0 / 8], a_fragment, &b_fragments[0], c[n0 / 8]);
            mma_m16n8k16_bf16(c[n0 / 8 + 1], a_fragment, &b_fragments[2], c[n0 / 8 + 1]);
        }
    }
}

// The bf16 A fragments (16 x kSlab, k-steps of 16) of a 16 x kSlab f32 result: the C fragments of
// columns 16s..16s+7 and 16s+8..16s+15 are, pair by pair, exactly A fragment s. So a product's result
// feeds the next product without leaving registers.
template <int kSlab = kTileRows>
__device__ __forceinline__ void to_a_fragments(uint32_t a[kSlab / 16][4], const float c[kSlab / 8][4]) {
    LONGLORA_UNROLL
    for (int s = 0; s < kSlab / 16; ++s) {
        a[s][0] = pack_bf16x2(c[2 * s][0], c[2 * s][1]);
        a[s][1] = pack_bf16x2(c[2 * s][2], c[2 * s][3]);
        a[s][2] = pack_bf16x2(c[2 * s + 1][0], c[2 * s + 1][1]);
        a[s][3] = pack_bf16x2(c[2 * s + 1][2], c[2 * s + 1][3]);
    }
}

// c += A · B for A (16 x kSlab) in registers and B = rows b_row0..b_row0+kSlab-1 of the kN-wide tile
// `b` (one row per k: V for P·V).
template <int kN, int kSlab = kTileRows>
__device__ __forceinline__ void warp_gemm_ab(float c[kN / 8][4], const uint32_t a[kSlab / 16][4], const uint16_t* b,
                                             int b_row0, int lane) {
    LONGLORA_UNROLL
    for (int s = 0; s < kSlab / 16; ++s) {
        LONGLORA_UNROLL
        for (int n0 = 0; n0 < kN; n0 += 16) {
            uint32_t b_fragments[4];
            load_b_pair_from_k_rows<kN>(b_fragments, b, b_row0 + 16 * s, n0, lane);
            mma_m16n8k16_bf16(c[n0 / 8], a[s], &b_fragments[0], c[n0 / 8]);
            mma_m16n8k16_bf16(c[n0 / 8 + 1], a[s], &b_fragments[2], c[n0 / 8 + 1]);
        }
    }
}

// Reductions over the 4 lanes of a quad (same g), which together hold one row of a C fragment set.
__device__ __forceinline__ float quad_max(float value) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 1));
    return fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 2));
}

__device__ __forceinline__ float quad_sum(float value) {
    value += __shfl_xor_sync(0xffffffffu, value, 1);
    return value + __shfl_xor_sync(0xffffffffu, value, 2);
}
