#!/usr/bin/env bash
# The GPU battery (README: GPU), one command for a lent H200:
#   bash scripts/gpu_check.sh [OUT_DIR]       (default: $OUT, else bench/out)
# Builds posemb for sm_90 with all cores against the torch found there, runs
# the CUDA tests, a compute-sanitizer pass (memcheck, racecheck, initcheck)
# with the caching allocator off, and the benchmarks. Writes gpu_check.log and
# bench_cuda.json under OUT_DIR; prints a summary table last.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
py=python3
declare -a summary
run() {  # run NAME CMD...: time a step, record pass/fail, keep going
  local name=$1; shift
  echo "== $name"
  local t0=$SECONDS
  if "$@"; then summary+=("PASS  $name ($((SECONDS - t0)) s)"); else summary+=("FAIL  $name ($((SECONDS - t0)) s)"); fi
}

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  || { echo "gpu_check: torch sees no GPU"; exit 1; }

build() {
  local prefix gtest=OFF
  prefix=$($py -c "import torch; print(torch.utils.cmake_prefix_path)")
  [ -f /usr/include/gtest/gtest.h ] && gtest=ON
  cmake -S . -B build/gpu -G Ninja -DCMAKE_PREFIX_PATH="$prefix" -DPOSEMB_CUDA=ON \
    -DPOSEMB_CUDA_ARCHITECTURES=90 -DPOSEMB_BUILD_TESTS=$gtest -DCMAKE_INSTALL_PREFIX="$PWD/python/posemb" \
    -Wno-dev -Wno-deprecated > "$out/configure.log" &&
  cmake --build build/gpu -j "$(nproc)" && cmake --install build/gpu > /dev/null
}
run "build (sm_90)" build
run "ptxas resources" bash -c "cuobjdump --dump-resource-usage build/gpu/libposemb.so | grep -A1 sinusoidal | head -40"
run "pytest (CUDA and CPU)" $py -m pytest tests/python -q -x -p no:cacheprovider
if [ -x build/gpu/tests/cpp/posemb_tests ]; then
  run "googletest (CUDA and CPU)" build/gpu/tests/cpp/posemb_tests
fi
for tool in memcheck racecheck initcheck; do
  run "compute-sanitizer $tool" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    compute-sanitizer --tool "$tool" --error-exitcode 1 $py scripts/gpu_sanitize.py
done
run "bench (cuda)" $py -m posemb.bench --device cuda --json "$out/bench_cuda.json"

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
[[ "${summary[*]}" != *FAIL* ]]
