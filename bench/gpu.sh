#!/usr/bin/env bash
# Every figure the GPU targets need (2B and XL; batch 1 and 4; checkpointing ratios and policy; nf4;
# --compile; forecast vs measured) in one run, written to bench/out/gpu.json. Under 10 minutes on
# an H100/H200. Try it anywhere with: bash bench/gpu.sh --device cpu --tiny
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then
  exec uv run python bench/gpu_suite.py "$@"
fi
exec python3 bench/gpu_suite.py "$@"
