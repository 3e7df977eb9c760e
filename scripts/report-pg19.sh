#!/usr/bin/env bash
# The REPORT.md experiment on pg19-mini: pre-train the `small` preset at context 512, extend it to 2048
# with LongLoRA, and measure perplexity and passkey accuracy at 512, 1024 and 2048 before and after.
# Usage: bash scripts/report-pg19.sh [OUT_DIR]   (default runs/report; about 70 minutes on 2 cores)
# Set SKIP_PRETRAIN=1 to reuse OUT_DIR/small-512.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/pg19-mini
if [ ! -d "$data/train" ]; then
    echo "error: $data not found: this experiment needs ../shared/data/pg19-mini beside the repository" >&2
    exit 1
fi
out=${1:-runs/report}
mkdir -p "$out"
cargo build --release -p harness
harness=target/release/harness
base=$out/small-512
run=$out/small-2048

if [ "${SKIP_PRETRAIN:-0}" != 1 ]; then
    $harness pretrain --preset small --data "$data/train" --context 512 --steps 400 --batch-size 8 \
        --output "$base"
fi
$harness tokenize --data "$data/validation" --model "$base" --out "$out/validation.bin"

# Same number of scored tokens (64 Ki) at every context: non-overlapping windows.
evaluate() { # label, extra options...
    local label=$1
    shift
    for context in 512 1024 2048; do
        printf '%s\t%s\t' "$label" "$context"
        $harness eval --model "$base" --tokens "$out/validation.bin" --context $context \
            --stride $context --max-windows $((65536 / context)) --device cpu "$@"
    done
}
passkey() { # label, extra options...
    local label=$1
    shift
    printf '%s\t' "$label"
    $harness passkey --model "$base" --lengths 512,1024,2048 --trials 20 --seed 7 --no-bos \
        --device cpu "$@"
}

{
    evaluate base
    evaluate base-pi4 --rope-scale 4
} | tee "$out/eval-before.tsv"
passkey base | tee "$out/passkey-before.tsv"

extend() { # run directory, extra options...
    local dir=$1
    shift
    $harness finetune --model "$base" --data "$data/train" --context 2048 --lr 1e-3 \
        --warmup-steps 10 --device cpu --output "$dir" "$@"
}
extend "$run" --steps 150 --save-every 50
evaluate longlora --adapter "$run" | tee "$out/eval-after.tsv"
passkey longlora --adapter "$run" | tee "$out/passkey-after.tsv"

# Longer, and the dense-attention control.
extend "$run-600" --steps 600 --save-every 100
evaluate longlora600 --adapter "$run-600" | tee "$out/eval-after-600.tsv"
passkey longlora600 --adapter "$run-600" | tee "$out/passkey-after-600.tsv"
extend "$run-dense" --steps 150 --attn dense
evaluate dense150 --adapter "$run-dense" | tee "$out/eval-after-dense.tsv"

# The S²-Attn runs evaluated with the attention they were trained with.
for dir in "$run" "$run-600"; do
    printf '%s s2\t2048\t' "$dir"
    $harness eval --model "$base" --tokens "$out/validation.bin" --context 2048 --stride 2048 \
        --max-windows 32 --device cpu --adapter "$dir" --attn s2 --group-ratio 0.25
done | tee "$out/eval-after-s2.tsv"
