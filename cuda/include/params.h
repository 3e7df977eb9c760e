/* The parameter struct of every kernel, passed by value at launch: the single source of truth for both
 * the kernels (CUDA and the emulator) and Rust, whose mirror src/kernels/params.rs is generated from
 * this file by scripts/gen-params.sh. Plain C, fixed-width fields only. Pointers are device pointers
 * on a GPU and host pointers in the emulator. Shapes are in elements, row-major. */
#ifndef LONGLORA_PARAMS_H
#define LONGLORA_PARAMS_H

#include <stdint.h>

/* probe_kernel: one block of one warp applies every device primitive to the given inputs and stores
 * each lane's raw output registers. [32][k] arrays hold lane l's k registers at l * k. */
typedef struct ProbeParams {
    const uint32_t* mma_bf16_a; /* [32][4] A fragments, bf16 pairs */
    const uint32_t* mma_bf16_b; /* [32][2] B fragments, bf16 pairs */
    const uint32_t* mma_f16_a;  /* [32][4] A fragments, f16 pairs */
    const uint32_t* mma_f16_b;  /* [32][2] B fragments, f16 pairs */
    const float* mma_c;         /* [32][4] C fragments, used by both products */
    const uint16_t* ldmatrix_source; /* [32][8]: 32 rows of 8 elements, copied to shared memory */
    const uint32_t* ldmatrix_rows;   /* [32]: the shared row whose address lane l passes to ldmatrix */
    const uint32_t* shuffle_values;  /* [32] */
    const uint32_t* shuffle_sources; /* [32]: each lane's source lane for __shfl_sync */
    uint32_t shuffle_delta;          /* for __shfl_up_sync and __shfl_down_sync */
    uint32_t shuffle_xor_mask;       /* for __shfl_xor_sync */
    uint32_t shuffle_width;          /* for all four shuffles: a power of two up to 32 */
    float* mma_bf16_d;               /* [32][4] */
    float* mma_f16_d;                /* [32][4] */
    /* [32][14]: x1, x2 (2), x4 (4), then x1.trans, x2.trans (2), x4.trans (4) */
    uint32_t* ldmatrix_out;
    uint32_t* shuffle_out; /* [32][4]: __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync */
} ProbeParams;

/* reduce_sum_kernel: block b sums row b of input[rows][cols] through shared memory into row_sums[b],
 * and atomically adds it to *total. */
typedef struct ReduceSumParams {
    const float* input;
    float* row_sums;
    float* total;
    uint32_t cols;
} ReduceSumParams;

/* divergent_barrier_kernel (emulator only: on a GPU it would hang): each mode breaks a barrier. */
typedef enum Divergence {
    DIVERGENCE_EARLY_EXIT = 0,      /* half the block returns before __syncthreads */
    DIVERGENCE_TWO_BARRIERS = 1,    /* odd and even threads wait at different __syncthreads */
    DIVERGENCE_SHUFFLE_EXIT = 2,    /* one lane returns while its warp shuffles from it */
    DIVERGENCE_SHUFFLE_BARRIER = 3  /* one lane waits at __syncthreads while its warp shuffles */
} Divergence;

typedef struct DivergentBarrierParams {
    uint32_t divergence; /* a Divergence */
    float* out;          /* [block threads] */
} DivergentBarrierParams;

/* mma_loop_kernel (emulator only: it measures the emulator's cost per warp-level mma): every warp
 * multiplies the same fragments `iterations` times, accumulating in f32, and stores its D fragment. */
typedef struct MmaLoopParams {
    const uint32_t* a; /* [32][4] A fragments, bf16 pairs */
    const uint32_t* b; /* [32][2] B fragments, bf16 pairs */
    float* d;          /* [warps][32][4] */
    uint32_t iterations;
} MmaLoopParams;

/* shared_access_kernel (emulator only): one warp makes one shared-memory access, lane l at byte
 * offset offsets[l] of 4 KB of dynamic shared memory: access 0 is ldmatrix.x4, 1 ldmatrix.x1, 2 a
 * 4-byte st.shared, 3 a 16-byte ld.shared. For the tests of the emulator's bank model. */
typedef struct SharedAccessParams {
    const uint32_t* offsets; /* [32] */
    uint32_t access;
} SharedAccessParams;

/* ---- Fused LoRA linear (cuda/lora_linear.cu). Tensors are row-major bf16 (uint16_t bits) unless
 * marked f32; s = alpha / rank. Every bf16 operand row starts on a 16-byte boundary: its row stride
 * (*_ld, in elements) is a multiple of LORA_ROW_ALIGN and its pointer 16-byte aligned (the launch
 * functions pad rows that are not, and the kernels trap otherwise). ---- */

