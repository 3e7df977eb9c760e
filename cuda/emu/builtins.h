// CUDA's built-in names for kernel sources compiled as C++ for the emulator: the function qualifiers,
// the thread and block indices, and `__shared__`.
#pragma once

#include <cstdint>

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
};

// CUDA's 16-byte vector type, which 16-byte loads and stores move.
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

// Set by the scheduler: the block indices when a block starts, threadIdx on every switch to a fiber.
// They are per OS thread because cargo test runs several launches at once on different threads.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// The fibers of a block run on one OS thread, so thread-local storage is shared by exactly the
// threads of the running block, and a launch on another OS thread has its own copy.
#define __shared__ static thread_local
