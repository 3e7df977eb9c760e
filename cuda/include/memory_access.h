// The global and shared memory accesses of the attention kernels, as named wrappers: on the GPU each
// is the plain access (LDG, STG, RED, LDS, STS of the given width); in the emulator each also counts
// what it moves (cuda/emu/counters.h), so a test can prove that a kernel reads and writes every
// element the expected number of times and that its shared-memory stores are free of bank conflicts.
// A kernel that touches global memory other than through these and cp.async escapes the count, and
// the tests that compare the counts with the expected traffic fail.
#pragma once

#include "kernel.h"

#if defined(LONGLORA_EMU)
#include <cstring>
#endif

template <class T>
__device__ __forceinline__ T load_global(const T* address) {
#if defined(LONGLORA_EMU)
    emu::count_global_read(sizeof(T));
#endif
    return *address;
}

template <class T>
__device__ __forceinline__ void store_global(T* address, T value) {
#if defined(LONGLORA_EMU)
    emu::count_global_write(sizeof(T));
#endif
    *address = value;
}

// 16 bytes (8 bf16 or 4 f32) at a 16-byte aligned address: one LDG.128 / STG.128.
__device__ __forceinline__ uint4 load_global_16(const void* address) {
    return load_global(static_cast<const uint4*>(address));
}

__device__ __forceinline__ void store_global_16(void* address, uint4 value) {
    store_global(static_cast<uint4*>(address), value);
}

// atomicAdd whose result is unused (a RED instruction on the GPU).
template <class T>
__device__ __forceinline__ void atomic_add_global(T* address, T value) {
#if defined(LONGLORA_EMU)
    emu::count_global_atomic(sizeof(T));
#endif
    atomicAdd(address, value);
}

// A 4-byte store to shared memory by all 32 lanes of the warp together (in the emulator a warp
// collective that counts the request's bank conflicts).
__device__ __forceinline__ void store_shared_4(void* address, uint32_t value) {
#if defined(LONGLORA_EMU)
    emu::shared_store(address, &value, sizeof value);
#else
    *static_cast<uint32_t*>(address) = value;
#endif
}

// A 16-byte load from shared memory by all 32 lanes of the warp together.
__device__ __forceinline__ uint4 load_shared_16(const void* address) {
#if defined(LONGLORA_EMU)
    uint4 value;
    emu::shared_load(&value, address, sizeof value);
    return value;
#else
    return *static_cast<const uint4*>(address);
#endif
}
