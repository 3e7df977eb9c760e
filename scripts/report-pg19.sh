#!/usr/bin/env bash
# REPORT.md's pg19-mini experiments: pre-train the `small` preset at context 512 on pg19-mini plus
# passkey documents, extend it to 2048 with LongLoRA (RoPE factor 4) under each ablation, and measure
# perplexity (full attention at 512, 1024 and 2048, and the training attention at 2048) and passkey
# retrieval. Every step is skipped when its result exists, so an interrupted run continues where it
# stopped; OUT/costs.tsv records each step's wall time. `python3 scripts/pg19_tables.py OUT` prints
# the tables and `bash scripts/pg19-plots.sh OUT` draws the charts.
#
# Usage: bash scripts/report-pg19.sh [OUT_DIR]          (default runs/pg19)
#   BASE_STEPS (600)  pre-training steps of 8 × 512 tokens
#   EXT_STEPS  (150)  fine-tuning steps of 2048 tokens
#   EXT_DRILL_STEPS (2000) the passkey-drill stage's fine-tuning steps of 2048 tokens
#   DRILL_TAIL (100)  the passkey-drill stage's dense steps after S²-Attn (drill-s2-then-dense-*)
#   DRILL_SEED (1)    the seed of the passkey-drill stage's extensions; other than 1, their names
#                     end in -seedN (the base they start from is the same)
#   EVAL_TOKENS (65536) scored tokens per evaluation (the same at every context)
#   HARNESS    (target/release/harness, built first)  the harness binary to run
#   ONLY       (all)  space-separated stages to run: base passkey-base main attention ratio
#                     trainable transfer passkey-train passkey-drill bpe
#   RUNS       (all)  space-separated fine-tunes to run within those stages, e.g. "s2-noshift s2-lora"
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/pg19-mini
if [ ! -d "$data/train" ]; then
    echo "error: $data not found: this experiment needs ../shared/data/pg19-mini beside the repository" >&2
    exit 1
fi
out=${1:-runs/pg19}
base_steps=${BASE_STEPS:-600}
ext_steps=${EXT_STEPS:-150}
ext_drill_steps=${EXT_DRILL_STEPS:-2000}
drill_seed=${DRILL_SEED:-1}
seed_suffix=$([ "$drill_seed" = 1 ] || echo "-seed$drill_seed")
eval_tokens=${EVAL_TOKENS:-65536}
only=${ONLY:-base passkey-base main attention ratio trainable transfer passkey-train passkey-drill bpe}
runs=${RUNS:-}
mkdir -p "$out/done" "$out/eval" "$out/passkey"
out=$(cd "$out" && pwd)
data=$(cd "$data" && pwd)
if [ -z "${HARNESS:-}" ]; then
    cargo build --release -p harness
fi
h=${HARNESS:-$PWD/target/release/harness}

wanted() { [[ " $only " == *" $1 "* ]]; }

# step NAME COMMAND...: runs COMMAND once (a marker in OUT/done says it finished) and records its time.
step() {
    local name=$1
    shift
    [ -e "$out/done/$name" ] && return 0
    echo "== $name: $*" >&2
    local start=$SECONDS
    "$@"
    printf '%s\t%d\t%s\n' "$name" $((SECONDS - start)) "$(date -u +%FT%TZ)" >> "$out/costs.tsv"
    touch "$out/done/$name"
}
# to FILE COMMAND...: COMMAND's stdout into FILE, replaced only when COMMAND succeeds.
to() {
    local file=$1
    shift
    "$@" > "$file.partial"
    mv "$file.partial" "$file"
}

# Passkey documents in the models' own text: short ones for pre-training at 512, long ones for the
# extension to 2048 (the `harness passkey` prompt and answer, keys drawn from another stream).
corpus() { # dir, documents per length, lengths [EXTRA...]
    local dir=$1 count=$2 lengths=$3
    shift 3
    $h passkey-corpus --out "$dir" --count "$count" --lengths "$lengths" --seed 1 --overwrite "$@"
}
step corpus-512 corpus "$out/data/passkey-512" 1300 256,320,384,448,512
step corpus-2048 corpus "$out/data/passkey-2048" 400 768,1024,1280,1536,1792,2048
mkdir -p "$out/data/base-mix" "$out/data/ext-mix"
ln -sfn "$data/train" "$out/data/base-mix/pg19"
ln -sfn "$out/data/passkey-512" "$out/data/base-mix/passkey"
ln -sfn "$data/train" "$out/data/ext-mix/pg19"
ln -sfn "$out/data/passkey-2048" "$out/data/ext-mix/passkey"

