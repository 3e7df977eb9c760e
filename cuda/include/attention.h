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
    return (static_cast<size_t>(d.start + position) * heads + head) * head_dim;
}

// Offset of (head, position) in the per-row statistics (lse, delta): [document][head][position].
__device__ __forceinline__ size_t row_stat_offset(const Document& d, int n_heads, int head, int position) {
    return static_cast<size_t>(d.start) * n_heads + static_cast<size_t>(head) * d.len + position;
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

// The allowed columns of row first_row + lane as spans (s2_mask.h): the keys of a query, or the
// queries of a key when kKeysInRows; nothing for a row past the document's end, and no span reaches
// past it. Each lane computes one row's spans (an integer division or two) once for all the tiles a
// warp visits, and mask_slab fetches the rows it needs from their lanes by shuffles, so masking a
// tile costs no division and an element a few compares.
template <bool kKeysInRows>
__device__ __forceinline__ Spans lane_row_spans(const HeadMask& m, int first_row, int lane) {
    const int row = first_row + lane;
    const Span none = {0, -1};
    if (row >= m.n) return {none, none};
    return kKeysInRows ? queries_of_key(m, row) : keys_of_query(m, row);
}

// Sets the disallowed entries of a warp's 16 kM x kN score slab (warp_gemm.h layout), whose rows are
// the rows of lane_row_spans' lanes 0..16 kM - 1 and whose columns are positions col0.., to -inf.
template <int kM, int kN>
__device__ __forceinline__ void mask_slab(float s[kM][kN / 8][4], const Spans& lane_spans, int col0, int lane) {
    LONGLORA_UNROLL
    for (int mt = 0; mt < kM; ++mt) {
        LONGLORA_UNROLL
        for (int h = 0; h < 2; ++h) {
            const int source = 16 * mt + lane / 4 + 8 * h;
            const Spans allowed = {
                {__shfl_sync(0xffffffffu, lane_spans.main.lo, source), __shfl_sync(0xffffffffu, lane_spans.main.hi, source)},
                {__shfl_sync(0xffffffffu, lane_spans.wrap.lo, source), __shfl_sync(0xffffffffu, lane_spans.wrap.hi, source)}};
            LONGLORA_UNROLL
            for (int nt = 0; nt < kN / 8; ++nt) {
                LONGLORA_UNROLL
                for (int i = 2 * h; i < 2 * h + 2; ++i) {
                    const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                    if (!spans_contain(allowed, col)) s[mt][nt][i] = kNegativeInfinity;
                }
            }
        }
    }
}
