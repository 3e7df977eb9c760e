// The backward pass of attention_fwd.cu, as FlashAttention-2 (DESIGN §5), with P = exp(scale·S − LSE)
// recomputed from Q, K and the forward's LSE instead of stored:
//   attention_backward_delta_kernel: delta = rowsum(dO ∘ O) per query row (dS = P ∘ (dP − delta)),
//     and clears the f32 dQ accumulator unless deterministic;
//   attention_backward_dkdv_d{64,128}_kernel: block (x, y) owns keys 128x..128x+127 of kv head
//     y % n_kv_heads of document y / n_kv_heads (8 warps of 16 keys), and walks the 64-query tiles that
//     may see them, for every query head of the kv head's GQA group in turn: dK and dV sum over the
//     group in registers, so they need neither atomics nor an f32 buffer, and K and V are loaded once.
//     dQ goes to the f32 accumulator with atomics (FlashAttention-2's choice: the fastest), unless
//     deterministic;
//   attention_backward_dq_convert_kernel: dQ = scale · accumulator, to bf16;
//   attention_backward_dq_d{64,128}_kernel (deterministic mode): dQ per query block, walking its K/V
//     tiles in a fixed order like the forward does, so two runs agree bit for bit, at the cost of
//     computing S and dP a second time (7 tile products per pair of tiles instead of 5).
// Gradients are taken with respect to the scaled scores, so dQ and dK get the softmax scale at the end.

#include "kernel.h"

#include "attention.h"
#include "bf16.h"
#include "cp_async.h"
#include "fast_math.h"
#include "memory_access.h"
#include "params.h"
#include "s2_mask.h"
#include "shared_memory.h"
#include "tile.h"
#include "warp_gemm.h"

namespace {

constexpr int kDeltaThreads = 128;
constexpr int kConvertThreads = 128;

// 8 warps of 16 keys: with 32 keys per warp dK and dV alone would take 256 registers per lane at
// head dim 128, and at 64 ptxas spilled a few bytes on sm_90.
constexpr int kDkdvWarps = 8;
constexpr int kDkdvThreads = 32 * kDkdvWarps;
constexpr int kDkdvM = kBlockRows / kDkdvWarps / 16;  // m-tiles (of 16 keys) per warp
// Query columns per score slab: 32 at head dim 64; at 128, where 32 spilled, 16.
template <int D>
constexpr int kSlab = D == 64 ? 32 : 16;
// The atomic dQ pass splits the 64 x D block of dQ into 16-query slabs (4) times column halves (2).
template <int D>
constexpr int kDqColumns = D / 2;

constexpr int kDqWarps = 8;
constexpr int kDqThreads = 32 * kDqWarps;
constexpr int kDqWarpRows = kBlockRows / kDqWarps;  // 16

// dK, dV or dQ of a warp's 16 kM rows (positions row0..), times `scale`, plus what the tensor holds
// when `accumulate` (added in f32, so rounded to bf16 once), stored through the warp's own rows
// staging_row0.. of the swizzled `staging` tile as 16-byte stores. Rows past the document's end are
// neither read nor written.
template <int D, int kM>
__device__ void store_gradient(uint16_t* tensor, const Document& doc, int heads, int head, int row0,
                               float c[kM][D / 8][4], float scale, bool accumulate, uint16_t* staging,
                               int staging_row0, int lane) {
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int h = 0; h < 2; ++h) {
            const int row = row0 + 16 * m + lane / 4 + 8 * h;
            const uint32_t* old = reinterpret_cast<const uint32_t*>(tensor + token_offset(doc, row, heads, head, D) +
                                                                    lane % 4 * 2);
            LONGLORA_UNROLL
            for (int nt = 0; nt < D / 8; ++nt) {
                c[m][nt][2 * h] *= scale;
                c[m][nt][2 * h + 1] *= scale;
                if (accumulate && row < doc.len) {
                    const uint32_t pair = load_global(old + nt * 4);
                    c[m][nt][2 * h] += bf16x2_low(pair);
                    c[m][nt][2 * h + 1] += bf16x2_high(pair);
                }
            }
        }
    }
    __syncwarp();
    store_c_fragments<D, kM, D>(staging, staging_row0, 0, c, lane);
    __syncwarp();
    store_head_rows<D, 16 * kM, 32>(tensor, doc, heads, head, row0, staging, staging_row0, lane);
}

