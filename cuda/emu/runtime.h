// The emulator's internal interface between the scheduler (scheduler.cpp) and the instructions
// implemented on top of it (warp_*.cpp, cp_async.cpp). Kernel sources never include this.
#pragma once

#include <cstdint>
#include <cstring>

#include "intrinsics.h"

namespace emu {

enum class WarpOp : uint8_t { mma_bf16, mma_f16, ldmatrix, shuffle, syncwarp, shared_load, shared_store };

// What every lane taking part in one warp collective must agree on.
struct Collective {
    WarpOp op;
    // ldmatrix: the number of matrices, plus 8 for .trans; shuffle: ShuffleMode and width, packed;
    // shared_load, shared_store: the bytes per lane.
    uint32_t variant;
    // The lanes that take part (all 32 for the .aligned instructions mma and ldmatrix).
    uint32_t mask;
    // Where the kernel called it; only the intrinsics a kernel calls directly know their call site.
    Site site;
};

// Each lane's registers going into and coming out of a collective.
union LaneInput {
    struct {
        uint32_t a[4];
        uint32_t b[2];
        float c[4];
    } mma;
    const void* row;
    struct {
        void* address;
        uint32_t value[4];
    } shared;
    struct {
        uint64_t value;
        int lane_operand;
    } shuffle;
};

union LaneOutput {
    float f32[4];
    uint32_t u32[4];
    uint64_t value;
};

struct Warp;
using CollectiveCompute = void (*)(Warp& warp, uint32_t lanes);

struct Warp {
    uint32_t present;  // lanes that exist (the last warp of a block may be partial)
    uint32_t exited;
    uint32_t arrived;  // lanes waiting at `pending`
    Collective pending;
    CollectiveCompute compute;
    LaneInput in[32];
    LaneOutput out[32];
};

// The running fiber's lane and warp.
uint32_t current_lane();
Warp& current_warp();

// Joins collective `c` once the caller has written its `in` slot, and returns when the collective is
// complete and the caller's `out` slot holds its result. The last lane to arrive runs `compute` for
// all lanes that took part, so each collective costs every other lane one switch out and back.
// A warp has one collective in flight at a time: lanes arriving at a different one are reported as
// divergent, which also rejects two disjoint-mask shuffles in flight at once (legal CUDA, unused here).
void warp_collective(const Collective& c, CollectiveCompute compute);

// Ends the launch with an error message; the calling fiber never resumes.
[[noreturn]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));

// The file name without its directories, for messages.
inline const char* base_name(const char* path) {
    const char* slash = std::strrchr(path, '/');
    return slash ? slash + 1 : path;
}

// "mma.m16n8k16.bf16", "__shfl_xor_sync (probe.cu:42)", ...: for error messages.
void describe(const Collective& c, char* out, unsigned len);

}  // namespace emu
