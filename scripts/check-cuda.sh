#!/usr/bin/env bash
# Compile-checks the `cuda` feature on a machine without the CUDA toolkit:
# NVIDIA's nvcc, headers and libdevice come from their PyPI wheels (CUDA 13.0),
# unpacked into a cache directory. No GPU is needed to build; running the GPU
# path needs one (KB_DEVICE=cuda).
#
# Usage: scripts/check-cuda.sh [COMPUTE_CAP]   (default 90, an H100)
# Takes about 15 minutes on two cores the first time (candle's CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."

cap="${1:-90}"
toolkit="${XDG_CACHE_HOME:-$HOME/.cache}/kb/cuda-13.0"
if [[ ! -x "$toolkit/nvidia/cu13/bin/nvcc" ]]; then
    read -r -a pip <<<"${KB_PIP:-python3 -m pip}"
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    "${pip[@]}" download --quiet --no-deps -d "$wheels" \
        "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" \
        "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-cccl==13.0.85"
    mkdir -p "$toolkit"
    for wheel in "$wheels"/*.whl; do
        python3 -m zipfile -e "$wheel" "$toolkit"
    done
    chmod +x "$toolkit"/nvidia/cu13/bin/* "$toolkit"/nvidia/cu13/nvvm/bin/* 2>/dev/null || true
fi

export CUDA_HOME="$toolkit/nvidia/cu13" CUDA_PATH="$toolkit/nvidia/cu13"
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="$cap"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cuda"
nvcc --version | tail -1
cargo clippy --locked -p kb-llm -p kb-embeddings -p kb-cli --features kb-cli/cuda --all-targets -- -D warnings
echo "the cuda feature builds (compute capability $cap)"
