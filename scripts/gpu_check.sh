#!/usr/bin/env bash
# The GPU battery (README: "The GPU battery"): one command for a lent H200.
#
#   bash scripts/gpu_check.sh [--budget SECONDS] [OUT_DIR]   on the GPU machine
#   bash scripts/gpu_check.sh --dry-run                       on any machine
#
# Steps run in order of value, each under its own cap, and a step is skipped
# (with a note) when less than its minimum is left of the budget (default
# 420 s of command time). Each step appends its line to OUT_DIR/summary.txt
# as it finishes, so a run cut off at its limit still returns what it did.
# OUT_DIR (default: $OUT, else bench/out) gets at most 8 files: summary.txt,
# gpu_check.log, configure.log, sass.txt, bench_cuda.json,
# bench_cuda_compile.json, pytest_cuda.xml.
#
# --dry-run needs no GPU: every script parses, the sanitizer cases run on the
# CPU, pytest collects the CUDA cases, and the bench builds every case, with
# the CPU torch of .venv and again with the CUDA torch of .venv-cuda (when
# scripts/check_cuda_build.sh has built the library against it).
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
budget="${POSEMB_GPU_BUDGET:-420}"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --budget) budget="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) out="$1" ;;
  esac
  shift
done
py="${PYTHON:-python3}"

# The plan: name, cap (s), least time worth starting it with (s).
PLAN=(
  "build|240|60"
  "sass|30|5"
  "memcheck|60|20"
  "racecheck|45|15"
  "pytest|120|30"
  "googletest|30|10"
  "bench|75|20"
  "bench_compile|90|40"
)

# ------------------------------------------------------------------ steps
step_build() {
  local prefix gtest=OFF
  prefix=$($py -c "import torch; print(torch.utils.cmake_prefix_path)") || return 1
  [ -f /usr/include/gtest/gtest.h ] && gtest=ON
  cmake -S . -B build/gpu -G Ninja -DCMAKE_PREFIX_PATH="$prefix" -DPOSEMB_CUDA=ON \
    -DPOSEMB_CUDA_ARCHITECTURES=90 -DPOSEMB_BUILD_TESTS=$gtest -DCMAKE_INSTALL_PREFIX="$PWD/python/posemb" \
    -Wno-dev -Wno-deprecated > "$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; return 1; }
  cmake --build build/gpu -j "$(nproc)" && cmake --install build/gpu > /dev/null || return 1
  $py -c "import posemb, torch; torch.ops.posemb.sinusoidal_add(torch.zeros(1, 1, 8, device='cuda'), None, None, 0)" \
    && echo "KEY: libposemb.so for sm_90 against torch $($py -c 'import torch; print(torch.__version__)')"
}

step_sass() {
  $py scripts/sass_report.py build/gpu/libposemb.so --out "$out/sass.txt" | tee /dev/stderr | tail -1 | sed 's/^/KEY: /'
}

sanitize() {  # sanitize TOOL ARGS...: SKIP (exit 3) where the runtime refuses the device
  local tool=$1 log rc; shift
  log=$(mktemp)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
    $py scripts/gpu_sanitize.py "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if grep -q -E "Device not supported|Unable to find injection|not supported on this" "$log"; then
    echo "KEY: compute-sanitizer refused this machine's GPU (gVisor?): not checked"; rc=3
  elif [ "$rc" = 0 ]; then
    echo "KEY: $(grep -E -m1 'ERROR SUMMARY' "$log" || echo 'no errors')"
  fi
  rm -f "$log"
  return "$rc"
}
no_sanitizer() { command -v compute-sanitizer > /dev/null && return 1; echo "KEY: no compute-sanitizer on PATH"; }
step_memcheck() { no_sanitizer && return 3; sanitize memcheck; }
step_racecheck() { no_sanitizer && return 3; sanitize racecheck --only bert; }

pytest_args() {  # the CUDA cases, compile tests left to the end
  local args=(tests/python -q -p no:cacheprovider -k cuda -m "not compile")
  $py -c "import pytest_timeout" 2> /dev/null && args+=(--timeout=60)
  printf '%s\n' "${args[@]}"
}
step_pytest() {
  local args log rc
  mapfile -t args < <(pytest_args)
  log=$(mktemp)
  $py -m pytest "${args[@]}" --junitxml="$out/pytest_cuda.xml" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  echo "KEY: $(grep -E '(passed|failed|error)' "$log" | tail -1 | tr -d '=' | xargs)"
  rm -f "$log"
  return "$rc"
}

step_googletest() {
  [ -x build/gpu/tests/cpp/posemb_tests ] || { echo "KEY: no GoogleTest here (no libgtest-dev)"; return 3; }
  build/gpu/tests/cpp/posemb_tests --gtest_brief=1 2>&1 | tail -5
  return "${PIPESTATUS[0]}"
}

bench() {  # bench JSON ARGS...
  local json=$1 log rc; shift
  log=$(mktemp)
  $py -m posemb.bench --device cuda --quick --json "$json" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  sed -n '/^summary/,/^$/p' "$log" | sed -n '2,$p' | sed 's/^ */KEY: /'
  rm -f "$log"
  return "$rc"
}
step_bench() { bench "$out/bench_cuda.json" --compile none; }
step_bench_compile() { bench "$out/bench_cuda_compile.json" --compile first; }

