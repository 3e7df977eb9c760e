// What the attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu) share: the block shape,
// documents of a (packed) batch, and where a head's rows live in the token-major tensors.
#pragma once

#include "kernel.h"
#include "params.h"
#include "s2_mask.h"
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
