// What the attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu) share: the block shape,
// documents of a (packed) batch, and where a head's rows live in the token-major tensors.
#pragma once

#include "kernel.h"
#include "cp_async.h"
#include "params.h"
#include "s2_mask.h"
#include "tile.h"
#include "warp_gemm.h"

constexpr int kAttentionWarps = 4;
constexpr int kAttentionThreads = 32 * kAttentionWarps;
constexpr int kWarpRows = 16;  // the rows of a 64-row block that one warp owns

// One document of the batch: tokens start .. start + len of the token-major tensors.
struct Document {
    int start, len;
};

__device__ __forceinline__ Document attention_document(const AttentionProblem& p, int b) {
    if (p.cu_seqlens != nullptr) return {p.cu_seqlens[b], p.cu_seqlens[b + 1] - p.cu_seqlens[b]};
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

// Sets the disallowed entries of a 16 x kSlab score slab (warp_gemm.h layout) to -inf. Rows are positions
// row0.., columns col0..; they are (query, key) pairs, or (key, query) pairs when kKeysInRows.
// Padding past the document's end is disallowed too.
template <bool kKeysInRows, int kSlab = kTileRows>
__device__ __forceinline__ void mask_slab(float s[kSlab / 8][4], const HeadMask& m, int row0, int col0, int lane) {
    LONGLORA_UNROLL
    for (int nt = 0; nt < kSlab / 8; ++nt) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int row = row0 + lane / 4 + (i >= 2 ? 8 : 0);
            const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
            const int query = kKeysInRows ? col : row, key = kKeysInRows ? row : col;
            if (query >= m.n || key >= m.n || !mask_allows(m, query, key)) s[nt][i] = kNegativeInfinity;
        }
    }
}

// Starts the async loads of the 64-row K and V tiles at position k0 of `kv_head` (rows past the
// document's end are zero-filled). Params is the forward's or the backward's struct: both carry k, v
// and the problem.
template <int D, class Params>
__device__ void load_kv_tiles(uint16_t* k_tile, uint16_t* v_tile, const Params& p, const Document& doc,
                              int kv_head, int k0, int thread) {
    const int heads = static_cast<int>(p.problem.n_kv_heads);
    const size_t stride = static_cast<size_t>(heads) * D;
    const size_t offset = token_offset(doc, k0, heads, kv_head, D);
    load_tile_async<D, kAttentionThreads>(k_tile, p.k + offset, stride, kTileRows, doc.len - k0, thread);
    load_tile_async<D, kAttentionThreads>(v_tile, p.v + offset, stride, kTileRows, doc.len - k0, thread);
}

// One step of the double-buffered K/V stream over `tiles`: starts loading tile t + 1 into the other
// buffer (when there is one), then waits until tile t and everything committed before it has landed.
// The caller's __syncthreads() publishes it to the block.
template <int D, class Params, class Tiles>
__device__ void prefetch_next_kv_wait_current(uint16_t* k_tiles, uint16_t* v_tiles, const Params& p,
                                              const Document& doc, int kv_head, const Tiles& tiles, int t,
                                              int thread) {
    if (t + 1 < tiles.size()) {
        const int next = (t + 1) % 2 * kTileRows * D;
        load_kv_tiles<D>(k_tiles + next, v_tiles + next, p, doc, kv_head, tiles.start(t + 1), thread);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
}
