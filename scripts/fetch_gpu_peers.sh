#!/usr/bin/env bash
# Optional peers for the GPU battery's benchmarks, which the GPU machine cannot
# download: pinned wheels fetched here into .whl/ (ignored by git through
# .git/info/exclude), carried with the device call (carry: [".whl"]), and
# installed there by scripts/gpu_check.sh with --no-deps --target.
# Their own needs (torch, triton, einops) are on the GPU machine already.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2> /dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d .whl \
  liger-kernel==0.8.5 rotary-embedding-torch==0.9.1
ls -l .whl
