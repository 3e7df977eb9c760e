// The fused LoRA linear layer, y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ, and its backward, dX = dY·W + s·(dY·B)·A,
// dA = s·(dY·B)ᵀ·x, dB = s·dYᵀ·(x·Aᵀ). bf16 operands, f32 accumulation, m16n8k16 tensor-core products.
//
// Forward and input-gradient are one algorithm, lora_product: a block owns a 64 x 64 tile of the
// output; for each 32-wide slice of the reduction it loads the input tile once and multiplies it both
// with the weight tile (the base product) and with the adapter's down tile (the rank-r product, at
// most 64 wide), so the input is read from global memory once for both. Slices are double-buffered:
// the cp.async copies of slice s + 1 are in flight while slice s is multiplied. After the loop the rank-r
// accumulators, scaled by s and rounded to bf16, are already the A fragments of the up product, which
// adds into the same output accumulators. Each block recomputes the rank-r product of its rows (r
// rounded up to 8, over the 64 output columns: 12.5% extra mma work at r = 8) instead of reading the
// input a second time; the blocks of the first column store it (f32: it is rank r, so its traffic is
// r/reduce of the input's, and dA, dB reduce over it without a second rounding).
//
// The weight gradients dA, dB are small reductions over the rows (lora_grad): one block per 64 x 64
// tile of the gradient and slice of the rows, streaming both operands along its rows. The gradients
// are only r x in and out x r, too few tiles to fill a GPU, so the rows are split across grid.z and
// the slices' sums meet through f32 atomics (in an order that varies from run to run).

#include "kernel.h"

#include "bf16.h"
#include "cp_async.h"
#include "mma.h"
#include "mma_tile.h"
#include "params.h"