// Starts loading the query tile at r0 for the dk/dv kernel: Q and dO asynchronously, and the rows'
// lse (times log2 e) and delta with plain loads, which the next barrier publishes.
template <int D, int kThreads>
__device__ void load_query_tile(uint16_t* q_tile, uint16_t* do_tile, float* lse_log2, float* delta,
                                const AttentionBackwardParams& p, const Document& doc, int head, int r0, int thread) {
    const int heads = static_cast<int>(p.problem.n_heads);
    load_head_rows_async<D, kBackwardQueries, kThreads>(q_tile, p.q, doc, heads, head, r0, thread);
    load_head_rows_async<D, kBackwardQueries, kThreads>(do_tile, p.dout, doc, heads, head, r0, thread);
    if (thread < kBackwardQueries) {
        const int row = r0 + thread;
        const size_t at = row_stat_offset(doc, heads, head, row);
        lse_log2[thread] = row < doc.len ? load_global(p.lse + at) * kLog2e : 0.0f;
        delta[thread] = row < doc.len ? load_global(p.delta + at) : 0.0f;
    }
}

// dQ[queries r0 + 16 (warp % 4).., columns D / 2 (warp / 4)..] += dS · K over the block's 128 keys, added
// to the f32 accumulator with atomics (other key blocks add to the same rows). dS comes from the dSᵀ
// tile (keys x queries) through transposing loads; K is the block's K tile, read as B one key per row.
template <int D>
__device__ void add_dq(const AttentionBackwardParams& p, const Document& doc, int head, int r0,
                       const uint16_t* ds_tile, const uint16_t* k_tile, int warp, int lane) {
    const int heads = static_cast<int>(p.problem.n_heads);
    const int query0 = warp % 4 * 16, col0 = warp / 4 * kDqColumns<D>;
    float acc[kDqColumns<D> / 8][4] = {};
    // dS = (dSᵀ)ᵀ: the transposing load reads the tile's rows (keys) k0.. and columns (queries) query0...
    const SwizzledRows<kBackwardQueries> ds_rows = rows_for_b<kBackwardQueries>(ds_tile, 0, query0, lane);
    const SwizzledRows<D> k_rows = rows_for_a<D>(k_tile, 0, col0, lane);
    LONGLORA_UNROLL
    for (int k0 = 0; k0 < kBlockRows; k0 += 16) {
        uint32_t ds[4];
        ldmatrix_x4_trans(ds, ds_rows.at(k0, 0));
        LONGLORA_UNROLL
        for (int n0 = 0; n0 < kDqColumns<D>; n0 += 16) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, k_rows.at(k0, n0 / 16));
            mma_m16n8k16_bf16(acc[n0 / 8], ds, &b[0], acc[n0 / 8]);
            mma_m16n8k16_bf16(acc[n0 / 8 + 1], ds, &b[2], acc[n0 / 8 + 1]);
        }
    }
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        const int row = r0 + query0 + lane / 4 + 8 * h;
        if (row >= doc.len) continue;
        float* dq = p.dq_accum + token_offset(doc, row, heads, head, D) + col0 + lane % 4 * 2;
        LONGLORA_UNROLL
        for (int nt = 0; nt < kDqColumns<D> / 8; ++nt) {
            atomic_add_global(dq + nt * 8, acc[nt][2 * h]);
            atomic_add_global(dq + nt * 8 + 1, acc[nt][2 * h + 1]);
        }
    }
}

