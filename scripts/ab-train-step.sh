#!/usr/bin/env bash
# Two harness builds' CPU training step side by side, alternating, on the default fine-tune (the
# built-in model extended to 1024 with LoRA r = 8, batch 1): the mean time of steps 3..STEPS from
# metrics.jsonl, per build and attention, and the ratio. For "did this change slow training down".
#   bash scripts/ab-train-step.sh BEFORE_HARNESS AFTER_HARNESS [REPEATS] [STEPS] [CONTEXT]
#   (3, 10, the default fine-tune's 1024)
set -euo pipefail
before=${1:?usage: ab-train-step.sh BEFORE_HARNESS AFTER_HARNESS [REPEATS] [STEPS]}
after=${2:?usage: ab-train-step.sh BEFORE_HARNESS AFTER_HARNESS [REPEATS] [STEPS]}
repeats=${3:-3}
steps=${4:-10}
context=()
[ -n "${5:-}" ] && context=(--context "$5")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(uptime)" >&2
for attn in s2 dense; do
    for ((r = 1; r <= repeats; r++)); do
        for side in before after; do
            bin=$before
            [ "$side" = after ] && bin=$after
            dir=$work/$attn-$side-$r
            "$bin" finetune --pretrain-steps 1 --steps "$steps" --attn "$attn" --device cpu \
                "${context[@]}" --output "$dir" > /dev/null 2>&1
            python3 - "$dir/metrics.jsonl" "$attn" "$side" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
seconds = (rows[-1]["elapsed_s"] - rows[1]["elapsed_s"]) / (len(rows) - 2)
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{seconds:.4f}")
PY
        done
    done
done | tee "$work/times.tsv"
python3 - "$work/times.tsv" <<'PY'
import collections, statistics, sys
times = collections.defaultdict(list)
for line in open(sys.argv[1]):
    attn, side, seconds = line.split()
    times[attn, side].append(float(seconds))
print("| attention | before (s/step, median) | after (s/step, median) | after / before |")
print("| --- | --- | --- | --- |")
for attn in ("s2", "dense"):
    b, a = statistics.median(times[attn, "before"]), statistics.median(times[attn, "after"])
    print(f"| {attn} | {b:.4f} | {a:.4f} | {a / b:.3f} |")
PY
