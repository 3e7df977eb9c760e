#!/usr/bin/env bash
# Our CPU training step against PyTorch eager + peft, side by side, printing a markdown table.
#
#   bash scripts/bench-vs-pytorch.sh [--lengths 1024,4096,16384] [--repeats 3] [--steps 3]
#                                    [--warmup 1] [--threads N]
#
# Not part of CI: the first run downloads about 700 MB from PyPI (torch 2.15.0 without its CUDA
# wheels, transformers, peft) into a venv under ~/.cache/longlora, reused afterwards. The runs
# alternate ours / PyTorch, --repeats times per (N, attention); --threads (default: every core)
# applies to both. See scripts/bench_vs_pytorch.py for what each side does.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TORCH=2.15.0 TRANSFORMERS=5.23.0 PEFT=0.21.2 ACCELERATE=1.15.0
VENV="${LONGLORA_BENCH_VENV:-$HOME/.cache/longlora/bench-torch-$TORCH}"
READY="$VENV/.ready-$TORCH-$TRANSFORMERS-$PEFT"

if [[ ! -f "$READY" ]]; then
    echo "setting up $VENV (once)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
    # torch's declared dependencies include ~3 GB of CUDA wheels a CPU run never loads: install
    # the wheel alone, its pure-Python dependencies, and stub libraries for the CUDA sonames.
    "${pip[@]}" --no-deps "torch==$TORCH"
    "${pip[@]}" filelock "typing-extensions>=4.13" sympy networkx jinja2 fsspec numpy
    "${pip[@]}" "transformers==$TRANSFORMERS"
    "${pip[@]}" --no-deps "peft==$PEFT" "accelerate==$ACCELERATE"
    "${pip[@]}" psutil pyyaml
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$VENV/bin/python" "$ROOT/scripts/torch_cuda_stubs.py" "$site/torch" "$VENV/cuda-stubs" >&2
    touch "$READY"
fi
export LD_LIBRARY_PATH="$VENV/cuda-stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

(cd "$ROOT" && cargo build --release -p harness --quiet)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" "$ROOT/scripts/bench_vs_pytorch.py" write-model "$WORK" >/dev/null 2>&1
echo "machine: $(nproc) cores, $(uptime)" >&2
"$VENV/bin/python" "$ROOT/scripts/bench_vs_pytorch.py" run --dir "$WORK" \
    --harness "$ROOT/target/release/harness" "$@"
