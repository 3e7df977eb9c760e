// cp.async.cg.shared.global of 16 bytes. The emulator copies immediately, which is one of the orders
// a GPU may produce; a kernel that reads the destination before cp_async_wait is wrong on both, but
// only the GPU shows it. The bytes read count as global reads (counters.h).

#include <cstdint>
#include <cstring>

#include "instructions.h"
#include "runtime.h"

namespace emu {

void cp_async_16(void* shared_destination, const void* global_source) {
    if (reinterpret_cast<uintptr_t>(shared_destination) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(global_source) % 16 != 0) {
        fail("cp.async of 16 bytes from %p to %p: both addresses must be 16-byte aligned", global_source,
             shared_destination);
    }
    std::memcpy(shared_destination, global_source, 16);
    count_global_read(16);
}

// The src-size operand: both addresses must still be 16-byte aligned, whatever the size read.
void cp_async_16_zero_fill(void* shared_destination, const void* global_source, uint32_t source_bytes) {
    if (reinterpret_cast<uintptr_t>(shared_destination) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(global_source) % 16 != 0 || source_bytes > 16) {
        fail("cp.async of 16 bytes reading %u from %p to %p: both addresses must be 16-byte aligned and at most 16 "
             "bytes read",
             source_bytes, global_source, shared_destination);
    }
    std::memcpy(shared_destination, global_source, source_bytes);
    std::memset(static_cast<unsigned char*>(shared_destination) + source_bytes, 0, 16 - source_bytes);
    count_global_read(source_bytes);
}

}  // namespace emu
