// shfl.sync and bar.warp.sync for a warp, as the PTX ISA defines shfl.sync with the operands CUDA's
// __shfl_*_sync(mask, var, b, width) pass: c = ((32 - width) << 8) | (up ? 0 : 0x1f), so that
// segmask = 32 - width selects the lane's segment of `width` lanes and a source outside the segment
// (or past its end) yields the lane's own value.

#include "intrinsics.h"
#include "runtime.h"

namespace emu {
namespace {

// The mode and width travel in Collective::variant: every lane must pass the same ones.
uint32_t pack_variant(ShuffleMode mode, int width) {
    return static_cast<uint32_t>(mode) | static_cast<uint32_t>(width) << 2;
}

void compute_shuffle(Warp& warp, uint32_t lanes) {
    auto mode = static_cast<ShuffleMode>(warp.pending.variant & 3);
    int width = static_cast<int>(warp.pending.variant >> 2);
    int segmask = (32 - width) & 0x1f;
    int clamp = mode == ShuffleMode::up ? 0 : 0x1f;
    for (int lane = 0; lane < 32; ++lane) {
        if (!(lanes >> lane & 1)) continue;
        int b = warp.in[lane].shuffle.lane_operand & 0x1f;
        int max_lane = (lane & segmask) | (clamp & ~segmask);
        int min_lane = lane & segmask;
        int source = lane;
        bool valid = false;
        switch (mode) {
            case ShuffleMode::up:
                source = lane - b;
                valid = source >= max_lane;
                break;
            case ShuffleMode::down:
                source = lane + b;
                valid = source <= max_lane;
                break;
            case ShuffleMode::bfly:
                source = lane ^ b;
                valid = source <= max_lane;
                break;
            case ShuffleMode::idx:
                source = min_lane | (b & ~segmask);
                valid = source <= max_lane;
                break;
        }
        if (!valid) source = lane;
        if (!(lanes >> source & 1)) {
            fail("lane %d shuffles from lane %d, which does not take part (mask 0x%08x): undefined on a GPU", lane,
                 source, warp.pending.mask);
        }
        warp.out[lane].value = warp.in[source].shuffle.value;
    }
}

void compute_nothing(Warp&, uint32_t) {}

}  // namespace

uint64_t shuffle(ShuffleMode mode, uint32_t mask, uint64_t value, int lane_operand, int width, Site site) {
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
        fail("shuffle width %d (%s:%d) is not a power of two from 1 to 32", width, base_name(site.file), site.line);
    }
    uint32_t lane = current_lane();
    Warp& warp = current_warp();
    warp.in[lane].shuffle = {value, lane_operand};
    warp_collective({WarpOp::shuffle, pack_variant(mode, width), mask, site}, compute_shuffle);
    return warp.out[lane].value;
}

void sync_warp(uint32_t mask, Site site) { warp_collective({WarpOp::syncwarp, 0, mask, site}, compute_nothing); }

}  // namespace emu
