#!/usr/bin/env bash
# The main job: the article's pipeline, text -> tokenizer -> word embeddings
# -> posemb's fused sinusoidal encoding, checked and timed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m posemb demo "$@"
