// The bank model of counters.h, and the C entry point through which Rust takes a launch's counters.

#include "counters.h"

#include <cstddef>
#include <cstring>

namespace emu {

uint32_t phase_wavefronts(const uintptr_t* addresses, int lanes, uint32_t bytes) {
    // The common case first: aligned accesses that together touch every bank at most once.
    uint32_t banks = 0;
    bool disjoint = true;
    for (int lane = 0; lane < lanes && disjoint; ++lane) {
        const uint32_t words = bytes / 4, first = static_cast<uint32_t>(addresses[lane] / 4 % 32);
        const uint32_t mask = ((1u << words) - 1) << first;  // at most 4 words, aligned: within the 32 banks
        disjoint = addresses[lane] % bytes == 0 && (banks & mask) == 0;
        banks |= mask;
    }
    if (disjoint) return 1;
    // At most 128 bytes' worth of lanes per phase: 32 distinct words to sort into 32 banks.
    uintptr_t words[32][32];
    uint32_t count[32] = {};
    uint32_t worst = 0;
    for (int lane = 0; lane < lanes; ++lane) {
        for (uint32_t w = 0; w < bytes / 4; ++w) {
            const uintptr_t word = addresses[lane] / 4 + w;
            const uint32_t bank = static_cast<uint32_t>(word % 32);
            bool seen = false;
            for (uint32_t i = 0; i < count[bank] && !seen; ++i) seen = words[bank][i] == word;
            if (seen || count[bank] == 32) continue;
            words[bank][count[bank]++] = word;
            if (count[bank] > worst) worst = count[bank];
        }
    }
    return worst;
}

uint32_t request_wavefronts(const uintptr_t addresses[32], uint32_t mask, uint32_t bytes, uint32_t* ideal) {
    const int lanes_per_phase = static_cast<int>(128 / bytes);
    uint32_t total = 0;
    *ideal = 0;
    for (int first = 0; first < 32; first += lanes_per_phase) {
        uintptr_t phase[32];
        int lanes = 0;
        for (int lane = first; lane < first + lanes_per_phase; ++lane) {
            if (mask >> lane & 1) phase[lanes++] = addresses[lane];
        }
        if (lanes == 0) continue;
        total += phase_wavefronts(phase, lanes, bytes);
        ++*ideal;
    }
    return total;
}

}  // namespace emu

// Copies this thread's counters into out[0..len) in the order of emu::Counters (all uint64_t), clears
// them, and returns how many counters there are, so that the Rust side can check that it agrees.
extern "C" size_t longlora_emu_take_counters(uint64_t* out, size_t len) {
    constexpr size_t kCount = sizeof(emu::Counters) / sizeof(uint64_t);
    if (len >= kCount) std::memcpy(out, &emu::tl_counters, sizeof(emu::Counters));
    emu::tl_counters = {};
    return kCount;
}
