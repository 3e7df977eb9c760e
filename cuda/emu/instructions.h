// CPU versions of the PTX instructions that cuda/include/ wraps. mma, ldmatrix and the counted
// shared-memory accesses are warp collectives: every lane hands in its registers and gets back its own
// part of the warp's result, laid out exactly as the PTX ISA's fragment layouts say (see
// warp_mma.cpp, warp_ldmatrix.cpp). Global accesses are counted (counters.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "counters.h"

namespace emu {

enum class MmaType : uint8_t { bf16, f16 };

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32: d = a * b + c for the warp.
void mma_m16n8k16(MmaType type, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: `row` is this lane's row address.
void ldmatrix(int matrices, bool trans, uint32_t* registers, const void* row);

// cp.async of 16 bytes: the emulator copies at once, so commit and wait have nothing to do.
void cp_async_16(void* shared_destination, const void* global_source);

// cp.async of 16 bytes of which only the first `source_bytes` (0 to 16) are read; the rest are zeros.
void cp_async_16_zero_fill(void* shared_destination, const void* global_source, uint32_t source_bytes);

// ld.shared / st.shared of `bytes` (4, 8 or 16) per lane as a warp collective, so that the emulator
// sees the whole warp's addresses and counts the wavefronts (counters.h). Every lane of the warp
// must take part.
void shared_load(void* value, const void* address, uint32_t bytes);
void shared_store(void* address, const void* value, uint32_t bytes);

// A global load or store of `bytes` through a kernel's wrapper (cuda/include/memory_access.h).
inline void count_global_read(uint32_t bytes) { counters().global_read_bytes += bytes; }
inline void count_global_write(uint32_t bytes) { counters().global_write_bytes += bytes; }
inline void count_global_atomic(uint32_t bytes) { counters().global_atomic_bytes += bytes; }

// ex2.approx.ftz.f32: 2^x with subnormal inputs and results flushed to zero (sign kept). The hardware
// result is within 2 ulp of 2^x; the emulator returns libm's exp2 (within 1 ulp), which the GPU may
// differ from in the last bits only. exp2 of -inf is +0, as on the GPU.
inline float ex2_approx_ftz(float x) {
    if (std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.0f, x);
    const float y = std::exp2(x);
    return std::fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;
}

}  // namespace emu
