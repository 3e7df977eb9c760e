#!/usr/bin/env python3
"""PyTorch's GPU kernels at the shapes of our GPU benches, for side-by-side ratios.

Attention (benches/attention_kernels.rs): batch 1, 16 heads of 128, bf16, N = 8k, 16k, 32k, through
SDPA with only the flash backend allowed (FlashAttention-2 in PyTorch's build).
  dense: causal attention over the whole sequence.
  s2:    causal attention within groups of G = N/4 on every head, one SDPA call over the
         (N/G groups x heads) batch: FA2's time for S²-Attn's work without any rolling or copying,
         so the fastest PyTorch can do it. Ours also shifts half the heads by G/2 (DESIGN §2), which
         leaves it slightly less work (about 4.3x less than dense instead of 4x): the ratio compares
         times, and each TFLOP/s uses its own exact count of unmasked pairs (DESIGN §3).
Backward is autograd.grad of the output with a random dO (no accumulation into .grad), timed alone.

Linear (benches/linear_kernels.rs): 16384 rows, 4096 -> 4096, bf16: x @ W.T, dy @ W (cuBLAS through
torch.matmul), and the LoRA forward x @ W.T + s * (x @ A.T) @ B.T at rank 8 as peft computes it.

Times are triton.testing.do_bench medians (CUDA events, L2 flushed between runs). Prints one table,
and writes the same rows as JSON to the path given as the first argument, if any.
"""

import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

HEADS = 16
HEAD_DIM = 128
LENGTHS = [8192, 16384, 32768]
ROWS, IN_FEATURES, OUT_FEATURES, RANK = 16384, 4096, 4096, 8


def median_ms(fn):
    return do_bench(fn, warmup=100, rep=500, return_mode="median")


def causal_pairs(length):
    return length * (length + 1) // 2


def attention_rows():
    rows = []
    for n in LENGTHS:
        for mode in ["dense", "s2"]:
            if mode == "dense":
                batch, length = 1, n
            else:
                batch, length = 4, n // 4
            shape = (batch, HEADS, length, HEAD_DIM)
            q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                forward = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                backward = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
            flops = 4.0 * HEAD_DIM * HEADS * batch * causal_pairs(length)
            rows.append({"what": f"attention {mode} N={n}", "pass": "forward", "ms": forward, "tflops": flops / forward / 1e9})
            rows.append({"what": f"attention {mode} N={n}", "pass": "backward", "ms": backward, "tflops": 2.5 * flops / backward / 1e9})
            del q, k, v, dout, out
    return rows


def linear_rows():
    scale = 1.0 / IN_FEATURES**0.5
    x = torch.randn(ROWS, IN_FEATURES, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(ROWS, OUT_FEATURES, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(OUT_FEATURES, IN_FEATURES, device="cuda", dtype=torch.bfloat16) * scale
    a = torch.randn(RANK, IN_FEATURES, device="cuda", dtype=torch.bfloat16) * scale
    b = torch.randn(OUT_FEATURES, RANK, device="cuda", dtype=torch.bfloat16) * 0.3
    flops = 2.0 * ROWS * IN_FEATURES * OUT_FEATURES
    cases = [
        ("forward", "torch x @ W.T", lambda: x @ w.t()),
        ("forward", "torch LoRA r=8 (peft's three products)", lambda: x @ w.t() + 2.0 * ((x @ a.t()) @ b.t())),
        ("backward_input", "torch dy @ W", lambda: dy @ w),
    ]
    rows = []
    for pass_name, what, fn in cases:
        ms = median_ms(fn)
        rows.append({"what": f"linear 16384x4096x4096 {what}", "pass": pass_name, "ms": ms, "tflops": flops / ms / 1e9})
    return rows


def main():
    torch.manual_seed(0)
    device = torch.cuda.get_device_name(0)
    print(f"{device}, torch {torch.__version__}, do_bench medians", flush=True)
    rows = attention_rows() + linear_rows()
    print(f"| what | pass | ms | TFLOP/s |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['what']} | {r['pass']} | {r['ms']:.3f} | {r['tflops']:.1f} |")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
