#!/usr/bin/env bash
# Prints this CPU's single-thread AVX2 FMA peak and the L1-resident 6x16 block product rate
# (scripts/cpu-fma-peak.c): the ceiling the CPU attention's GFLOP/s is compared with.
set -euo pipefail
cd "$(dirname "$0")"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
cc -O3 -mavx2 -mfma cpu-fma-peak.c -o "$bin"
"$bin"
