// attention_forward_d{64,128}_kernel: FlashAttention-2 forward of causal attention under the S²-Attn
// mask (DESIGN §2, §5). Block (x, y) owns query rows 64x..64x+63 of head y % n_heads of document
// y / n_heads; each of its 4 warps owns 16 of those rows. The block streams only the K/V tiles that
// some of its rows may see (the causal range intersected with the group; two ranges for a rolled
// group that wraps), double-buffered through shared memory with cp.async, and keeps a running
// softmax per row so the 64 x N score matrix never exists: S = Q·Kᵀ and O += P·V are tensor-core
// products, and P goes from the first to the second without leaving registers.

#include "kernel.h"

#include "attention.h"
#include "cp_async.h"
#include "params.h"
#include "s2_mask.h"
#include "shared_memory.h"
#include "tile.h"
#include "warp_gemm.h"

namespace {

// Running softmax state of the two rows (g and g + 8 of the warp's 16) a lane holds parts of.
template <int D>
struct ForwardRows {
    float max[2];    // running maximum of the raw scores; -inf until a key is allowed
    float sum[2];    // this lane's part of sum(exp2((s - max) * scale_log2)); quads add them at the end
    float o[D / 8][4];  // unnormalised output, C fragments of 8 columns each
};

// Folds a masked score slab into the running softmax: raises the row maxima, rescales what was
// accumulated under the old maxima, and turns s into this tile's unnormalised probabilities
// exp2((s - max) * scale_log2). Rows with nothing allowed yet keep max = -inf and get p = 0.
template <int D>
__device__ __forceinline__ void online_softmax(float s[8][4], ForwardRows<D>& rows, float scale_log2) {
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        float tile_max = rows.max[h];
        LONGLORA_UNROLL
        for (int nt = 0; nt < 8; ++nt) tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
        tile_max = quad_max(tile_max);
        const float base = tile_max == kNegativeInfinity ? 0.0f : tile_max * scale_log2;
        const float rescale = exp2f(rows.max[h] * scale_log2 - base);
        rows.max[h] = tile_max;
        float sum = 0.0f;
        LONGLORA_UNROLL
        for (int nt = 0; nt < 8; ++nt) {
            LONGLORA_UNROLL
            for (int i = 2 * h; i < 2 * h + 2; ++i) {
                s[nt][i] = exp2f(s[nt][i] * scale_log2 - base);
                sum += s[nt][i];
            }
        }
        rows.sum[h] = rows.sum[h] * rescale + sum;
        LONGLORA_UNROLL
        for (int dt = 0; dt < D / 8; ++dt) {
            rows.o[dt][2 * h] *= rescale;
            rows.o[dt][2 * h + 1] *= rescale;
        }
    }
}

// Divides by the row sums and stores the rows below the document's end: O as bf16 pairs, LSE by the
// quad's first lane.
template <int D>
__device__ void forward_store(const AttentionForwardParams& p, const Document& doc, int head, int row0,
                              ForwardRows<D>& rows, int lane) {
    const AttentionProblem& problem = p.problem;
    const int n_heads = static_cast<int>(problem.n_heads);
    LONGLORA_UNROLL
    for (int h = 0; h < 2; ++h) {
        const float sum = quad_sum(rows.sum[h]);
        const int row = row0 + lane / 4 + 8 * h;
        if (row >= doc.len) continue;
        const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
        uint16_t* out = p.out + token_offset(doc, row, n_heads, head, D) + lane % 4 * 2;
        LONGLORA_UNROLL
        for (int dt = 0; dt < D / 8; ++dt) {
            *reinterpret_cast<uint32_t*>(out + dt * 8) =
                pack_bf16x2(rows.o[dt][2 * h] * inverse, rows.o[dt][2 * h + 1] * inverse);
        }
        if (lane % 4 == 0) p.lse[row_stat_offset(doc, n_heads, head, row)] = rows.max[h] * problem.scale + logf(sum);
    }
}

template <int D>
__device__ void attention_forward(const AttentionForwardParams& p) {
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
    uint16_t* k_tiles = q_tile + kTile;      // two buffers
    uint16_t* v_tiles = k_tiles + 2 * kTile;  // two buffers

    load_tile_async<D, kAttentionThreads>(q_tile, p.q + token_offset(doc, q0, n_heads, head, D),
                                          static_cast<size_t>(n_heads) * D, kTileRows, doc.len - q0, thread);
    cp_async_commit();
    load_kv_tiles<D>(k_tiles, v_tiles, p, doc, kv_head, tiles.start(0), thread);
    cp_async_commit();

    ForwardRows<D> rows = {{kNegativeInfinity, kNegativeInfinity}, {0.0f, 0.0f}, {}};
    for (int t = 0; t < tiles.size(); ++t) {
        // Prefetch the next tile into the other buffer, then wait for this one (and Q).
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
        online_softmax<D>(s, rows, problem.scale_log2);  // S -> P; rescale O
        uint32_t p_fragments[4][4];
        to_a_fragments(p_fragments, s);
        warp_gemm_ab<D>(rows.o, p_fragments, v_tile, 0, lane);  // O += P·V

        if (p.tiles_visited != nullptr && thread == 0) atomicAdd(p.tiles_visited, 1u);
        __syncthreads();  // every warp is done with this buffer before the prefetch refills it
    }
    forward_store<D>(p, doc, head, q0 + warp * kWarpRows, rows, lane);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_forward_d64_kernel(const AttentionForwardParams p) {
    attention_forward<64>(p);
}
LONGLORA_EMU_ENTRY(attention_forward_d64_kernel, AttentionForwardParams)

extern "C" __global__ void __launch_bounds__(kAttentionThreads)
    attention_forward_d128_kernel(const AttentionForwardParams p) {
    attention_forward<128>(p);
}
LONGLORA_EMU_ENTRY(attention_forward_d128_kernel, AttentionForwardParams)