// One slab of kSlab queries of a query tile for the warp's keys: dV += Pᵀ·dO and dK += dSᵀ·Q, with
// Pᵀ = exp(scale·Sᵀ − LSE) from Sᵀ = K·Qᵀ and dSᵀ = Pᵀ ∘ (dPᵀ − delta) from dPᵀ = V·dOᵀ; unless
// deterministic, dSᵀ also goes to the block's dS tile for the dQ pass.
template <int D>
__device__ __forceinline__ void dkdv_slab(float dk[kDkdvM][D / 8][4], float dv[kDkdvM][D / 8][4],
                                          const AttentionBackwardParams& p, const WarpRows& warp_keys, bool masked,
                                          int key_row0, int r0, int col0, const uint16_t* k_tile,
                                          const uint16_t* v_tile, const uint16_t* q_tile, const uint16_t* do_tile,
                                          const float* lse_log2, const float* delta, uint16_t* ds_tile, int lane) {
    constexpr int kM = kDkdvM;
    float s[kM][kSlab<D> / 8][4];
    warp_gemm_abt<D, kSlab<D>, kM>(s, k_tile, key_row0, q_tile, col0, lane);  // Sᵀ = K·Qᵀ
    if (masked) mask_slab<true, kM, kSlab<D>>(s, warp_keys, r0 + col0, lane);
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int nt = 0; nt < kSlab<D> / 8; ++nt) {  // Pᵀ = exp(scale·Sᵀ − LSE), by query column
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                s[m][nt][i] = exp2_ftz(s[m][nt][i] * p.problem.scale_log2 - lse_log2[col]);
            }
        }
    }
    uint32_t fragments[kM][kSlab<D> / 16][4];
    to_a_fragments<kM, kSlab<D>>(fragments, s);
    warp_gemm_ab<D, kSlab<D>, kM>(dv, fragments, do_tile, col0, lane);  // dV += Pᵀ·dO

    float dp[kM][kSlab<D> / 8][4];
    warp_gemm_abt<D, kSlab<D>, kM>(dp, v_tile, key_row0, do_tile, col0, lane);  // dPᵀ = V·dOᵀ
    LONGLORA_UNROLL
    for (int m = 0; m < kM; ++m) {
        LONGLORA_UNROLL
        for (int nt = 0; nt < kSlab<D> / 8; ++nt) {  // dSᵀ = Pᵀ ∘ (dPᵀ − delta)
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int col = col0 + nt * 8 + lane % 4 * 2 + (i & 1);
                s[m][nt][i] *= dp[m][nt][i] - delta[col];
            }
        }
    }
    to_a_fragments<kM, kSlab<D>>(fragments, s);
    warp_gemm_ab<D, kSlab<D>, kM>(dk, fragments, q_tile, col0, lane);  // dK += dSᵀ·Q
    if (!p.deterministic) store_c_fragments<kBackwardQueries, kM, kSlab<D>>(ds_tile, key_row0, col0, s, lane);
}

