#!/usr/bin/env bash
# Sets up a fresh machine for posemb: a virtual environment in .venv with the
# pinned requirements (torch 2.13.0, the CPU build this kind of machine keeps
# on disk: no multi-GB download), GoogleTest, and posemb itself built in place.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed again whenever requirements-dev.txt or requirements-diffusers.txt changes (its hash is kept in .venv).
stamp=.venv/requirements-dev.sha256
if ! sha256sum --check --status "$stamp" 2> /dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  # diffusers' declared huggingface_hub<2 conflicts with the pin above: see the file.
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-diffusers.txt
  sha256sum requirements-dev.txt requirements-diffusers.txt > "$stamp"
fi

if [ ! -f /usr/include/gtest/gtest.h ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq libgtest-dev > /dev/null
fi

# posemb itself (incremental: CMake keeps its build folder under build/).
MAX_JOBS="${MAX_JOBS:-$(nproc)}" .venv/bin/pip install --quiet --disable-pip-version-check \
  --no-build-isolation --no-deps -e .
