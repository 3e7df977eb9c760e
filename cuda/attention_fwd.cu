// attention_forward_d{64,128}_kernel: FlashAttention-2 forward of causal attention under the S²-Attn
// mask (DESIGN §2, §5). Block (x, y) owns query rows 128x..128x+127 of head y % n_heads of document
// y / n_heads, split over its warps (4 of 32 rows at head dim 64, FlashAttention-2's shape; 8 of 16
// at 128, see kForwardWarps). The block streams only the K/V tiles of 64 keys that some of its rows
// may see (the causal range intersected with the group; two ranges for a rolled group that wraps)
// and keeps a running softmax per row, so the 128 x N score matrix never exists: S = Q·Kᵀ and
// O += P·V are tensor-core products, and P goes from the first to the second without leaving
// registers. K and V have one buffer each, loaded as FlashAttention-2 does: V of a tile streams in
// while the warps compute its S, K of the next tile while they compute the softmax and P·V, which
// keeps shared memory at 64 KB at head dim 128 instead of 96 KB with both double-buffered.

#include "kernel.h"

#include "attention.h"
#include "cp_async.h"
#include "fast_math.h"
#include "memory_access.h"
#include "params.h"
#include "s2_mask.h"
#include "shared_memory.h"
#include "tile.h"
#include "warp_gemm.h"

namespace {

// 4 warps of 32 rows at head dim 64; at 128, where O alone is 128 registers per lane for 32 rows,
// 8 warps of 16 (ptxas spilled with 32 rows and 64-key or even 32-key tiles).
template <int D>
constexpr int kForwardWarps = D == 64 ? 4 : 8;
template <int D>
constexpr int kForwardThreads = 32 * kForwardWarps<D>;
template <int D>
constexpr int kForwardWarpRows = kBlockRows / kForwardWarps<D>;
template <int D>
constexpr int kForwardM = kForwardWarpRows<D> / 16;  // m-tiles per warp

template <int D>
constexpr int kForwardKeys = D == 64 ? ATTENTION_FORWARD_KEYS_D64 : ATTENTION_FORWARD_KEYS_D128;

// Running softmax state of the lane's 2 kForwardM rows: m-tile m, half h is row 16m + g + 8h of the warp's.
template <int D>
struct ForwardRows {
    float max[kForwardM<D>][2];    // running maximum of the raw scores; -inf until a key is allowed
    float sum[kForwardM<D>][2];    // this lane's part of sum(exp2((s - max) * scale_log2)); quads add them at the end
    float o[kForwardM<D>][D / 8][4];  // unnormalised output, C fragments of 8 columns each
};

// Folds a masked score slab into the running softmax: raises the row maxima, rescales what was
// accumulated under the old maxima, and turns s into this tile's unnormalised probabilities
// exp2(s * scale_log2 - max * scale_log2), one FFMA and one MUFU.EX2 each. Rows with nothing allowed
// yet keep max = -inf and get p = 0.
template <int D>
__device__ __forceinline__ void online_softmax(float s[kForwardM<D>][kForwardKeys<D> / 8][4], ForwardRows<D>& rows, float scale_log2) {
    LONGLORA_UNROLL
    for (int m = 0; m < kForwardM<D>; ++m) {
        LONGLORA_UNROLL
        for (int h = 0; h < 2; ++h) {
            float tile_max = rows.max[m][h];
            LONGLORA_UNROLL
            for (int nt = 0; nt < kForwardKeys<D> / 8; ++nt) {
                tile_max = fmaxf(tile_max, fmaxf(s[m][nt][2 * h], s[m][nt][2 * h + 1]));
            }
            tile_max = quad_max(tile_max);
            const float base = tile_max == kNegativeInfinity ? 0.0f : tile_max * scale_log2;
            const float rescale = exp2_ftz(rows.max[m][h] * scale_log2 - base);
            rows.max[m][h] = tile_max;
            float sum = 0.0f;
            LONGLORA_UNROLL
            for (int nt = 0; nt < kForwardKeys<D> / 8; ++nt) {
                LONGLORA_UNROLL
                for (int i = 2 * h; i < 2 * h + 2; ++i) {
                    s[m][nt][i] = exp2_ftz(s[m][nt][i] * scale_log2 - base);
                    sum += s[m][nt][i];
                }
            }
            rows.sum[m][h] = rows.sum[m][h] * rescale + sum;
            LONGLORA_UNROLL
            for (int dt = 0; dt < D / 8; ++dt) {
                rows.o[m][dt][2 * h] *= rescale;
                rows.o[m][dt][2 * h + 1] *= rescale;
            }
        }
    }
}

// Divides the warp's rows by their sums, stores LSE (by the quad's first lane) and O: through the
// warp's own rows of the Q tile, which only this warp reads, so that O leaves in 16-byte stores of
// whole 128-byte row segments. Rows past the document's end are not stored.
template <int D>
__device__ void forward_store(const AttentionForwardParams& p, const Document& doc, int head, int row0,
                              ForwardRows<D>& rows, uint16_t* q_tile, int warp, int lane) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    LONGLORA_UNROLL
    for (int m = 0; m < kForwardM<D>; ++m) {
        LONGLORA_UNROLL
        for (int h = 0; h < 2; ++h) {
            const float sum = quad_sum(rows.sum[m][h]);
            const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
            LONGLORA_UNROLL
            for (int dt = 0; dt < D / 8; ++dt) {
                rows.o[m][dt][2 * h] *= inverse;
                rows.o[m][dt][2 * h + 1] *= inverse;
            }
            const int row = row0 + 16 * m + lane / 4 + 8 * h;
            if (row < doc.len && lane % 4 == 0) {
                const float lse = rows.max[m][h] * problem.scale + logf(sum);
                store_global(p.lse + row_stat_offset(doc, n_heads, head, row), lse);
            }
        }
    }
    __syncwarp();  // every lane's last ldmatrix of its Q rows is done before they are overwritten
    store_c_fragments<D, kForwardM<D>, D>(q_tile, warp * kForwardWarpRows<D>, 0, rows.o, lane);
    __syncwarp();
    store_head_rows<D, kForwardWarpRows<D>, 32>(p.out, doc, n_heads, head, row0, q_tile, warp * kForwardWarpRows<D>, lane);
}

