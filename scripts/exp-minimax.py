#!/usr/bin/env python3
"""Fits the polynomial of the CPU's f32 exp (src/ops/simd.rs, `POLY`): p(r) ~ e^r on the
Cody-Waite remainder's range |r| <= ln2/2, degree 6, with p(r) = 1 + r + c2 r^2 + ... + c6 r^6 (the
first two terms exact in f32), minimising the largest relative error (Remez exchange). Prints the coefficients highest first, rounded to f32 as the code
holds them, and the fit's error before and after that rounding. Plain Python, no packages:
`python3 scripts/exp-minimax.py`."""
import math
import struct

HALF_RANGE = 0.3466  # ln2/2 = 0.34657..., rounded up
DEGREE = 6
GRID = [-HALF_RANGE + 2 * HALF_RANGE * j / 20000 for j in range(20001)]


def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def solve(rows, rhs):
    """Gaussian elimination with partial pivoting."""
    n = len(rhs)
    m = [row[:] + [rhs[i]] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def relative_error(coeffs, r):
    """coeffs[k] multiplies r^(k+2); the first two terms are 1 + r."""
    p = 1.0 + r + sum(c * r ** (k + 2) for k, c in enumerate(coeffs))
    return (p - math.exp(r)) / math.exp(r)


def remez():
    free = DEGREE - 1
    points = [HALF_RANGE * math.cos(math.pi * (free - i) / free) for i in range(free + 1)]
    for _ in range(30):
        # p(x_i) - e^x_i = (-1)^i E e^x_i at every reference point.
        rows = [[x ** k for k in range(2, DEGREE + 1)] + [-((-1) ** i) * math.exp(x)]
                for i, x in enumerate(points)]
        solution = solve(rows, [math.exp(x) - 1.0 - x for x in points])
        coeffs = solution[:free]
        errors = [relative_error(coeffs, r) for r in GRID]
        # The new reference: the largest error of each run of one sign.
        runs, run = [], [0]
        for j in range(1, len(GRID)):
            if (errors[j] >= 0) == (errors[run[0]] >= 0):
                run.append(j)
            else:
                runs.append(run)
                run = [j]
        runs.append(run)
        peaks = [max(run, key=lambda j: abs(errors[j])) for run in runs]
        peaks = sorted(sorted(peaks, key=lambda j: -abs(errors[j]))[: free + 1])
        points = [GRID[j] for j in peaks]
    return coeffs


def main():
    coeffs = remez()
    rounded = [f32(c) for c in coeffs]
    worst = max(abs(relative_error(coeffs, r)) for r in GRID)
    worst_rounded = max(abs(relative_error(rounded, r)) for r in GRID)
    print(f"largest relative error: {worst:.3e} (coefficients rounded to f32: {worst_rounded:.3e})")
    print("highest first: [" + ", ".join(repr(c) for c in reversed(rounded)) + ", 1.0, 1.0]")


if __name__ == "__main__":
    main()
