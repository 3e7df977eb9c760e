// Shared-memory tiles of bf16 rows (kCols elements, a multiple of 64) and the mma fragments read from
// them. A row is a run of 16-byte chunks; chunk c of row r is stored at chunk c ^ (r % 8). ldmatrix
// reads one chunk from each of 8 consecutive rows at once, and the XOR sends those 8 chunks to 8
// different 16-byte bank groups, so the read is free of bank conflicts; without it, rows of 128 or 256
// bytes would put all 8 chunks in the same banks. Every chunk keeps its 8 elements together, so
// 16-byte copies and bf16-pair stores work on swizzled tiles unchanged.
#pragma once

#include "bf16.h"
#include "cp_async.h"
#include "kernel.h"
#include "ldmatrix.h"
#include "memory_access.h"
#include "shared_memory.h"

// The element offset of (row, col) in a swizzled tile with kCols elements per row.
template <int kCols>
__device__ __forceinline__ int swizzled(int row, int col) {
    static_assert(kCols % 64 == 0, "the swizzle permutes groups of 8 chunks");
    return row * kCols + ((col / 8) ^ (row % 8)) * 8 + col % 8;
}

// Starts copying kRows rows of kCols elements, `row_stride` elements apart in global memory, into a
// swizzled tile; rows from `valid_rows` on are zero-filled by the copy instead of read, so nothing
// past the end of a sequence is touched and padding rows contribute exact zeros. The caller commits
// the group and waits for it. Every one of the block's kThreads threads takes part: thread t always
// copies chunk t % (kCols / 8) of rows t / (kCols / 8) + i * kRowsPerStep, and as kRowsPerStep is a
// multiple of 8 its swizzled column is the same in every step, so each step is an immediate offset.
template <int kCols, int kRows, int kThreads>
__device__ __forceinline__ void load_tile_async(uint16_t* tile, const uint16_t* source, size_t row_stride,
                                                int valid_rows, int thread) {
    constexpr int kChunks = kCols / 8, kRowsPerStep = kThreads / kChunks;
    static_assert(kThreads % kChunks == 0 && kRowsPerStep % 8 == 0 && kRows % kRowsPerStep == 0,
                  "every thread copies the same swizzled column of the same number of rows");
    const int row = thread / kChunks, col = thread % kChunks * 8;
    uint16_t* destination = tile + swizzled<kCols>(row, col);
    const uint16_t* from = source + row * row_stride + col;
    LONGLORA_NO_UNROLL
    for (int i = 0; i < kRows / kRowsPerStep; ++i) {
        const bool inside = row + i * kRowsPerStep < valid_rows;
        // A zero-filled row still names a valid address: the tile's first row, which always exists.
        cp_async_16_zero_fill(destination + i * kRowsPerStep * kCols,
                              inside ? from + i * kRowsPerStep * row_stride : source + col, inside ? 16 : 0);
    }
}

// A shared-memory row address as ldmatrix takes it: on the GPU the 32-bit address in the shared
// window (one register, where a generic pointer takes two), in the emulator a plain pointer.
#if defined(LONGLORA_EMU)
using SharedRow = const uint16_t*;
__device__ __forceinline__ SharedRow shared_row(const uint16_t* element) { return element; }
__device__ __forceinline__ SharedRow advance(SharedRow row, int elements) { return row + elements; }
#else
using SharedRow = uint32_t;
__device__ __forceinline__ SharedRow shared_row(const uint16_t* element) { return shared_address(element); }
__device__ __forceinline__ SharedRow advance(SharedRow row, int elements) {
    return row + static_cast<uint32_t>(elements) * sizeof(uint16_t);
}
#endif

// A lane's row addresses for ldmatrix.x4 loads from a swizzled tile. ldmatrix's lanes 8j..8j+7 give
// the rows of matrix j; a warp reads two 8-row halves and two adjacent chunks, so the lane's row is
// row0 + 8 * (one bit of j) + lane % 8 and its chunk is 2 * pair + (the other bit of j). Rows are
// multiples of 128 bytes and the swizzle changes only a chunk's low three bits, so the lane's address
// of chunk pair p at 8k rows further is pairs[p % 4] + 8k rows + (p / 4) * 64 elements: 4 registers
// per tile, and every load of a product an immediate offset from one of them.
template <int kCols>
struct SwizzledRows {
    SharedRow pairs[4];

    // The lane's row address for matrix rows row_offset.. (a multiple of 8) and columns 16 * pair...
    __device__ __forceinline__ SharedRow at(int row_offset, int pair) const {
        return advance(pairs[pair % 4], row_offset * kCols + pair / 4 * 64);
    }
};

