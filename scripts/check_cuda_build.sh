#!/usr/bin/env bash
# CUDA code must compile here although nothing can run it (no GPU):
#  1. every kernels/*.cu compiles with nvcc alone for sm_90 (the kernels are
#     torch-free), into build/kernels-sm90/, and scripts/sass_report.py reads
#     their machine code (build/kernels-sm90/sass.txt; README: "Reading the
#     machine code");
#  2. the whole library, CUDA glue included, builds and links against a CUDA
#     build of torch (requirements-cuda.txt, installed with --no-deps into
#     .venv-cuda from the wheels this kind of machine keeps on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
  echo "check_cuda_build: no nvcc on this machine, skipped"
  exit 0
fi
py="${PYTHON:-python3}"

objects=build/kernels-sm90
mkdir -p "$objects"
for cu in kernels/*.cu; do
  "$NVCC" -std=c++17 -arch=sm_90 -O3 -I. -Icsrc/include -Werror all-warnings -c "$cu" -o "$objects/$(basename "$cu" .cu).o"
  echo "nvcc sm_90: $cu ok"
done
if $py -c "import nvidia" 2> /dev/null; then
  # Every kernel family is held to the budget (no FP64 in the fp32/bf16/fp16 paths, no local memory),
  # and the BERT block's warp-path vector kernels to 128-bit loads and stores.
  $py scripts/sass_report.py "$objects"/*.o --out "$objects/sass.txt" \
    --check sinusoidal_add rotary learned_add table_grad bert timestep sincos_2d \
    --vector '^bert_warp_(forward|backward)_kernel<.*, true>$' | tail -1
else
  echo "check_cuda_build: no cuobjdump (pip nvidia-cuda-cuobjdump): SASS report skipped"
fi

wheel_dir="${POSEMB_CUDA_TORCH_WHEELS:-/opt/pypi-more/files}"
site() { echo "$PWD"/.venv-cuda/lib/python3*/site-packages; }
if ! .venv-cuda/bin/python -c "import torch; assert torch.version.cuda" 2> /dev/null; then
  [ -x .venv-cuda/bin/python ] || python3 -m venv .venv-cuda
  # torch's pure-Python needs (sympy, ...) come from the main environment.
  $py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$(site)/posemb-deps.pth"
  if ! .venv-cuda/bin/pip install --quiet --disable-pip-version-check --no-deps \
       --find-links "$wheel_dir" -r requirements-cuda.txt; then
    echo "check_cuda_build: could not install the CUDA build of torch (requirements-cuda.txt); link check skipped"
    exit 0
  fi
fi
torch_prefix=$(echo "$(site)"/torch/share/cmake)
cmake -S . -B build/cuda -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" -DPOSEMB_CUDA=ON \
  -Wno-dev -Wno-deprecated > build/cuda.configure.log
cmake --build build/cuda -j "${MAX_JOBS:-$(nproc)}"
symbols=$(nm -DC build/cuda/libposemb.so)
grep -q "posemb::launch_sinusoidal_add" <<< "$symbols" \
  || { echo "check_cuda_build: libposemb.so has no CUDA launcher"; exit 1; }
echo "check_cuda_build: libposemb.so built and linked with CUDA kernels for sm_90"
