#!/usr/bin/env python3
"""The kernel report's tables, from what scripts/kernel-report.sh gathers: ptxas's resource report and
nvdisasm's SASS for each architecture, and the launch configurations that examples/kernel_launches.rs
records from the launch functions. Prints markdown; exits 1 when a kernel spills registers, asks for
more shared memory than a block may have, or declares to the emulator a static shared memory other than
ptxas's (the emulator could then accept launches a GPU refuses).

Occupancy follows the CUDA occupancy calculator: blocks per SM are limited by warps (64 per SM), blocks
(32), registers (64K per SM in four partitions of 16K, allocated per warp in units of 256) and shared
memory (static + dynamic + 1 KB the driver reserves per block, in units of 128 bytes).

The "main loop" of a kernel is the address range of a backward branch (a loop) in its SASS: the loop
with the most HMMA, the innermost of equals; without HMMA, the loop with the most instructions; without
a loop, the whole kernel. Counts are static (an instruction in a nested loop counts once); instructions
predicated on the constant false (@!PT) never run and are left out.
"""

import argparse
import collections
import math
import re
import sys

ARCHS = ("80", "90")
# Shared memory: per SM, and the most one block may have (with the opt-in attribute).
SHARED_PER_SM = {"80": 164 * 1024, "90": 228 * 1024}
SHARED_PER_BLOCK = {"80": 163 * 1024, "90": 227 * 1024}
RESERVED_SHARED_PER_BLOCK = 1024
MAX_WARPS, MAX_BLOCKS = 64, 32
REGISTERS_PER_PARTITION, PARTITIONS = 16 * 1024, 4

# Column name -> predicate on the SASS opcode (mnemonic with its modifiers).
MIX = collections.OrderedDict(
    [
        ("HMMA", lambda op: op.startswith("HMMA")),
        ("LDSM", lambda op: op.startswith("LDSM")),
        ("LDGSTS", lambda op: op.startswith("LDGSTS")),
        ("LDG", lambda op: op.startswith("LDG.") and not op.startswith("LDGSTS") and ".U16" not in op),
        ("LDG.U16", lambda op: op.startswith("LDG.") and ".U16" in op),
        ("STG", lambda op: op.startswith("STG")),
        ("STS", lambda op: op.startswith("STS")),
        ("LDS", lambda op: op.startswith("LDS") and not op.startswith("LDSM")),
        ("EX2", lambda op: op.startswith("MUFU.EX2")),
        ("RCP", lambda op: op.startswith("MUFU.RCP")),
        # Every 32-bit integer division or remainder starts with a round-up conversion to float.
        ("IDIV", lambda op: op.startswith("I2F") and ".RP" in op),
        ("BAR", lambda op: op.startswith("BAR")),
    ]
)


def parse_ptxas(path):
    """kernel -> {registers, spill_stores, spill_loads, static_shared}"""
    kernels, current = {}, None
    for line in open(path):
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = kernels.setdefault(m.group(1), {"static_shared": 0})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            m = re.search(r"(\d+) bytes smem", line)
            current["static_shared"] = int(m.group(1)) if m else 0
    return kernels


INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
LABEL = re.compile(r"^(\.L_x_\d+):")
BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(path):
    """kernel -> list of (address, opcode, operands), and kernel -> {label: address}."""
    functions, labels, current, pending = {}, {}, None, []
    for line in open(path):
        m = re.match(r"\s*\.text\.(\w+):", line) or re.match(r"^(\w+):\s*$", line)
        if m and not line.startswith(".L"):
            name = m.group(1)
            if name not in functions:
                functions[name], labels[name], current, pending = [], {}, name, []
            continue
        if current is None:
            continue
        m = LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = INSTRUCTION.search(line)
        if m:
            address = int(m.group(1), 16)
            for label in pending:
                labels[current][label] = address
            pending = []
            # nvcc puts never-executed "@!PT LDS RZ, [RZ]" placeholders before every LDGSTS.
            if (m.group(2) or "").strip() != "@!PT":
                functions[current].append((address, m.group(3), m.group(4)))
    return functions, labels


def main_loop(instructions, labels):
    """The (first, last) address of the kernel's main loop, and whether it is a loop."""
    loops = []
    for address, opcode, operands in instructions:
        if not opcode.startswith("BRA"):
            continue
        m = BRANCH_TARGET.search(operands)
        if m and labels.get(m.group(1), address + 1) <= address:
            loops.append((labels[m.group(1)], address))
    if not loops:
        return (instructions[0][0], instructions[-1][0]), False

    def weight(loop):
        body = [op for a, op, _ in instructions if loop[0] <= a <= loop[1]]
        hmma = sum(op.startswith("HMMA") for op in body)
        # Most HMMA first, then the innermost (shortest); loops without HMMA: the largest.
        return (hmma, -len(body)) if hmma else (0, len(body))

    return max(loops, key=weight), True


def mix(instructions, span):
    counts = collections.Counter()
    for address, opcode, _ in instructions:
        if span[0] <= address <= span[1]:
            for column, matches in MIX.items():
                if matches(opcode):
                    counts[column] += 1
    return counts


