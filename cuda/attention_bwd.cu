// The backward pass of attention_fwd.cu, as FlashAttention-2 (DESIGN §5), with P = exp(scale·S − LSE)
// recomputed from Q, K and the forward's LSE instead of stored:
//   attention_backward_delta_kernel: delta = rowsum(dO ∘ O) per query row (dS = P ∘ (dP − delta)),
//     and clears the f32 dQ accumulator;
//   attention_backward_dkdv_d{64,128}_kernel: block (x, y) owns keys 64x..64x+63 of kv head
//     y % n_kv_heads of document y / n_kv_heads, 16 per warp, and walks the query tiles that may see
//     them, for every query head of the kv head's GQA group in turn: dK and dV sum over the group in
//     registers, so they need neither atomics nor an f32 buffer, and K and V are loaded once. dQ
//     goes to the f32 accumulator with atomics, unless deterministic;
//   attention_backward_dq_convert_kernel: dQ = scale · accumulator, to bf16;
//   attention_backward_dq_d{64,128}_kernel (deterministic mode): dQ per query block, walking its K/V
//     tiles in a fixed order like the forward does, so two runs agree bit for bit.
// Gradients are taken with respect to the scaled scores, so dQ and dK get the softmax scale at the end.

#include "kernel.h"

#include "attention.h"
#include "bf16.h"
#include "cp_async.h"
#include "params.h"
#include "s2_mask.h"
#include "shared_memory.h"
#include "tile.h"
#include "warp_gemm.h"

namespace {

__device__ __forceinline__ float backward_warp_sum(float value) {
    LONGLORA_UNROLL
    for (int mask = 16; mask > 0; mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, mask);
    return value;
}

// Stores a warp's 16 x D slab of f32 gradients (C fragments) as bf16 rows row0.. of a token-major
// tensor, times `scale`, added to what is there when `accumulate`. Rows past the document's end are
// padding and are skipped.
template <int D>
__device__ void store_gradient_rows(uint16_t* tensor, const Document& doc, int heads, int head, int row0,
                                    const float c[D / 8][4], float scale, bool accumulate, int lane) {
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + lane / 4 + 8 * h;
        if (row >= doc.len) continue;
        uint32_t* pairs = reinterpret_cast<uint32_t*>(tensor + token_offset(doc, row, heads, head, D) + lane % 4 * 2);
        LONGLORA_UNROLL
        for (int dt = 0; dt < D / 8; ++dt) {
            float lo = c[dt][2 * h] * scale, hi = c[dt][2 * h + 1] * scale;
            if (accumulate) {
                const uint32_t old = pairs[dt * 4];
                lo += bf16x2_low(old);
                hi += bf16x2_high(old);
            }
            pairs[dt * 4] = pack_bf16x2(lo, hi);
        }
    }
}

// Starts loading the 64-row tiles of Q and dO at position r0 of `head`.
template <int D>
__device__ void backward_load_q_do(uint16_t* q_tile, uint16_t* do_tile, const AttentionBackwardParams& p,
                                   const Document& doc, int head, int r0, int thread) {
    const int heads = static_cast<int>(p.problem.n_heads);
    const size_t stride = static_cast<size_t>(heads) * D;
    const size_t offset = token_offset(doc, r0, heads, head, D);
    load_tile_async<D, kAttentionThreads>(q_tile, p.q + offset, stride, kTileRows, doc.len - r0, thread);
    load_tile_async<D, kAttentionThreads>(do_tile, p.dout + offset, stride, kTileRows, doc.len - r0, thread);
}

// Starts loading the query tile at r0 for the K/V-parallel kernel: Q and dO asynchronously, and the
// rows' lse (times log2 e) and delta with plain loads, which the next barrier publishes.
template <int D>
__device__ void load_query_tile(uint16_t* q_tile, uint16_t* do_tile, float* lse_log2, float* delta,
                                const AttentionBackwardParams& p, const Document& doc, int head, int r0, int thread) {
    backward_load_q_do<D>(q_tile, do_tile, p, doc, head, r0, thread);
    if (thread < kTileRows) {
        const int row = r0 + thread;
        const size_t at = row_stat_offset(doc, static_cast<int>(p.problem.n_heads), head, row);
        lse_log2[thread] = row < doc.len ? p.lse[at] * kLog2e : 0.0f;
        delta[thread] = row < doc.len ? p.delta[at] : 0.0f;
    }
}

constexpr int kHalf = kTileRows / 2;  // query columns per score slab of the K/V-parallel kernel

