#!/usr/bin/env python3
"""Side-by-side training step: our `harness finetune` against PyTorch eager + peft.

On the CPU (the default), run it through scripts/bench-vs-pytorch.sh, which prepares the Python
environment and builds the harness. With `--device cuda` both sides run on GPU 0: ours with its
kernels (bf16 activations, f32 trained tensors), PyTorch under bf16 autocast with f32 weights (the
usual mixed-precision recipe; SDPA then takes its flash backend); scripts/gpu-run.sh runs it so
on a wider model (`write-model --hidden 2048 ...`). Subcommands:

  write-model DIR          a random Hugging Face Llama (the built-in model's shape) and a text file
  torch-steps ...          PyTorch steps in this process; prints one JSON line of step times
  run ...                  both sides interleaved, several runs each; prints a markdown table

Both sides train the same model on the same bytes: LoRA r = 8, alpha = 16 on q, k, v, o; embeddings
and norms trainable; AdamW lr 2e-5, no weight decay; gradients clipped to norm 1.0; one sequence of
N tokens per step; linear RoPE interpolation by ceil(N / 256). S²-Attn on the PyTorch side is
LongLoRA's non-flash construction: half of the heads rolled by G/2 along the sequence, the
sequence folded into groups of G, causal SDPA inside each group, then unfolded and rolled back.
"""

import argparse
import json
import math
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

ORIGINAL_CONTEXT = 256
VOCAB = 258  # bytes, BOS 256, EOS 257 (the harness's byte-level vocabulary)


def write_model(out: pathlib.Path, hidden: int, layers: int, heads: int, intermediate: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=ORIGINAL_CONTEXT,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=256,
        eos_token_id=257,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).float().save_pretrained(out / "model", safe_serialization=True)
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
             for _ in range(5000)]
    text = " ".join(rng.choice(words) for _ in range(200_000))
    (out / "data.txt").write_text(text)


