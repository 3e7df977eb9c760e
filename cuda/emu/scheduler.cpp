// The emulator's scheduler: every CUDA thread of a block is a fiber on the launching OS thread; the
// fibers run round-robin, each until it waits at a barrier or warp collective or exits, and blocks run
// one after another. A fiber that stops switches straight to the next ready one, so a wait costs one
// switch; only when none is ready does control return to the launch, which then either starts the
// next block or reports the waits that can never complete, instead of hanging.

#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "context.h"
#include "launch.h"
#include "runtime.h"

namespace emu {
namespace {

// Far more than a kernel thread's locals need; pages a fiber never touches cost nothing (MAP_NORESERVE).
constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kGuardBytes = 4096;
constexpr uint32_t kMaxBlockThreads = 1024;
constexpr uint32_t kLanes = 32;

enum class FiberState : uint8_t { ready, at_block_barrier, at_warp_collective, exited };

struct Fiber {
    Context context;
    uint3 index;
    uint32_t linear;
    FiberState state;
};

struct Launch {
    KernelBody body;
    const void* params;
    uint32_t threads;
    Fiber* fibers;
    Warp* warps;
    unsigned char* stacks;
    size_t stacks_bytes;
    unsigned char* shared;
    uint32_t shared_bytes;

    Context scheduler;
    Fiber* current;
    uint32_t exited;
    uint32_t barrier_arrived;
    Site barrier_site;