template <int D>
__device__ void attention_forward(const AttentionForwardParams& p) {
    constexpr int kTileKeys = kForwardKeys<D>;
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    const int head = static_cast<int>(blockIdx.y) % n_heads;
    const Document doc = attention_document(problem, static_cast<int>(blockIdx.y) / n_heads);
    const int q0 = static_cast<int>(blockIdx.x) * kBlockRows;
    if (q0 >= doc.len) return;  // the whole block: a document shorter than the longest
    const HeadMask mask = head_mask(problem, head, doc.len);
    const int q_last = (q0 + kBlockRows < doc.len ? q0 + kBlockRows : doc.len) - 1;
    const TileList<kTileKeys> tiles = tiles_covering<kTileKeys>(keys_of_queries(mask, q0, q_last));
    const int kv_head = kv_head_of(problem, head);
    const int n_kv_heads = static_cast<int>(problem.n_kv_heads);

    const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
    const int row0 = q0 + warp * kForwardWarpRows<D>;  // this warp's first query
    uint16_t* q_tile = dynamic_shared<uint16_t>();
    uint16_t* k_tile = q_tile + kBlockRows * D;
    uint16_t* v_tile = k_tile + kTileKeys * D;

    load_head_rows_async<D, kBlockRows, kForwardThreads<D>>(q_tile, p.q, doc, n_heads, head, q0, thread);
    load_head_rows_async<D, kTileKeys, kForwardThreads<D>>(k_tile, p.k, doc, n_kv_heads, kv_head, tiles.start(0), thread);
    cp_async_commit();

    const WarpRows warp_queries = warp_rows<false>(mask, row0, lane);
    ForwardRows<D> rows;
    LONGLORA_UNROLL
    for (int m = 0; m < kForwardM<D>; ++m) {
        rows.max[m][0] = rows.max[m][1] = kNegativeInfinity;
        rows.sum[m][0] = rows.sum[m][1] = 0.0f;
        LONGLORA_UNROLL
        for (int dt = 0; dt < D / 8; ++dt) rows.o[m][dt][0] = rows.o[m][dt][1] = rows.o[m][dt][2] = rows.o[m][dt][3] = 0.0f;
    }
    for (int t = 0; t < tiles.size(); ++t) {
        const int k0 = tiles.start(t);
        cp_async_wait<0>();
        __syncthreads();  // K (and Q) landed; every warp is done with the previous V
        load_head_rows_async<D, kTileKeys, kForwardThreads<D>>(v_tile, p.v, doc, n_kv_heads, kv_head, k0, thread);
        cp_async_commit();

        float s[kForwardM<D>][kTileKeys / 8][4];
        warp_gemm_abt<D, kTileKeys, kForwardM<D>>(s, q_tile, warp * kForwardWarpRows<D>, k_tile, 0, lane);  // S = Q·Kᵀ
        if (!warp_allows_all<false>(warp_queries, kForwardWarpRows<D>, k0, k0 + kTileKeys - 1)) {
            mask_slab<false, kForwardM<D>, kTileKeys>(s, warp_queries, k0, lane);
        }
        cp_async_wait<0>();
        __syncthreads();  // V landed; every warp is done with K
        if (t + 1 < tiles.size()) {
            load_head_rows_async<D, kTileKeys, kForwardThreads<D>>(k_tile, p.k, doc, n_kv_heads, kv_head, tiles.start(t + 1),
                                                         thread);
            cp_async_commit();
        }
        online_softmax<D>(s, rows, problem.scale_log2);  // S -> P; rescale O
        uint32_t p_fragments[kForwardM<D>][kTileKeys / 16][4];
        to_a_fragments<kForwardM<D>, kTileKeys>(p_fragments, s);
        warp_gemm_ab<D, kTileKeys, kForwardM<D>>(rows.o, p_fragments, v_tile, 0, lane);  // O += P·V
    }
    if (p.tiles_visited != nullptr && thread == 0) atomic_add_global(p.tiles_visited, static_cast<unsigned>(tiles.size()));
    forward_store<D>(p, doc, head, row0, rows, q_tile, warp, lane);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kForwardThreads<64>)
    attention_forward_d64_kernel(const AttentionForwardParams p) {
    attention_forward<64>(p);
}
LONGLORA_EMU_ENTRY(attention_forward_d64_kernel, AttentionForwardParams)

extern "C" __global__ void __launch_bounds__(kForwardThreads<128>)
    attention_forward_d128_kernel(const AttentionForwardParams p) {
    attention_forward<128>(p);
}
LONGLORA_EMU_ENTRY(attention_forward_d128_kernel, AttentionForwardParams)
