// Token embedding: the forward gathers table rows, out[r] = table[tokens[r]]; the backward scatters
// the gradient back, dtable[tokens[r]] += dout[r], atomically because a token may occur many times.

#include "kernel.h"

#include "bf16.h"
#include "grid_stride.h"
#include "params.h"

extern "C" __global__ void embedding_forward_kernel(const EmbeddingParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, static_cast<size_t>(p.rows) * p.dim) {
        const uint32_t token = p.tokens[i / p.dim];
        // A token outside the vocabulary poisons its row rather than reading out of bounds.
        p.out[i] = token < p.vocab ? p.table[static_cast<size_t>(token) * p.dim + i % p.dim] : kBf16NaN;
    }
}
LONGLORA_EMU_ENTRY(embedding_forward_kernel, EmbeddingParams)

extern "C" __global__ void embedding_backward_kernel(const EmbeddingBackwardParams p) {
    LONGLORA_FOR_EACH_ELEMENT(i, static_cast<size_t>(p.rows) * p.dim) {
        const uint32_t token = p.tokens[i / p.dim];
        if (token < p.vocab) atomicAdd(&p.dtable[static_cast<size_t>(token) * p.dim + i % p.dim], bf16_to_float(p.dout[i]));
    }
}
LONGLORA_EMU_ENTRY(embedding_backward_kernel, EmbeddingBackwardParams)
