#!/usr/bin/env bash
# Prints this CPU's single-thread AVX2 (and AVX-512) FMA peak and L1-resident block product rates
# (scripts/cpu-fma-peak.c): the ceiling the CPU attention's GFLOP/s is compared with.
set -euo pipefail
cd "$(dirname "$0")"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
cc -O3 -mavx2 -mfma cpu-fma-peak.c -o "$bin"
"$bin"
