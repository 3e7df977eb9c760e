// Everything a kernel source sees when it is compiled for the CPU emulator (LONGLORA_EMU).
#pragma once

#include "builtins.h"
#include "instructions.h"
#include "intrinsics.h"
#include "launch.h"
