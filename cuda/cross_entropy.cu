// Cross-entropy over the vocabulary with ignore index -100, one block per row. The forward makes one
// pass over the logits with a running log-sum-exp (no probabilities are stored) and saves lse per row;
// the backward forms each probability exp(logit − lse) once, straight into the gradient:
// dlogits += dloss · (softmax − onehot(target)) for scored rows.

#include "kernel.h"

#include "bf16.h"
#include "block_reduce.h"
#include "params.h"

namespace {

constexpr int32_t kIgnoreIndex = -100;

}  // namespace

extern "C" __global__ void cross_entropy_forward_kernel(const CrossEntropyForwardParams p) {
    const uint16_t* logits = p.logits + static_cast<size_t>(blockIdx.x) * p.vocab;
    LogSumExp running = {-INFINITY, 0.0f};
    for (unsigned i = threadIdx.x; i < p.vocab; i += blockDim.x) {
        running = lse_add(running, {bf16_to_float(logits[i]), 1.0f});
    }
    const LogSumExp row = block_logsumexp(running);
    if (threadIdx.x != 0) return;

    const float lse = row.max + logf(row.sum);
    const int32_t target = p.targets[blockIdx.x];
    p.lse[blockIdx.x] = lse;
    // A target outside the vocabulary poisons its loss rather than reading out of bounds.
    if (target == kIgnoreIndex) {
        p.loss[blockIdx.x] = 0.0f;
    } else if (target < 0 || static_cast<uint32_t>(target) >= p.vocab) {
        p.loss[blockIdx.x] = NAN;
    } else {
        p.loss[blockIdx.x] = lse - bf16_to_float(logits[target]);
    }
}
LONGLORA_EMU_ENTRY(cross_entropy_forward_kernel, CrossEntropyForwardParams, kBlockLogSumExpSharedBytes)

extern "C" __global__ void cross_entropy_backward_kernel(const CrossEntropyBackwardParams p) {
    const int32_t target = p.targets[blockIdx.x];
    if (target < 0 || static_cast<uint32_t>(target) >= p.vocab) return;
    const size_t offset = static_cast<size_t>(blockIdx.x) * p.vocab;
    const float lse = p.lse[blockIdx.x];
    for (unsigned i = threadIdx.x; i < p.vocab; i += blockDim.x) {
        const float probability = expf(bf16_to_float(p.logits[offset + i]) - lse);
        const float onehot = i == static_cast<uint32_t>(target) ? 1.0f : 0.0f;
        uint16_t& d = p.dlogits[offset + i];
        d = float_to_bf16(bf16_to_float(d) + p.dloss * (probability - onehot));
    }
}
LONGLORA_EMU_ENTRY(cross_entropy_backward_kernel, CrossEntropyBackwardParams)