/* The block of the linear kernels: LORA_BLOCK_ROWS x LORA_BLOCK_COLS outputs, LORA_THREADS threads
 * (8 warps), the reduction in slices of LORA_BLOCK_REDUCE; of the weight-gradient kernels:
 * LORA_GRAD_BLOCK x LORA_GRAD_BLOCK outputs, LORA_GRAD_THREADS threads. */
#define LORA_BLOCK_ROWS 128
#define LORA_BLOCK_COLS 128
#define LORA_BLOCK_REDUCE 32
#define LORA_THREADS 256
#define LORA_GRAD_BLOCK 64
#define LORA_GRAD_THREADS 128
#define LORA_MAX_RANK 64
#define LORA_ROW_ALIGN 8

/* lora_linear_forward_kernel: output = input·Wᵀ + s·(input·Aᵀ)·Bᵀ and low = input·Aᵀ, with
 * input = x [rows][reduce], weight = W [cols][reduce], down = A [rank][reduce], up = B [cols][rank].
 * lora_linear_backward_input_kernel: output (+)= input·W + s·(input·B)·A and low = input·B, with
 * input = dY [rows][reduce], weight = W [reduce][cols], down = B [reduce][rank], up = A [rank][cols].
 * rank = 0 is the plain product (down, up and low unused). */
typedef struct LoraLinearParams {
    const uint16_t* input;
    const uint16_t* weight;
    const uint16_t* down;
    const uint16_t* up;
    uint16_t* output;           /* [rows][cols] */
    float* low;                 /* [rows][rank] f32, kept for the backward reductions */
    uint32_t* input_tile_loads; /* null, or incremented once per tile of input read from global memory */
    uint32_t rows;
    uint32_t reduce;
    uint32_t cols;
    uint32_t rank; /* 0 to LORA_MAX_RANK */
    uint32_t input_ld;
    uint32_t weight_ld;
    uint32_t down_ld;
    uint32_t up_ld;
    float scale;
    uint32_t accumulate; /* nonzero: output += the product, else output = the product */
} LoraLinearParams;

/* lora_grad_a_kernel: grad_a [rank][in_features] f32 += s·dy_bᵀ·x, with dy_b = dY·B [rows][rank] f32
 * and x [rows][in_features] (row stride x_ld). */
typedef struct LoraGradAParams {
    const float* dy_b;
    const uint16_t* x;
    float* grad_a;
    uint32_t rows;
    uint32_t in_features;
    uint32_t rank;
    uint32_t x_ld;
    float scale;
} LoraGradAParams;

/* lora_grad_b_kernel: grad_b [out_features][rank] f32 += s·dyᵀ·xa, with dy [rows][out_features] (row
 * stride dy_ld) and xa = x·Aᵀ [rows][rank] f32. */
typedef struct LoraGradBParams {
    const uint16_t* dy;
    const float* xa;
    float* grad_b;
    uint32_t rows;
    uint32_t out_features;
    uint32_t rank;
    uint32_t dy_ld;
    float scale;
} LoraGradBParams;

/* pad_rows_kernel (cuda/pad_rows.cu): destination [rows][ld] = source [rows][cols] with zeros in columns
 * cols..ld, so that every row starts on a 16-byte boundary for the LoRA kernels. */
typedef struct PadRowsParams {
    const uint16_t* source;
    uint16_t* destination;
    uint32_t rows;
    uint32_t cols;
    uint32_t ld;
} PadRowsParams;

/* ---- Elementwise and per-row kernels of a Llama training step (cuda/convert.cu, swiglu.cu, rope.cu,
 * embedding.cu, rmsnorm.cu, cross_entropy.cu). Activations and their gradients are bf16 (uint16_t
 * bits); statistics and trainable-parameter gradients are f32. Backward kernels accumulate (+=). ---- */

/* f32_to_bf16_kernel: values_bf16[i] = round(values_f32[i]); bf16_to_f32_kernel: the reverse. */
typedef struct ConvertParams {
    float* values_f32;
    uint16_t* values_bf16;
    uint64_t count;
} ConvertParams;

/* scaled_f32_to_bf16_kernel: output = bf16(scale * input), both [count]. */
typedef struct ScaledConvertParams {
    const float* input;
    uint16_t* output;
    float scale;
    uint64_t count;
} ScaledConvertParams;

/* swiglu_forward_kernel: out = silu(gate) * up, all [count]. */
typedef struct SwigluParams {
    const uint16_t* gate;
    const uint16_t* up;
    uint16_t* out;
    uint64_t count;
} SwigluParams;