namespace {

constexpr int kLoraBlockRows = 64;   // output rows per block: 4 warps x 16
constexpr int kLoraBlockCols = 64;   // output columns per block: 8 mma tiles of 8
constexpr int kLoraBlockReduce = 32; // reduction slice per step: 2 mma k-steps of 16
constexpr int kLoraMaxRank = 64;
constexpr int kLoraThreads = 128;
constexpr int kLoraWide = 64 + kTilePad;    // stride of tiles whose rows are 64 wide
constexpr int kLoraNarrow = 32 + kTilePad;  // stride of tiles whose rows are one reduction slice
// A weight or down slice: 64 x 32 stored n x k (forward) or 32 x 64 stored k x n (backward).
constexpr int kLoraSliceTile = kLoraBlockCols * kLoraNarrow;
static_assert(kLoraBlockReduce * kLoraWide <= kLoraSliceTile, "a k x n slice fits the same tile");
// The static shared memory of lora_product and lora_grad (their tiles below).
constexpr unsigned kLoraProductSharedBytes =
    (2 * kLoraBlockRows * kLoraNarrow + 4 * kLoraSliceTile + kLoraMaxRank * kLoraWide) * sizeof(uint16_t);
constexpr unsigned kLoraGradSharedBytes = 2 * kLoraBlockReduce * kLoraWide * sizeof(uint16_t);

// Loads the reduction slice [k0, k0 + 32) of a weight-like operand, whose other dimension starts at
// n0 and ends at n_end, into `tile`: as an n x k tile when the operand is stored [n][k] (forward), as
// a k x n tile when it is stored [k][n] (backward).
template <bool kReduceMajor>
__device__ __forceinline__ void load_operand_slice(uint16_t* tile, const uint16_t* operand, uint32_t n0,
                                                   uint32_t n_end, uint32_t k0, uint32_t k_end) {
    if (kReduceMajor) {
        load_tile<kLoraBlockReduce, kLoraBlockCols>(tile, kLoraWide, operand, n_end, k0, n0, k_end, n_end);
    } else {
        load_tile<kLoraBlockCols, kLoraBlockReduce>(tile, kLoraNarrow, operand, k_end, n0, k0, n_end, k_end);
    }
}

// acc[j] += a · (columns 8j.. of the operand tile, k-step kk) for the 8-column tiles j < tiles; the
// fragments come two tiles at a time.
template <bool kReduceMajor, int kStride>
__device__ __forceinline__ void mma_columns(float acc[8][4], const uint32_t a[4], const uint16_t* tile, int tiles,
                                            int kk) {
    LONGLORA_UNROLL
    for (int p = 0; p < 4; ++p) {
        if (2 * p >= tiles) break;
        uint32_t b[2][2];
        if (kReduceMajor) {
            load_b_fragments_trans(b, tile, kStride, 16 * p, 16 * kk);
        } else {
            load_b_fragments(b, tile, kStride, 16 * p, 16 * kk);
        }
        mma_m16n8k16_bf16(acc[2 * p], a, b[0], acc[2 * p]);
        if (2 * p + 1 < tiles) mma_m16n8k16_bf16(acc[2 * p + 1], a, b[1], acc[2 * p + 1]);
    }
}

// The C fragment element (i of 4) of mma tile j: its row and column within the warp's 16 x 64 tile.
__device__ __forceinline__ unsigned fragment_row(int i) { return lane_id() / 4 + (i >= 2 ? 8 : 0); }
__device__ __forceinline__ unsigned fragment_col(int j, int i) { return 8 * j + 2 * (lane_id() % 4) + (i & 1); }

// A reduction slice of the three operands the main loop multiplies, copied asynchronously.
template <bool kReduceMajor>
__device__ __forceinline__ void load_lora_slice(uint16_t* input_tile, uint16_t* weight_tile, uint16_t* down_tile,
                                                const LoraLinearParams& p, uint32_t row_block, uint32_t col_block,
                                                uint32_t k0) {
    load_tile<kLoraBlockRows, kLoraBlockReduce>(input_tile, kLoraNarrow, p.input, p.reduce, row_block, k0, p.rows,
                                                p.reduce);
    if (p.input_tile_loads != nullptr && threadIdx.x == 0) atomicAdd(p.input_tile_loads, 1u);
    load_operand_slice<kReduceMajor>(weight_tile, p.weight, col_block, p.cols, k0, p.reduce);
    if (p.rank > 0) load_operand_slice<kReduceMajor>(down_tile, p.down, 0, p.rank, k0, p.reduce);
}

template <bool kReduceMajor>
__device__ void lora_product(const LoraLinearParams& p) {
    // Two stages of the slice operands, so that slice s + 1 is in flight while slice s is multiplied.
    __shared__ __align__(16) uint16_t input_tile[2][kLoraBlockRows * kLoraNarrow];
    __shared__ __align__(16) uint16_t weight_tile[2][kLoraSliceTile];
    __shared__ __align__(16) uint16_t down_tile[2][kLoraSliceTile];
    __shared__ __align__(16) uint16_t up_tile[kLoraMaxRank * kLoraWide];

    const uint32_t row_block = blockIdx.y * kLoraBlockRows, col_block = blockIdx.x * kLoraBlockCols;
    const int warp_row = threadIdx.x / 32 * 16;
    const int rank_tiles = static_cast<int>((p.rank + 7) / 8);  // 8-column mma tiles of the rank
    const int rank_pairs = (rank_tiles + 1) / 2;                   // 16-wide k-steps of the up product

    float acc[8][4] = {};  // output columns col_block + 8j..
    float low[8][4] = {};  // rank columns 8j..: input·down
    load_lora_slice<kReduceMajor>(input_tile[0], weight_tile[0], down_tile[0], p, row_block, col_block, 0);
    cp_async_commit();
    for (uint32_t k0 = 0, stage = 0; k0 < p.reduce; k0 += kLoraBlockReduce, stage ^= 1) {
        // The other stage was last read before the barrier that ended the previous step.
        if (k0 + kLoraBlockReduce < p.reduce) {
            load_lora_slice<kReduceMajor>(input_tile[stage ^ 1], weight_tile[stage ^ 1], down_tile[stage ^ 1], p,
                                          row_block, col_block, k0 + kLoraBlockReduce);
        }
        // One group per step, even an empty one, so that "all but the newest group" is this slice.
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        LONGLORA_UNROLL
        for (int kk = 0; kk < kLoraBlockReduce / 16; ++kk) {
            uint32_t a[4];
            load_a_fragment(a, input_tile[stage], kLoraNarrow, warp_row, 16 * kk);
            constexpr int kStride = kReduceMajor ? kLoraWide : kLoraNarrow;
            mma_columns<kReduceMajor, kStride>(acc, a, weight_tile[stage], 8, kk);
            mma_columns<kReduceMajor, kStride>(low, a, down_tile[stage], rank_tiles, kk);
        }
        __syncthreads();
    }

    if (p.rank > 0) {
        if (blockIdx.x == 0) {
            LONGLORA_UNROLL
            for (int j = 0; j < 8; ++j) {
                if (j >= rank_tiles) break;
                LONGLORA_UNROLL
                for (int i = 0; i < 4; ++i) {
                    const uint32_t row = row_block + warp_row + fragment_row(i), col = fragment_col(j, i);
                    if (row < p.rows && col < p.rank) p.low[static_cast<size_t>(row) * p.rank + col] = low[j][i];
                }
            }
        }
        // The up operand reduces over the rank: stored [cols][rank] (forward) or [rank][cols] (backward).
        if (kReduceMajor) {
            load_tile<kLoraMaxRank, kLoraBlockCols>(up_tile, kLoraWide, p.up, p.cols, 0, col_block, p.rank, p.cols);
        } else {
            load_tile<kLoraBlockCols, kLoraMaxRank>(up_tile, kLoraWide, p.up, p.rank, col_block, 0, p.cols, p.rank);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        LONGLORA_UNROLL
        for (int kk = 0; kk < 4; ++kk) {
            if (kk >= rank_pairs) break;
            uint32_t a[4];
            accumulators_to_a_fragment(a, low[2 * kk], low[2 * kk + 1], p.scale);
            mma_columns<kReduceMajor, kLoraWide>(acc, a, up_tile, 8, kk);
        }
    }

    LONGLORA_UNROLL
    for (int j = 0; j < 8; ++j) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t row = row_block + warp_row + fragment_row(i), col = col_block + fragment_col(j, i);
            if (row >= p.rows || col >= p.cols) continue;
            uint16_t& out = p.output[static_cast<size_t>(row) * p.cols + col];
            out = float_to_bf16(acc[j][i] + (p.accumulate ? bf16_to_float(out) : 0.0f));
        }
    }
}

