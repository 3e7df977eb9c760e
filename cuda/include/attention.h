// What the attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu) share: the block shapes,
// documents of a (packed) batch, where a head's rows live in the token-major tensors, moving those
// rows between global and shared memory, and masking a warp's score slab.
#pragma once

#include "kernel.h"
#include "memory_access.h"
#include "params.h"
#include "s2_mask.h"
#include "tile.h"

constexpr int kBlockRows = ATTENTION_BLOCK_ROWS;
constexpr int kBackwardQueries = ATTENTION_BACKWARD_QUERIES;
constexpr int kDqKeys = ATTENTION_DQ_KEYS;

// One document of the batch: tokens start .. start + len of the token-major tensors.
struct Document {
    int start, len;
};

__device__ __forceinline__ Document attention_document(const AttentionProblem& p, int b) {
    if (p.cu_seqlens != nullptr) {
        const int start = load_global(p.cu_seqlens + b);
        return {start, load_global(p.cu_seqlens + b + 1) - start};
    }
    const int len = static_cast<int>(p.seq_len);
    return {b * len, len};
}

// Element offset of (position, head) in a token-major tensor with `heads` heads of head_dim elements.
__device__ __forceinline__ size_t token_offset(const Document& d, int position, int heads, int head,
                                               int head_dim) {
    return (static_cast<size_t>(static_cast<unsigned>(d.start + position)) * static_cast<unsigned>(heads) +
            static_cast<unsigned>(head)) *
           static_cast<unsigned>(head_dim);
}

// Offset of (head, position) in the per-row statistics (lse, delta): [document][head][position].
__device__ __forceinline__ size_t row_stat_offset(const Document& d, int n_heads, int head, int position) {
    return static_cast<size_t>(static_cast<unsigned>(d.start)) * static_cast<unsigned>(n_heads) +
           static_cast<size_t>(static_cast<unsigned>(head)) * static_cast<unsigned>(d.len) + static_cast<unsigned>(position);
}

__device__ __forceinline__ int kv_head_of(const AttentionProblem& p, int head) {
    return head / static_cast<int>(p.n_heads / p.n_kv_heads);
}

constexpr float kNegativeInfinity = -__builtin_huge_valf();
constexpr float kLog2e = 1.4426950408889634f;

// Starts the async copy of rows r0..r0+kRows-1 of `head` of a token-major tensor with `heads` heads of
// D elements into a swizzled tile; rows past the document's end become zeros without being read.
template <int D, int kRows, int kThreads>
__device__ __forceinline__ void load_head_rows_async(uint16_t* tile, const uint16_t* tensor, const Document& doc,
                                                     int heads, int head, int r0, int thread) {
    load_tile_async<D, kRows, kThreads>(tile, tensor + token_offset(doc, r0, heads, head, D),
                                        static_cast<size_t>(heads) * D, doc.len - r0, thread);
}

// Stores rows tile_row0..tile_row0+kRows-1 of a swizzled tile as rows r0.. of `head` of a token-major
// tensor, 16 bytes per lane, skipping rows past the document's end (see store_tile_rows).
template <int D, int kRows, int kLanes>
__device__ __forceinline__ void store_head_rows(uint16_t* tensor, const Document& doc, int heads, int head, int r0,
                                                const uint16_t* tile, int tile_row0, int lane) {
    store_tile_rows<D, kRows, kLanes>(tensor + token_offset(doc, r0, heads, head, D), static_cast<size_t>(heads) * D,
                                      tile, tile_row0, doc.len - r0, lane);
}

// The columns one row of a score slab allows, in two numbers: its spans (s2_mask.h) always have one
// end at the row itself or at the document's edge, so only the far ends vary. With keys in columns
// (the row is query i): keys [main_end, i] and [wrap_end, n - 1]. With queries in columns (the row is
// key j): queries [j, main_end] and [0, wrap_end]. Empty spans and rows past the document's end
// (which allow nothing) are encoded by ends on the wrong side, and no span reaches past n - 1.
struct RowSpans {
    int main_end, wrap_end;
};

