// cp.async.cg.shared.global of 16 bytes, and its zero-filling form (src-size 0). The emulator copies
// immediately, which is one of the orders a GPU may produce; a kernel that reads the destination
// before cp_async_wait is wrong on both, but only the GPU shows it. Copied bytes count as global reads.

#include <cstdint>
#include <cstring>

#include "instructions.h"
#include "runtime.h"

namespace emu {

void cp_async_16(void* shared_destination, const void* global_source, bool copy) {
    if (reinterpret_cast<uintptr_t>(shared_destination) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(global_source) % 16 != 0) {
        fail("cp.async of 16 bytes from %p to %p: both addresses must be 16-byte aligned", global_source,
             shared_destination);
    }
    if (copy) {
        std::memcpy(shared_destination, global_source, 16);
        count_global_read(16);
    } else {
        std::memset(shared_destination, 0, 16);
    }
}

}  // namespace emu
