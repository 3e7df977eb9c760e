#!/usr/bin/env bash
# Our CPU training step against PyTorch eager + peft, side by side, printing a markdown table.
#
#   bash scripts/bench-vs-pytorch.sh [--lengths 1024,4096,16384] [--repeats 3] [--steps 3]
#                                    [--warmup 1] [--threads N]
#
# Not part of CI: the first run downloads about 700 MB from PyPI (torch 2.15.0 without its CUDA
# wheels, transformers, peft) into a venv under ~/.cache/longlora (scripts/torch-venv.sh), reused
# afterwards. The runs alternate ours / PyTorch, --repeats times per (N, attention); --threads
# (default: every core) applies to both. See scripts/bench_vs_pytorch.py for what each side does.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(bash "$ROOT/scripts/torch-venv.sh" | tail -n1)"
export LD_LIBRARY_PATH="$VENV/cuda-stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

(cd "$ROOT" && cargo build --release -p harness --quiet)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" "$ROOT/scripts/bench_vs_pytorch.py" write-model "$WORK" >/dev/null 2>&1
echo "machine: $(nproc) cores, $(uptime)" >&2
"$VENV/bin/python" "$ROOT/scripts/bench_vs_pytorch.py" run --dir "$WORK" \
    --harness "$ROOT/target/release/harness" "$@"
