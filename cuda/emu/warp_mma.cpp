// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 for a whole warp, from the PTX
// ISA's fragment layouts (lane = 0..31, g = lane / 4, t = lane % 4; a .b32 register holds two 16-bit
// elements, the lower index in the low half):
//   A (16x16, row-major), a0..a3 = elements e0..e7: row g for e0, e1, e4, e5, else g + 8;
//                                                   col 2t + (i & 1), plus 8 for e4..e7.
//   B (16x8, K x N),      b0, b1 = e0..e3:          k 2t + (i & 1), plus 8 for e2, e3; n = g.
//   C, D (16x8, f32),     c0..c3:                   row g for c0, c1, else g + 8; col 2t + (i & 1).
// Arithmetic, which the emulator defines because tensor cores do not document theirs: each product of
// two 16-bit floats is exact in f32, and d = c + p0 + p1 + ... + p15 is summed in that order in f32,
// each addition rounded to nearest even.

#include <cstring>

#include "instructions.h"
#include "runtime.h"

namespace emu {
namespace {

float from_bits(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

float bf16_to_float(uint16_t bits) { return from_bits(uint32_t{bits} << 16); }

float f16_to_float(uint16_t bits) {
    uint32_t sign = static_cast<uint32_t>(bits >> 15) << 31;
    uint32_t exponent = bits >> 10 & 0x1f;
    uint32_t mantissa = bits & 0x3ff;
    if (exponent == 0x1f) return from_bits(sign | 0x7f800000u | mantissa << 13);
    if (exponent != 0) return from_bits(sign | (exponent + 112) << 23 | mantissa << 13);
    // Subnormal: mantissa * 2^-24, exact in f32.
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
}

template <MmaType type>
float element(uint32_t reg, int half) {
    auto bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffff);
    return type == MmaType::bf16 ? bf16_to_float(bits) : f16_to_float(bits);
}

template <MmaType type>
void compute(Warp& warp, uint32_t) {
    ++counters().mma;
    float a[16][16], b[16][8], d[16][8];  // d starts as C
    for (int lane = 0; lane < 32; ++lane) {
        int g = lane >> 2, t = lane & 3;
        const auto& in = warp.in[lane].mma;
        for (int i = 0; i < 8; ++i) {
            int row = (i == 0 || i == 1 || i == 4 || i == 5) ? g : g + 8;
            int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            a[row][col] = element<type>(in.a[i >> 1], i & 1);
        }
        for (int i = 0; i < 4; ++i) {
            b[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][g] = element<type>(in.b[i >> 1], i & 1);
            d[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)] = in.c[i];
        }
    }
    // k outermost: every element's sum still runs in k order, while the 128 independent sums of one
    // step are vectorised instead of waiting on one long chain of dependent additions.
    for (int k = 0; k < 16; ++k) {
        for (int row = 0; row < 16; ++row) {
            for (int col = 0; col < 8; ++col) d[row][col] += a[row][k] * b[k][col];
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; ++i) warp.out[lane].f32[i] = d[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)];
    }
}

}  // namespace

void mma_m16n8k16(MmaType type, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    uint32_t lane = current_lane();
    Warp& warp = current_warp();
    auto& in = warp.in[lane].mma;
    std::memcpy(in.a, a, sizeof in.a);
    std::memcpy(in.b, b, sizeof in.b);
    std::memcpy(in.c, c, sizeof in.c);
    bool bf16 = type == MmaType::bf16;
    warp_collective({bf16 ? WarpOp::mma_bf16 : WarpOp::mma_f16, 0, 0xffffffffu, {nullptr, 0}},
                    bf16 ? compute<MmaType::bf16> : compute<MmaType::f16>);
    std::memcpy(d, warp.out[lane].f32, 4 * sizeof(float));
}

}  // namespace emu
