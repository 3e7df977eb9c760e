// The element indices a thread visits when the whole grid strides over `count` elements, so that any
// grid size covers any count.
#pragma once

#include "kernel.h"

#define LONGLORA_FOR_EACH_ELEMENT(i, count)                                                   \
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (count); \
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