    bool failed;
    char message[1024];
};

thread_local Launch* tl_launch;

bool same_site(Site a, Site b) {
    if (a.file == nullptr || b.file == nullptr) return a.file == b.file;
    return a.line == b.line && std::strcmp(a.file, b.file) == 0;
}

bool same_collective(const Collective& a, const Collective& b) {
    return a.op == b.op && a.variant == b.variant && a.mask == b.mask && same_site(a.site, b.site);
}

void append(char* buffer, size_t len, const char* format, ...) __attribute__((format(printf, 3, 4)));
void append(char* buffer, size_t len, const char* format, ...) {
    size_t used = std::strlen(buffer);
    if (used + 1 >= len) return;
    va_list args;
    va_start(args, format);
    std::vsnprintf(buffer + used, len - used, format, args);
    va_end(args);
}

// "0-15,20" for the set bits of `mask`.
void append_ranges(char* buffer, size_t len, uint32_t mask) {
    bool first = true;
    for (uint32_t i = 0; i < kLanes;) {
        if (!(mask >> i & 1)) {
            ++i;
            continue;
        }
        uint32_t end = i;
        while (end + 1 < kLanes && (mask >> (end + 1) & 1)) ++end;
        append(buffer, len, first ? "%u" : ",%u", i);
        if (end > i) append(buffer, len, "-%u", end);
        first = false;
        i = end + 1;
    }
}

void switch_to_scheduler(Launch& launch) {
    context_switch(&launch.current->context, &launch.scheduler);
}

// The first ready fiber after `after` in thread order, wrapping around; null when none is ready.
Fiber* next_ready(Launch& launch, uint32_t after) {
    for (uint32_t i = 1; i <= launch.threads; ++i) {
        Fiber& fiber = launch.fibers[(after + i) % launch.threads];
        if (fiber.state == FiberState::ready) return &fiber;
    }
    return nullptr;
}

void enter(Launch& launch, Context* from, Fiber& fiber) {
    launch.current = &fiber;
    threadIdx = fiber.index;
    context_switch(from, &fiber.context);
}

// Leaves the running fiber, which is waiting or has exited, for the next ready one.
void switch_away(Launch& launch) {
    Fiber& from = *launch.current;
    Fiber* next = next_ready(launch, from.linear);
    if (next == nullptr) {
        switch_to_scheduler(launch);
    } else {
        enter(launch, &from.context, *next);
    }
}

void wait(Launch& launch, FiberState state) {
    launch.current->state = state;
    switch_away(launch);
}

void complete_collective(Launch& launch, Warp& warp) {
    uint32_t lanes = warp.arrived;
    warp.arrived = 0;
    warp.compute(warp, lanes);
    // Every lane in `lanes` exists, and all but the caller are waiting.
    Fiber* first = launch.fibers + static_cast<uint32_t>(&warp - launch.warps) * kLanes;
    for (uint32_t lane = 0; lane < kLanes; ++lane) {
        if ((lanes >> lane & 1) && first[lane].state == FiberState::at_warp_collective) {
            first[lane].state = FiberState::ready;
        }
    }
}

bool is_aligned_instruction(WarpOp op) {
    return op == WarpOp::mma_bf16 || op == WarpOp::mma_f16 || op == WarpOp::ldmatrix;
}

// A thread that returns from the kernel can leave others waiting for it forever.
[[noreturn]] void exit_current(Launch& launch) {
    Fiber& fiber = *launch.current;
    fiber.state = FiberState::exited;
    ++launch.exited;
    uint32_t lane = fiber.linear % kLanes;
    Warp& warp = launch.warps[fiber.linear / kLanes];
    warp.exited |= 1u << lane;
    if (launch.barrier_arrived > 0) {
        fail("exited while %u thread(s) wait at __syncthreads (%s:%d)", launch.barrier_arrived,
             base_name(launch.barrier_site.file), launch.barrier_site.line);
    }
    if (warp.arrived != 0 && (warp.pending.mask >> lane & 1)) {
        char what[160];
        describe(warp.pending, what, sizeof what);
        if (is_aligned_instruction(warp.pending.op)) {
            fail("lane %u of warp %u exited while its warp waits at %s, which needs all 32 lanes", lane,
                 fiber.linear / kLanes, what);
        }
        uint32_t needed = warp.pending.mask & warp.present & ~warp.exited;
        if ((needed & ~warp.arrived) == 0) complete_collective(launch, warp);
    }
    switch_away(launch);
    __builtin_unreachable();
}

void fiber_main() {
    Launch& launch = *tl_launch;
    launch.body(launch.params);
    exit_current(launch);
}

// Lists what each thread is doing when no thread can run, in runs of consecutive thread ids.
void report_deadlock(Launch& launch) {
    std::snprintf(launch.message, sizeof launch.message, "deadlock in block (%u,%u,%u):", blockIdx.x, blockIdx.y,
                  blockIdx.z);
    char previous[200] = "";
    uint32_t run_start = 0;
    for (uint32_t t = 0; t <= launch.threads; ++t) {
        char now[200] = "";
        if (t < launch.threads) {
            const Fiber& fiber = launch.fibers[t];
            const Warp& warp = launch.warps[t / kLanes];
            switch (fiber.state) {
                case FiberState::exited:
                    std::snprintf(now, sizeof now, "exited");
                    break;
                case FiberState::at_block_barrier:
                    std::snprintf(now, sizeof now, "wait at __syncthreads (%s:%d)",
                                  base_name(launch.barrier_site.file), launch.barrier_site.line);
                    break;
                case FiberState::at_warp_collective: {
                    char what[160];
                    describe(warp.pending, what, sizeof what);
                    std::snprintf(now, sizeof now, "wait at %s for lane(s) ", what);
                    append_ranges(now, sizeof now,
                                  warp.pending.mask & warp.present & ~warp.exited & ~warp.arrived);
                    append(now, sizeof now, " of warp %u", t / kLanes);
                    break;
                }
                case FiberState::ready:
                    std::snprintf(now, sizeof now, "ready");
                    break;
            }
        }
        if (t > 0 && std::strcmp(now, previous) != 0) {
            if (run_start == t - 1) {
                append(launch.message, sizeof launch.message, " thread %u %s;", run_start, previous);
            } else {
                append(launch.message, sizeof launch.message, " threads %u-%u %s;", run_start, t - 1, previous);
            }
            run_start = t;
        }
        std::memcpy(previous, now, sizeof now);
    }
}

bool run_block(Launch& launch) {
    launch.exited = 0;
    launch.barrier_arrived = 0;
    for (uint32_t t = 0; t < launch.threads; ++t) {
        Fiber& fiber = launch.fibers[t];
        fiber.linear = t;
        fiber.index = {t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y)};
        fiber.state = FiberState::ready;
        unsigned char* base = launch.stacks + t * (kStackBytes + kGuardBytes) + kGuardBytes;
        context_init(&fiber.context, base, kStackBytes, fiber_main);
    }
    for (uint32_t w = 0; w * kLanes < launch.threads; ++w) {
        uint32_t lanes = launch.threads - w * kLanes;
        launch.warps[w] = {};
        launch.warps[w].present = lanes >= kLanes ? 0xffffffffu : (1u << lanes) - 1;
    }
    // Like the GPU, shared memory starts with garbage; all-ones bytes are NaN in every float format.
    std::memset(launch.shared, 0xff, launch.shared_bytes);

