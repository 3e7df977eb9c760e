// shared_access_kernel: one warp makes one shared-memory access, each lane at the byte offset the
// test gives, so that the tests of the emulator's bank model (cuda/emu/counters.h) can count the
// wavefronts of hand-made address patterns. Built only for the emulator.

#include "kernel.h"

#include "ldmatrix.h"
#include "memory_access.h"
#include "params.h"
#include "shared_memory.h"

extern "C" __global__ void shared_access_kernel(const SharedAccessParams p) {
    unsigned char* shared = dynamic_shared<unsigned char>();
    const unsigned lane = threadIdx.x % 32;
    unsigned char* at = shared + p.offsets[lane];
    uint32_t registers[4];
    switch (p.access) {
        case 0:
            ldmatrix_x4(registers, at);
            break;
        case 1:
            ldmatrix_x1(registers, at);
            break;
        case 2:
            store_shared_4(at, lane);
            break;
        default:
            load_shared_16(at);
            break;
    }
}
LONGLORA_EMU_ENTRY(shared_access_kernel, SharedAccessParams)
