#!/usr/bin/env bash
# CUDA code must compile here although nothing can run it (no GPU):
#  1. every kernels/*.cu compiles with nvcc alone for sm_90 (the kernels are torch-free);
#  2. the whole library, CUDA glue included, builds and links against a CUDA
#     build of torch, installed with --no-deps into .venv-cuda from the wheel
#     this kind of machine keeps on disk (never downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
  echo "check_cuda_build: no nvcc on this machine, skipped"
  exit 0
fi

for cu in kernels/*.cu; do
  "$NVCC" -std=c++17 -arch=sm_90 -O3 -I. -Icsrc/include -Werror all-warnings -c "$cu" -o /dev/null
  echo "nvcc sm_90: $cu ok"
done

wheel_dir="${POSEMB_CUDA_TORCH_WHEELS:-/opt/pypi-more/files}"
torch_version="${POSEMB_CUDA_TORCH_VERSION:-2.14.1}"
if [ ! -d .venv-cuda/lib/python3*/site-packages/torch/lib ] || \
   ! ls .venv-cuda/lib/python3*/site-packages/torch/lib/libtorch_cuda.so > /dev/null 2>&1; then
  python3 -m venv .venv-cuda
  if ! .venv-cuda/bin/pip install --quiet --disable-pip-version-check --no-deps --no-index \
       --find-links "$wheel_dir" "torch==$torch_version"; then
    echo "check_cuda_build: no CUDA build of torch $torch_version in $wheel_dir; library link check skipped"
    exit 0
  fi
fi
torch_prefix=$(echo "$PWD"/.venv-cuda/lib/python3*/site-packages/torch/share/cmake)
cmake -S . -B build/cuda -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" -DPOSEMB_CUDA=ON \
  -Wno-dev -Wno-deprecated > build/cuda.configure.log
cmake --build build/cuda -j "${MAX_JOBS:-$(nproc)}"
symbols=$(nm -DC build/cuda/libposemb.so)
grep -q "posemb::launch_sinusoidal_add" <<< "$symbols" \
  || { echo "check_cuda_build: libposemb.so has no CUDA launcher"; exit 1; }
echo "check_cuda_build: libposemb.so built and linked with CUDA kernels for sm_90"