template <int D>
__device__ void attention_backward_dkdv(const AttentionBackwardParams& p) {
    constexpr int kThreads = kDkdvThreads, kM = kDkdvM, kQueryTile = kBackwardQueries * D;
    const AttentionProblem& problem = p.problem;
    const int n_kv_heads = static_cast<int>(problem.n_kv_heads);
    const int kv_head = static_cast<int>(blockIdx.y) % n_kv_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_kv_heads);
    const int c0 = static_cast<int>(blockIdx.x) * kBlockRows;
    if (c0 >= doc.len) return;  // the whole block: a document shorter than the longest
    const int c_last = (c0 + kBlockRows < doc.len ? c0 + kBlockRows : doc.len) - 1;
    const int group = static_cast<int>(problem.n_heads) / n_kv_heads;

    const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
    const int key_row0 = warp * 16 * kM;  // this warp's keys within the block
    uint16_t* k_tile = dynamic_shared<uint16_t>();
    uint16_t* v_tile = k_tile + kBlockRows * D;
    uint16_t* q_tiles = v_tile + kBlockRows * D;  // two buffers
    uint16_t* do_tiles = q_tiles + 2 * kQueryTile;  // two buffers
    uint16_t* ds_tile = do_tiles + 2 * kQueryTile;  // 128 keys x 64 queries
    float* lse_log2 = reinterpret_cast<float*>(ds_tile + kBlockRows * kBackwardQueries);  // two buffers of 64
    float* delta = lse_log2 + 2 * kBackwardQueries;                                        // two buffers of 64

    load_head_rows_async<D, kBlockRows, kThreads>(k_tile, p.k, doc, n_kv_heads, kv_head, c0, thread);
    load_head_rows_async<D, kBlockRows, kThreads>(v_tile, p.v, doc, n_kv_heads, kv_head, c0, thread);
    cp_async_commit();

    float dk[kM][D / 8][4] = {}, dv[kM][D / 8][4] = {};
    for (int head = kv_head * group; head < (kv_head + 1) * group; ++head) {
        const HeadMask mask = head_mask(problem, head, doc.len);
        const TileList<kBackwardQueries> tiles = tiles_covering<kBackwardQueries>(queries_of_keys(mask, c0, c_last));
        const WarpRows warp_keys = warp_rows<true>(mask, c0 + key_row0, lane);
        load_query_tile<D, kThreads>(q_tiles, do_tiles, lse_log2, delta, p, doc, head, tiles.start(0), thread);
        cp_async_commit();

        for (int t = 0; t < tiles.size(); ++t) {
            if (t + 1 < tiles.size()) {
                const int next = (t + 1) % 2;
                load_query_tile<D, kThreads>(q_tiles + next * kQueryTile, do_tiles + next * kQueryTile,
                                             lse_log2 + next * kBackwardQueries, delta + next * kBackwardQueries, p,
                                             doc, head, tiles.start(t + 1), thread);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            const int r0 = tiles.start(t);
            const int buffer = t % 2;
            const bool masked = !warp_allows_all<true>(warp_keys, 16 * kM, r0, r0 + kBackwardQueries - 1);
            LONGLORA_NO_UNROLL
            for (int col0 = 0; col0 < kBackwardQueries; col0 += kSlab<D>) {
                dkdv_slab<D>(dk, dv, p, warp_keys, masked, key_row0, r0, col0, k_tile, v_tile,
                             q_tiles + buffer * kQueryTile, do_tiles + buffer * kQueryTile,
                             lse_log2 + buffer * kBackwardQueries, delta + buffer * kBackwardQueries, ds_tile, lane);
            }
            if (!p.deterministic) {  // dQ += dS·K, through shared memory: dS is spread over the warps
                __syncthreads();
                add_dq<D>(p, doc, head, r0, ds_tile, k_tile, warp, lane);
            }
            if (p.tiles_visited != nullptr && thread == 0) atomic_add_global(p.tiles_visited, 1u);
            __syncthreads();  // every warp is done with this buffer (and dS) before they are refilled
        }
    }
    // The query buffers are free, and each pair is 128 rows: each warp stages its own rows of dK through
    // the Q buffers and of dV through the dO buffers.
    const bool accumulate = p.accumulate != 0;
    store_gradient<D, kM>(p.dk, doc, n_kv_heads, kv_head, c0 + key_row0, dk, problem.scale, accumulate, q_tiles,
                          key_row0, lane);
    store_gradient<D, kM>(p.dv, doc, n_kv_heads, kv_head, c0 + key_row0, dv, 1.0f, accumulate, do_tiles, key_row0,
                          lane);
}

// Starts loading K/V tile at k0 into buffer `buffer` of the deterministic dq kernel.
template <int D>
__device__ void load_dq_kv(uint16_t* k_tiles, uint16_t* v_tiles, const AttentionBackwardParams& p, const Document& doc,
                           int kv_head, int k0, int buffer, int thread) {
    const int heads = static_cast<int>(p.problem.n_kv_heads);
    load_head_rows_async<D, kDqKeys, kDqThreads>(k_tiles + buffer * kDqKeys * D, p.k, doc, heads, kv_head, k0, thread);
    load_head_rows_async<D, kDqKeys, kDqThreads>(v_tiles + buffer * kDqKeys * D, p.v, doc, heads, kv_head, k0, thread);
}

