// The warp-level products of the attention kernels, on slabs of 16 kM rows with f32 accumulators, and
// the register conversion that links them. A 16 kM x kN f32 result lives in c[kM][kN / 8][4]: c[m][nt]
// is the C fragment of rows 16m.. and columns nt*8..nt*8+7, so lane (g = lane / 4, t = lane % 4) holds
// rows 16m + g (c[m][nt][0..1]) and 16m + g + 8 (c[m][nt][2..3]) at columns nt*8 + 2t and nt*8 + 2t + 1.
// With kM = 2 (32 rows per warp, FlashAttention-2's shape) every B fragment loaded from shared memory
// feeds two mmas, which halves the ldmatrix traffic per mma of the B operand.
#pragma once

#include "bf16.h"
#include "kernel.h"
#include "mma.h"
#include "tile.h"

// c = A · Bᵀ for A = rows a_row0..a_row0+16kM-1 of tile `a` and B = rows b_row0..b_row0+kN-1 of tile
// `b`, both kK elements wide (Q·Kᵀ: a is the Q tile, b the K tile); a_row0 and b_row0 multiples of 8.
template <int kK, int kN, int kM>
__device__ __forceinline__ void warp_gemm_abt(float c[kM][kN / 8][4], const uint16_t* a, int a_row0,
                                              const uint16_t* b, int b_row0, int lane) {
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int nt = 0; nt < kN / 8; ++nt) {
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) c[m][nt][i] = 0.0f;
        }
    }
    const SwizzledRows<kK> a_rows = rows_for_a<kK>(a, a_row0, 0, lane), b_rows = rows_for_b<kK>(b, b_row0, 0, lane);
    LONGLORA_UNROLL
    for (int k0 = 0; k0 < kK; k0 += 16) {
        uint32_t a_fragments[kM][4];
        LONGLORA_UNROLL
        for (int m = 0; m < kM; ++m) ldmatrix_x4(a_fragments[m], a_rows.at(16 * m, k0 / 16));
        LONGLORA_UNROLL
        for (int n0 = 0; n0 < kN; n0 += 16) {
            uint32_t b_fragments[4];
            ldmatrix_x4(b_fragments, b_rows.at(n0, k0 / 16));
            LONGLORA_UNROLL
            for (int m = 0; m < kM; ++m) {
                mma_m16n8k16_bf16(c[m][n0 / 8], a_fragments[m], &b_fragments[0], c[m][n0 / 8]);
                mma_m16n8k16_bf16(c[m][n0 / 8 + 1], a_fragments[m], &b_fragments[2], c[m][n0 / 8 + 1]);
            }
        }
    }
}

// The bf16 A fragments (16 kM x kK, k-steps of 16) of a 16 kM x kK f32 result: the C fragments of
// columns 16s..16s+7 and 16s+8..16s+15 are, pair by pair, exactly A fragment s. So a product's result
// feeds the next product without leaving registers.
template <int kM, int kK>
__device__ __forceinline__ void to_a_fragments(uint32_t a[kM][kK / 16][4], const float c[kM][kK / 8][4]) {
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int s = 0; s < kK / 16; ++s) {
            a[m][s][0] = pack_bf16x2(c[m][2 * s][0], c[m][2 * s][1]);
            a[m][s][1] = pack_bf16x2(c[m][2 * s][2], c[m][2 * s][3]);
            a[m][s][2] = pack_bf16x2(c[m][2 * s + 1][0], c[m][2 * s + 1][1]);
            a[m][s][3] = pack_bf16x2(c[m][2 * s + 1][2], c[m][2 * s + 1][3]);
        }
    }
}

// c += A · B for A (16 kM x kK) in registers and B = rows b_row0..b_row0+kK-1 of the kN-wide tile `b`
// (one row per k: V for P·V); b_row0 a multiple of 8.
template <int kN, int kK, int kM>
__device__ __forceinline__ void warp_gemm_ab(float c[kM][kN / 8][4], const uint32_t a[kM][kK / 16][4],
                                             const uint16_t* b, int b_row0, int lane) {
    const SwizzledRows<kN> b_rows = rows_for_a<kN>(b, b_row0, 0, lane);  // the .trans order of B from k rows
    LONGLORA_UNROLL
    for (int s = 0; s < kK / 16; ++s) {
        LONGLORA_UNROLL
        for (int n0 = 0; n0 < kN; n0 += 16) {
            uint32_t b_fragments[4];
            ldmatrix_x4_trans(b_fragments, b_rows.at(16 * s, n0 / 16));
            LONGLORA_UNROLL
            for (int m = 0; m < kM; ++m) {
                mma_m16n8k16_bf16(c[m][n0 / 8], a[m][s], &b_fragments[0], c[m][n0 / 8]);
                mma_m16n8k16_bf16(c[m][n0 / 8 + 1], a[m][s], &b_fragments[2], c[m][n0 / 8 + 1]);
            }
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