// Writes the warp's 16 x 32 slab of dSᵀ (bf16 A fragments, rows = keys row0.., columns = queries
// col0..) into the block's 64 x 64 dSᵀ tile, so that every warp can read the columns of its queries.
__device__ __forceinline__ void store_ds_slab(uint16_t* ds_tile, const uint32_t a[kHalf / 16][4], int row0, int col0,
                                              int lane) {
    const int g = lane / 4, col = lane % 4 * 2;
    LONGLORA_UNROLL
    for (int s = 0; s < kHalf / 16; ++s) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int row = row0 + g + (i & 1) * 8;
            const int c = col0 + 16 * s + (i >= 2 ? 8 : 0) + col;
            *reinterpret_cast<uint32_t*>(ds_tile + swizzled<kTileRows>(row, c)) = a[s][i];
        }
    }
}

// dQ[rows row0..row0+15] += dS · K over the block's 64 keys, added to the f32 accumulator with
// atomics (other key blocks add to the same rows). dS comes from the dSᵀ tile through transposing
// loads; K is the block's K tile, read as B one key per row.
template <int D>
__device__ void add_dq_slab(const AttentionBackwardParams& p, const Document& doc, int head, int row0,
                            const uint16_t* ds_tile, const uint16_t* k_tile, int warp_row0, int lane) {
    const int heads = static_cast<int>(p.problem.n_heads);
    uint32_t ds[4][4];
    LONGLORA_UNROLL
    for (int s = 0; s < 4; ++s) load_a_transposed<kTileRows>(ds[s], ds_tile, warp_row0, 16 * s, lane);
    LONGLORA_UNROLL
    for (int n0 = 0; n0 < D; n0 += 16) {
        float acc[2][4] = {};
        LONGLORA_UNROLL
        for (int s = 0; s < 4; ++s) {
            uint32_t b[4];
            load_b_pair_from_k_rows<D>(b, k_tile, 16 * s, n0, lane);
            mma_m16n8k16_bf16(acc[0], ds[s], &b[0], acc[0]);
            mma_m16n8k16_bf16(acc[1], ds[s], &b[2], acc[1]);
        }
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int row = row0 + lane / 4 + (i >= 2 ? 8 : 0);
            if (row >= doc.len) continue;
            float* dq = p.dq_accum + token_offset(doc, row, heads, head, D) + n0 + lane % 4 * 2 + (i & 1);
            atomicAdd(dq, acc[0][i]);
            atomicAdd(dq + 8, acc[1][i]);
        }
    }
}