template <int D>
__device__ void attention_backward_dq(const AttentionBackwardParams& p) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    const int head = static_cast<int>(blockIdx.y) % n_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_heads);
    const int q0 = static_cast<int>(blockIdx.x) * kBlockRows;
    if (q0 >= doc.len) return;  // the whole block: a document shorter than the longest
    const HeadMask mask = head_mask(problem, head, doc.len);
    const int q_last = (q0 + kBlockRows < doc.len ? q0 + kBlockRows : doc.len) - 1;
    const TileList<kDqKeys> tiles = tiles_covering<kDqKeys>(keys_of_queries(mask, q0, q_last));
    const int kv_head = kv_head_of(problem, head);

    const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
    const int row0 = q0 + warp * kDqWarpRows;
    uint16_t* q_tile = dynamic_shared<uint16_t>();
    uint16_t* do_tile = q_tile + kBlockRows * D;
    uint16_t* k_tiles = do_tile + kBlockRows * D;  // two buffers
    uint16_t* v_tiles = k_tiles + 2 * kDqKeys * D;  // two buffers

    load_head_rows_async<D, kBlockRows, kDqThreads>(q_tile, p.q, doc, n_heads, head, q0, thread);
    load_head_rows_async<D, kBlockRows, kDqThreads>(do_tile, p.dout, doc, n_heads, head, q0, thread);
    cp_async_commit();
    load_dq_kv<D>(k_tiles, v_tiles, p, doc, kv_head, tiles.start(0), 0, thread);
    cp_async_commit();

    float row_lse_log2[2], row_delta[2];  // rows g and g + 8 of the warp's 16, read once per row
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + lane / 4 + 8 * h;
        const size_t at = row_stat_offset(doc, n_heads, head, row);
        const bool reads = row < doc.len && lane % 4 == 0;
        row_lse_log2[h] = __shfl_sync(0xffffffffu, reads ? load_global(p.lse + at) * kLog2e : 0.0f, lane & ~3);
        row_delta[h] = __shfl_sync(0xffffffffu, reads ? load_global(p.delta + at) : 0.0f, lane & ~3);
    }

    const WarpRows warp_queries = warp_rows<false>(mask, row0, lane);
    float dq[1][D / 8][4] = {};
    for (int t = 0; t < tiles.size(); ++t) {
        if (t + 1 < tiles.size()) {
            load_dq_kv<D>(k_tiles, v_tiles, p, doc, kv_head, tiles.start(t + 1), (t + 1) % 2, thread);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int k0 = tiles.start(t);
        const uint16_t* k_tile = k_tiles + t % 2 * kDqKeys * D;
        const uint16_t* v_tile = v_tiles + t % 2 * kDqKeys * D;

        float s[1][kDqKeys / 8][4];
        warp_gemm_abt<D, kDqKeys, 1>(s, q_tile, warp * kDqWarpRows, k_tile, 0, lane);  // S = Q·Kᵀ
        if (!warp_allows_all<false>(warp_queries, kDqWarpRows, k0, k0 + kDqKeys - 1)) {
            mask_slab<false, 1, kDqKeys>(s, warp_queries, k0, lane);
        }
        float dp[1][kDqKeys / 8][4];
        warp_gemm_abt<D, kDqKeys, 1>(dp, do_tile, warp * kDqWarpRows, v_tile, 0, lane);  // dP = dO·Vᵀ
        LONGLORA_UNROLL
        for (int nt = 0; nt < kDqKeys / 8; ++nt) {  // dS = P ∘ (dP − delta), P = exp(scale·S − LSE)
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int h = i / 2;
                s[0][nt][i] = exp2_ftz(s[0][nt][i] * problem.scale_log2 - row_lse_log2[h]) *
                              (dp[0][nt][i] - row_delta[h]);
            }
        }
        uint32_t fragments[1][kDqKeys / 16][4];
        to_a_fragments<1, kDqKeys>(fragments, s);
        warp_gemm_ab<D, kDqKeys, 1>(dq, fragments, k_tile, 0, lane);  // dQ += dS·K
        __syncthreads();  // every warp is done with this buffer before the prefetch refills it
    }
    store_gradient<D, 1>(p.dq, doc, n_heads, head, row0, dq, problem.scale, p.accumulate != 0, q_tile,
                         warp * kDqWarpRows, lane);
}

}  // namespace

