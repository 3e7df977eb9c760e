// The CUDA intrinsics through which threads cooperate: barriers, warp shuffles and atomics.
// Each barrier records its call site so that threads waiting at different barriers are reported.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "builtins.h"

namespace emu {

struct Site {
    const char* file;
    int line;
};

enum class ShuffleMode : uint8_t { idx, up, down, bfly };

void sync_block(Site site);
void sync_warp(uint32_t mask, Site site);
uint64_t shuffle(ShuffleMode mode, uint32_t mask, uint64_t value, int lane_operand, int width, Site site);

template <class T>
T shuffle_as(ShuffleMode mode, uint32_t mask, T value, int lane_operand, int width, Site site) {
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>,
                  "shuffled values are at most 64 bits");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = shuffle(mode, mask, bits, lane_operand, width, site);
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

}  // namespace emu

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    emu::sync_block({file, line});
}

inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    emu::sync_warp(mask, {file, line});
}

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
    return emu::shuffle_as(emu::ShuffleMode::idx, mask, var, src_lane, width, {file, line});
}

template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu::shuffle_as(emu::ShuffleMode::up, mask, var, static_cast<int>(delta), width, {file, line});
}

template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu::shuffle_as(emu::ShuffleMode::down, mask, var, static_cast<int>(delta), width, {file, line});
}

template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return emu::shuffle_as(emu::ShuffleMode::bfly, mask, var, lane_mask, width, {file, line});
}

// A block's fibers never run concurrently and are only switched at barriers and collectives, so a
// plain read-modify-write is atomic among them; launches on other OS threads share no buffers.
inline float atomicAdd(float* address, float value) {
    float old = *address;
    *address = old + value;
    return old;
}

inline unsigned atomicAdd(unsigned* address, unsigned value) {
    unsigned old = *address;
    *address = old + value;
    return old;
}
