// The fused LoRA linear layer, y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ, and its backward, dX = dY·W + s·(dY·B)·A,
// dA = s·(dY·B)ᵀ·x, dB = s·dYᵀ·(x·Aᵀ). bf16 operands, f32 accumulation, m16n8k16 tensor-core products.
//
// Forward and input-gradient are one algorithm, lora_product, a pipelined GEMM: a block of 8 warps owns
// a 128 x 128 tile of the output (each warp 64 x 32); the reduction streams through shared memory in
// 32-wide slices, kLoraStages of them in flight as cp.async copies (zero-filled past the matrices'
// edges) while the oldest is multiplied. Each slice of the input is multiplied both with the weight
// slice (the base product) and with the adapter's down slice (the rank-r product, at most 64 wide,
// each warp along the columns taking 16 of its columns), so the input is read from global memory once
// for both. After the loop the rank-r result is stored (f32, by the blocks of the first column: dA and
// dB reduce over it without a second rounding), scaled by s and rounded to bf16 into shared memory,
// and multiplied with the adapter's up operand into the same accumulators. Each block recomputes the
// rank-r product of its rows (r rounded up to 8, over the 128 output columns: 6% extra mma work at
// r = 8) instead of reading the input a second time.
//
// The weight gradients dA, dB are small reductions over the rows (lora_grad): one block per 64 x 64
// tile of the gradient and slice of the rows, streaming both operands along its rows through two
// stages. The gradients are only r x in and out x r, too few tiles to fill a GPU, so the rows are
// split across grid.z and the slices' sums meet through f32 atomics (in an order that varies from run
// to run).

#include "kernel.h"

#include "bf16.h"
#include "cp_async.h"
#include "mma.h"
#include "mma_tile.h"
#include "params.h"
#include "shared_memory.h"

