// CPU versions of the PTX instructions that cuda/include/ wraps. mma and ldmatrix are warp
// collectives: every lane hands in its registers and gets back its own part of the warp's result,
// laid out exactly as the PTX ISA's fragment layouts say (see warp_instructions.cpp).
#pragma once

#include <cstdint>

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

}  // namespace emu
