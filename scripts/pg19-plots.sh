#!/usr/bin/env bash
# The charts REPORT.md embeds, drawn from scripts/report-pg19.sh's results with `harness plot`.
# Usage: bash scripts/pg19-plots.sh OUT_DIR [FIGURES_DIR]     (default docs/figures)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/pg19-plots.sh OUT_DIR [FIGURES_DIR]}
figures=${2:-docs/figures}
if [ ! -d "$out/eval" ]; then
    echo "error: $out/eval not found: run scripts/report-pg19.sh $out first" >&2
    exit 1
fi
mkdir -p "$figures"
h=${HARNESS:-target/release/harness}
[ -n "${HARNESS:-}" ] || cargo build --release -p harness --quiet

# eval_series LABEL...: NAME=512:FILE,1024:FILE,2048:FILE for each model evaluated at all three.
eval_series() {
    local label
    for label in "$@"; do
        local files=() context
        for context in 512 1024 2048; do
            local file=$out/eval/$label-dense-$context.json
            [ -f "$file" ] && files+=("$context:$file")
        done
        [ ${#files[@]} -gt 0 ] && printf -- '--series\n%s=%s\n' "$label" "$(IFS=,; echo "${files[*]}")"
    done
}
# loss_series RUN...: NAME=RUN for each run directory with metrics.
loss_series() {
    local run
    for run in "$@"; do
        [ -f "$out/$run/metrics.jsonl" ] && printf -- '--series\n%s=%s\n' "$run" "$out/$run"
    done
}
plot() { # FILE KIND TITLE SERIES-LINES
    local file=$1 kind=$2 title=$3
    shift 3
    mapfile -t series < <("$@")
    if [ ${#series[@]} -eq 0 ]; then
        echo "skipped $file: no results yet" >&2
        return
    fi
    $h plot "$kind" --out "$figures/$file" --title "$title" "${series[@]}" ${extra[@]+"${extra[@]}"}
}

extra=()
plot pg19-attention.png eval "Perplexity by evaluation context: attention in training (full attention at eval)" \
    eval_series base base-pi4 s2-seed1 s2-seed2 dense-seed1 dense-seed2 s2-roll s2-noshift
plot pg19-trainable.png eval "Perplexity by evaluation context: trained parameters" \
    eval_series base s2-lora s2-seed1 s2-full dense-lora dense-seed1 dense-full
plot pg19-transfer.png eval "Perplexity by evaluation context: making S2-Attn training transfer" \
    eval_series base s2-seed1 s2-ratio0.125 s2-ratio0.5 s2-lr1e-4 s2-lr3e-4 s2-then-dense dense-seed1
plot pg19-bpe.png eval "Perplexity by evaluation context: a 4096-token BPE vocabulary" \
    eval_series bpe-base bpe-s2 bpe-dense bpe-s2-seed2 bpe-dense-seed2
extra=(--smooth 10)
plot pg19-loss.png loss "Training loss at 2048 (10-step mean)" \
    loss_series s2-seed1 dense-seed1 s2-noshift s2-lora s2-full
plot pg19-base-loss.png loss "Pre-training loss at 512 (10-step mean)" loss_series base-512 bpe-512
extra=(--smooth 100)
plot pg19-drill-loss.png loss "Training on passkey drills at 512 (100-step mean)" \
    loss_series drill-base drill-512
extra=()
passkey_series() {
    local name
    for name in "$@"; do
        [ -f "$out/passkey/$name.json" ] && printf -- '--series\n%s=%s\n' "$name" "$out/passkey/$name.json"
    done
}
# The first run's extensions, then the passkey-drill stage's S²-Attn-then-dense runs: a run
# directory holds whichever it ran.
plot pg19-passkey.png passkey "Passkey retrieval (20 trials per length)" \
    passkey_series pk-base drill-base drill-512 drill-dense drill-s2 drill-dense-full drill-s2-full \
    drill-s2-ratio0.5 drill-s2-head-lora+embed+norm drill-s2-then-dense-lora+embed+norm \
    drill-s2-head-r64 drill-s2-then-dense-r64 drill-s2-head-r64-seed2 drill-s2-then-dense-r64-seed2 \
    drill-dense-r64 drill-dense-r64-seed2 drill-s2-head-full drill-s2-then-dense-full
$h plot flops --out "$figures/paper-flops.png"
