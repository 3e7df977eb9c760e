#!/usr/bin/env python3
"""PyTorch's CPU kernels alone on the training step's shapes, as GFLOP/s by DESIGN §3's count, for
comparing with `attention_probe` and `gemm_probe` (run them through scripts/kernels-vs-pytorch.sh).

  attention  causal `scaled_dot_product_attention`, batch 1, 4 heads of 64 (the bench model's),
             forward then backward, best of --runs; forward 4·D·H·N(N+1)/2 FLOPs, backward 2.5x
  matmul     `x @ w.t()` and `dy @ w` on gemm_probe's shapes (d = 256, MLP 688, vocabulary 258) at
             --rows rows, best of --runs
"""

import argparse
import time

import torch

HEADS, HEAD_DIM = 4, 64
# (name, k, n, transposed weight): as gemm_probe names them.
PRODUCTS = [
    ("nt q/k/v/o", 256, 256, True),
    ("nt gate/up", 256, 688, True),
    ("nt down", 688, 256, True),
    ("nt lm head", 256, 258, True),
    ("nn q/k/v/o", 256, 256, False),
    ("nn gate/up", 688, 256, False),
    ("nn down", 256, 688, False),
]


def best_time(f, runs: int) -> float:
    f()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def attention(n: int, runs: int) -> None:
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, HEADS, n, HEAD_DIM)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    forward, backward = float("inf"), float("inf")
    for _ in range(runs + 1):
        start = time.perf_counter()
        out = sdpa(q, k, v, is_causal=True)
        middle = time.perf_counter()
        out.backward(dout)
        end = time.perf_counter()
        forward, backward = min(forward, middle - start), min(backward, end - middle)
    flops = 4 * HEAD_DIM * HEADS * n * (n + 1) / 2
    print(f"PyTorch N={n} dense heads={HEADS}x{HEAD_DIM}: forward {forward:.4f} s "
          f"({flops / forward / 1e9:.1f} GFLOP/s), backward {backward:.4f} s "
          f"({2.5 * flops / backward / 1e9:.1f} GFLOP/s)")


def matmul(rows: int, runs: int) -> None:
    print(f"PyTorch rows {rows}, best of {runs}, {torch.get_num_threads()} threads")
    for name, k, n, transposed in PRODUCTS:
        x = torch.randn(rows, k)
        w = torch.randn(n, k) if transposed else torch.randn(k, n)
        f = (lambda: x @ w.t()) if transposed else (lambda: x @ w)
        print(f"| {name} | {rows} | {k} | {n} | {2 * rows * k * n / best_time(f, runs) / 1e9:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["attention", "matmul"])
    p.add_argument("--length", type=int, required=True, help="sequence length, or rows of x")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    if args.what == "attention":
        attention(args.length, args.runs)
    else:
        matmul(args.length, args.runs)


if __name__ == "__main__":
    main()
