#!/usr/bin/env bash
# The kernel report, without a GPU: for every kernel in cuda/*.cu, on sm_80 (A100) and sm_90 (H100),
# registers, spills, shared memory at its real launch configuration, threads, occupancy, and the SASS
# instruction mix of its main loop, as markdown on stdout (scripts/kernel-report.py explains each
# figure). Fails when a kernel spills registers or cannot launch.
#   1. installs nvcc 13.0 (scripts/install-nvcc.sh) unless NVCC is set, and nvdisasm and cuobjdump
#      13.2 or newer from PyPI into a venv under ~/.cache/longlora (once; a marker records the set);
#   2. compiles cuda/*.cu as one translation unit, as build.rs does, to a cubin per architecture with
#      ptxas's resource report, and disassembles it;
#   3. takes the launch configurations from the launch functions themselves
#      (cargo run --example kernel_launches, on the CPU emulator).
# Usage: scripts/kernel-report.sh [OUTPUT.md]   (the table also goes to stdout)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${NVCC:-}" ]]; then
    NVCC="$(scripts/install-nvcc.sh | tail -n1)"
fi

cache="${LONGLORA_CUDA_TOOLS_CACHE:-$HOME/.cache/longlora/cuda-disasm}"
packages=("nvidia-cuda-nvdisasm>=13.2" "nvidia-cuda-cuobjdump>=13.2")
marker="$cache/.installed"
if [[ ! -f "$marker" || "$(cat "$marker")" != "${packages[*]}" ]]; then
    echo "kernel-report: installing nvdisasm and cuobjdump into $cache" >&2
    rm -f "$marker"
    mkdir -p "$cache"
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
    echo "${packages[*]}" > "$marker"
fi
nvdisasm="$("$cache/venv/bin/python" - <<'PY'
import pathlib, sysconfig
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "bin" / "nvdisasm")
PY
)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for kernel in cuda/*.cu; do
    echo "#include \"$root/$kernel\""
done > "$work/kernels.cu"

# Both architectures at once (ptxas is single-threaded), with the flags build.rs uses.
for arch in 80 90; do
    "$NVCC" -cubin -std=c++17 -I cuda/include -Werror all-warnings -Xptxas -v \
        "-gencode=arch=compute_$arch,code=sm_$arch" -o "$work/sm_$arch.cubin" "$work/kernels.cu" \
        2> "$work/ptxas_$arch.txt" &
done
for job in $(jobs -p); do
    if ! wait "$job"; then
        cat "$work"/ptxas_*.txt >&2
        echo "kernel-report: nvcc failed" >&2
        exit 1
    fi
done
for arch in 80 90; do
    "$nvdisasm" -c "$work/sm_$arch.cubin" > "$work/sm_$arch.sass"
done

cargo run --quiet --example kernel_launches > "$work/launches.tsv"

report=(python3 scripts/kernel-report.py --launches "$work/launches.tsv")
for arch in 80 90; do
    report+=(--ptxas-"$arch" "$work/ptxas_$arch.txt" --sass-"$arch" "$work/sm_$arch.sass")
done
if [[ $# -gt 0 ]]; then
    "${report[@]}" | tee "$1"
    exit "${PIPESTATUS[0]}"
fi
"${report[@]}"