/* swiglu_backward_kernel: dgate += dout * up * silu'(gate), dup += dout * silu(gate). */
typedef struct SwigluBackwardParams {
    const uint16_t* dout;
    const uint16_t* gate;
    const uint16_t* up;
    uint16_t* dgate;
    uint16_t* dup;
    uint64_t count;
} SwigluBackwardParams;

/* rope_kernel: rotates x [rows][heads][2 * half_dim] in place by the angles of table row
 * positions[row] of cos, sin [max_positions][half_dim] (f32); sign = 1 forward, -1 backward. */
typedef struct RopeParams {
    uint16_t* x;
    const float* cos;
    const float* sin;
    const uint32_t* positions; /* [rows] */
    uint32_t rows;
    uint32_t heads;
    uint32_t half_dim;
    uint32_t max_positions;
    float sign;
} RopeParams;

/* embedding_forward_kernel: out [rows][dim] = table [vocab][dim] rows tokens[r]. */
typedef struct EmbeddingParams {
    const uint32_t* tokens; /* [rows] */
    const uint16_t* table;
    uint16_t* out;
    uint32_t rows;
    uint32_t dim;
    uint32_t vocab;
} EmbeddingParams;

/* embedding_backward_kernel: dtable [vocab][dim] (f32) rows tokens[r] += dout [rows][dim]. */
typedef struct EmbeddingBackwardParams {
    const uint32_t* tokens;
    const uint16_t* dout;
    float* dtable;
    uint32_t rows;
    uint32_t dim;
    uint32_t vocab;
} EmbeddingBackwardParams;

/* rmsnorm_forward_kernel: out = weight * x * rstd per row of x [rows][dim], rstd [rows] (f32). The
 * weight is f32: trained norm weights sit near 1, where bf16 would drop updates under 2^-8. */
typedef struct RmsnormForwardParams {
    const uint16_t* x;
    const float* weight; /* [dim] */
    uint16_t* out;
    float* rstd;
    uint32_t rows;
    uint32_t dim;
    float eps;
} RmsnormForwardParams;

/* rmsnorm_backward_kernel: dx += the input gradient; dweight [dim] (f32, null when frozen) += the
 * weight gradient. */
typedef struct RmsnormBackwardParams {
    const uint16_t* dy;
    const uint16_t* x;
    const float* weight; /* [dim], as in the forward */
    const float* rstd;
    uint16_t* dx;
    float* dweight;
    uint32_t rows;
    uint32_t dim;
} RmsnormBackwardParams;

/* cross_entropy_forward_kernel: per row of logits [rows][vocab], lse (f32) and loss = lse -
 * logit[target] (f32; 0 where target = -100). */
typedef struct CrossEntropyForwardParams {
    const uint16_t* logits;
    const int32_t* targets; /* [rows]: 0..vocab or -100 */
    float* lse;
    float* loss;
    uint32_t rows;
    uint32_t vocab;
} CrossEntropyForwardParams;

/* cross_entropy_backward_kernel: dlogits += dloss * (softmax(logits) - onehot(target)) for scored rows. */
typedef struct CrossEntropyBackwardParams {
    const uint16_t* logits;
    const int32_t* targets;
    const float* lse;
    uint16_t* dlogits;
    uint32_t rows;
    uint32_t vocab;
    float dloss;
} CrossEntropyBackwardParams;

/* ---- The optimizer (cuda/adamw.cu): one launch covers every trainable tensor through a table in
 * device memory, grid row y for tensor y. ---- */

/* One trainable tensor of `count` f32 elements. */
typedef struct OptimTensor {
    float* param;         /* the f32 master weights */
    const float* grad;
    float* m;             /* first moment */
    float* v;             /* second moment */
    uint16_t* param_bf16; /* null, or the bf16 copy the forward reads, rewritten after the update */
    uint64_t count;
} OptimTensor;

/* grad_sum_squares_kernel: *sum_squares += the sum of grad[i]^2 over every tensor (only grad and
 * count of the table are read). */
typedef struct GradSumSquaresParams {
    const OptimTensor* tensors;
    float* sum_squares;
} GradSumSquaresParams;

/* adamw_kernel: with g = grad_scale * grad (grad_scale applies gradient clipping),
 * m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2,
 * param = decay * param - step_size * m / (sqrt(v / bias_correction2) + eps); decay = 1 - lr * wd,
 * step_size = lr / (1 - beta1^t), bias_correction2 = 1 - beta2^t. */
typedef struct AdamwParams {
    const OptimTensor* tensors;
    float beta1;
    float beta2;
    float eps;
    float decay;
    float step_size;
    float bias_correction2;
    float grad_scale;
} AdamwParams;

