// Shared-memory tiles of bf16 rows (kCols elements, a multiple of 64) and the mma fragments read from
// them. A row is a run of 16-byte chunks; chunk c of row r is stored at chunk c ^ (r % 8). ldmatrix
// reads one chunk from each of 8 consecutive rows at once, and the XOR sends those 8 chunks to 8
// different 16-byte bank groups, so the read is free of bank conflicts; without it, rows of 128 or 256
// bytes would put all 8 chunks in the same banks. Every chunk keeps its 8 elements together, so
// 16-byte copies and bf16-pair stores work on swizzled tiles unchanged.
#pragma once

#include "cp_async.h"
#include "kernel.h"
#include "ldmatrix.h"

// The element offset of (row, col) in a swizzled tile with kCols elements per row.
template <int kCols>
__device__ __forceinline__ int swizzled(int row, int col) {
    static_assert(kCols % 64 == 0, "the swizzle permutes groups of 8 chunks");
    return row * kCols + ((col / 8) ^ (row % 8)) * 8 + col % 8;
}

// Starts copying `rows` rows of kCols elements, `row_stride` elements apart in global memory, into a
// swizzled tile; rows from `valid_rows` on are zero-filled instead of read, so nothing past the end
// of a sequence is touched and padding rows contribute exact zeros. The caller commits the group and
// waits for it. Every one of the block's kThreads threads takes part.
template <int kCols, int kThreads>
__device__ __forceinline__ void load_tile_async(uint16_t* tile, const uint16_t* source, size_t row_stride, int rows,
                                                int valid_rows, int thread) {
    constexpr int kChunks = kCols / 8;
    for (int c = thread; c < rows * kChunks; c += kThreads) {
        const int row = c / kChunks;
        const int col = c % kChunks * 8;
        uint16_t* destination = tile + swizzled<kCols>(row, col);
        if (row < valid_rows) {
            cp_async_16(destination, source + row * row_stride + col);
        } else {
            uint32_t* words = reinterpret_cast<uint32_t*>(destination);
            for (int i = 0; i < 4; ++i) words[i] = 0;
        }
    }
}

// The A fragment (16 x 16, row-major) at rows row0.., columns col0.. of a tile that stores A as is.
// ldmatrix matrices 0..3 are the quadrants (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15),
// which are a0..a3 of the PTX layout.
template <int kCols>
__device__ __forceinline__ void load_a(uint32_t a[4], const uint16_t* tile, int row0, int col0, int lane) {
    const int matrix = lane / 8, r = lane % 8;
    ldmatrix_x4(a, tile + swizzled<kCols>(row0 + matrix % 2 * 8 + r, col0 + matrix / 2 * 8));
}

// The A fragment (16 x 16) at rows row0.., columns col0.. of A = Mᵀ, where the tile stores M: the
// transposing load reads M's rows col0.. and columns row0...
template <int kCols>
__device__ __forceinline__ void load_a_transposed(uint32_t a[4], const uint16_t* tile, int row0, int col0,
                                                  int lane) {
    const int matrix = lane / 8, r = lane % 8;
    ldmatrix_x4_trans(a, tile + swizzled<kCols>(col0 + matrix / 2 * 8 + r, row0 + matrix % 2 * 8));
}

// B fragments (16 x 8, K x N) of the two n-tiles n0.. and n0 + 8.. at k0.., from a tile that stores
// B's transpose, one row per n (K for Q·Kᵀ): b[0..1] for n0, b[2..3] for n0 + 8.
template <int kCols>
__device__ __forceinline__ void load_b_pair_from_n_rows(uint32_t b[4], const uint16_t* tile, int n0, int k0,
                                                        int lane) {
    const int matrix = lane / 8, r = lane % 8;
    ldmatrix_x4(b, tile + swizzled<kCols>(n0 + matrix / 2 * 8 + r, k0 + matrix % 2 * 8));
}

// The same two B fragments from a tile that stores B as is, one row per k (V for P·V), through the
// transposing load.
template <int kCols>
__device__ __forceinline__ void load_b_pair_from_k_rows(uint32_t b[4], const uint16_t* tile, int k0, int n0,
                                                        int lane) {
    const int matrix = lane / 8, r = lane % 8;
    ldmatrix_x4_trans(b, tile + swizzled<kCols>(k0 + matrix % 2 * 8 + r, n0 + matrix / 2 * 8));
}
