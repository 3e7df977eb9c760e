// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 for a whole warp, from the PTX ISA:
// lanes 8j..8j+7 give the addresses of rows 0..7 of matrix j (each row eight 16-bit elements, 16-byte
// aligned; x1 reads lanes 0..7, x2 lanes 0..15). Register j of lane (g = lane / 4, t = lane % 4)
// receives row g, columns 2t and 2t + 1 of matrix j, or with .trans the elements (row 2t, col g) and
// (row 2t + 1, col g); the lower column (row) goes in the low half.

#include <cstdint>
#include <cstring>

#include "instructions.h"
#include "runtime.h"

namespace emu {
namespace {

uint16_t load16(const void* row, int column) {
    uint16_t value;
    std::memcpy(&value, static_cast<const unsigned char*>(row) + 2 * column, sizeof value);
    return value;
}

void compute(Warp& warp, uint32_t) {
    int matrices = static_cast<int>(warp.pending.variant & 7);
    bool trans = warp.pending.variant & 8;
    uintptr_t rows[32];
    for (int lane = 0; lane < 8 * matrices; ++lane) {
        if (reinterpret_cast<uintptr_t>(warp.in[lane].row) % 16 != 0) {
            fail("ldmatrix: lane %d gives row address %p, which is not 16-byte aligned", lane, warp.in[lane].row);
        }
        rows[lane] = reinterpret_cast<uintptr_t>(warp.in[lane].row);
    }
    // One phase per matrix: its 8 rows of 16 bytes (counters.h).
    Counters& c = counters();
    ++c.ldmatrix;
    c.ldmatrix_ideal_wavefronts += static_cast<uint32_t>(matrices);
    for (int j = 0; j < matrices; ++j) c.ldmatrix_wavefronts += phase_wavefronts(rows + 8 * j, 8, 16);
    for (int lane = 0; lane < 32; ++lane) {
        int g = lane >> 2, t = lane & 3;
        for (int j = 0; j < matrices; ++j) {
            auto row = [&](int r) { return warp.in[8 * j + r].row; };
            uint32_t lo = trans ? load16(row(2 * t), g) : load16(row(g), 2 * t);
            uint32_t hi = trans ? load16(row(2 * t + 1), g) : load16(row(g), 2 * t + 1);
            warp.out[lane].u32[j] = lo | hi << 16;
        }
    }
}

}  // namespace

void ldmatrix(int matrices, bool trans, uint32_t* registers, const void* row) {
    uint32_t lane = current_lane();
    Warp& warp = current_warp();
    warp.in[lane].row = row;
    auto variant = static_cast<uint32_t>(matrices) | (trans ? 8u : 0u);
    warp_collective({WarpOp::ldmatrix, variant, 0xffffffffu, {nullptr, 0}}, compute);
    std::memcpy(registers, warp.out[lane].u32, matrices * sizeof(uint32_t));
}

}  // namespace emu
