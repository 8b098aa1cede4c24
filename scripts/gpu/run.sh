#!/usr/bin/env bash
# Runs a command on the GPU machine with the CUDA build of pgolf (docs/GPU.md):
#
#   bash scripts/gpu/run.sh python3 scripts/gpu/check.py          (the GPU tests)
#   bash scripts/gpu/run.sh python3 scripts/gpu/bench.py ...      (the benchmark)
#
# Unpacks target/cuda/pgolf-cuda.xz (made by scripts/build-cuda.sh here and carried there), puts the CUDA 13
# libraries of the machine's PyTorch (its nvidia-* wheels: cuBLAS, cuRAND, NVRTC, cudart) on the loader's path —
# libcuda.so.1 comes from the driver — and runs the command with $PGOLF naming the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
packed=target/cuda/pgolf-cuda.xz
[ -f "$packed" ] || { echo "run.sh: $packed is missing: run scripts/build-cuda.sh and carry it" >&2; exit 1; }
bin="${TMPDIR:-/tmp}/pgolf-cuda-$$"
trap 'rm -f "$bin"' EXIT
python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$packed" "$bin"
chmod +x "$bin"
libs="$(python3 -c 'import glob, os, sys
dirs = []
for root in sys.path:
    for lib in glob.glob(os.path.join(root, "nvidia", "*", "lib")) + glob.glob(os.path.join(root, "nvidia", "*", "*", "lib")):
        if glob.glob(os.path.join(lib, "lib*.so.*")) and lib not in dirs:
            dirs.append(lib)
print(":".join(dirs))')"
[ -n "$libs" ] || { echo "run.sh: found no nvidia/*/lib folders of PyTorch's CUDA wheels on python3's path" >&2; exit 1; }
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PGOLF="$bin"
missing="$(ldd "$bin" | grep 'not found' || true)"
[ -z "$missing" ] || { echo "run.sh: the CUDA build cannot find: $missing" >&2; exit 1; }
"$@"
