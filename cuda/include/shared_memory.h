// Dynamic shared memory and the 32-bit shared-space addresses that ldmatrix and cp.async take.
#pragma once

#include "kernel.h"

// The launch's dynamic shared memory (its size is the launch's shared_mem_bytes), 16-byte aligned.
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
#if defined(LONGLORA_EMU)
    return static_cast<T*>(emu::dynamic_shared());
#else
    extern __shared__ __align__(16) unsigned char longlora_dynamic_shared[];
    return reinterpret_cast<T*>(longlora_dynamic_shared);
#endif
}

#if !defined(LONGLORA_EMU)
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}
#endif
