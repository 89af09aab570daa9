#!/usr/bin/env bash
# The GPU battery (README: GPU), one command for a lent H200:
#   bash scripts/gpu_check.sh [OUT_DIR]       (default: $OUT, else bench/out)
# Builds posemb for sm_90 with all cores against the torch found there, runs
# the CUDA tests, the benchmarks (quick set), and a compute-sanitizer pass
# (memcheck, racecheck, initcheck; each capped at 2 minutes) with the caching
# allocator off. Planned to finish in about 8 minutes: call it with a limit of
# ~540 s. Writes gpu_check.log and bench_cuda.json under OUT_DIR; prints a
# summary last.
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
# Registers, spills and stack per kernel; and whether the vector paths load 128 bits.
run "kernel resources" bash -c "cuobjdump --dump-resource-usage build/gpu/libposemb.so | grep -E -A1 'sinusoidal|learned|bert' | head -60; echo 128-bit global loads: \$(cuobjdump -sass build/gpu/libposemb.so | grep -c 'LDG.E.128')"
run "pytest (CUDA cases)" $py -m pytest tests/python -q -p no:cacheprovider -k cuda
if [ -x build/gpu/tests/cpp/posemb_tests ]; then
  run "googletest (CUDA and CPU)" build/gpu/tests/cpp/posemb_tests
fi
run "bench (cuda, quick)" $py -m posemb.bench --device cuda --quick --json "$out/bench_cuda.json"
for tool in memcheck racecheck initcheck; do
  run "compute-sanitizer $tool" timeout 120 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    compute-sanitizer --tool "$tool" --error-exitcode 1 $py scripts/gpu_sanitize.py
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
[[ "${summary[*]}" != *FAIL* ]]
