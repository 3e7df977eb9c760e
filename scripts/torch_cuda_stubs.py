#!/usr/bin/env python3
"""Stub CUDA libraries that let PyPI's torch wheel run on the CPU without its CUDA dependencies.

PyPI's Linux torch wheel is built with CUDA: its libraries name libcudart, libcublas, libcudnn,
NCCL and more as needed shared libraries, and pip would bring them in as about 3 GB of nvidia-*
wheels. A CPU-only run never calls them, so installing torch with --no-deps and putting these
stubs on LD_LIBRARY_PATH suffices: one small library per missing soname, defining every symbol
(with its symbol version) that torch's libraries import from it. Each stub returns 100, which is
cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE for the runtime and driver APIs, so torch sees no GPU;
the error-string functions return a message.

Usage: torch_cuda_stubs.py TORCH_PACKAGE_DIR OUT_DIR
"""

import collections
import os
import pathlib
import re
import subprocess
import sys

SYSTEM_VERSIONS = re.compile(r"^(GLIBC|GLIBCXX|CXXABI|GCC|QUADMATH|GOMP|OMP|GFORTRAN)")
CUDA_SYMBOL = re.compile(r"^(cu|nccl|nvshmem|nvrtc)")
# Symbol versions whose name is not the soname of the library that defines them.
VERSION_OWNERS = {"NVSHMEM": "libnvshmem_host.so.3"}
SYSTEM_LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"]


def elf_libraries(torch_dir: pathlib.Path) -> list:
    return sorted(p for p in [*torch_dir.glob("lib/*.so*"), *torch_dir.glob("*.so")] if p.is_file())


def scan(libs):
    """Needed sonames, defined symbols, and undefined symbols with their versions (None: unversioned)."""
    needed, defined, undefined = set(), set(), collections.defaultdict(set)
    for lib in libs:
        dynamic = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True).stdout
        needed |= set(re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic))
        symbols = subprocess.run(["nm", "-D", lib], capture_output=True, text=True).stdout
        for line in symbols.splitlines():
            fields = line.split()
            name, _, version = fields[-1].partition("@")
            if fields[0] == "U":
                undefined[name].add(version.lstrip("@") or None)
            elif len(fields) == 3:
                defined.add(name)
    return needed, defined, undefined


def main() -> None:
    torch_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    libs = elf_libraries(torch_dir)
    present = {p.name for p in libs}
    needed, defined, undefined = scan(libs)
    missing = sorted(n for n in needed if n not in present
                     and not any(os.path.exists(f"{d}/{n}") for d in SYSTEM_LIB_DIRS))
    symbols, versions = collections.defaultdict(set), collections.defaultdict(set)
    unversioned = set()
    for name, vers in undefined.items():
        for v in vers:
            if v is None:
                if name not in defined and CUDA_SYMBOL.match(name):
                    unversioned.add(name)
            elif not SYSTEM_VERSIONS.match(v):
                owner = VERSION_OWNERS.get(v, v)
                if owner not in missing:
                    sys.exit(f"symbol version {v} belongs to no missing library {missing}")
                symbols[owner].add(name)
                versions[owner].add(v)
    out.mkdir(parents=True, exist_ok=True)
    for lib in missing:
        # An unversioned import is looked up in the importing library's dependencies, which need
        # not include any one stub, so every stub defines all of them.
        lines = ['static const char message[] = "no CUDA: stub library";']
        for name in sorted(symbols[lib] | unversioned):
            if name.endswith(("GetErrorString", "GetErrorName")):
                lines.append(f"const char *{name}(void) {{ return message; }}")
            else:
                lines.append(f"int {name}(void) {{ return 100; }}")
        source = out / f"{lib}.c"
        source.write_text("\n".join(lines) + "\n")
        cmd = ["cc", "-shared", "-fPIC", "-o", str(out / lib), f"-Wl,-soname,{lib}", str(source)]
        if versions[lib]:
            script = out / f"{lib}.map"
            script.write_text("".join(f"{v} {{ global: *; }};\n" for v in sorted(versions[lib])))
            cmd.append(f"-Wl,--version-script={script}")
        subprocess.run(cmd, check=True)
    print(f"{len(missing)} stub libraries in {out}: {' '.join(missing)}")


if __name__ == "__main__":
    main()