# pretrain DIR EXTRA...: the `small` preset at 512 on pg19 + short passkey documents.
pretrain() {
    local dir=$1
    shift
    $h pretrain --preset small --data "$out/data/base-mix" --context 512 --steps "$base_steps" \
        --batch-size 8 --seed 1 --save-every 100 --device cpu --output "$dir" --overwrite "$@"
}
# evaluate LABEL MODEL [EXTRA...]: full attention at 512, 1024, 2048 on the same EVAL_TOKENS scored
# tokens of the validation books (non-overlapping windows), one JSON per context.
evaluate() {
    local label=$1 model=$2
    shift 2
    for context in 512 1024 2048; do
        step "eval-$label-$context" to "$out/eval/$label-dense-$context.json" \
            $h eval --model "$model" --tokens "$tokens" \
            --context $context --stride $context --max-windows $((eval_tokens / context)) --device cpu "$@"
    done
}
# evaluate_as_trained LABEL MODEL ATTN RATIO [EXTRA...]: the training attention at 2048.
evaluate_as_trained() {
    local label=$1 model=$2 attn=$3 ratio=$4
    shift 4
    step "eval-$label-$attn" to "$out/eval/$label-$attn-2048.json" \
        $h eval --model "$model" --tokens "$tokens" --context 2048 \
        --stride 2048 --max-windows $((eval_tokens / 2048)) --attn "$attn" --group-ratio "$ratio" --device cpu "$@"
}
passkey() { # LABEL MODEL [EXTRA...]
    local label=$1 model=$2
    shift 2
    step "passkey-$label" to "$out/passkey/$label.json" \
        $h passkey --model "$model" --lengths 512,1024,2048 --trials 20 --seed 7 --no-bos \
        --device cpu "$@"
}
# extend NAME MODEL [FINETUNE OPTIONS...]: LongLoRA 512 → 2048 on pg19 + long passkey documents, then
# its evaluations. The options given replace these defaults: s2 with group ratio 1/4,
# lora+embed+norm, lr 1e-3 after 10 warmup steps, EXT_STEPS steps, seed 1.
extend() {
    local name=$1 model=$2
    shift 2
    [ -z "$runs" ] || [[ " $runs " == *" $name "* ]] || return 0
    local -A option=([--attn]=s2 [--group-ratio]=0.25 [--lr]=1e-3 [--warmup-steps]=10
        [--steps]=$ext_steps [--seed]=1)
    local args=("$@") i
    for ((i = 0; i + 1 < ${#args[@]}; i += 2)); do option[${args[i]}]=${args[i + 1]}; done
    local options=()
    for i in "${!option[@]}"; do options+=("$i" "${option[$i]}"); done
    step "train-$name" $h finetune --model "$model" --data "$out/data/ext-mix" --context 2048 \
        --rope-factor 4 --device cpu --output "$out/$name" --overwrite "${options[@]}"
    evaluate "$name" "$model" --adapter "$out/$name"
    if [ "${option[--attn]}" != dense ]; then
        evaluate_as_trained "$name" "$model" "${option[--attn]}" "${option[--group-ratio]}" \
            --adapter "$out/$name"
    fi
}

base=$out/base-512
tokens=$out/validation-bytes.bin
if wanted base; then
    step pretrain-base pretrain "$base"
    step tokenize-base $h tokenize --data "$data/validation" --model "$base" \
        --out "$tokens"
    evaluate base "$base"
    evaluate base-pi4 "$base" --rope-factor 4
fi
wanted passkey-base && passkey base "$base"

if wanted main; then
    for seed in 1 2; do
        extend "s2-seed$seed" "$base" --seed $seed
        extend "dense-seed$seed" "$base" --attn dense --seed $seed
    done
    passkey s2-seed1 "$base" --adapter "$out/s2-seed1"
    passkey dense-seed1 "$base" --adapter "$out/dense-seed1"
fi
if wanted attention; then
    extend s2-roll "$base" --attn s2-roll
    extend s2-noshift "$base" --attn s2-noshift
fi
if wanted ratio; then
    extend s2-ratio0.125 "$base" --group-ratio 0.125
    extend s2-ratio0.5 "$base" --group-ratio 0.5
fi
if wanted trainable; then
    for attn in s2 dense; do
        extend "$attn-lora" "$base" --attn $attn --trainable lora
        extend "$attn-full" "$base" --attn $attn --trainable full
    done
fi
if wanted transfer; then
    # Lower learning rates: less drift from what the base learned under full attention.
    extend s2-lr1e-4 "$base" --lr 1e-4
    extend s2-lr3e-4 "$base" --lr 3e-4
    # S²-Attn for all but the last 10 steps, then dense attention: the S²-Attn run is merged into the
    # base and a second, dense adapter trained on top.
    dense_tail=$((ext_steps >= 20 ? 10 : 1))
    extend s2-head "$base" --steps $((ext_steps - dense_tail))
    step merge-s2-head $h merge --model "$base" --adapter "$out/s2-head" --out "$out/s2-head-merged" \
        --context 512
    extend s2-then-dense "$out/s2-head-merged" --attn dense --steps $dense_tail --warmup-steps 2
fi
if wanted passkey-train; then
    # Can the base learn to retrieve within 512 at all? More training on passkey documents alone
    # (every parameter, at 512, no interpolation), merged, then the passkey test.
    step train-pk-base $h finetune --model "$base" --data "$out/data/passkey-512" --context 512 \
        --rope-factor 1 --attn dense --trainable full --batch-size 8 --steps 80 --lr 1e-3 \
        --warmup-steps 5 --seed 1 --device cpu --output "$out/pk-base" --overwrite
    step merge-pk-base $h merge --model "$base" --adapter "$out/pk-base" --out "$out/pk-base-merged" \
        --context 512 --overwrite
    passkey pk-base "$out/pk-base-merged"
fi
if wanted passkey-drill; then
    # A base that retrieves within 512 first: the `tiny` preset pre-trained on passkey drills alone
    # (a copy every few dozen tokens), then every parameter on drills plus the test-style documents
    # (the test's distances), at 512; then LongLoRA to 2048 on long test-style documents plus drills.
    step corpus-drill corpus "$out/data/drill-512" 6000 512 --style drill
    mkdir -p "$out/data/drill-mix" "$out/data/drill-ext-mix"
    ln -sfn "$out/data/drill-512" "$out/data/drill-mix/drill"
    ln -sfn "$out/data/passkey-512" "$out/data/drill-mix/passkey"
    ln -sfn "$out/data/drill-512" "$out/data/drill-ext-mix/drill"
    ln -sfn "$out/data/passkey-2048" "$out/data/drill-ext-mix/passkey"
    step pretrain-drill $h pretrain --preset tiny --data "$out/data/drill-512" --context 512 \
        --steps 6000 --batch-size 2 --lr 2e-3 --seed 1 --save-every 1000 --device cpu \
        --output "$out/drill-base" --overwrite
    passkey drill-base "$out/drill-base"
    step train-drill-512 $h finetune --model "$out/drill-base" --data "$out/data/drill-mix" \
        --context 512 --rope-factor 1 --attn dense --trainable full --batch-size 2 --steps 2000 \
        --lr 1e-3 --warmup-steps 50 --seed 1 --device cpu --output "$out/drill-512" --overwrite
    step merge-drill-512 $h merge --model "$out/drill-base" --adapter "$out/drill-512" \
        --out "$out/drill-512-merged" --context 512 --overwrite
    passkey drill-512 "$out/drill-512-merged"
    # NAME ATTENTION TRAINABLE GROUP-RATIO [FINETUNE OPTIONS...]; drill-s2-ratio0.5 has groups of
    # 1,024, larger than the base's context, as in the ratio ablation above; drill-dense-r64 is the
    # dense counterpart of drill-s2-then-dense-r64 below (LoRA of rank 64 throughout).
    while read -r name attn trainable ratio options <&3; do
        read -ra options <<< "$options"
        name=$name$seed_suffix
        [ -z "$runs" ] || [[ " $runs " == *" $name "* ]] || continue
        step "train-$name" $h finetune --model "$out/drill-512-merged" \
            --data "$out/data/drill-ext-mix" --context 2048 --rope-factor 4 --attn "$attn" \
            --group-ratio "$ratio" --trainable "$trainable" --steps "$ext_drill_steps" --lr 1e-3 \
            --warmup-steps 10 --seed "$drill_seed" --device cpu --output "$out/$name" --overwrite \
            ${options[@]+"${options[@]}"}
        passkey "$name" "$out/drill-512-merged" --adapter "$out/$name"
    done 3<<'RUNS'
drill-s2 s2 lora+embed+norm 0.25
drill-dense dense lora+embed+norm 0.25
drill-s2-full s2 full 0.25
drill-dense-full dense full 0.25
drill-s2-ratio0.5 s2 lora+embed+norm 0.5
drill-dense-r64 dense lora+embed+norm 0.25 --lora-rank 64 --lora-alpha 128
RUNS
    # S²-Attn for all but the last DRILL_TAIL steps, merged, then those steps with dense attention
    # and a fresh adapter on top (the transfer stage's recipe for perplexity), per trainable set:
    # NAME TRAINABLE [FINETUNE OPTIONS...]; r64 is LongLoRA's set with LoRA of rank 64, not 8.
    tail=${DRILL_TAIL:-100}
    while read -r label trainable options <&3; do
        read -ra options <<< "$options"
        name=drill-s2-then-dense-$label$seed_suffix
        [ -z "$runs" ] || [[ " $runs " == *" $name "* ]] || continue
        head=drill-s2-head-$label$seed_suffix
        step "train-$head" $h finetune --model "$out/drill-512-merged" \
            --data "$out/data/drill-ext-mix" --context 2048 --rope-factor 4 --attn s2 \
            --trainable "$trainable" --steps $((ext_drill_steps - tail)) --lr 1e-3 \
            --warmup-steps 10 --seed "$drill_seed" --device cpu --output "$out/$head" --overwrite \
            ${options[@]+"${options[@]}"}
        step "merge-$head" $h merge --model "$out/drill-512-merged" --adapter "$out/$head" \
            --out "$out/$head-merged" --context 512 --overwrite
        step "train-$name" $h finetune --model "$out/$head-merged" \
            --data "$out/data/drill-ext-mix" --context 2048 --rope-factor 4 --attn dense \
            --trainable "$trainable" --steps "$tail" --lr 1e-3 --warmup-steps 2 --seed "$drill_seed" \
            --device cpu --output "$out/$name" --overwrite ${options[@]+"${options[@]}"}
        passkey "$head" "$out/drill-512-merged" --adapter "$out/$head"
        passkey "$name" "$out/$head-merged" --adapter "$out/$name"
    done 3<<'TAILS'
lora+embed+norm lora+embed+norm
full full
r64 lora+embed+norm --lora-rank 64 --lora-alpha 128
TAILS
fi
if wanted bpe; then
    # A subword vocabulary, so that 2048 tokens span more text; the same recipe otherwise.
    step tokenizer $h train-tokenizer --data "$data/train" --vocab-size 4096 --out "$out/bpe-4096" \
        --overwrite
    bpe=$out/bpe-512
    step pretrain-bpe pretrain "$bpe" --tokenizer "$out/bpe-4096"
    step tokenize-bpe $h tokenize --data "$data/validation" --model "$bpe" \
        --out "$out/validation-bpe.bin"
    tokens=$out/validation-bpe.bin
    evaluate bpe-base "$bpe"
    extend bpe-s2 "$bpe"
    extend bpe-dense "$bpe" --attn dense
    extend bpe-s2-seed2 "$bpe" --seed 2
    extend bpe-dense-seed2 "$bpe" --attn dense --seed 2
fi
echo "done: $out (tables: python3 scripts/pg19_tables.py $out; charts: bash scripts/pg19-plots.sh $out)" >&2
