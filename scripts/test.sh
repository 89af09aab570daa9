#!/usr/bin/env bash
# Every test: the CUDA build checks (nvcc on every .cu file for sm_90 and a
# report of its machine code, the whole library built and linked against a
# CUDA build of torch), the GPU battery's dry run, GoogleTest through ctest
# and the ops' pytest cases against an ASan+UBSan build, and pytest (Python
# API, ops, compile, the C++ example against the installed package, the
# README's examples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
jobs="${MAX_JOBS:-$(nproc)}"

echo "== CUDA: every kernel compiles with nvcc for sm_90, its machine code read, the library linked"
bash scripts/check_cuda_build.sh

echo "== the GPU battery, dry run (CPU torch and CUDA torch, no GPU)"
bash scripts/gpu_check.sh --dry-run

echo "== GoogleTest (ctest), the library and the tests built with ASan and UBSan"
torch_prefix=$(python -c "import torch; print(torch.utils.cmake_prefix_path)")
cmake -S . -B build/ctest -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" -DPOSEMB_BUILD_TESTS=ON \
  -DPOSEMB_CUDA=OFF -DPOSEMB_SANITIZE=ON -Wno-dev > build/ctest.configure.log
cmake --build build/ctest -j "$jobs"
# Leaks are not checked: torch and Python keep what they allocate until exit.
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build/ctest && ctest --output-on-failure -j "$jobs")

echo "== pytest: the ops' tests against the sanitized library"
POSEMB_LIBRARY="$PWD/build/ctest/libposemb.so" \
  LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
  python -m pytest -q -p no:cacheprovider -m "not compile and not slow and not large" \
  tests/python/test_sinusoidal.py tests/python/test_learned.py tests/python/test_bert.py \
  tests/python/test_rotary.py tests/python/test_properties.py tests/python/test_angle_contract.py \
  tests/python/test_autocast.py tests/python/test_module_args.py tests/python/test_mrope.py \
  tests/python/test_timestep.py tests/python/test_sincos_2d.py
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== pytest: the portable CPU loop (ATen's CPU capability forced to default)"
ATEN_CPU_CAPABILITY=default python -m pytest -q \
  tests/python/test_sinusoidal.py tests/python/test_learned.py tests/python/test_bert.py \
  -k "reference or contract or ulp or inplace or table or grad or deterministic or dropout"

echo "== pytest"
python -m pytest tests/python -q