namespace {

constexpr int kLoraBlockRows = LORA_BLOCK_ROWS;
constexpr int kLoraBlockCols = LORA_BLOCK_COLS;
constexpr int kLoraThreads = LORA_THREADS;
constexpr int kLoraSlice = LORA_BLOCK_REDUCE;  // reduction per pipeline stage: two mma k-steps
constexpr int kLoraStages = 4;
constexpr int kLoraWarpRows = 64;  // 8 warps: 2 along the rows by 4 along the columns
constexpr int kLoraWarpCols = 32;
constexpr int kLoraWarpsAcross = kLoraBlockCols / kLoraWarpCols;
constexpr int kLoraMaxRank = LORA_MAX_RANK;
constexpr int kLoraSliceStride = kLoraSlice + kTilePad;     // tiles whose rows are one slice
constexpr int kLoraWideStride = kLoraBlockCols + kTilePad;  // tiles whose rows are a block's columns
static_assert(kLoraThreads == 32 * (kLoraBlockRows / kLoraWarpRows) * kLoraWarpsAcross, "one warp per 64 x 32");
static_assert(kLoraMaxRank == 16 * kLoraWarpsAcross, "each warp along the columns takes 16 rank columns");

// The rank rounded up to whole k-steps of the up product, and the row stride of tiles that wide.
__host__ __device__ constexpr uint32_t lora_rank_span(uint32_t rank) { return (rank + 15) / 16 * 16; }
__host__ __device__ constexpr uint32_t lora_rank_stride(uint32_t rank) { return lora_rank_span(rank) + kTilePad; }
__host__ __device__ constexpr uint32_t lora_larger(uint32_t a, uint32_t b) { return a > b ? a : b; }

// One pipeline stage, in elements: the input slice (rows x k), the weight slice (n x k forward, k x n
// backward) and the down slice (rank x k forward, k x rank backward).
constexpr uint32_t kLoraInputSlice = kLoraBlockRows * kLoraSliceStride;
constexpr uint32_t kLoraWeightSlice =
    lora_larger(kLoraBlockCols * kLoraSliceStride, kLoraSlice * kLoraWideStride);
__host__ __device__ constexpr uint32_t lora_down_slice(uint32_t rank) {
    return rank == 0 ? 0 : lora_larger(lora_rank_span(rank) * kLoraSliceStride, kLoraSlice * lora_rank_stride(rank));
}
__host__ __device__ constexpr uint32_t lora_stage(uint32_t rank) {
    return kLoraInputSlice + kLoraWeightSlice + lora_down_slice(rank);
}
// After the loop the stages hold the scaled rank-r tile (rows x rank) and the up tile (n x rank
// forward, rank x n backward).
__host__ __device__ constexpr uint32_t lora_epilogue(uint32_t rank) {
    return kLoraBlockRows * lora_rank_stride(rank) +
           lora_larger(kLoraBlockCols * lora_rank_stride(rank), lora_rank_span(rank) * kLoraWideStride);
}
// The dynamic shared memory of a launch at this rank.
__host__ __device__ constexpr uint32_t lora_shared_bytes(uint32_t rank) {
    return kLoraStages * lora_stage(rank) * static_cast<uint32_t>(sizeof(uint16_t));
}
static_assert(lora_epilogue(kLoraMaxRank) <= kLoraStages * lora_stage(kLoraMaxRank), "the epilogue fits");
static_assert(lora_shared_bytes(kLoraMaxRank) <= 163 * 1024, "every rank fits in an A100 block");

__device__ __forceinline__ bool lora_row_aligned(const void* matrix, uint32_t ld) {
    return reinterpret_cast<uintptr_t>(matrix) % 16 == 0 && ld % LORA_ROW_ALIGN == 0;
}

__device__ __forceinline__ bool lora_operands_aligned(const LoraLinearParams& p) {
    return lora_row_aligned(p.input, p.input_ld) && lora_row_aligned(p.weight, p.weight_ld) &&
           (p.rank == 0 || (lora_row_aligned(p.down, p.down_ld) && lora_row_aligned(p.up, p.up_ld)));
}

// Where this thread's warp works: the first row and column of its 64 x 32 outputs within the block,
// the first of its 16 columns of the rank-r product, and how many of those two 8-column tiles lie
// within the rank.
struct LoraWarp {
    int row0;
    int col0;
    int rank_col0;
    int rank_tiles;
};

__device__ __forceinline__ LoraWarp lora_warp(uint32_t rank) {
    const int warp = static_cast<int>(threadIdx.x / 32), across = warp % kLoraWarpsAcross;
    const int tiles = (static_cast<int>(rank) + 7) / 8 - 2 * across;
    return {warp / kLoraWarpsAcross * kLoraWarpRows, across * kLoraWarpCols, 16 * across,
            tiles < 0 ? 0 : tiles > 2 ? 2 : tiles};
}

// Starts copying reduction slice [k0, k0 + 32) of the three operands into `stage`.
template <bool kReduceMajor>
__device__ __forceinline__ void lora_load_slice(uint16_t* stage, const LoraLinearParams& p, uint32_t row_block,
                                                uint32_t col_block, uint32_t k0) {
    uint16_t* input = stage;
    uint16_t* weight = stage + kLoraInputSlice;
    uint16_t* down = weight + kLoraWeightSlice;
    load_matrix_tile<kLoraBlockRows, kLoraSlice, kLoraThreads>(input, kLoraSliceStride, p.input, p.input_ld,
                                                               row_block, k0, p.rows, p.reduce);
    if (p.input_tile_loads != nullptr && threadIdx.x == 0) atomicAdd(p.input_tile_loads, 1u);
    const uint32_t span = lora_rank_span(p.rank);
    if (kReduceMajor) {
        load_matrix_tile<kLoraSlice, kLoraBlockCols, kLoraThreads>(weight, kLoraWideStride, p.weight, p.weight_ld,
                                                                   k0, col_block, p.reduce, p.cols);
        if (p.rank > 0) {
            load_matrix_tile<kLoraSlice, kLoraMaxRank, kLoraThreads>(down, lora_rank_stride(p.rank), p.down,
                                                                     p.down_ld, k0, 0, p.reduce, p.rank, kLoraSlice,
                                                                     span);
        }
    } else {
        load_matrix_tile<kLoraBlockCols, kLoraSlice, kLoraThreads>(weight, kLoraSliceStride, p.weight, p.weight_ld,
                                                                   col_block, k0, p.cols, p.reduce);
        if (p.rank > 0) {
            load_matrix_tile<kLoraMaxRank, kLoraSlice, kLoraThreads>(down, kLoraSliceStride, p.down, p.down_ld, 0,
                                                                     k0, p.rank, p.reduce, span, kLoraSlice);
        }
    }
}

// The A fragments of the warp's 64 rows at k-step kk of a rows x k tile.
__device__ __forceinline__ void lora_load_a(uint32_t a[4][4], const uint16_t* tile, int stride, int row0, int kk) {
    LONGLORA_UNROLL
    for (int i = 0; i < 4; ++i) load_a_fragment(a[i], tile, stride, row0 + 16 * i, kk);
}

// acc += a · columns col0..col0 + 31 of a B tile at k-step kk (kKMajor: an n x k tile, else k x n):
// the warp's 64 x 32 outputs.
template <bool kKMajor>
__device__ __forceinline__ void lora_warp_mma(float acc[4][4][4], const uint32_t a[4][4], const uint16_t* tile,
                                              int stride, int col0, int kk) {
    LONGLORA_UNROLL
    for (int pair = 0; pair < 2; ++pair) {
        uint32_t b[2][2];
        load_b_pair<kKMajor>(b, tile, stride, col0 + 16 * pair, kk);
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            mma_m16n8k16_bf16(acc[i][2 * pair], a[i], b[0], acc[i][2 * pair]);
            mma_m16n8k16_bf16(acc[i][2 * pair + 1], a[i], b[1], acc[i][2 * pair + 1]);
        }
    }
}

