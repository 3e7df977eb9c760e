#!/usr/bin/env bash
# Builds the test and bench executables with the CUDA kernels embedded and packs them, stripped and
# xz-compressed, into gpu-pack/ (git-ignored, kept under the device tool's 64 MiB carry limit: about
# 1 MiB per executable compressed, 4-5 MiB uncompressed since faer's GEMM), for a GPU machine that
# has no Rust. Prints the one command that runs everything there: every test binary with
# --include-ignored (so the tests marked "needs a CUDA GPU" run too), compute-sanitizer memcheck and
# racecheck on the kernel tests, the GPU golden-vector recording (DESIGN §5), and the kernel
# benchmarks; logs and fixtures go to $OUT.
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
tar -C "$bins" -cf - tests benches | xz -T0 -6 > "$pack/executables.tar.xz"

cat > "$pack/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: bash gpu-pack/run.sh
set -uo pipefail
cd "$(dirname "$0")"
# Python's tarfile reads xz without the xz tool, which an image may lack.
[[ -d tests ]] || python3 -c 'import tarfile; tarfile.open("executables.tar.xz").extractall(".")'
out="${OUT:-/tmp/gpu-pack-out}"
mkdir -p "$out/logs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.csv"
status=0
for t in tests/*; do
    echo "== $t"
    "./$t" --include-ignored --skip emulator_matches_gpu_golden_vectors 2>&1 | tee "$out/logs/$(basename "$t").log" | grep -E "^test result|FAILED|panicked|skipped" || true
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
echo "== recording GPU golden vectors"
LONGLORA_RECORD_GOLDEN="$out/gpu_golden" ./tests/gpu_golden --ignored record_gpu_golden_vectors --nocapture 2>&1 | tail -3
for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool on the kernel tests"
    for t in tests/emulator tests/kernels_* tests/attention_kernels*; do
        [[ -e "$t" ]] || continue
        compute-sanitizer --tool "$tool" --error-exitcode 9 "./$t" > "$out/logs/sanitizer-$tool-$(basename "$t").log" 2>&1
        code=$?
        echo "$(basename "$t"): exit $code ($(grep -c "ERROR SUMMARY: 0 errors" "$out/logs/sanitizer-$tool-$(basename "$t").log") clean summaries)"
        [[ $code -eq 0 ]] || status=1
    done
done
for b in benches/*; do
    echo "== $b"
    "./$b" --bench 2>&1 | tee "$out/logs/bench-$(basename "$b").log" | grep -vE "^\s*$|Warming|Analyzing|Collecting" | tail -30
done
exit $status
RUN
chmod +x "$pack/run.sh"
size=$(du -sm "$pack" | cut -f1)
echo "gpu-pack: $pack holds ${size} MiB" >&2
if (( size >= 64 )); then
    echo "gpu-pack: over the 64 MiB carry limit" >&2
    exit 1
fi
echo "carry gpu-pack, then run: bash gpu-pack/run.sh"
