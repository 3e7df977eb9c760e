// Copies a bf16 matrix into one whose rows are padded with zeros to a stride that keeps every row on a
// 16-byte boundary, as the LoRA kernels' cp.async tile loads need (src/kernels/aligned.rs decides when).
// Grid y strides over the rows, grid x over each row's elements.

#include "kernel.h"

#include "params.h"

extern "C" __global__ void pad_rows_kernel(const PadRowsParams p) {
    for (uint32_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
        const uint16_t* source = p.source + static_cast<size_t>(row) * p.cols;
        uint16_t* destination = p.destination + static_cast<size_t>(row) * p.ld;
        for (uint32_t col = blockIdx.x * blockDim.x + threadIdx.x; col < p.ld; col += gridDim.x * blockDim.x) {
            destination[col] = col < p.cols ? source[col] : uint16_t{0};
        }
    }
}
LONGLORA_EMU_ENTRY(pad_rows_kernel, PadRowsParams)
