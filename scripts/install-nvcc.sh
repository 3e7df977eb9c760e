#!/usr/bin/env bash
# Installs nvcc 13.0 from PyPI into a venv outside the repository and prints the nvcc path as the last
# line of stdout (progress goes to stderr), so callers can do: NVCC=$(scripts/install-nvcc.sh | tail -n1).
# The package set is the one verified in DESIGN §6; nvidia-cuda-cccl provides <nv/target>, which
# cuda_bf16.h needs. A second run finds the marker and returns at once.
set -euo pipefail

cache="${LONGLORA_CUDA_CACHE:-$HOME/.cache/longlora/nvcc-13.0}"
packages=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-nvvm==13.0.*"
    "nvidia-cuda-runtime==13.0.*"
    "nvidia-cuda-crt==13.0.*"
    "nvidia-cuda-cccl==13.0.*"
)
# The marker records the package set, so changing the list above reinstalls instead of trusting an old venv.
marker="$cache/.installed"
wanted="${packages[*]}"

find_nvcc() {
    "$cache/venv/bin/python" - <<'PY'
import pathlib, sysconfig
print(pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "bin" / "nvcc")
PY
}

if [[ -f "$marker" && "$(cat "$marker")" == "$wanted" ]]; then
    nvcc="$(find_nvcc)"
    if [[ -x "$nvcc" ]]; then
        echo "$nvcc"
        exit 0
    fi
fi

echo "install-nvcc: installing nvcc 13.0 into $cache (about 300 MB)" >&2
rm -f "$marker"
mkdir -p "$cache"
python3 -m venv "$cache/venv" >&2
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2

nvcc="$(find_nvcc)"
if [[ ! -x "$nvcc" ]]; then
    echo "install-nvcc: pip finished but $nvcc is missing" >&2
    exit 1
fi
"$nvcc" --version >&2
echo "$wanted" > "$marker"
echo "$nvcc"
