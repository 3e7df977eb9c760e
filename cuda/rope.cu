// Rotary position embedding, HF's rotate-half form, in place on x [rows][heads][2·half_dim]: element k
// of the first half and element k of the second half of each head rotate by the angle of (position of
// the row, frequency k). The angles come from a cos/sin table [max_positions][half_dim] built on the
// host in f64 with the positions already divided by the interpolation factor. The backward is the
// rotation by the opposite angle (sign = -1).

#include "kernel.h"

#include "bf16.h"
#include "grid_stride.h"
#include "params.h"

extern "C" __global__ void rope_kernel(const RopeParams p) {
    const size_t pairs = static_cast<size_t>(p.rows) * p.heads * p.half_dim;
    LONGLORA_FOR_EACH_ELEMENT(i, pairs) {
        const uint32_t k = i % p.half_dim;
        const size_t row = i / (static_cast<size_t>(p.heads) * p.half_dim);
        uint16_t* first = p.x + (i / p.half_dim) * 2 * p.half_dim + k;
        uint16_t* second = first + p.half_dim;
        const uint32_t position = p.positions[row];
        // A position past the table poisons its row rather than reading out of bounds.
        if (position >= p.max_positions) {
            *first = *second = kBf16NaN;
            continue;
        }
        const float c = p.cos[static_cast<size_t>(position) * p.half_dim + k];
        const float s = p.sign * p.sin[static_cast<size_t>(position) * p.half_dim + k];
        const float a = bf16_to_float(*first), b = bf16_to_float(*second);
        *first = float_to_bf16(a * c - b * s);
        *second = float_to_bf16(b * c + a * s);
    }
}
LONGLORA_EMU_ENTRY(rope_kernel, RopeParams)
