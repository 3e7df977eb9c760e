"""Markdown tables of scripts/report-pg19.sh's results: perplexity of every model at each context,
passkey accuracy, and what each step cost. Standard library only.

    python3 scripts/pg19_tables.py OUT_DIR
"""

import json
import sys
from pathlib import Path

CONTEXTS = (512, 1024, 2048)


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def cell(result):
    if result is None:
        return "–"
    return f"{result['mean_loss']:.3f} ({result['perplexity']:.2f})"


def labels(out):
    """Model labels in the order their first evaluation was written."""
    seen = {}
    for path in sorted((out / "eval").glob("*-dense-512.json"), key=lambda p: p.stat().st_mtime):
        seen.setdefault(path.name[: -len("-dense-512.json")], None)
    return list(seen)


TRAINING_ATTENTION = ("s2", "s2-roll", "s2-noshift")


def training_attention(out, label):
    """The evaluation at 2048 with the attention the model was trained with, if it has one."""
    for attn in TRAINING_ATTENTION:
        result = load(out / "eval" / f"{label}-{attn}-2048.json")
        if result is not None:
            return attn, result
    return None, None


def perplexity_table(out):
    print("| model | 512 | 1024 | 2048 | 2048, training attention |")
    print("| --- | --- | --- | --- | --- |")
    for label in labels(out):
        row = [cell(load(out / "eval" / f"{label}-dense-{c}.json")) for c in CONTEXTS]
        attn, result = training_attention(out, label)
        row.append(f"{cell(result)} [{attn}]" if attn else "–")
        print(f"| {label} | " + " | ".join(row) + " |")


def passkey_cell(result):
    """Correct/trials, and the answers' nats per token where the run reported them."""
    cell = f"{result['correct']}/{result['trials']}"
    if "answer_nats" in result:
        cell += f" ({result['answer_nats']:.2f})"
    return cell


def passkey_table(out):
    files = sorted((out / "passkey").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return
    print()
    print("| model | " + " | ".join(str(c) for c in CONTEXTS) + " |")
    print("| --- | " + " | ".join("---" for _ in CONTEXTS) + " |")
    for path in files:
        by_length = {r["length"]: r for r in load(path)["results"]}
        row = [passkey_cell(by_length[c]) if c in by_length else "–" for c in CONTEXTS]
        print(f"| {path.stem} | " + " | ".join(row) + " |")


def costs_table(out):
    costs = out / "costs.tsv"
    if not costs.exists():
        return
    print()
    print("| step | seconds | finished (UTC) |")
    print("| --- | --- | --- |")
    total = 0
    for line in costs.read_text().splitlines():
        name, seconds, finished = line.split("\t")
        total += int(seconds)
        print(f"| {name} | {seconds} | {finished} |")
    print(f"| all | {total} | |")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/pg19_tables.py OUT_DIR")
    out = Path(sys.argv[1])
    if not (out / "eval").is_dir():
        sys.exit(f"error: {out}/eval not found: run scripts/report-pg19.sh {out} first")
    perplexity_table(out)
    passkey_table(out)
    costs_table(out)


if __name__ == "__main__":
    main()