template <int D>
__device__ void attention_backward_dkdv(const AttentionBackwardParams& p) {
    const AttentionProblem& problem = p.problem;
    const int n_kv_heads = static_cast<int>(problem.n_kv_heads);
    const int kv_head = static_cast<int>(blockIdx.y) % n_kv_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_kv_heads);
    const int c0 = static_cast<int>(blockIdx.x) * kTileRows;
    if (c0 >= doc.len) return;  // the whole block: a document shorter than the longest
    const int c_last = (c0 + kTileRows < doc.len ? c0 + kTileRows : doc.len) - 1;
    const int group = static_cast<int>(problem.n_heads) / n_kv_heads;

    const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
    const int key_row0 = warp * kWarpRows;  // this warp's keys within the block
    constexpr int kTile = kTileRows * D;
    uint16_t* k_tile = dynamic_shared<uint16_t>();
    uint16_t* v_tile = k_tile + kTile;
    uint16_t* q_tiles = v_tile + kTile;        // two buffers
    uint16_t* do_tiles = q_tiles + 2 * kTile;  // two buffers
    uint16_t* ds_tile = do_tiles + 2 * kTile;  // 64 x 64
    float* lse_log2 = reinterpret_cast<float*>(ds_tile + kTileRows * kTileRows);  // two buffers of 64
    float* delta = lse_log2 + 2 * kTileRows;                                       // two buffers of 64

    load_kv_tiles<D>(k_tile, v_tile, p, doc, kv_head, c0, thread);
    cp_async_commit();

    float dk[D / 8][4] = {}, dv[D / 8][4] = {};
    for (int head = kv_head * group; head < (kv_head + 1) * group; ++head) {
        const HeadMask mask = head_mask(problem, head, doc.len);
        const TileList<kTileRows> tiles = tiles_covering<kTileRows>(queries_of_keys(mask, c0, c_last));
        load_query_tile<D>(q_tiles, do_tiles, lse_log2, delta, p, doc, head, tiles.start(0), thread);
        cp_async_commit();

        for (int t = 0; t < tiles.size(); ++t) {
            if (t + 1 < tiles.size()) {
                const int next = (t + 1) % 2;
                load_query_tile<D>(q_tiles + next * kTile, do_tiles + next * kTile, lse_log2 + next * kTileRows,
                                   delta + next * kTileRows, p, doc, head, tiles.start(t + 1), thread);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            const int r0 = tiles.start(t);
            const uint16_t* q_tile = q_tiles + t % 2 * kTile;
            const uint16_t* do_tile = do_tiles + t % 2 * kTile;
            const float* row_lse_log2 = lse_log2 + t % 2 * kTileRows;
            const float* row_delta = delta + t % 2 * kTileRows;
            const bool masked = !mask_allows_all(mask, r0, r0 + kTileRows - 1, c0, c0 + kTileRows - 1);

            // Half of the tile's queries at a time: slabs of 32 score columns leave the registers to dK
            // and dV; with 64-column slabs ptxas spilled at both head dims.
            LONGLORA_NO_UNROLL
            for (int col0 = 0; col0 < kTileRows; col0 += kHalf) {
                float s[kHalf / 8][4];
                warp_gemm_abt<D, kHalf>(s, k_tile, key_row0, q_tile, col0, lane);  // Sᵀ = K·Qᵀ
                if (masked) mask_slab<true, kHalf>(s, mask, c0 + key_row0, r0 + col0, lane);
                LONGLORA_UNROLL
                for (int nt = 0; nt < kHalf / 8; ++nt) {  // Pᵀ = exp(scale·Sᵀ − LSE), by query column
                    LONGLORA_UNROLL
                    for (int i = 0; i < 4; ++i) {
                        const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                        s[nt][i] = exp2f(s[nt][i] * problem.scale_log2 - row_lse_log2[col]);
                    }
                }
                uint32_t fragments[kHalf / 16][4];
                to_a_fragments<kHalf>(fragments, s);
                warp_gemm_ab<D, kHalf>(dv, fragments, do_tile, col0, lane);  // dV += Pᵀ·dO

                float dp[kHalf / 8][4];
                warp_gemm_abt<D, kHalf>(dp, v_tile, key_row0, do_tile, col0, lane);  // dPᵀ = V·dOᵀ
                LONGLORA_UNROLL
                for (int nt = 0; nt < kHalf / 8; ++nt) {  // dSᵀ = Pᵀ ∘ (dPᵀ − delta)
                    LONGLORA_UNROLL
                    for (int i = 0; i < 4; ++i) {
                        const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                        s[nt][i] *= dp[nt][i] - row_delta[col];
                    }
                }
                to_a_fragments<kHalf>(fragments, s);
                warp_gemm_ab<D, kHalf>(dk, fragments, q_tile, col0, lane);  // dK += dSᵀ·Q
                if (!p.deterministic) store_ds_slab(ds_tile, fragments, key_row0, col0, lane);
            }
            if (!p.deterministic) {  // dQ += dS·K, through shared memory: dS is spread over the warps
                __syncthreads();
                add_dq_slab<D>(p, doc, head, r0 + warp * kWarpRows, ds_tile, k_tile, warp * kWarpRows, lane);
            }
            if (p.tiles_visited != nullptr && thread == 0) atomicAdd(p.tiles_visited, 1u);
            __syncthreads();  // every warp is done with this buffer (and dS) before they are refilled
        }
    }
    const bool accumulate = p.accumulate != 0;
    store_gradient_rows<D>(p.dk, doc, n_kv_heads, kv_head, c0 + key_row0, dk, problem.scale, accumulate, lane);
    store_gradient_rows<D>(p.dv, doc, n_kv_heads, kv_head, c0 + key_row0, dv, 1.0f, accumulate, lane);
}