// grad[i][j] += scale · Σ_r left[r][i] · right[r][j] over this block's slice of the `rows` r, for its
// 64 x 64 tile of grad: both operands are streamed as row slices (k x n tiles), so both use .trans
// fragments.
template <class Left, class Right>
__device__ void lora_grad(float* grad, const Left* left, const Right* right, uint32_t rows, uint32_t left_cols,
                          uint32_t right_cols, float scale) {
    __shared__ __align__(16) uint16_t left_tile[kLoraBlockReduce * kLoraWide];
    __shared__ __align__(16) uint16_t right_tile[kLoraBlockReduce * kLoraWide];

    const uint32_t i_block = blockIdx.y * kLoraBlockRows, j_block = blockIdx.x * kLoraBlockCols;
    const int warp_row = threadIdx.x / 32 * 16;

    const uint32_t slice_rows = (rows + gridDim.z * kLoraBlockReduce - 1) / (gridDim.z * kLoraBlockReduce) *
                                kLoraBlockReduce;
    const uint32_t r_begin = blockIdx.z * slice_rows < rows ? blockIdx.z * slice_rows : rows;
    const uint32_t r_end = rows - r_begin < slice_rows ? rows : r_begin + slice_rows;

    float acc[8][4] = {};
    for (uint32_t r0 = r_begin; r0 < r_end; r0 += kLoraBlockReduce) {
        load_tile<kLoraBlockReduce, kLoraBlockRows>(left_tile, kLoraWide, left, left_cols, r0, i_block, r_end,
                                                    left_cols);
        load_tile<kLoraBlockReduce, kLoraBlockCols>(right_tile, kLoraWide, right, right_cols, r0, j_block, r_end,
                                                    right_cols);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        LONGLORA_UNROLL
        for (int kk = 0; kk < kLoraBlockReduce / 16; ++kk) {
            uint32_t a[4];
            load_a_fragment_trans(a, left_tile, kLoraWide, warp_row, 16 * kk);
            mma_columns<true, kLoraWide>(acc, a, right_tile, 8, kk);
        }
        __syncthreads();
    }

    LONGLORA_UNROLL
    for (int j = 0; j < 8; ++j) {
        LONGLORA_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t row = i_block + warp_row + fragment_row(i), col = j_block + fragment_col(j, i);
            if (row < left_cols && col < right_cols) {
                atomicAdd(&grad[static_cast<size_t>(row) * right_cols + col], scale * acc[j][i]);
            }
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kLoraThreads) lora_linear_forward_kernel(const LoraLinearParams p) {
    lora_product<false>(p);
}
LONGLORA_EMU_ENTRY(lora_linear_forward_kernel, LoraLinearParams, kLoraProductSharedBytes)

extern "C" __global__ void __launch_bounds__(kLoraThreads)
    lora_linear_backward_input_kernel(const LoraLinearParams p) {
    lora_product<true>(p);
}
LONGLORA_EMU_ENTRY(lora_linear_backward_input_kernel, LoraLinearParams, kLoraProductSharedBytes)

extern "C" __global__ void __launch_bounds__(kLoraThreads) lora_grad_a_kernel(const LoraGradAParams p) {
    lora_grad(p.grad_a, p.dy_b, p.x, p.rows, p.rank, p.in_features, p.scale);
}
LONGLORA_EMU_ENTRY(lora_grad_a_kernel, LoraGradAParams, kLoraGradSharedBytes)

extern "C" __global__ void __launch_bounds__(kLoraThreads) lora_grad_b_kernel(const LoraGradBParams p) {
    lora_grad(p.grad_b, p.dy, p.xa, p.rows, p.out_features, p.rank, p.scale);
}
LONGLORA_EMU_ENTRY(lora_grad_b_kernel, LoraGradBParams, kLoraGradSharedBytes)
