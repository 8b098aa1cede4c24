#!/usr/bin/env bash
# Installs the CUDA 13.0 pieces the `cuda` build needs, from PyPI's NVIDIA wheels, into a folder of the repository
# (ignored by git). No system CUDA, no GPU and no root are needed.
#
#   scripts/cuda-toolkit.sh [--compiler-only] [DEST]      (DEST defaults to .cuda/13.0)
#
# --compiler-only: nvcc and the headers alone (about 60 MB of wheels): enough for `cargo check --features cuda`,
#                  which compiles candle's kernels but links nothing (CI's compile check).
# Otherwise also the libraries the binary links against (cuBLAS, cuRAND, NVRTC, cudart: about 600 MB of wheels),
# with the unversioned names the linker looks for, and a stub libcuda.so (the driver library is not on PyPI; see
# below). The versions are pinned to 13.0.x: the GPU machine's driver (580) is CUDA 13.0, and a newer nvcc emits PTX
# that driver refuses.
#
# Prints the environment to build with (scripts/build-cuda.sh reads it).
set -euo pipefail
cd "$(dirname "$0")/.."

compiler_only=0
if [ "${1:-}" = "--compiler-only" ]; then
  compiler_only=1
  shift
fi
dest="${1:-.cuda/13.0}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

compiler_wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
library_wheels=(
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)

want=("${compiler_wheels[@]}")
marker="$dest/.installed-compiler"
if [ "$compiler_only" = 0 ]; then
  want+=("${library_wheels[@]}")
  marker="$dest/.installed-full"
fi

if [ ! -f "$marker" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest/site" "${want[@]}" \
    || { echo "cuda-toolkit.sh: pip could not install ${want[*]} into $dest/site" >&2; exit 1; }
  touch "$marker"
fi

root="$dest/site/nvidia/cu13"
[ -x "$root/bin/nvcc" ] || { echo "cuda-toolkit.sh: $root/bin/nvcc is missing after the install" >&2; exit 1; }

if [ "$compiler_only" = 0 ]; then
  # The wheels ship versioned sonames only; the linker wants lib<name>.so.
  for lib in cublas cublasLt cudart curand nvrtc; do
    so="$(cd "$root/lib" && ls "lib$lib.so."* 2>/dev/null | grep -E "^lib$lib\.so\.[0-9]+$" | head -1)"
    [ -n "$so" ] || { echo "cuda-toolkit.sh: no lib$lib.so.N in $root/lib" >&2; exit 1; }
    ln -sf "$so" "$root/lib/lib$lib.so"
  done
  # libcuda.so.1 belongs to the NVIDIA driver, which PyPI does not ship. The binary is linked against a stub with the
  # same soname whose every entry point returns CUDA_ERROR_STUB_LIBRARY (34); where the driver is installed its own
  # libcuda.so.1 is found first at run time, and where it is not, opening a CUDA device fails with that error
  # instead of crashing. The entry points are the functions cuda.h declares (with its versioned names).
  stub="$root/lib/stubs/libcuda.so"
  if [ ! -f "$stub" ]; then
    mkdir -p "$root/lib/stubs"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo '#include <cuda.h>' | gcc -E -P -I"$root/include" -x c - >"$work/cuda.i"
    grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' "$work/cuda.i" \
      | sed -E 's/CUresult +(cu[A-Za-z0-9_]+).*/int \1(void) { return 34; }/' | sort -u >"$work/stub.c"
    [ "$(wc -l <"$work/stub.c")" -gt 300 ] || { echo "cuda-toolkit.sh: found too few driver functions in cuda.h" >&2; exit 1; }
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$work/stub.c"
  fi
  # Under its soname too, so the CUDA build can be run here (on the CPU) with lib and lib/stubs on LD_LIBRARY_PATH.
  ln -sf libcuda.so "$root/lib/stubs/libcuda.so.1"
fi

echo "export CUDA_HOME=$root"
echo "export PATH=$root/bin:\$PATH"
echo "export CUDA_COMPUTE_CAP=90"
echo "export CUDARC_CUDA_VERSION=13000"
