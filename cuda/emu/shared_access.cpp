// ld.shared and st.shared of 4, 8 or 16 bytes per lane as warp collectives: the lane that completes
// the collective sees every lane's address, counts the request's wavefronts (counters.h) and does
// every lane's access, in lane order.

#include <cstdint>
#include <cstring>

#include "instructions.h"
#include "runtime.h"

namespace emu {
namespace {

void count(Warp& warp, uint32_t lanes, uint64_t& requests, uint64_t& wavefronts, uint64_t& ideal) {
    uintptr_t addresses[32] = {};
    for (int lane = 0; lane < 32; ++lane) {
        if (!(lanes >> lane & 1)) continue;
        addresses[lane] = reinterpret_cast<uintptr_t>(warp.in[lane].shared.address);
        if (addresses[lane] % warp.pending.variant != 0) {
            fail("%s shared access of %u bytes at %p: not aligned to its size",
                 warp.pending.op == WarpOp::shared_load ? "a load" : "a store", warp.pending.variant,
                 warp.in[lane].shared.address);
        }
    }
    uint32_t phases = 0;
    ++requests;
    wavefronts += request_wavefronts(addresses, lanes, warp.pending.variant, &phases);
    ideal += phases;
}

void compute_load(Warp& warp, uint32_t lanes) {
    Counters& c = counters();
    count(warp, lanes, c.shared_loads, c.shared_load_wavefronts, c.shared_load_ideal_wavefronts);
    for (int lane = 0; lane < 32; ++lane) {
        if (lanes >> lane & 1) std::memcpy(warp.out[lane].u32, warp.in[lane].shared.address, warp.pending.variant);
    }
}

void compute_store(Warp& warp, uint32_t lanes) {
    Counters& c = counters();
    count(warp, lanes, c.shared_stores, c.shared_store_wavefronts, c.shared_store_ideal_wavefronts);
    for (int lane = 0; lane < 32; ++lane) {
        if (lanes >> lane & 1) std::memcpy(warp.in[lane].shared.address, warp.in[lane].shared.value, warp.pending.variant);
    }
}

void join(WarpOp op, void* address, const void* value, uint32_t bytes) {
    if (bytes != 4 && bytes != 8 && bytes != 16) fail("shared access of %u bytes: 4, 8 or 16 only", bytes);
    Warp& warp = current_warp();
    auto& in = warp.in[current_lane()].shared;
    in.address = address;
    if (value != nullptr) std::memcpy(in.value, value, bytes);
    warp_collective({op, bytes, 0xffffffffu, {nullptr, 0}}, op == WarpOp::shared_load ? compute_load : compute_store);
}

}  // namespace

void shared_load(void* value, const void* address, uint32_t bytes) {
    join(WarpOp::shared_load, const_cast<void*>(address), nullptr, bytes);
    std::memcpy(value, current_warp().out[current_lane()].u32, bytes);
}

void shared_store(void* address, const void* value, uint32_t bytes) { join(WarpOp::shared_store, address, value, bytes); }

}  // namespace emu