/* The attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu). Tensors are bf16 bit patterns,
 * token-major: q, out, dout, dq [tokens][n_heads][head_dim]; k, v, dk, dv [tokens][n_kv_heads][head_dim].
 * Documents: with cu_seqlens null, `batch` documents of `seq_len` tokens each; otherwise document b is
 * tokens cu_seqlens[b] .. cu_seqlens[b + 1] (packed varlen batch; seq_len is then the longest). Per-row
 * statistics (lse, delta) are f32 [document][n_heads][its length], documents back to back, which for
 * equal lengths is [batch][n_heads][seq_len]. Positions, and S²-Attn groups, restart in every document. */
typedef enum AttentionMaskMode {
    ATTENTION_MASK_DENSE = 0,  /* causal */
    ATTENTION_MASK_S2 = 1,     /* S²-Attn: the shifted half of the heads in groups offset by group_size / 2 */
    ATTENTION_MASK_S2_ROLL = 2, /* S²-Attn as the paper's roll: the shifted groups wrap around */
    ATTENTION_MASK_S2_NOSHIFT = 3 /* the "short attention" ablation: every head in unshifted groups */
} AttentionMaskMode;

/* Block shapes of the attention kernels, which the Rust launcher sizes grids and shared memory from.
 * FlashAttention-2's for A100 and H100 (csrc/flash_attn/src/flash_{fwd,bwd}_launch_template.h) where
 * our registers allow: the forward takes 128 query rows per block (4 warps of 32 at head dim 64, 8 of
 * 16 at 128) and K/V tiles of 64 keys (FA2: 128 at head dim 64, where our kernel spills; 64 at 128);
 * the dk/dv kernel takes 128 keys per block (8 warps of 16: dK and dV of 32 rows would not fit in
 * registers at head dim 128) and query tiles of 64 (FA2: 128 at head dim 64). */
#define ATTENTION_BLOCK_ROWS 128
#define ATTENTION_FORWARD_KEYS_D64 64
#define ATTENTION_FORWARD_KEYS_D128 64
#define ATTENTION_BACKWARD_QUERIES 64
/* The deterministic dq kernel: 8 warps of 16 query rows, K/V tiles of 64 keys, double-buffered. */
#define ATTENTION_DQ_KEYS 64

typedef struct AttentionProblem {
    const int32_t* cu_seqlens; /* [batch + 1], or null for equal lengths */
    uint32_t batch;
    uint32_t seq_len;    /* every document's length, or the longest one's */
    uint32_t tokens;     /* rows of the token-major tensors */
    uint32_t n_heads;
    uint32_t n_kv_heads; /* divides n_heads; query head h reads kv head h / (n_heads / n_kv_heads) */
    uint32_t head_dim;   /* 64 or 128 */
    uint32_t mask_mode;  /* an AttentionMaskMode */
    uint32_t group_size; /* even; S² modes only */
    float scale;         /* softmax scale, 1 / sqrt(head_dim) */
    float scale_log2;    /* scale * log2(e): the kernels use exp2 */
} AttentionProblem;

/* attention_forward_d{64,128}_kernel: out and lse (natural log) from q, k, v. */
typedef struct AttentionForwardParams {
    AttentionProblem problem;
    const uint16_t* q;
    const uint16_t* k;
    const uint16_t* v;
    uint16_t* out;
    float* lse;
    uint32_t* tiles_visited; /* null, or a counter that every block adds its visited K/V tiles to */
} AttentionForwardParams;

/* The backward kernels: attention_backward_delta_kernel (delta = rowsum(dout * out), and clears
 * dq_accum unless deterministic), attention_backward_dkdv_d{64,128}_kernel (dk, dv, and unless
 * deterministic dq into dq_accum with atomics), then either attention_backward_dq_convert_kernel
 * (dq from dq_accum) or, when deterministic, attention_backward_dq_d{64,128}_kernel (dq without
 * atomics). They share one struct because they share the problem and the buffers. */
typedef struct AttentionBackwardParams {
    AttentionProblem problem;
    const uint16_t* q;
    const uint16_t* k;
    const uint16_t* v;
    const uint16_t* out;
    const uint16_t* dout;
    const float* lse;
    float* delta;    /* like lse */
    float* dq_accum; /* [tokens][n_heads][head_dim] f32, unscaled; unused when deterministic */
    uint16_t* dq;
    uint16_t* dk;
    uint16_t* dv;
    uint32_t deterministic; /* 1: dq by its own kernel, in a fixed order; 0: atomics into dq_accum */
    uint32_t accumulate;    /* 1: dq, dk, dv += the gradients (one rounding to bf16); 0: overwrite */
    uint32_t* tiles_visited; /* null, or a counter that every dkdv block adds its visited Q tiles to */
} AttentionBackwardParams;

#endif
