#!/usr/bin/env bash
# The GPU verification, on a GPU machine without Rust, over the executables scripts/gpu-pack.sh packed
# (it copies this script into the pack as run.sh): bash gpu-pack/run.sh
#
# A lent GPU comes for minutes, so the steps run most valuable first, each under its own time limit,
# and the logs are saved after every step: a run cut short still returns what it did. Steps: the
# golden-vector recording (DESIGN §5), the test binaries that touch a GPU with their GPU tests
# included, a fine-tune on the GPU, the kernel benches, PyTorch's kernels at the same shapes
# (scripts/gpu_torch_baselines.py), the training step against PyTorch's (scripts/bench_vs_pytorch.py
# --device cuda), compute-sanitizer memcheck and racecheck on those tests, and Nsight Compute on the
# attention backward. About 8 minutes on an H200.
# Into $OUT: probe.json (the golden vectors), torch.json, and logs.tar.gz (one log per step and
# summary.txt, a line per step with its exit code and seconds). Exits non-zero if any step failed.
# With arguments, runs only the steps whose names match one of them (shell patterns), in the order
# below: bash gpu-pack/run.sh 'test-*' bench-linear
set -uo pipefail

pack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$pack"
# Python's tarfile reads xz without the xz tool, which an image may lack.
[[ -d tests ]] || python3 -c 'import tarfile; tarfile.open("executables.tar.xz").extractall(".")'
out="${OUT:-/tmp/gpu-pack-out}"
# cudarc opens cuBLAS by name at run time: put the directory of the first one found on the path.
cublas="$(find /usr/local /opt /usr/lib -name 'libcublas.so*' 2>/dev/null | head -n1)"
[[ -n "$cublas" ]] && export LD_LIBRARY_PATH="$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "cuBLAS: ${cublas:-not found}"
logs="$(mktemp -d)"
mkdir -p "$out"
status=0

selected=("$@")

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit into NAME.log, prints its result lines;
# skipped when step patterns were given and none matches NAME.
step() {
    local name="$1" limit="$2" pattern wanted=$((${#selected[@]} == 0))
    shift 2
    for pattern in "${selected[@]}"; do
        # shellcheck disable=SC2053 # the pattern is meant to glob
        [[ $name == $pattern ]] && wanted=1
    done
    ((wanted)) || return 0
    echo "== $name (limit ${limit} s)"
    local start=$SECONDS code
    timeout -k 5 "$limit" "$@" > "$logs/$name.log" 2>&1
    code=$?
    echo "$name: exit $code in $((SECONDS - start)) s" | tee -a "$logs/summary.txt"
    grep -E "^test result|FAILED|panicked|ERROR SUMMARY|^\| |time: |^[a-z_0-9]+/|^N=|loss" "$logs/$name.log" | tail -40
    [[ $code -eq 0 ]] || status=1
    tar -C "$logs" -czf "$out/logs.tar.gz" .
}

step gpu 10 nvidia-smi
step golden 60 env LONGLORA_RECORD_GOLDEN="$out" ./tests/gpu_golden --ignored record_gpu_golden_vectors
# Only the binaries with GPU tests: the others run on the CPU alone, as they do in CI.
for t in emulator attention_kernels kernels_lora kernels_elementwise kernels_optim backend device_training; do
    step "test-$t" 90 "./tests/$t" --include-ignored
done
runs="$(mktemp -d)"
step finetune-cuda 120 ./harness finetune --device cuda --output "$runs/finetune"
step bench-attention 200 ./benches/attention_kernels --bench
step torch-baselines 180 env PYTHONUNBUFFERED=1 python3 gpu_torch_baselines.py "$out/torch.json"
step bench-linear 90 ./benches/linear_kernels --bench
# The training step against PyTorch's (bf16 autocast) on a Llama of 4 layers, d = 2048, 16 heads of
# 128, byte vocabulary.
step write-model 120 python3 bench_vs_pytorch.py write-model "$runs/llama" --hidden 2048 --layers 4 \
    --heads 16 --intermediate 5504
step train-step 330 env PYTHONUNBUFFERED=1 python3 bench_vs_pytorch.py run --dir "$runs/llama" \
    --harness ./harness --device cuda --lengths 4096,16384 --repeats 2 --steps 5 --warmup 2
for t in emulator attention_kernels kernels_lora kernels_elementwise kernels_optim backend device_training; do
    step "memcheck-$t" 90 compute-sanitizer --tool memcheck --error-exitcode 9 "./tests/$t" --include-ignored
done
# Races need shared memory: the attention, LoRA, reduction and RMSNorm kernels.
for t in attention_kernels kernels_lora kernels_elementwise emulator; do
    step "racecheck-$t" 90 compute-sanitizer --tool racecheck --error-exitcode 9 "./tests/$t" --include-ignored
done
# Nsight Compute on one launch each of the attention backward's two main kernels at 16k dense, the
# weakest of our kernels against FlashAttention-2 (--clock-control none: the clocks stay as they are).
step ncu-attention-backward 150 ncu --clock-control none --set full \
    --kernel-name regex:'attention_backward_(dkdv|dq)_d128' --launch-skip 2 --launch-count 2 \
    ./benches/attention_kernels --bench backward_deterministic_dense/16384
cat "$logs/summary.txt"
exit $status