# ------------------------------------------------------------------ running
record() { echo "$*" | tee -a "$out/summary.txt"; }

run_plan() {
  local start=$SECONDS entry name cap least left limit t0 rc key log
  for entry in "${PLAN[@]}"; do
    IFS='|' read -r name cap least <<< "$entry"
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt "$least" ]; then
      record "SKIP  $name  (needs ${least} s, ${left} s of the budget left)"
      [ "$name" = build ] && { record "STOP  nothing else can run without the build"; return 1; }
      continue
    fi
    limit=$((cap < left ? cap : left))
    echo "== $name (cap ${limit} s)"
    t0=$SECONDS
    log=$(mktemp)
    timeout --kill-after=5 "$limit" bash -c "$(declare -f); out='$out' py='$py' step_$name" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    key=$(grep '^KEY: ' "$log" | sed 's/^KEY: //' | paste -sd ';' | cut -c1-400)
    rm -f "$log"
    case "$rc" in
      0) status=PASS ;;
      3) status=SKIP ;;
      124|137) status=TIME; key="over its ${limit} s cap${key:+; $key}" ;;
      *) status=FAIL ;;
    esac
    record "$status  $name  $((SECONDS - t0)) s  ${key}"
    if [ "$name" = build ] && [ "$status" != PASS ]; then
      record "STOP  nothing else can run without the build"
      return 1
    fi
  done
}

dry_checks() {  # dry_checks LABEL: what the battery runs, without a GPU, under $py
  local label=$1 collected
  echo "== dry run ($label): $($py -c 'import torch, posemb; print("torch", torch.__version__, "posemb", posemb.__file__)')" \
    || return 1
  $py -m py_compile scripts/gpu_sanitize.py scripts/sass_report.py || return 1
  $py scripts/gpu_sanitize.py > /dev/null 2> "$out/dry.err"; local rc=$?
  if [ "$rc" != 2 ] || ! grep -q "no CUDA device" "$out/dry.err"; then
    echo "gpu_check --dry-run: gpu_sanitize.py without a GPU should exit 2 with 'no CUDA device' (exit $rc)"
    cat "$out/dry.err"; return 1
  fi
  $py scripts/gpu_sanitize.py --device cpu || return 1
  local args; mapfile -t args < <(pytest_args)
  collected=$($py -m pytest "${args[@]}" --collect-only 2>&1 | tail -1)
  if ! grep -q -E '^[0-9]+(/[0-9]+)? tests? collected' <<< "$collected" || grep -q -i error <<< "$collected"; then
    echo "gpu_check --dry-run: pytest did not collect the CUDA cases cleanly:"
    $py -m pytest "${args[@]}" --collect-only 2>&1 | tail -30; return 1
  fi
  echo "pytest (CUDA cases): $collected"
  $py -m posemb.bench --device cpu --quick --dry-run | tail -3 || return 1
}

if [ "$dry" = 1 ]; then
  out="${out:-build/gpu-dry}"
  mkdir -p "$out"
  echo "gpu_check --dry-run: the plan (budget ${budget} s; step, cap, least time to start it):"
  for entry in "${PLAN[@]}"; do
    IFS='|' read -r name cap least <<< "$entry"
    printf '  %-14s cap %4s s  needs %3s s\n' "$name" "$cap" "$least"
    declare -F "step_$name" > /dev/null || { echo "gpu_check --dry-run: no step_$name"; exit 1; }
  done
  bash -n "$0" || exit 1
  dry_checks "CPU torch" || exit 1
  cuda_lib=build/cuda/libposemb.so
  cuda_site=$(echo "$PWD"/.venv-cuda/lib/python3*/site-packages)
  if [ -f "$cuda_lib" ] && [ -d "$cuda_site/torch" ]; then
    # A copy of the package with the library built against the CUDA torch
    # (.venv-cuda reads the rest from .venv: scripts/check_cuda_build.sh).
    rm -rf build/cuda-py && mkdir -p build/cuda-py/posemb/lib
    cp python/posemb/*.py build/cuda-py/posemb/ && cp "$cuda_lib" build/cuda-py/posemb/lib/
    PYTHONPATH="$PWD/build/cuda-py" py=".venv-cuda/bin/python" dry_checks "CUDA torch, no GPU" || exit 1
  else
    echo "gpu_check --dry-run: no CUDA build of the library here ($cuda_lib, .venv-cuda): CUDA torch pass skipped"
  fi
  echo "gpu_check --dry-run: the battery is ready"
  exit 0
fi

out="${out:-${OUT:-bench/out}}"
mkdir -p "$out"
: > "$out/summary.txt"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl > /dev/null 2>&1; then  # optional peers carried in (scripts/fetch_gpu_peers.sh)
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target build/peers .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$PWD/build/peers"
  record "peers    $(ls .whl | paste -sd ' ')"
fi
record "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)  budget ${budget} s  $(git rev-parse --short HEAD 2> /dev/null)"
record "machine  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
record "python   $($py -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())' 2>&1 | tail -1)"
run_plan
echo
echo "== summary ($out/summary.txt)"
cat "$out/summary.txt"
! grep -q -E '^(FAIL|TIME|STOP)' "$out/summary.txt"
