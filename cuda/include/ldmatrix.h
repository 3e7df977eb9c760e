// Warp-level loads of 8x8 matrices of 16-bit elements from shared memory into mma fragments. Every
// lane passes one row address: lanes 8j..8j+7 give rows 0..7 of matrix j (x1 reads lanes 0..7, x2
// lanes 0..15, x4 all 32; rows 16-byte aligned). Register j of lane (g = lane / 4, t = lane % 4)
// receives row g, columns 2t and 2t + 1 of matrix j; the _trans forms receive the transpose, (row 2t,
// col g) and (row 2t + 1, col g), which turns a row-major K x N tile into the B fragment.
// The "memory" clobbers keep the compiler from moving shared-memory stores past the loads.
#pragma once

#include "kernel.h"
#include "shared_memory.h"

__device__ __forceinline__ void ldmatrix_x1(uint32_t r[1], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(1, false, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t r[1], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(1, true, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(2, false, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(2, true, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(4, false, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row) {
#if defined(LONGLORA_EMU)
    emu::ldmatrix(4, true, r, row);
#elif defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

#if !defined(LONGLORA_EMU)
// The x4 forms with the row address already in the shared window (32 bits, one register where a
// generic pointer takes two): what kernels that keep a few row addresses per tile in registers use.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t shared_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_row)
                 : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t shared_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_row)
                 : "memory");
}
#endif