template <int D>
__device__ void attention_backward_dq(const AttentionBackwardParams& p) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    const int head = static_cast<int>(blockIdx.y) % n_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_heads);
    const int q0 = static_cast<int>(blockIdx.x) * kTileRows;
    if (q0 >= doc.len) return;  // the whole block: a document shorter than the longest
    const HeadMask mask = head_mask(problem, head, doc.len);
    const int q_last = (q0 + kTileRows < doc.len ? q0 + kTileRows : doc.len) - 1;
    const TileList<kTileRows> tiles = tiles_covering<kTileRows>(keys_of_queries(mask, q0, q_last));
    const int kv_head = kv_head_of(problem, head);

    const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
    constexpr int kTile = kTileRows * D;
    uint16_t* q_tile = dynamic_shared<uint16_t>();
    uint16_t* do_tile = q_tile + kTile;
    uint16_t* k_tiles = do_tile + kTile;      // two buffers
    uint16_t* v_tiles = k_tiles + 2 * kTile;  // two buffers

    backward_load_q_do<D>(q_tile, do_tile, p, doc, head, q0, thread);
    cp_async_commit();
    load_kv_tiles<D>(k_tiles, v_tiles, p, doc, kv_head, tiles.start(0), thread);
    cp_async_commit();

    float row_lse_log2[2], row_delta[2];  // rows g and g + 8 of the warp's 16
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        const int row = q0 + warp * kWarpRows + lane / 4 + 8 * h;
        const size_t at = row_stat_offset(doc, n_heads, head, row);
        row_lse_log2[h] = row < doc.len ? p.lse[at] * kLog2e : 0.0f;
        row_delta[h] = row < doc.len ? p.delta[at] : 0.0f;
    }

    float dq[D / 8][4] = {};
    for (int t = 0; t < tiles.size(); ++t) {
        prefetch_next_kv_wait_current<D>(k_tiles, v_tiles, p, doc, kv_head, tiles, t, thread);
        __syncthreads();
        const int k0 = tiles.start(t);
        const uint16_t* k_tile = k_tiles + t % 2 * kTile;
        const uint16_t* v_tile = v_tiles + t % 2 * kTile;

        float s[8][4];
        warp_gemm_abt<D>(s, q_tile, warp * kWarpRows, k_tile, 0, lane);  // S = Q·Kᵀ
        if (!mask_allows_all(mask, q0, q0 + kTileRows - 1, k0, k0 + kTileRows - 1)) {
            mask_slab<false>(s, mask, q0 + warp * kWarpRows, k0, lane);
        }
        float dp[8][4];
        warp_gemm_abt<D>(dp, do_tile, warp * kWarpRows, v_tile, 0, lane);  // dP = dO·Vᵀ
        LONGLORA_UNROLL
        for (int nt = 0; nt < 8; ++nt) {  // dS = P ∘ (dP − delta), P = exp(scale·S − LSE)
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int h = i / 2;
                s[nt][i] = exp2f(s[nt][i] * problem.scale_log2 - row_lse_log2[h]) * (dp[nt][i] - row_delta[h]);
            }
        }
        uint32_t fragments[4][4];
        to_a_fragments(fragments, s);
        warp_gemm_ab<D>(dq, fragments, k_tile, 0, lane);  // dQ += dS·K
        __syncthreads();  // every warp is done with this buffer before the prefetch refills it
    }
    store_gradient_rows<D>(p.dq, doc, n_heads, head, q0 + warp * kWarpRows, dq, problem.scale, p.accumulate != 0,
                           lane);
}

}  // namespace

// One warp per query row: delta = sum over the head dimension of dO ∘ O (both as stored, bf16).
extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_delta_kernel(const AttentionBackwardParams p) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    const int head_dim = static_cast<int>(problem.head_dim);
    const int head = static_cast<int>(blockIdx.y) % n_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_heads);
    const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
    for (int r = warp; r < kTileRows; r += kAttentionWarps) {
        const int row = static_cast<int>(blockIdx.x) * kTileRows + r;
        if (row >= doc.len) break;
        const size_t offset = token_offset(doc, row, n_heads, head, head_dim);
        float sum = 0.0f;
        for (int d = lane; d < head_dim; d += 32) {
            sum += bf16_to_float(p.dout[offset + d]) * bf16_to_float(p.out[offset + d]);
            if (!p.deterministic) p.dq_accum[offset + d] = 0.0f;
        }
        sum = backward_warp_sum(sum);
        if (lane == 0) p.delta[row_stat_offset(doc, n_heads, head, row)] = sum;
    }
}
LONGLORA_EMU_ENTRY(attention_backward_delta_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_dkdv_d64_kernel(const AttentionBackwardParams p) {
    attention_backward_dkdv<64>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dkdv_d64_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_dkdv_d128_kernel(const AttentionBackwardParams p) {
    attention_backward_dkdv<128>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dkdv_d128_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_dq_d64_kernel(const AttentionBackwardParams p) {
    attention_backward_dq<64>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dq_d64_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_dq_d128_kernel(const AttentionBackwardParams p) {
    attention_backward_dq<128>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dq_d128_kernel, AttentionBackwardParams)

// dQ = scale · accumulator as bf16 (added to dQ when accumulating), a grid-stride loop over elements.
extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_backward_dq_convert_kernel(const AttentionBackwardParams p) {
    const AttentionProblem& problem = p.problem;
    const size_t elements = static_cast<size_t>(problem.tokens) * problem.n_heads * problem.head_dim;
    const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < elements; i += step) {
        float value = p.dq_accum[i] * problem.scale;
        if (p.accumulate) value += bf16_to_float(p.dq[i]);
        p.dq[i] = float_to_bf16(value);
    }
}
LONGLORA_EMU_ENTRY(attention_backward_dq_convert_kernel, AttentionBackwardParams)
