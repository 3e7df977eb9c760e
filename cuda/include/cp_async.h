// Asynchronous 16-byte copies from global to shared memory (cp.async.cg), grouped by commit and
// awaited with cp_async_wait<N>() (wait until at most N groups are still in flight), the building
// blocks of double-buffered tile loads. The "memory" clobbers keep the compiler from moving reads of
// the destination above the wait.
#pragma once

#include "kernel.h"
#include "shared_memory.h"

__device__ __forceinline__ void cp_async_16(void* shared_destination, const void* global_source) {
#if defined(LONGLORA_EMU)
    emu::cp_async_16(shared_destination, global_source);
#elif defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared_destination)),
                 "l"(global_source)
                 : "memory");
#endif
}

// The same copy reading only the first `source_bytes` (0 to 16) bytes of the source and writing zeros
// for the rest (the src-size operand): tiles past a matrix's edge load as zeros in the same pipeline.
// The source address must be valid and 16-byte aligned even when nothing is read.
__device__ __forceinline__ void cp_async_16_zero_fill(void* shared_destination, const void* global_source,
                                                      uint32_t source_bytes) {
#if defined(LONGLORA_EMU)
    emu::cp_async_16_zero_fill(shared_destination, global_source, source_bytes);
#elif defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared_destination)),
                 "l"(global_source), "r"(source_bytes)
                 : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