// acc += input slice · weight slice and low += input slice · down slice, for this warp's outputs: the
// A fragments of the input feed both products.
template <bool kReduceMajor>
__device__ __forceinline__ void lora_multiply_slice(float acc[4][4][4], float low[4][2][4], const uint16_t* stage,
                                                    uint32_t rank, const LoraWarp& w) {
    const uint16_t* input = stage;
    const uint16_t* weight = stage + kLoraInputSlice;
    const uint16_t* down = weight + kLoraWeightSlice;
    const int weight_stride = kReduceMajor ? kLoraWideStride : kLoraSliceStride;
    const int down_stride = kReduceMajor ? static_cast<int>(lora_rank_stride(rank)) : kLoraSliceStride;
    LONGLORA_UNROLL
    for (int kk = 0; kk < kLoraSlice; kk += 16) {
        uint32_t a[4][4];
        lora_load_a(a, input, kLoraSliceStride, w.row0, kk);
        lora_warp_mma<!kReduceMajor>(acc, a, weight, weight_stride, w.col0, kk);
        if (w.rank_tiles > 0) {
            uint32_t b[2][2];
            load_b_pair<!kReduceMajor>(b, down, down_stride, w.rank_col0, kk);
            LONGLORA_UNROLL
            for (int i = 0; i < 4; ++i) {
                mma_m16n8k16_bf16(low[i][0], a[i], b[0], low[i][0]);
                if (w.rank_tiles > 1) mma_m16n8k16_bf16(low[i][1], a[i], b[1], low[i][1]);
            }
        }
    }
}