// Pair p of the result is chunk pair pair0 + p: a column offset known only at run time (a warp's
// share of the columns) goes in here, so that `at` still indexes `pairs` with constants.
template <int kCols>
__device__ __forceinline__ SwizzledRows<kCols> swizzled_rows(const uint16_t* tile, int row, int pair0, int chunk_bit) {
    SwizzledRows<kCols> rows;
    LONGLORA_UNROLL
    for (int j = 0; j < 4; ++j) {
        rows.pairs[j] = shared_row(tile + row * kCols + ((2 * (pair0 + j) + chunk_bit) ^ (row & 7)) * 8);
    }
    return rows;
}

// Matrices 0..3 at (rows +0, chunk +0), (+8, +0), (+0, +1), (+8, +1) from rows row0.. and columns
// col0.. (a multiple of 16): the A fragment
// (16 x 16, row-major) of a tile that stores A as is, whose registers a0..a3 are those quadrants; and,
// through .trans, two B fragments (n-tiles n0.. and n0 + 8..) of a tile that stores B with one row
// per k (V for P·V).
template <int kCols>
__device__ __forceinline__ SwizzledRows<kCols> rows_for_a(const uint16_t* tile, int row0, int col0, int lane) {
    const int matrix = lane / 8;
    return swizzled_rows<kCols>(tile, row0 + matrix % 2 * 8 + lane % 8, col0 / 16, matrix / 2);
}

// Matrices 0..3 at (rows +0, chunk +0), (+0, +1), (+8, +0), (+8, +1) from rows row0.. and columns
// col0..: two B fragments
// (b[0..1] for n-tile n0.., b[2..3] for n0 + 8..) of a tile that stores B's transpose, one row per n
// (K for Q·Kᵀ); and, through .trans, the A fragment of A = Mᵀ from a tile that stores M.
template <int kCols>
__device__ __forceinline__ SwizzledRows<kCols> rows_for_b(const uint16_t* tile, int row0, int col0, int lane) {
    const int matrix = lane / 8;
    return swizzled_rows<kCols>(tile, row0 + matrix / 2 * 8 + lane % 8, col0 / 16, matrix % 2);
}

// Writes a warp's kM x kN/8 C fragments (16 kM rows from row0, kN columns from col0, a multiple of 8),
// rounded to bf16 pairs, into a swizzled tile. The 8 rows of one store land in 8 different chunk
// columns, so each 4-byte store of the warp touches 32 different banks.
template <int kCols, int kM, int kN>
__device__ __forceinline__ void store_c_fragments(uint16_t* tile, int row0, int col0, const float c[kM][kN / 8][4],
                                                  int lane) {
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int nt = 0; nt < kN / 8; ++nt) {
            LONGLORA_UNROLL
            for (int h = 0; h < 2; ++h) {
                const int row = row0 + 16 * m + lane / 4 + 8 * h, col = col0 + nt * 8 + lane % 4 * 2;
                store_shared_4(tile + swizzled<kCols>(row, col), pack_bf16x2(c[m][nt][2 * h], c[m][nt][2 * h + 1]));
            }
        }
    }
}

// Copies rows row0..row0 + kRows - 1 of a swizzled tile to global memory, 16 bytes per lane, rows
// `row_stride` elements apart starting at `destination`; rows from `valid_rows` on are skipped. The
// kLanes threads (a warp, or the block) that call it each take the same number of chunks, lane
// `lane` the chunks lane, lane + kLanes, ...: 8 consecutive lanes read one row's 8 chunks, which the
// swizzle keeps in different banks, and write 128 contiguous bytes of it.
template <int kCols, int kRows, int kLanes>
__device__ __forceinline__ void store_tile_rows(uint16_t* destination, size_t row_stride, const uint16_t* tile,
                                                int row0, int valid_rows, int lane) {
    constexpr int kChunks = kCols / 8;
    static_assert(kRows * kChunks % kLanes == 0, "every lane stores the same number of chunks");
    LONGLORA_UNROLL
    for (int i = 0; i < kRows * kChunks / kLanes; ++i) {
        const int c = i * kLanes + lane;
        const int row = c / kChunks, col = c % kChunks * 8;
        const uint4 chunk = load_shared_16(tile + swizzled<kCols>(row0 + row, col));
        if (row < valid_rows) store_global_16(destination + row * row_stride + col, chunk);
    }
}