// delta = sum over the head dimension of dO ∘ O (both as stored, bf16) for the block's 128 rows: each
// thread takes one 16-byte chunk of a row, and the head_dim / 8 lanes of a row add their parts.
extern "C" __global__ void __launch_bounds__(kDeltaThreads)
    attention_backward_delta_kernel(const AttentionBackwardParams p) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    const int head_dim = static_cast<int>(problem.head_dim);
    const int head = static_cast<int>(blockIdx.y) % n_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_heads);
    const int chunks = head_dim / 8, thread = static_cast<int>(threadIdx.x);
    const int chunk = thread % chunks;
    for (int r = thread / chunks; r < kBlockRows; r += kDeltaThreads / chunks) {
        const int row = static_cast<int>(blockIdx.x) * kBlockRows + r;
        const bool inside = row < doc.len;
        const size_t offset = token_offset(doc, inside ? row : 0, n_heads, head, head_dim) + chunk * 8;
        float sum = 0.0f;
        if (inside) {
            const uint4 o = load_global_16(p.out + offset), d = load_global_16(p.dout + offset);
            const uint32_t o_pairs[4] = {o.x, o.y, o.z, o.w}, d_pairs[4] = {d.x, d.y, d.z, d.w};
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                sum += bf16x2_low(o_pairs[i]) * bf16x2_low(d_pairs[i]) + bf16x2_high(o_pairs[i]) * bf16x2_high(d_pairs[i]);
            }
            if (!p.deterministic) {
                store_global_16(p.dq_accum + offset, uint4{0, 0, 0, 0});
                store_global_16(p.dq_accum + offset + 4, uint4{0, 0, 0, 0});
            }
        }
        for (int mask = chunks / 2; mask > 0; mask /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
        if (inside && chunk == 0) store_global(p.delta + row_stat_offset(doc, n_heads, head, row), sum);
    }
}
LONGLORA_EMU_ENTRY(attention_backward_delta_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kDkdvThreads)
    attention_backward_dkdv_d64_kernel(const AttentionBackwardParams p) {
    attention_backward_dkdv<64>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dkdv_d64_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kDkdvThreads)
    attention_backward_dkdv_d128_kernel(const AttentionBackwardParams p) {
    attention_backward_dkdv<128>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dkdv_d128_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kDqThreads)
    attention_backward_dq_d64_kernel(const AttentionBackwardParams p) {
    attention_backward_dq<64>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dq_d64_kernel, AttentionBackwardParams)

extern "C" __global__ void __launch_bounds__(kDqThreads)
    attention_backward_dq_d128_kernel(const AttentionBackwardParams p) {
    attention_backward_dq<128>(p);
}
LONGLORA_EMU_ENTRY(attention_backward_dq_d128_kernel, AttentionBackwardParams)

// dQ = scale · accumulator as bf16 (added to dQ when accumulating), 8 elements per thread per step of a
// grid-stride loop: two 16-byte loads of f32 and one 16-byte store.
extern "C" __global__ void __launch_bounds__(kConvertThreads)
    attention_backward_dq_convert_kernel(const AttentionBackwardParams p) {
    const AttentionProblem& problem = p.problem;
    const size_t chunks = static_cast<size_t>(problem.tokens) * problem.n_heads * problem.head_dim / 8;
    const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t c = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += step) {
        const uint4 lo = load_global_16(p.dq_accum + 8 * c), hi = load_global_16(p.dq_accum + 8 * c + 4);
        float value[8];
        memcpy(value, &lo, sizeof lo);
        memcpy(value + 4, &hi, sizeof hi);
        LONGLORA_UNROLL
        for (int i = 0; i < 8; ++i) value[i] *= problem.scale;
        if (p.accumulate) {
            const uint4 old = load_global_16(p.dq + 8 * c);
            const uint32_t pairs[4] = {old.x, old.y, old.z, old.w};
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                value[2 * i] += bf16x2_low(pairs[i]);
                value[2 * i + 1] += bf16x2_high(pairs[i]);
            }
        }
        store_global_16(p.dq + 8 * c, uint4{pack_bf16x2(value[0], value[1]), pack_bf16x2(value[2], value[3]),
                                            pack_bf16x2(value[4], value[5]), pack_bf16x2(value[6], value[7])});
    }
}
LONGLORA_EMU_ENTRY(attention_backward_dq_convert_kernel, AttentionBackwardParams)
