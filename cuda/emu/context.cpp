#include "context.h"

#include <cstdint>

#if defined(__x86_64__)

// longlora_emu_switch(save, next): pushes the System V callee-saved registers, stores rsp into *save,
// loads next as rsp and pops the same registers. A fresh context's stack is laid out so that the pops
// load the entry function into r12 and `ret` lands in longlora_emu_fiber_start, which calls it.
extern "C" void longlora_emu_switch(void** save, void* next);
extern "C" void longlora_emu_fiber_start();

__asm__(
    ".text\n"
    ".globl longlora_emu_switch\n"
    ".hidden longlora_emu_switch\n"
    ".type longlora_emu_switch, @function\n"
    "longlora_emu_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size longlora_emu_switch, .-longlora_emu_switch\n"
    ".globl longlora_emu_fiber_start\n"
    ".hidden longlora_emu_fiber_start\n"
    ".type longlora_emu_fiber_start, @function\n"
    "longlora_emu_fiber_start:\n"
    "    callq *%r12\n"
    "    ud2\n"
    ".size longlora_emu_fiber_start, .-longlora_emu_fiber_start\n");

namespace emu {

void context_init(Context* context, void* stack_base, size_t stack_size, void (*entry)()) {
    auto top = (reinterpret_cast<uintptr_t>(stack_base) + stack_size) & ~uintptr_t{15};
    // Seven slots (six registers, the return address) sit below two slots of padding, so that after
    // the `ret` the stack is 16-byte aligned at fiber_start's call, as the ABI requires.
    auto* slots = reinterpret_cast<void**>(top - 9 * sizeof(void*));
    for (int i = 0; i < 9; ++i) slots[i] = nullptr;
    slots[3] = reinterpret_cast<void*>(entry);  // popped into r12
    slots[6] = reinterpret_cast<void*>(&longlora_emu_fiber_start);
    context->stack_pointer = slots;
}

void context_switch(Context* from, Context* to) {
    longlora_emu_switch(&from->stack_pointer, to->stack_pointer);
}

}  // namespace emu

#else

namespace emu {

void context_init(Context* context, void* stack_base, size_t stack_size, void (*entry)()) {
    getcontext(&context->ucontext);
    context->ucontext.uc_stack.ss_sp = stack_base;
    context->ucontext.uc_stack.ss_size = stack_size;
    context->ucontext.uc_link = nullptr;
    makecontext(&context->ucontext, entry, 0);
}

void context_switch(Context* from, Context* to) {
    swapcontext(&from->ucontext, &to->ucontext);
}

}  // namespace emu

#endif
