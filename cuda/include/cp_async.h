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

// The zero-filling form: when `copy` is false nothing is read (src-size 0) and the 16 bytes at the
// destination become zeros; `global_source` must still be a valid address.
__device__ __forceinline__ void cp_async_16_or_zeros(void* shared_destination, const void* global_source, bool copy) {
#if defined(LONGLORA_EMU)
    emu::cp_async_16(shared_destination, global_source, copy);
#elif defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared_destination)),
                 "l"(global_source), "r"(copy ? 16 : 0)
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
