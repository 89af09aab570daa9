#!/usr/bin/env bash
# Every test: pytest (Python API, ops, compile, the C++ example against the
# installed package, the README's examples), GoogleTest through ctest, and
# the CUDA build checks (nvcc on every .cu file for sm_90, and the whole
# library built and linked against a CUDA build of torch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
jobs="${MAX_JOBS:-$(nproc)}"

echo "== CUDA: every kernel compiles with nvcc for sm_90"
bash scripts/check_cuda_build.sh

echo "== GoogleTest (ctest)"
torch_prefix=$(python -c "import torch; print(torch.utils.cmake_prefix_path)")
cmake -S . -B build/ctest -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" -DPOSEMB_BUILD_TESTS=ON \
  -DPOSEMB_CUDA=OFF -Wno-dev > build/ctest.configure.log
cmake --build build/ctest -j "$jobs"
(cd build/ctest && ctest --output-on-failure -j "$jobs")

echo "== pytest: the portable CPU loop (ATen's CPU capability forced to default)"
ATEN_CPU_CAPABILITY=default python -m pytest -q \
  tests/python/test_sinusoidal.py tests/python/test_learned.py tests/python/test_bert.py \
  -k "reference or contract or ulp or inplace or table or grad or deterministic or dropout"

echo "== pytest"
python -m pytest tests/python -q
