#!/usr/bin/env bash
# The kernel checks of CI, runnable standalone from any directory:
#   1. installs nvcc 13.0 (scripts/install-nvcc.sh) unless NVCC is already set;
#   2. builds the library with it, which compiles every cuda/*.cu for sm_80 and sm_90 (SASS) plus
#      compute_90 (PTX) and fails on any nvcc or ptxas error or warning; ptxas's per-kernel register,
#      shared-memory and spill report is printed into the log (LONGLORA_PTXAS_REPORT=1);
#   3. runs the emulator tests against that build, so the fatbin-embedding path is exercised too;
#   4. checks that src/kernels/params.rs is what bindgen generates from cuda/include/params.h
#      (installs libclang and bindgen-cli on first use);
#   5. prints the kernel report (scripts/kernel-report.sh: registers, spills, shared memory,
#      occupancy and main-loop SASS of every kernel on sm_80 and sm_90), failing on any spill.
# Call it from .ci/run as `bash scripts/ci-kernels.sh`. To share the nvcc build with later cargo
# commands (and not rebuild the emulator without it), export NVCC first:
#   export NVCC="$(scripts/install-nvcc.sh | tail -n1)"; bash scripts/ci-kernels.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${NVCC:-}" ]]; then
    NVCC="$(scripts/install-nvcc.sh | tail -n1)"
fi
export NVCC
echo "ci-kernels: using $NVCC"

# Cargo prints build-script warnings (the ptxas report) only when build.rs runs, which it does when
# cuda/ changed; touching the directory makes it run, so the report is in every log.
touch cuda
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
LONGLORA_PTXAS_REPORT=1 cargo build --lib 2>&1 | tee "$log"
if ! grep -q "ptxas info" "$log"; then
    echo "ci-kernels: the build printed no ptxas report: were the kernels compiled?" >&2
    exit 1
fi
LONGLORA_PTXAS_REPORT=1 cargo test --test emulator

scripts/gen-params.sh --check
bash scripts/kernel-report.sh
echo "ci-kernels: all kernel checks passed"
