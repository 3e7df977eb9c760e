#!/usr/bin/env bash
# GEMM crates on our projection shapes (scripts/gemm-crates, outside the workspace, so CI never
# builds it): matrixmultiply against `gemm` and `faer` (longlora's own GEMM: benches/gemm_probe.rs).
#   bash scripts/gemm-crates.sh [N]      (default 4096 tokens)
set -euo pipefail
cd "$(dirname "$0")/gemm-crates"
cargo build --release --quiet
exec target/release/gemm-crates "$@"
