// What the emulator counts per launch, for tests that prove a kernel's memory traffic and shared-memory
// access pattern (src/kernels/emu_counters.rs reads and clears them after every launch): bytes moved
// to and from global memory through the wrappers of cuda/include/ (cp.async, the scalar and 16-byte
// loads and stores, the atomics), warp-level mma instructions, and for every ldmatrix and every
// counted ld.shared / st.shared the wavefronts the 32 banks need, next to the ideal (conflict-free)
// number, so that the difference is the bank conflicts.
//
// The bank model (the one NVIDIA's profilers report as shared-memory wavefronts): shared memory has 32
// banks of 4-byte words, word w in bank w % 32. A warp's request is served in phases of at most 128
// bytes: ld/st.shared of 4 bytes per lane is one phase of 32 lanes, of 8 bytes two phases of 16 lanes
// (lanes 0-15, 16-31), of 16 bytes four phases of 8 lanes; ldmatrix is one phase per 8x8 matrix (the
// 8 lanes that give its row addresses, 16 bytes each). A phase costs as many wavefronts as the largest
// number of distinct words that one bank must deliver; lanes that touch the same word share it. So a
// conflict-free phase is one wavefront, ldmatrix.x4 without conflicts is 4, and an 8x8 matrix whose
// 8 rows are 128 bytes apart (all in the same 4 banks) is 8.
#pragma once

#include <cstdint>

namespace emu {

struct Counters {
    uint64_t global_read_bytes;
    uint64_t global_write_bytes;
    uint64_t global_atomic_bytes;  // read-modify-write atomics, 4 bytes each
    uint64_t mma;                  // warp-level mma.m16n8k16
    uint64_t ldmatrix;             // warp-level ldmatrix instructions
    uint64_t ldmatrix_wavefronts;
    uint64_t ldmatrix_ideal_wavefronts;
    uint64_t shared_loads;  // warp-level counted ld.shared instructions
    uint64_t shared_load_wavefronts;
    uint64_t shared_load_ideal_wavefronts;
    uint64_t shared_stores;  // warp-level counted st.shared instructions
    uint64_t shared_store_wavefronts;
    uint64_t shared_store_ideal_wavefronts;
};

// This OS thread's counters: a launch runs all its blocks on the thread that launched it.
inline thread_local Counters tl_counters;

inline Counters& counters() { return tl_counters; }

// The wavefronts of one phase in which `lanes` lanes each access `bytes` (a multiple of 4) at
// addresses[0..lanes).
uint32_t phase_wavefronts(const uintptr_t* addresses, int lanes, uint32_t bytes);

// The wavefronts of a warp's request of `bytes` (4, 8 or 16) per lane by the lanes in `mask`, split
// into phases as above; `ideal` receives the number of phases that have a lane in them.
uint32_t request_wavefronts(const uintptr_t addresses[32], uint32_t mask, uint32_t bytes, uint32_t* ideal);

}  // namespace emu
