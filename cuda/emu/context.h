// Execution contexts for the emulator's fibers: a saved stack and registers that can be switched to.
// On x86-64 a hand-written switch saves only the callee-saved registers and the stack pointer (no
// signal mask, no FP environment: nothing in the emulator changes either), which is ~50x cheaper than
// swapcontext; other architectures fall back to ucontext.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

struct Context {
#if defined(__x86_64__)
    void* stack_pointer;
#else
    ucontext_t ucontext;
#endif
};

// Prepares `context` so that the first switch to it calls `entry()` on the given stack. `entry` must
// never return: a finished fiber switches away for good.
void context_init(Context* context, void* stack_base, size_t stack_size, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void context_switch(Context* from, Context* to);

}  // namespace emu
