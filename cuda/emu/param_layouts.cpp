// Sizes and alignments of the params.h structs as the C++ compiler lays them out, for the Rust test that
// checks the generated mirror (src/kernels/params.rs) against them. Add every params.h struct here.

#include <cstddef>

#include "../include/params.h"

namespace {

struct Layout {
    const char* name;
    size_t size;
    size_t align;
};

#define LONGLORA_LAYOUT(T) {#T, sizeof(T), alignof(T)}
constexpr Layout kLayouts[] = {
    LONGLORA_LAYOUT(ProbeParams),
    LONGLORA_LAYOUT(ReduceSumParams),
    LONGLORA_LAYOUT(DivergentBarrierParams),
    LONGLORA_LAYOUT(MmaLoopParams),
    LONGLORA_LAYOUT(SharedAccessParams),
    LONGLORA_LAYOUT(LoraLinearParams),
    LONGLORA_LAYOUT(LoraGradAParams),
    LONGLORA_LAYOUT(LoraGradBParams),
    LONGLORA_LAYOUT(PadRowsParams),
    LONGLORA_LAYOUT(ConvertParams),
    LONGLORA_LAYOUT(ScaledConvertParams),
    LONGLORA_LAYOUT(SwigluParams),
    LONGLORA_LAYOUT(SwigluBackwardParams),
    LONGLORA_LAYOUT(RopeParams),
    LONGLORA_LAYOUT(EmbeddingParams),
    LONGLORA_LAYOUT(EmbeddingBackwardParams),
    LONGLORA_LAYOUT(RmsnormForwardParams),
    LONGLORA_LAYOUT(RmsnormBackwardParams),
    LONGLORA_LAYOUT(CrossEntropyForwardParams),
    LONGLORA_LAYOUT(CrossEntropyBackwardParams),
    LONGLORA_LAYOUT(OptimTensor),
    LONGLORA_LAYOUT(GradSumSquaresParams),
    LONGLORA_LAYOUT(AdamwParams),
    LONGLORA_LAYOUT(AttentionProblem),
    LONGLORA_LAYOUT(AttentionForwardParams),
    LONGLORA_LAYOUT(AttentionBackwardParams),
};

}  // namespace

// The name, size and alignment of struct `index`, or null past the last one.
extern "C" const char* longlora_emu_param_layout(size_t index, size_t* size, size_t* align) {
    if (index >= sizeof kLayouts / sizeof kLayouts[0]) return nullptr;
    *size = kLayouts[index].size;
    *align = kLayouts[index].align;
    return kLayouts[index].name;
}
