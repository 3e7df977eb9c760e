// Launching a kernel in the emulator, and the C entry point each kernel file exports to Rust.
#pragma once

#include <cstddef>
#include <cstdint>

namespace emu {

using KernelBody = void (*)(const void* params);

// Runs `body(params)` as a grid of blocks, one block after another on the calling OS thread. Returns 0,
// or 1 with a message in `error` when a barrier or warp collective diverged or the launch is invalid.
int launch(KernelBody body, const void* params, const uint32_t grid[3],
           const uint32_t block[3], uint32_t dynamic_shared_bytes, char* error, size_t error_len);

// The launch's dynamic shared memory (`extern __shared__` on the GPU), 16-byte aligned.
void* dynamic_shared();

}  // namespace emu

// Exports `longlora_emu_<kernel>` with the signature src/kernels/emu.rs declares.
#define LONGLORA_EMU_ENTRY(kernel, Params)                                                             \
    extern "C" int longlora_emu_##kernel(const Params* params, const uint32_t grid[3],                 \
                                         const uint32_t block[3], uint32_t dynamic_shared_bytes,        \
                                         char* error, size_t error_len) {                               \
        return emu::launch(                                                                            \
            [](const void* p) { kernel(*static_cast<const Params*>(p)); }, params, grid, block, \
            dynamic_shared_bytes, error, error_len);                                                   \
    }
