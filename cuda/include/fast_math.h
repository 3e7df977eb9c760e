// ex2.approx.ftz.f32, the exp2 of the softmax: one MUFU.EX2. exp2f without flush-to-zero costs a
// compare and two predicated multiplies around it, which the attention kernels' inner loops cannot
// afford; subnormal probabilities (below 2^-126) are zero for the softmax anyway.
#pragma once

#include "kernel.h"

__device__ __forceinline__ float exp2_ftz(float x) {
#if defined(LONGLORA_EMU)
    return emu::ex2_approx_ftz(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#endif
}