// acc += s·(x·Aᵀ)·Bᵀ (forward) or s·(dY·B)·A (backward). The rank-r product goes to global memory (f32,
// block column 0 only) and, scaled and rounded to bf16, to shared memory, where every warp finds the
// 64 rows x rank it multiplies with the up operand (each warp computed 16 of the rank's columns).
template <bool kReduceMajor>
__device__ void lora_add_adapter(float acc[4][4][4], const float low[4][2][4], const LoraLinearParams& p,
                                 uint16_t* shared, uint32_t row_block, uint32_t col_block, const LoraWarp& w) {
    const uint32_t span = lora_rank_span(p.rank), stride = lora_rank_stride(p.rank);
    uint16_t* low_tile = shared;
    uint16_t* up_tile = shared + kLoraBlockRows * stride;
    const int up_stride = kReduceMajor ? kLoraWideStride : static_cast<int>(stride);
    if (kReduceMajor) {
        load_matrix_tile<kLoraMaxRank, kLoraBlockCols, kLoraThreads>(up_tile, up_stride, p.up, p.up_ld, 0, col_block,
                                                                     p.rank, p.cols, span, kLoraBlockCols);
    } else {
        load_matrix_tile<kLoraBlockCols, kLoraMaxRank, kLoraThreads>(up_tile, up_stride, p.up, p.up_ld, col_block, 0,
                                                                     p.cols, p.rank, kLoraBlockCols, span);
    }
    cp_async_commit();

    const unsigned g = lane_id() / 4, t = lane_id() % 4;
    if (static_cast<uint32_t>(w.rank_col0) < span) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            LONGLORA_UNROLL
            for (int j = 0; j < 2; ++j) {
                LONGLORA_UNROLL
                for (int half = 0; half < 2; ++half) {
                    const uint32_t row = w.row0 + 16 * i + g + 8 * half, col = w.rank_col0 + 8 * j + 2 * t;
                    const float* pair = &low[i][j][2 * half];
                    store_bf16_pair(low_tile + row * stride + col, pack_bf16x2(p.scale * pair[0], p.scale * pair[1]));
                    if (blockIdx.x != 0 || row_block + row >= p.rows) continue;
                    float* out = p.low + static_cast<size_t>(row_block + row) * p.rank;
                    if (col < p.rank) out[col] = pair[0];
                    if (col + 1 < p.rank) out[col + 1] = pair[1];
                }
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();

    LONGLORA_UNROLL
    for (int kk = 0; kk < kLoraMaxRank; kk += 16) {
        if (static_cast<uint32_t>(kk) >= span) break;
        uint32_t a[4][4];
        lora_load_a(a, low_tile, static_cast<int>(stride), w.row0, kk);
        lora_warp_mma<!kReduceMajor>(acc, a, up_tile, up_stride, w.col0, kk);
    }
}

// Writes the warp's 64 x 32 accumulators to the output whose block starts at (row0, col0), or adds
// them to it, rounding once to bf16; two columns per 4-byte access when rows have an even length.
__device__ __forceinline__ void lora_store_output(const float acc[4][4][4], const LoraLinearParams& p,
                                                  uint32_t row0, uint32_t col0) {
    const unsigned g = lane_id() / 4, t = lane_id() % 4;
    const bool pairs = p.cols % 2 == 0;
    LONGLORA_UNROLL
    for (int i = 0; i < 4; ++i) {
        LONGLORA_UNROLL
        for (int j = 0; j < 4; ++j) {
            LONGLORA_UNROLL
            for (int half = 0; half < 2; ++half) {
                const uint32_t row = row0 + 16 * i + g + 8 * half, col = col0 + 8 * j + 2 * t;
                if (row >= p.rows || col >= p.cols) continue;
                float value[2] = {acc[i][j][2 * half], acc[i][j][2 * half + 1]};
                uint16_t* out = p.output + static_cast<size_t>(row) * p.cols + col;
                if (pairs) {
                    if (p.accumulate) {
                        const uint32_t old = load_bf16_pair(out);
                        value[0] += bf16x2_low(old);
                        value[1] += bf16x2_high(old);
                    }
                    store_bf16_pair(out, pack_bf16x2(value[0], value[1]));
                    continue;
                }
                LONGLORA_UNROLL
                for (int e = 0; e < 2; ++e) {
                    if (col + e >= p.cols) break;
                    out[e] = float_to_bf16(value[e] + (p.accumulate ? bf16_to_float(out[e]) : 0.0f));
                }
            }
        }
    }
}

template <bool kReduceMajor>
__device__ void lora_product(const LoraLinearParams& p) {
    LONGLORA_REQUIRE(lora_operands_aligned(p), "lora_linear: every bf16 operand row starts on a 16-byte boundary");
    uint16_t* shared = dynamic_shared<uint16_t>();
    const uint32_t stage = lora_stage(p.rank);
    const uint32_t row_block = blockIdx.y * kLoraBlockRows, col_block = blockIdx.x * kLoraBlockCols;
    const LoraWarp w = lora_warp(p.rank);
    const uint32_t slices = (p.reduce + kLoraSlice - 1) / kLoraSlice;

    float acc[4][4][4] = {};  // rows w.row0 + 16i.., columns w.col0 + 8j..
    float low[4][2][4] = {};  // rows w.row0 + 16i.., rank columns w.rank_col0 + 8j..
    // One commit group per slice, empty past the last, so that waiting for all but the newest
    // kLoraStages - 2 groups always waits for exactly the slice about to be multiplied.
    LONGLORA_UNROLL
    for (int s = 0; s < kLoraStages - 1; ++s) {
        if (static_cast<uint32_t>(s) < slices) {
            lora_load_slice<kReduceMajor>(shared + s * stage, p, row_block, col_block, s * kLoraSlice);
        }
        cp_async_commit();
    }
    for (uint32_t slice = 0; slice < slices; ++slice) {
        cp_async_wait<kLoraStages - 2>();
        __syncthreads();
        // The stage refilled here was multiplied in the previous step, which every warp has finished.
        const uint32_t next = slice + kLoraStages - 1;
        if (next < slices) {
            lora_load_slice<kReduceMajor>(shared + next % kLoraStages * stage, p, row_block, col_block,
                                          next * kLoraSlice);
        }
        cp_async_commit();
        lora_multiply_slice<kReduceMajor>(acc, low, shared + slice % kLoraStages * stage, p.rank, w);
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with the stages, which the adapter's tiles reuse

    if (p.rank > 0) lora_add_adapter<kReduceMajor>(acc, low, p, shared, row_block, col_block, w);
    lora_store_output(acc, p, row_block + w.row0, col_block + w.col0);
}

constexpr int kLoraGradBlock = LORA_GRAD_BLOCK;
constexpr int kLoraGradThreads = LORA_GRAD_THREADS;  // 4 warps of 16 gradient rows
constexpr int kLoraGradStride = kLoraGradBlock + kTilePad;
// Two stages of both operands' slices.
constexpr unsigned kLoraGradSharedBytes = 2 * 2 * kLoraSlice * kLoraGradStride * sizeof(uint16_t);

// A 32 x 64 slice of an operand of the gradient reductions: bf16 through cp.async, f32 converted.
__device__ __forceinline__ void lora_grad_slice(uint16_t* tile, const uint16_t* matrix, uint32_t ld, uint32_t row0,
                                                uint32_t col0, uint32_t row_end, uint32_t col_end) {
    load_matrix_tile<kLoraSlice, kLoraGradBlock, kLoraGradThreads>(tile, kLoraGradStride, matrix, ld, row0, col0,
                                                                   row_end, col_end);
}

__device__ __forceinline__ void lora_grad_slice(uint16_t* tile, const float* matrix, uint32_t ld, uint32_t row0,
                                                uint32_t col0, uint32_t row_end, uint32_t col_end) {
    convert_matrix_tile<kLoraSlice, kLoraGradBlock, kLoraGradThreads>(tile, kLoraGradStride, matrix, ld, row0, col0,
                                                                      row_end, col_end);
}

// grad[i][j] += scale · Σ_r left[r][i] · right[r][j] over this block's slice of the `rows` r, for its
// 64 x 64 tile of grad: both operands stream as row slices (k x n tiles), two stages in flight, so
// both use .trans fragments.
template <class Left, class Right>
__device__ void lora_grad(float* grad, const Left* left, uint32_t left_ld, const Right* right, uint32_t right_ld,
                          uint32_t rows, uint32_t left_cols, uint32_t right_cols, float scale) {
    __shared__ __align__(16) uint16_t left_tile[2][kLoraSlice * kLoraGradStride];
    __shared__ __align__(16) uint16_t right_tile[2][kLoraSlice * kLoraGradStride];
    static_assert(sizeof left_tile + sizeof right_tile == kLoraGradSharedBytes, "declared to the emulator");

    const uint32_t i_block = blockIdx.y * kLoraGradBlock, j_block = blockIdx.x * kLoraGradBlock;
    const int warp_row = static_cast<int>(threadIdx.x / 32) * 16;

    const uint32_t slice_rows =
        (rows + gridDim.z * kLoraSlice - 1) / (gridDim.z * kLoraSlice) * kLoraSlice;
    const uint32_t r_begin = blockIdx.z * slice_rows < rows ? blockIdx.z * slice_rows : rows;
    const uint32_t r_end = rows - r_begin < slice_rows ? rows : r_begin + slice_rows;
    auto load = [&](int stage, uint32_t r0) {
        lora_grad_slice(left_tile[stage], left, left_ld, r0, i_block, r_end, left_cols);
        lora_grad_slice(right_tile[stage], right, right_ld, r0, j_block, r_end, right_cols);
    };

    float acc[8][4] = {};
    if (r_begin < r_end) load(0, r_begin);
    cp_async_commit();
    for (uint32_t r0 = r_begin, stage = 0; r0 < r_end; r0 += kLoraSlice, stage ^= 1) {
        // The other stage was last read before the barrier that ended the previous step.
        if (r0 + kLoraSlice < r_end) load(stage ^ 1, r0 + kLoraSlice);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        LONGLORA_UNROLL
        for (int kk = 0; kk < kLoraSlice; kk += 16) {
            uint32_t a[4];
            load_a_fragment_trans(a, left_tile[stage], kLoraGradStride, warp_row, kk);
            LONGLORA_UNROLL
            for (int pair = 0; pair < 4; ++pair) {
                uint32_t b[2][2];
                load_b_fragments_trans(b, right_tile[stage], kLoraGradStride, 16 * pair, kk);
                mma_m16n8k16_bf16(acc[2 * pair], a, b[0], acc[2 * pair]);
                mma_m16n8k16_bf16(acc[2 * pair + 1], a, b[1], acc[2 * pair + 1]);
            }
        }
        __syncthreads();
    }

    const unsigned g = lane_id() / 4, t = lane_id() % 4;
    LONGLORA_UNROLL
    for (int j = 0; j < 8; ++j) {
        LONGLORA_UNROLL
        for (int e = 0; e < 4; ++e) {
            const uint32_t row = i_block + warp_row + g + (e >= 2 ? 8 : 0), col = j_block + 8 * j + 2 * t + (e & 1);
            if (row < left_cols && col < right_cols) {
                atomicAdd(&grad[static_cast<size_t>(row) * right_cols + col], scale * acc[j][e]);
            }
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kLoraThreads, 1) lora_linear_forward_kernel(const LoraLinearParams p) {
    lora_product<false>(p);
}
LONGLORA_EMU_ENTRY(lora_linear_forward_kernel, LoraLinearParams)

extern "C" __global__ void __launch_bounds__(kLoraThreads, 1)
    lora_linear_backward_input_kernel(const LoraLinearParams p) {
    lora_product<true>(p);
}
LONGLORA_EMU_ENTRY(lora_linear_backward_input_kernel, LoraLinearParams)

extern "C" __global__ void __launch_bounds__(kLoraGradThreads) lora_grad_a_kernel(const LoraGradAParams p) {
    LONGLORA_REQUIRE(lora_row_aligned(p.x, p.x_ld), "lora_grad_a: every row of x starts on a 16-byte boundary");
    lora_grad(p.grad_a, p.dy_b, p.rank, p.x, p.x_ld, p.rows, p.rank, p.in_features, p.scale);
}
LONGLORA_EMU_ENTRY(lora_grad_a_kernel, LoraGradAParams, kLoraGradSharedBytes)

extern "C" __global__ void __launch_bounds__(kLoraGradThreads) lora_grad_b_kernel(const LoraGradBParams p) {
    LONGLORA_REQUIRE(lora_row_aligned(p.dy, p.dy_ld), "lora_grad_b: every row of dy starts on a 16-byte boundary");
    lora_grad(p.grad_b, p.dy, p.dy_ld, p.xa, p.rank, p.rows, p.out_features, p.rank, p.scale);
}
LONGLORA_EMU_ENTRY(lora_grad_b_kernel, LoraGradBParams, kLoraGradSharedBytes)

#if defined(LONGLORA_EMU)
// The dynamic shared memory of a lora_linear launch at `rank`, for src/kernels/lora.rs: the layout
// above is the one place it is defined. The emulator library is linked whatever runs the kernels.
extern "C" uint32_t longlora_lora_linear_shared_bytes(uint32_t rank) { return lora_shared_bytes(rank); }
#endif