// A warp's rows first_row.. as mask_slab needs them: lane l holds the RowSpans of row first_row + l.
// Each lane computes one row's spans (an integer division or two) once for all the tiles a warp
// visits, and mask_slab fetches the rows it needs from their lanes by shuffles, so masking a tile
// costs no division and an element a few compares.
struct WarpRows {
    RowSpans lane_spans;
    int first_row;
    int n;  // the document's length
};

template <bool kKeysInRows>
__device__ __forceinline__ WarpRows warp_rows(const HeadMask& m, int first_row, int lane) {
    const int row = first_row + lane;
    if (kKeysInRows) {
        if (row >= m.n) return {{row - 1, -1}, first_row, m.n};
        const Spans s = queries_of_key(m, row);
        return {{s.main.hi, span_empty(s.wrap) ? -1 : s.wrap.hi}, first_row, m.n};
    }
    if (row >= m.n) return {{row + 1, m.n}, first_row, m.n};
    const Spans s = keys_of_query(m, row);
    return {{s.main.lo, span_empty(s.wrap) ? m.n : s.wrap.lo}, first_row, m.n};
}

// Sets the disallowed entries of a warp's 16 kM x kN score slab (warp_gemm.h layout), whose rows are
// `rows` and whose columns are positions col0.., to -inf.
template <bool kKeysInRows, int kM, int kN>
__device__ __forceinline__ void mask_slab(float s[kM][kN / 8][4], const WarpRows& rows, int col0, int lane) {
    LONGLORA_UNROLL
    for (int mt = 0; mt < kM; ++mt) {
        LONGLORA_UNROLL
        for (int h = 0; h < 2; ++h) {
            const int source = 16 * mt + lane / 4 + 8 * h, row = rows.first_row + source;
            const int main_end = __shfl_sync(0xffffffffu, rows.lane_spans.main_end, source);
            const int wrap_end = __shfl_sync(0xffffffffu, rows.lane_spans.wrap_end, source);
            LONGLORA_UNROLL
            for (int nt = 0; nt < kN / 8; ++nt) {
                LONGLORA_UNROLL
                for (int i = 2 * h; i < 2 * h + 2; ++i) {
                    const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                    const bool allowed = kKeysInRows
                                             ? (col >= row && col <= main_end) || col <= wrap_end
                                             : (col >= main_end && col <= row) || (col >= wrap_end && col < rows.n);
                    if (!allowed) s[mt][nt][i] = kNegativeInfinity;
                }
            }
        }
    }
}

// Whether every pair of the warp's rows first_row..first_row + row_count - 1 and columns col0..col1
// is allowed, so that its slab needs no masking: shuffles and compares, no division. By the
// monotonicity of the spans (s2_mask.h) one row decides. With keys in columns, the last query: the
// columns lie in its main span and at or below the first query, or in its wrap, which every earlier
// query then has too, starting no later. With queries in columns, the first key: the columns lie at
// or after the last key and in the first key's main span, whose end is the smallest, or in its wrap,
// which every later key has too, ending no earlier. Rows and columns past the document's end never
// pass.
template <bool kKeysInRows>
__device__ __forceinline__ bool warp_allows_all(const WarpRows& rows, int row_count, int col0, int col1) {
    const int decider = kKeysInRows ? 0 : row_count - 1;
    const int row = rows.first_row + decider;
    const int main_end = __shfl_sync(0xffffffffu, rows.lane_spans.main_end, decider);
    const int wrap_end = __shfl_sync(0xffffffffu, rows.lane_spans.wrap_end, decider);
    if (kKeysInRows) {
        const int last_key = rows.first_row + row_count - 1;
        return (col0 >= last_key && col1 <= main_end) || (col1 <= wrap_end && last_key < rows.n);
    }
    return (col0 >= main_end && col1 <= rows.first_row) || (col0 >= wrap_end && col1 < rows.n && row < rows.n);
}