def parse_launches(path):
    """kernel -> list of (cases, threads, dynamic_shared), one per distinct configuration, and
    kernel -> the static shared memory its emulator entry point declares."""
    configs, declared = collections.OrderedDict(), {}
    for line in open(path):
        case, kernel, _grid, threads, dynamic, static = line.rstrip("\n").split("\t")
        key = (kernel, int(threads), int(dynamic))
        configs.setdefault(key, []).append(case)
        declared[kernel] = int(static)
    launches = collections.OrderedDict()
    for (kernel, threads, dynamic), cases in configs.items():
        launches.setdefault(kernel, []).append((", ".join(dict.fromkeys(cases)), threads, dynamic))
    return launches, declared


def occupancy(arch, registers, threads, shared):
    """(blocks, warps) per SM, or (0, 0) when the launch cannot run."""
    warps = math.ceil(threads / 32)
    if threads == 0 or shared > SHARED_PER_BLOCK[arch] or threads > 1024:
        return 0, 0
    by_warps = MAX_WARPS // warps
    registers_per_warp = math.ceil(registers * 32 / 256) * 256
    by_registers = PARTITIONS * (REGISTERS_PER_PARTITION // registers_per_warp) // warps
    shared_per_block = math.ceil((shared + RESERVED_SHARED_PER_BLOCK) / 128) * 128
    by_shared = SHARED_PER_SM[arch] // shared_per_block
    blocks = min(MAX_BLOCKS, by_warps, by_registers, by_shared)
    return blocks, blocks * warps


def pair(values):
    return " / ".join(str(v) for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for arch in ARCHS:
        parser.add_argument(f"--ptxas-{arch}", required=True)
        parser.add_argument(f"--sass-{arch}", required=True)
    parser.add_argument("--launches", required=True)
    args = parser.parse_args()

    ptxas = {arch: parse_ptxas(getattr(args, f"ptxas_{arch}")) for arch in ARCHS}
    sass = {arch: parse_sass(getattr(args, f"sass_{arch}")) for arch in ARCHS}
    launches, declared = parse_launches(args.launches)
    kernels = sorted(ptxas["80"])
    problems = []

    print("| kernel | case | threads | smem static + dynamic (B) | registers | spill st / ld (B) "
          "| blocks / SM | warps / SM |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kernel in kernels:
        resources = [ptxas[arch][kernel] for arch in ARCHS]
        spills = [f"{r['spill_stores']}+{r['spill_loads']}" for r in resources]
        if any(r["spill_stores"] or r["spill_loads"] for r in resources):
            problems.append(f"{kernel} spills registers (sm_80 / sm_90: {pair(spills)})")
        if kernel in declared and any(r["static_shared"] != declared[kernel] for r in resources):
            problems.append(f"{kernel} declares {declared[kernel]} B of static shared memory to the emulator "
                            f"(LONGLORA_EMU_ENTRY), ptxas reports {pair(r['static_shared'] for r in resources)}")
        configs = launches.get(kernel)
        if not configs:
            problems.append(f"{kernel} is not launched by examples/kernel_launches.rs")
            configs = [("(not launched)", 0, 0)]
        for cases, threads, dynamic in configs:
            static = pair(sorted({r["static_shared"] for r in resources}))
            occupancies = [
                occupancy(arch, r["registers"], threads, r["static_shared"] + dynamic)
                for arch, r in zip(ARCHS, resources)
            ]
            if threads and any(blocks == 0 for blocks, _ in occupancies):
                problems.append(f"{kernel} ({cases}) cannot launch: {threads} threads, {dynamic} B dynamic")
            print(f"| `{kernel}` | {cases} | {threads} | {static} + {dynamic} "
                  f"| {pair(r['registers'] for r in resources)} | {pair(spills)} "
                  f"| {pair(b for b, _ in occupancies)} | {pair(w for _, w in occupancies)} |")

    print()
    print("SASS instruction mix of each kernel's main loop (static counts, sm_80 / sm_90; "
          "IDIV = 32-bit integer division sequences, each also one RCP):")
    print()
    print("| kernel | loop | " + " | ".join(MIX) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in MIX) + " |")
    for kernel in kernels:
        counts, spans = [], []
        for arch in ARCHS:
            functions, labels = sass[arch]
            span, is_loop = main_loop(functions[kernel], labels[kernel])
            counts.append(mix(functions[kernel], span))
            spans.append(f"{span[1] - span[0] + 16}" if is_loop else "none")
        columns = " | ".join(pair(c[column] for c in counts) for column in MIX)
        print(f"| `{kernel}` | {pair(spans)} | {columns} |")
    print()
    print("Loop: the main loop's size in bytes of SASS (16 per instruction), or none (whole kernel).")

    for problem in problems:
        print(f"kernel-report: {problem}", file=sys.stderr)
    if any("spills" in p or "cannot launch" in p or "declares" in p for p in problems):
        sys.exit(1)


if __name__ == "__main__":
    main()
