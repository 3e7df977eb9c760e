#!/usr/bin/env bash
# PyTorch's CPU attention and GEMM kernels alone against ours on the training step's shapes,
# alternating, as GFLOP/s: whether a gap in the step is in the kernels or around them.
#
#   bash scripts/kernels-vs-pytorch.sh [--rounds 3] [--lengths 1024,4096,16384]
#
# Each round and length: PyTorch's causal SDPA, then `attention_probe -- N dense RUNS 4 64`, then
# PyTorch's matmuls and `gemm_probe -- N 20` (N rows). Not part of CI (the PyTorch venv:
# scripts/torch-venv.sh). See scripts/torch_kernels.py for the PyTorch side.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
rounds=3 lengths=1024,4096,16384
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --lengths) lengths="$2"; shift 2 ;;
        *) echo "unknown option $1 (expected --rounds N, --lengths N,N,...)" >&2; exit 2 ;;
    esac
done
VENV="$(bash "$ROOT/scripts/torch-venv.sh" | tail -n1)"
export LD_LIBRARY_PATH="$VENV/cuda-stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd "$ROOT"
cargo bench --quiet --no-run --bench attention_probe --bench gemm_probe
echo "machine: $(nproc) cores, $(uptime)"
for round in $(seq "$rounds"); do
    for n in ${lengths//,/ }; do
        runs=$(( n >= 16384 ? 2 : 5 ))
        echo "== round $round, N = $n ($(date -u +%T) UTC)"
        "$VENV/bin/python" scripts/torch_kernels.py attention --length "$n" --runs "$runs"
        cargo bench --quiet --bench attention_probe -- "$n" dense "$runs" 4 64
        "$VENV/bin/python" scripts/torch_kernels.py matmul --length "$n" --runs 20
        cargo bench --quiet --bench gemm_probe -- "$n" 20
    done
done
