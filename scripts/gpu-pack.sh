#!/usr/bin/env bash
# Builds the test and bench executables and the harness with the CUDA kernels embedded and packs
# them, stripped and xz-compressed, into gpu-pack/ (git-ignored, kept under the device tool's 64 MiB
# carry limit: about 1 MiB per executable compressed), with scripts/gpu-run.sh as run.sh and the
# PyTorch scripts it runs, for a GPU machine that has no Rust. Prints the one command that runs the GPU
# verification there (gpu-run.sh says what it does, in what order and under what time limits).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
NVCC="${NVCC:-$(scripts/install-nvcc.sh | tail -n1)}"
export NVCC
pack="$root/gpu-pack"
rm -rf "$pack"
bins="$(mktemp -d)"
trap 'rm -rf "$bins"' EXIT
mkdir -p "$pack" "$bins/tests" "$bins/benches"

# Statically linked libstdc++ and glibc 2.36 keep the executables runnable on a newer image.
# executables KIND CARGO-ARGS...: "name path" of each built executable whose target kind is KIND.
executables() {
    local kind="$1"
    shift
    cargo "$@" --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and sys.argv[1] in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' "$kind"
}

echo "gpu-pack: building tests and benches with the kernels embedded" >&2
cargo test --release --no-run -p longlora >&2
while read -r name exe; do
    objcopy --strip-all "$exe" "$bins/tests/$name"
done < <(executables test test --release -p longlora)
cargo bench --no-run -p longlora >&2
while read -r name exe; do
    objcopy --strip-all "$exe" "$bins/benches/$name"
done < <(executables bench bench -p longlora)
cargo build --release -p harness >&2
objcopy --strip-all target/release/harness "$bins/harness"
tar -C "$bins" -cf - tests benches harness | xz -T0 -6 > "$pack/executables.tar.xz"

cp scripts/gpu-run.sh "$pack/run.sh"
cp scripts/gpu_torch_baselines.py scripts/bench_vs_pytorch.py "$pack/"
size=$(du -sm "$pack" | cut -f1)
echo "gpu-pack: $pack holds ${size} MiB" >&2
if (( size >= 64 )); then
    echo "gpu-pack: over the 64 MiB carry limit" >&2
    exit 1
fi
echo "carry gpu-pack, then run: bash gpu-pack/run.sh"
