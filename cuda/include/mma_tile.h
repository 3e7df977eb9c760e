// Block-level tiling for the m16n8k16 bf16 products of the LoRA kernels: asynchronous copies of a
// matrix tile from global into padded shared memory, with zeros past the matrix's edges, and the
// ldmatrix addressing that turns such tiles into mma fragments.
//
// A shared tile is row-major with `stride` elements per row; strides of (columns + 8), with columns a
// multiple of 8, keep every row 16-byte aligned for ldmatrix and shift consecutive rows by 4 banks
// (mod 32), so the 8 rows of one 8x8 matrix hit different banks. Fragment helpers come in two forms,
// by how the tile stores the product's reduction dimension k: "rows x k" tiles (k contiguous) use
// plain ldmatrix, "k x rows" tiles use .trans.
#pragma once

#include "bf16.h"
#include "cp_async.h"
#include "kernel.h"
#include "ldmatrix.h"

constexpr int kTilePad = 8;

// Starts copying the ROWS x COLS tile at (row0, col0) of a row-major bf16 matrix into `tile`, every
// element in a 16-byte cp.async copy, of which only the first rows_used x cols_used (cols_used a
// multiple of 8) are touched. What lies at or beyond (row_end, col_end) reads nothing and lands as
// zeros (the src-size operand), so a partial tile multiplies as if the matrix were padded with
// zeros. The matrix's rows start on 16-byte boundaries: `matrix` is 16-byte aligned and its row
// stride `ld` a multiple of 8. All kThreads threads of the block take part; the caller commits the
// group and waits for it.
template <int ROWS, int COLS, int kThreads>
__device__ __forceinline__ void load_matrix_tile(uint16_t* tile, uint32_t stride, const uint16_t* matrix,
                                                 uint32_t ld, uint32_t row0, uint32_t col0, uint32_t row_end,
                                                 uint32_t col_end, uint32_t rows_used = ROWS,
                                                 uint32_t cols_used = COLS) {
    static_assert(COLS % 8 == 0, "tiles are whole 16-byte chunks wide");
    constexpr int kChunksPerRow = COLS / 8;
    constexpr int kChunks = ROWS * kChunksPerRow;
    LONGLORA_UNROLL
    for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
        const unsigned chunk = threadIdx.x + i * kThreads;
        const uint32_t r = chunk / kChunksPerRow, k = chunk % kChunksPerRow * 8;
        if (chunk >= kChunks || r >= rows_used || k >= cols_used) continue;
        const uint32_t row = row0 + r, col = col0 + k;
        const bool inside = row < row_end && col < col_end;
        const uint32_t bytes = !inside ? 0 : col_end - col >= 8 ? 16 : 2 * (col_end - col);
        const uint16_t* source = inside ? matrix + static_cast<size_t>(row) * ld + col : matrix;
        cp_async_16_zero_fill(tile + r * stride + k, source, bytes);
    }
}

// Stores the ROWS x COLS tile at (row0, col0) of a row-major f32 matrix into `tile` as bf16 at once
// (through registers: a conversion cp.async cannot do), zeros at and beyond (row_end, col_end).
template <int ROWS, int COLS, int kThreads>
__device__ __forceinline__ void convert_matrix_tile(uint16_t* tile, uint32_t stride, const float* matrix, uint32_t ld,
                                                    uint32_t row0, uint32_t col0, uint32_t row_end,
                                                    uint32_t col_end) {
    static_assert(ROWS * COLS % kThreads == 0, "every thread converts as many elements");
    LONGLORA_UNROLL
    for (int i = 0; i < ROWS * COLS / kThreads; ++i) {
        const unsigned element = threadIdx.x + i * kThreads;
        const uint32_t r = element / COLS, c = element % COLS;
        const uint32_t row = row0 + r, col = col0 + c;
        const bool inside = row < row_end && col < col_end;
        tile[r * stride + c] = inside ? float_to_bf16(matrix[static_cast<size_t>(row) * ld + col]) : uint16_t{0};
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

// The B fragments of two adjacent n-tiles at (n0, k0), from an n x k tile (kKMajor: k contiguous) or
// a k x n tile.
template <bool kKMajor>
__device__ __forceinline__ void load_b_pair(uint32_t b[2][2], const uint16_t* tile, int stride, int n0, int k0) {
    if (kKMajor) {
        load_b_fragments(b, tile, stride, n0, k0);
    } else {
        load_b_fragments_trans(b, tile, stride, n0, k0);
    }
}

// Two adjacent bf16 values as one 4-byte access (`address` 4-byte aligned). The emulator copies bytes,
// which C++ allows where a uint32_t access to uint16_t storage would not.
__device__ __forceinline__ uint32_t load_bf16_pair(const uint16_t* address) {
#if defined(LONGLORA_EMU)
    uint32_t pair;
    memcpy(&pair, address, sizeof pair);
    return pair;
#else
    return *reinterpret_cast<const uint32_t*>(address);
#endif
}

__device__ __forceinline__ void store_bf16_pair(uint16_t* address, uint32_t pair) {
#if defined(LONGLORA_EMU)
    memcpy(address, &pair, sizeof pair);
#else
    *reinterpret_cast<uint32_t*>(address) = pair;
#endif
}
