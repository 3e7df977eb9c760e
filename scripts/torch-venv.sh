#!/usr/bin/env bash
# Prepares (once) the Python environment the PyTorch comparisons run in and prints its path as the
# last line: torch 2.15.0 without its CUDA wheels, transformers, peft, in a venv under
# ~/.cache/longlora (LONGLORA_BENCH_VENV overrides it). The first run downloads about 700 MB from
# PyPI. Callers put "$VENV/cuda-stubs" on LD_LIBRARY_PATH (see scripts/torch_cuda_stubs.py).
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
echo "$VENV"
