// Block-level tiling for the m16n8k16 bf16 products: guarded copies of a matrix tile from global into
// padded shared memory, and the ldmatrix addressing that turns such tiles into mma fragments.
//
// A shared tile is row-major with `stride` elements per row; strides of (columns + 8) keep every row
// 16-byte aligned for ldmatrix and shift consecutive rows by 4 banks, so the 8 rows of one 8x8 matrix
// hit different banks. Fragment helpers come in two forms, by how the tile stores the product's
// reduction dimension k: "rows x k" tiles (k contiguous) use plain ldmatrix, "k x rows" tiles use .trans.
#pragma once

#include <type_traits>

#include "bf16.h"
#include "cp_async.h"
#include "kernel.h"
#include "ldmatrix.h"

constexpr int kTilePad = 8;

// Copies the ROWS x COLS tile at (row0, col0) of a row-major global matrix with `ld` elements per row
// into `tile` as bf16, writing zeros at and beyond (row_end, col_end), so that partial tiles multiply
// as if the matrix were padded with zeros. All threads of the block take part. A bf16 tile that lies
// wholly inside the matrix on 16-byte boundaries moves in 16-byte cp.async copies (coalesced, and
// through no registers), which the caller commits and awaits (cp_async.h) before its barrier; edge
// tiles and f32 sources are stored element by element at once.
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_tile(uint16_t* tile, int stride, const T* global, size_t ld, uint32_t row0,
                                          uint32_t col0, uint32_t row_end, uint32_t col_end) {
    static_assert(COLS % 8 == 0, "tiles are whole 16-byte chunks wide");
    if constexpr (std::is_same_v<T, uint16_t>) {
        const bool inside = row0 + ROWS <= row_end && col0 + COLS <= col_end;
        const bool aligned =
            ld % 8 == 0 && col0 % 8 == 0 && reinterpret_cast<uintptr_t>(global) % 16 == 0 && stride % 8 == 0;
        if (inside && aligned) {
            constexpr int kChunksPerRow = COLS / 8;
            for (unsigned c = threadIdx.x; c < ROWS * kChunksPerRow; c += blockDim.x) {
                const uint32_t r = c / kChunksPerRow, k = c % kChunksPerRow * 8;
                cp_async_16(tile + r * stride + k, global + static_cast<size_t>(row0 + r) * ld + col0 + k);
            }
            return;
        }
    }
    for (unsigned i = threadIdx.x; i < ROWS * COLS; i += blockDim.x) {
        const uint32_t r = i / COLS, c = i % COLS;
        const uint32_t row = row0 + r, col = col0 + c;
        tile[r * stride + c] =
            row < row_end && col < col_end ? to_bf16(global[static_cast<size_t>(row) * ld + col]) : uint16_t{0};
    }
}

__device__ __forceinline__ unsigned lane_id() { return threadIdx.x % 32; }

// The A fragment (16 x 16, rows row0.., k k0..) of a rows x k tile.
__device__ __forceinline__ void load_a_fragment(uint32_t a[4], const uint16_t* tile, int stride, int row0, int k0) {
    const unsigned lane = lane_id(), matrix = lane / 8;
    ldmatrix_x4(a, tile + (row0 + (matrix & 1) * 8 + lane % 8) * stride + k0 + (matrix >> 1) * 8);
}

// The A fragment (16 x 16, rows row0.., k k0..) of a k x rows tile.
__device__ __forceinline__ void load_a_fragment_trans(uint32_t a[4], const uint16_t* tile, int stride, int row0,
                                                      int k0) {
    const unsigned lane = lane_id(), matrix = lane / 8;
    ldmatrix_x4_trans(a, tile + (k0 + (matrix >> 1) * 8 + lane % 8) * stride + row0 + (matrix & 1) * 8);
}

// The B fragments of two adjacent 16 x 8 tiles (columns n0..n0+7 and n0+8..n0+15, k k0..) of an
// n x k tile, such as a weight stored [out][in] for x·Wᵀ.
__device__ __forceinline__ void load_b_fragments(uint32_t b[2][2], const uint16_t* tile, int stride, int n0,
                                                 int k0) {
    const unsigned lane = lane_id(), matrix = lane / 8;
    uint32_t r[4];
    ldmatrix_x4(r, tile + (n0 + (matrix >> 1) * 8 + lane % 8) * stride + k0 + (matrix & 1) * 8);
    b[0][0] = r[0], b[0][1] = r[1], b[1][0] = r[2], b[1][1] = r[3];
}

// The same two B fragments from a k x n tile, such as a weight stored [out][in] for dY·W.
__device__ __forceinline__ void load_b_fragments_trans(uint32_t b[2][2], const uint16_t* tile, int stride,
                                                       int n0, int k0) {
    const unsigned lane = lane_id(), matrix = lane / 8;
    uint32_t r[4];
    ldmatrix_x4_trans(r, tile + (k0 + (matrix & 1) * 8 + lane % 8) * stride + n0 + (matrix >> 1) * 8);
    b[0][0] = r[0], b[0][1] = r[1], b[1][0] = r[2], b[1][1] = r[3];
}

// The C fragments of two adjacent 16 x 8 f32 results, scaled and rounded to bf16, are the A fragment of
// a product that reduces over those 16 columns: the result never leaves registers.
__device__ __forceinline__ void accumulators_to_a_fragment(uint32_t a[4], const float c0[4], const float c1[4],
                                                           float scale) {
    a[0] = pack_bf16x2(scale * c0[0], scale * c0[1]);
    a[1] = pack_bf16x2(scale * c0[2], scale * c0[3]);
    a[2] = pack_bf16x2(scale * c1[0], scale * c1[1]);
    a[3] = pack_bf16x2(scale * c1[2], scale * c1[3]);
}