def s2_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """LongLoRA's shifted sparse attention for [batch, heads, N, D] tensors, through SDPA."""
    import torch
    import torch.nn.functional as F

    b, h, n, d = query.shape
    g = int(n * 0.25)

    def fold(x):
        half = x.shape[1] // 2
        shifted = torch.cat((x[:, :half], x[:, half:].roll(-g // 2, dims=2)), dim=1)
        return shifted.reshape(b, x.shape[1], n // g, g, d).transpose(1, 2).reshape(-1, x.shape[1], g, d)

    out = F.scaled_dot_product_attention(fold(query), fold(key), fold(value), is_causal=True,
                                         scale=scaling)
    out = out.reshape(b, n // g, h, g, d).transpose(1, 2).reshape(b, h, n, d)
    half = h // 2
    out = torch.cat((out[:, :half], out[:, half:].roll(g // 2, dims=2)), dim=1)
    return out.transpose(1, 2).contiguous(), None


def torch_steps(args) -> None:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface, AutoConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    AttentionInterface.register("s2_longlora", s2_attention)
    model_dir = pathlib.Path(args.dir) / "model"
    config = AutoConfig.from_pretrained(model_dir)
    factor = float(math.ceil(args.context / ORIGINAL_CONTEXT))
    config.rope_parameters = {"rope_type": "linear", "factor": factor, "rope_theta": 10000.0}
    attn = "sdpa" if args.attn == "dense" else "s2_longlora"
    model = LlamaForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32,
                                             attn_implementation=attn)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora).to(args.device)
    for name, p in model.named_parameters():
        if "embed_tokens" in name or "norm" in name:
            p.requires_grad_(True)
    model.train()
    on_gpu = args.device == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0)
    data = torch.tensor(list((pathlib.Path(args.dir) / "data.txt").read_bytes()), dtype=torch.long)
    rng = random.Random(args.seed)
    times = []
    for _ in range(args.steps):
        start = rng.randrange(len(data) - args.context - 1)
        window = data[start:start + args.context + 1].unsqueeze(0).to(args.device)
        began = time.perf_counter()
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=on_gpu):
            logits = model(input_ids=window[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), window[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    print(json.dumps({"step_s": times, "loss": loss.item(),
                      "trained": sum(p.numel() for p in params)}))


def run_measured(cmd, env) -> tuple[str, int]:
    """Runs `cmd`, returning its stdout and its peak resident memory in MiB."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{err[-3000:]}")
        out.seek(0)
        return out.read(), usage.ru_maxrss // 1024


def ours_once(args, n, attn, env) -> tuple[list, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.harness, "finetune", "--model", f"{args.dir}/model", "--data",
               f"{args.dir}/data.txt", "--context", str(n), "--attn", attn, "--steps",
               str(args.steps), "--device", args.device, "--output", tmp, "--overwrite"]
        _, rss = run_measured(cmd, env)
        elapsed = [json.loads(line)["elapsed_s"]
                   for line in pathlib.Path(tmp, "metrics.jsonl").read_text().splitlines()]
    return [b - a for a, b in zip([0.0] + elapsed, elapsed)], rss


def torch_once(args, n, attn, env) -> tuple[list, int]:
    cmd = [sys.executable, __file__, "torch-steps", "--dir", args.dir, "--context", str(n),
           "--attn", attn, "--steps", str(args.steps), "--threads", str(args.threads),
           "--device", args.device]
    out, rss = run_measured(cmd, env)
    return json.loads(out.strip().splitlines()[-1])["step_s"], rss


def run(args) -> None:
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads),
               MATMUL_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    rows = []
    for n in args.lengths:
        for attn in ("dense", "s2"):
            result = {"ours": ([], []), "torch": ([], [])}
            for rep in range(args.repeats):
                for side, once in (("ours", ours_once), ("torch", torch_once)):
                    steps, rss = once(args, n, attn, env)
                    timed = steps[args.warmup:]
                    result[side][0].append(timed)
                    result[side][1].append(rss)
                    print(f"N={n} {attn} run {rep + 1} {side}: steps "
                          + " ".join(f"{s:.3f}" for s in steps) + f" s, peak {rss} MiB",
                          file=sys.stderr, flush=True)
            rows.append((n, attn, result))
    print(table(rows))


def table(rows) -> str:
    lines = ["| N | attention | ours s/step (best, median) | PyTorch s/step (best, median) "
             "| ours tokens/s | PyTorch tokens/s | ours vs PyTorch | ours peak RSS | "
             "PyTorch peak RSS |", "| --- " * 9 + "|"]
    for n, attn, result in rows:
        stats = {}
        for side, (runs, rss) in result.items():
            best = min(min(r) for r in runs)
            median = statistics.median(s for r in runs for s in r)
            stats[side] = (best, median, max(rss))
        (ob, om, orss), (tb, tm, trss) = stats["ours"], stats["torch"]
        lines.append(f"| {n} | {attn} | {ob:.3f}, {om:.3f} | {tb:.3f}, {tm:.3f} | {n / ob:,.0f} | "
                     f"{n / tb:,.0f} | {tb / ob:.2f}x | {orss} MiB | {trss} MiB |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-model")
    w.add_argument("dir", type=pathlib.Path)
    w.add_argument("--hidden", type=int, default=256)
    w.add_argument("--layers", type=int, default=4)
    w.add_argument("--heads", type=int, default=4)
    w.add_argument("--intermediate", type=int, default=688)
    t = sub.add_parser("torch-steps")
    t.add_argument("--dir", required=True)
    t.add_argument("--context", type=int, required=True)
    t.add_argument("--attn", choices=["dense", "s2"], required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--harness", required=True)
    r.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1024, 4096, 16384])
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--steps", type=int, default=3, help="steps per run, warm-up included")
    r.add_argument("--warmup", type=int, default=1, help="steps per run not timed")
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    if args.command == "write-model":
        write_model(args.dir, args.hidden, args.layers, args.heads, args.intermediate)
    elif args.command == "torch-steps":
        torch_steps(args)
    else:
        if args.steps <= args.warmup:
            sys.exit("--steps must exceed --warmup")
        run(args)


if __name__ == "__main__":
    main()
