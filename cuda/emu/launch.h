// Launching a kernel in the emulator, and the C entry point each kernel file exports to Rust.
#pragma once

#include <cstddef>
#include <cstdint>

namespace emu {

using KernelBody = void (*)(const void* params);

// A launch's shared memory as a GPU driver sees it: the kernel's static shared memory (declared with
// its entry point, since the emulator cannot measure it), the dynamic part the launch asks for, the
// opt-in limit the launch layer set (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; 0 = not set, so
// static + dynamic must fit in 48 KB), and the most one block may have on the target GPU.
struct SharedMemory {
    uint32_t static_bytes;
    uint32_t dynamic_bytes;
    uint32_t max_dynamic_bytes;
    uint32_t max_per_block;
};

// Runs `body(params)` as a grid of blocks, one block after another on the calling OS thread. Returns 0,
// or 1 with a message in `error` when a barrier or warp collective diverged, an instruction was given
// an address the hardware refuses, or the launch is one a GPU would refuse.
int launch(KernelBody body, const void* params, const uint32_t grid[3], const uint32_t block[3],
           SharedMemory shared, char* error, size_t error_len);

// The launch's dynamic shared memory (`extern __shared__` on the GPU), 16-byte aligned.
void* dynamic_shared();

// Ends the launch with "requirement failed: <what>" (LONGLORA_REQUIRE in cuda/include/kernel.h).
[[noreturn]] void requirement_failed(const char* what);

// The static shared memory a kernel declares with LONGLORA_EMU_ENTRY: none unless given.
constexpr uint32_t declared_static_shared(uint32_t bytes = 0) { return bytes; }

}  // namespace emu

// Exports `longlora_emu_<kernel>` with the signature src/kernels/emu.rs declares. A kernel with static
// `__shared__` memory states its size in bytes as the third argument (the kernel report checks it
// against ptxas's). Called with null params, the entry point only reports that size.
#define LONGLORA_EMU_ENTRY(kernel, Params, ...)                                                                \
    extern "C" int longlora_emu_##kernel(const Params* params, const uint32_t grid[3], const uint32_t block[3], \
                                         uint32_t dynamic_shared_bytes, uint32_t max_dynamic_shared_bytes,      \
                                         uint32_t max_shared_per_block, uint32_t* static_shared_bytes,          \
                                         char* error, size_t error_len) {                                       \
        *static_shared_bytes = emu::declared_static_shared(__VA_ARGS__);                                        \
        if (params == nullptr) return 0;                                                                        \
        const emu::SharedMemory shared = {*static_shared_bytes, dynamic_shared_bytes, max_dynamic_shared_bytes, \
                                          max_shared_per_block};                                                \
        return emu::launch([](const void* p) { kernel(*static_cast<const Params*>(p)); }, params, grid, block,  \
                           shared, error, error_len);                                                           \
    }
