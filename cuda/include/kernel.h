// Included first by every kernel file: selects the GPU (nvcc) or the CPU emulator (LONGLORA_EMU).
// Kernels are `extern "C" __global__` so that Rust finds them by name in the fatbin, and each is
// followed by LONGLORA_EMU_ENTRY(kernel, Params[, static shared bytes]), which exports its emulator
// entry point (cuda/emu/launch.h).
#pragma once

// Fully unrolls the loop that follows on the GPU, where fragment arrays indexed by a loop counter stay
// in registers only once the loop is unrolled; LONGLORA_NO_UNROLL keeps a loop rolled, where an
// unrolled one would interleave its iterations and need their registers at once. The emulator's
// compiler decides for itself.
#if defined(__CUDA_ARCH__)
#define LONGLORA_UNROLL _Pragma("unroll")
#define LONGLORA_NO_UNROLL _Pragma("unroll 1")
#else
#define LONGLORA_UNROLL
#define LONGLORA_NO_UNROLL
#endif

#if defined(LONGLORA_EMU)
#include "../emu/emu.h"
// Stops the kernel when a requirement its launch function already checks fails anyway (a bug on our
// side): the launch fails on a GPU (__trap) and reports `what` in the emulator.
#define LONGLORA_REQUIRE(condition, what) ((condition) ? (void)0 : emu::requirement_failed(what))
#else
#define LONGLORA_REQUIRE(condition, what) ((condition) ? (void)0 : __trap())
#include <cstdint>
#define LONGLORA_EMU_ENTRY(...)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "the kernels need sm_80 or newer (bf16 mma.sync, cp.async)"
#endif
#endif