    // The fibers pass control among themselves and come back here when none is ready (or one failed).
    enter(launch, &launch.scheduler, launch.fibers[0]);
    if (launch.failed) return false;
    if (launch.exited < launch.threads) {
        report_deadlock(launch);
        return false;
    }
    return true;
}

// The launch limits of every GPU since sm_80: at most 1024 threads per block (z at most 64), grid x
// below 2^31, y and z at most 65535.
bool valid_config(const uint32_t grid[3], const uint32_t block[3], char* error, size_t error_len) {
    uint64_t threads = uint64_t{block[0]} * block[1] * block[2];
    if (threads == 0 || threads > kMaxBlockThreads || block[2] > 64) {
        std::snprintf(error, error_len, "invalid block (%u,%u,%u): 1 to %u threads, z at most 64", block[0],
                      block[1], block[2], kMaxBlockThreads);
        return false;
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7fffffffu || grid[1] > 65535 ||
        grid[2] > 65535) {
        std::snprintf(error, error_len, "invalid grid (%u,%u,%u): x 1 to 2^31 - 1, y and z 1 to 65535", grid[0],
                      grid[1], grid[2]);
        return false;
    }
    return true;
}

// What the driver checks of shared memory: without the opt-in attribute a launch gets 48 KB, static and
// dynamic together; the attribute raises the dynamic limit to its value, which with the static part must
// fit in a block's maximum (cuFuncSetAttribute fails otherwise).
bool valid_shared_memory(const SharedMemory& shared, char* error, size_t error_len) {
    constexpr uint32_t kDefaultBytes = 48 * 1024;
    const uint64_t total = uint64_t{shared.static_bytes} + shared.dynamic_bytes;
    if (shared.max_dynamic_bytes != 0 && uint64_t{shared.static_bytes} + shared.max_dynamic_bytes > shared.max_per_block) {
        std::snprintf(error, error_len,
                      "the opt-in limit of %u bytes of dynamic shared memory plus %u static exceeds the %u bytes a "
                      "block may have: setting CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES would fail",
                      shared.max_dynamic_bytes, shared.static_bytes, shared.max_per_block);
        return false;
    }
    if (shared.max_dynamic_bytes == 0 && total > kDefaultBytes) {
        std::snprintf(error, error_len,
                      "%u bytes of static plus %u of dynamic shared memory exceed the %u a launch gets without "
                      "opting in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES was not set)",
                      shared.static_bytes, shared.dynamic_bytes, kDefaultBytes);
        return false;
    }
    if (shared.max_dynamic_bytes != 0 && shared.dynamic_bytes > shared.max_dynamic_bytes) {
        std::snprintf(error, error_len,
                      "%u bytes of dynamic shared memory exceed the opt-in limit of %u "
                      "(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                      shared.dynamic_bytes, shared.max_dynamic_bytes);
        return false;
    }
    return true;
}

}  // namespace

uint32_t current_lane() { return tl_launch->current->linear % kLanes; }

Warp& current_warp() { return tl_launch->warps[tl_launch->current->linear / kLanes]; }

void fail(const char* format, ...) {
    Launch& launch = *tl_launch;
    std::snprintf(launch.message, sizeof launch.message, "block (%u,%u,%u), thread %u: ", blockIdx.x, blockIdx.y,
                  blockIdx.z, launch.current->linear);
    size_t used = std::strlen(launch.message);
    va_list args;
    va_start(args, format);
    std::vsnprintf(launch.message + used, sizeof launch.message - used, format, args);
    va_end(args);
    launch.failed = true;
    switch_to_scheduler(launch);
    __builtin_unreachable();
}

void describe(const Collective& c, char* out, unsigned len) {
    static const char* const shuffle_names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                                "__shfl_xor_sync"};
    switch (c.op) {
        case WarpOp::mma_bf16:
            std::snprintf(out, len, "mma.m16n8k16.bf16");
            return;
        case WarpOp::mma_f16:
            std::snprintf(out, len, "mma.m16n8k16.f16");
            return;
        case WarpOp::ldmatrix:
            std::snprintf(out, len, "ldmatrix.x%u%s", c.variant & 7, c.variant & 8 ? ".trans" : "");
            return;
        case WarpOp::shuffle:
            std::snprintf(out, len, "%s (%s:%d, mask 0x%08x, width %u)", shuffle_names[c.variant & 3],
                          base_name(c.site.file), c.site.line, c.mask, c.variant >> 2);
            return;
        case WarpOp::syncwarp:
            std::snprintf(out, len, "__syncwarp (%s:%d, mask 0x%08x)", base_name(c.site.file), c.site.line,
                          c.mask);
            return;
    }
}

