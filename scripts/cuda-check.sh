#!/usr/bin/env bash
# CI's compile check of the CUDA build (docs/GPU.md): installs nvcc and the CUDA headers from PyPI, compiles
# candle's PTX kernels and checks every target of the crate with `--features cuda`. Links nothing, runs nothing.
# The full build (with linking) is scripts/build-cuda.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolkit.sh --compiler-only)"
export NVCC="$PWD/scripts/nvcc-check-shim"
export CARGO_TARGET_DIR="$PWD/target/cuda-check"
cargo check --release --features cuda --all-targets
