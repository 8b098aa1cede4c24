#!/usr/bin/env bash
# Builds pgolf with the CUDA backend on a machine with no GPU and no CUDA installed (docs/GPU.md):
#
#   scripts/build-cuda.sh            → target/cuda/release/pgolf and target/cuda/pgolf-cuda.xz
#
# The toolkit comes from PyPI (scripts/cuda-toolkit.sh, into .cuda/13.0); candle's kernels are compiled for sm_90
# (H100). The build has its own target folder, so it never invalidates the default CPU build. The first build takes
# about 29 minutes on two cores (candle's quantized-matmul kernels dominate); later ones are incremental.
#
# The .xz is what travels to the GPU machine (the binary is 64 MB, 8 MB compressed); scripts/gpu/run.sh unpacks it
# and finds the CUDA 13 libraries of the machine's PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolkit.sh)"
export CARGO_TARGET_DIR="$PWD/target/cuda"
cargo build --release --features cuda --bin pgolf
xz -T0 -6 -c target/cuda/release/pgolf >target/cuda/pgolf-cuda.xz.part
mv target/cuda/pgolf-cuda.xz.part target/cuda/pgolf-cuda.xz
echo "built target/cuda/release/pgolf ($(stat -c %s target/cuda/release/pgolf) bytes) and target/cuda/pgolf-cuda.xz ($(stat -c %s target/cuda/pgolf-cuda.xz) bytes)"