void warp_collective(const Collective& c, CollectiveCompute compute) {
    Launch& launch = *tl_launch;
    Warp& warp = current_warp();
    uint32_t lane = current_lane();
    char what[160];
    if (!(c.mask >> lane & 1)) {
        describe(c, what, sizeof what);
        fail("lane %u calls %s with a mask that leaves it out", lane, what);
    }
    if (is_aligned_instruction(c.op) && (warp.present & ~warp.exited) != 0xffffffffu) {
        describe(c, what, sizeof what);
        fail("%s needs all 32 lanes of warp %u, but lanes %s", what, launch.current->linear / kLanes,
             warp.present != 0xffffffffu ? "beyond the block's last thread do not exist" : "have exited");
    }
    if (warp.arrived == 0) {
        warp.pending = c;
        warp.compute = compute;
    } else if (!same_collective(warp.pending, c)) {
        char waiting[160];
        describe(c, what, sizeof what);
        describe(warp.pending, waiting, sizeof waiting);
        char lanes[100] = "";
        append_ranges(lanes, sizeof lanes, warp.arrived);
        fail("divergent warp %u: lane %u reached %s while lanes %s wait at %s", launch.current->linear / kLanes,
             lane, what, lanes, waiting);
    }
    warp.arrived |= 1u << lane;
    uint32_t needed = c.mask & warp.present & ~warp.exited;
    if ((needed & ~warp.arrived) == 0) {
        complete_collective(launch, warp);
        return;
    }
    wait(launch, FiberState::at_warp_collective);
}

void sync_block(Site site) {
    Launch& launch = *tl_launch;
    if (launch.exited > 0) {
        fail("__syncthreads (%s:%d) can never complete: %u thread(s) of the block already exited",
             base_name(site.file), site.line, launch.exited);
    }
    if (launch.barrier_arrived == 0) {
        launch.barrier_site = site;
    } else if (!same_site(launch.barrier_site, site)) {
        fail("reached __syncthreads (%s:%d) while %u thread(s) wait at __syncthreads (%s:%d)", base_name(site.file),
             site.line, launch.barrier_arrived, base_name(launch.barrier_site.file), launch.barrier_site.line);
    }
    if (++launch.barrier_arrived == launch.threads) {
        launch.barrier_arrived = 0;
        for (uint32_t t = 0; t < launch.threads; ++t) {
            Fiber& fiber = launch.fibers[t];
            if (fiber.state == FiberState::at_block_barrier) fiber.state = FiberState::ready;
        }
        return;
    }
    wait(launch, FiberState::at_block_barrier);
}

void* dynamic_shared() { return tl_launch->shared; }

void requirement_failed(const char* what) { fail("requirement failed: %s", what); }

int launch(KernelBody body, const void* params, const uint32_t grid[3], const uint32_t block[3],
           SharedMemory shared, char* error, size_t error_len) {
    if (error_len > 0) error[0] = '\0';
    if (!valid_config(grid, block, error, error_len)) return 1;
    if (!valid_shared_memory(shared, error, error_len)) return 1;
    const uint32_t dynamic_shared_bytes = shared.dynamic_bytes;
    Launch launch = {};
    launch.body = body;
    launch.params = params;
    launch.threads = block[0] * block[1] * block[2];
    launch.shared_bytes = dynamic_shared_bytes;
    launch.stacks_bytes = launch.threads * (kStackBytes + kGuardBytes);
    void* stacks = mmap(nullptr, launch.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                        -1, 0);
    launch.fibers = static_cast<Fiber*>(std::calloc(launch.threads, sizeof(Fiber)));
    launch.warps = static_cast<Warp*>(std::calloc((launch.threads + kLanes - 1) / kLanes, sizeof(Warp)));
    // 16 bytes beyond the request keep the pointer valid (and aligned) when no dynamic memory is asked for.
    launch.shared = static_cast<unsigned char*>(std::aligned_alloc(16, (dynamic_shared_bytes + 31) & ~size_t{15}));
    if (stacks == MAP_FAILED || !launch.fibers || !launch.warps || !launch.shared) {
        std::snprintf(error, error_len, "out of memory for %u fibers", launch.threads);
        if (stacks != MAP_FAILED) munmap(stacks, launch.stacks_bytes);
        std::free(launch.fibers);
        std::free(launch.warps);
        std::free(launch.shared);
        return 1;
    }
    launch.stacks = static_cast<unsigned char*>(stacks);
    // A guard page below each stack turns an overflow into a crash at the faulting access.
    for (uint32_t t = 0; t < launch.threads; ++t) {
        mprotect(launch.stacks + t * (kStackBytes + kGuardBytes), kGuardBytes, PROT_NONE);
    }

    tl_launch = &launch;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    bool ok = true;
    for (uint32_t z = 0; ok && z < grid[2]; ++z) {
        for (uint32_t y = 0; ok && y < grid[1]; ++y) {
            for (uint32_t x = 0; ok && x < grid[0]; ++x) {
                blockIdx = {x, y, z};
                ok = run_block(launch);
            }
        }
    }
    tl_launch = nullptr;

    if (!ok) std::snprintf(error, error_len, "%s", launch.message);
    munmap(launch.stacks, launch.stacks_bytes);
    std::free(launch.fibers);
    std::free(launch.warps);
    std::free(launch.shared);
    return ok ? 0 : 1;
}

}  // namespace emu
