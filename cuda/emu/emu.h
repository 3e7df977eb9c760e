// Everything a kernel source sees when it is compiled for the CPU emulator (LONGLORA_EMU).
#pragma once

// CUDA device code calls the C math functions (exp2f, logf, fmaxf) without an include.
#include <cmath>

#include "builtins.h"
#include "instructions.h"
#include "intrinsics.h"
#include "launch.h"
