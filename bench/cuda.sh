#!/usr/bin/env bash
# The CUDA checks and figures in one go (for a GPU host with the project's dependencies installed):
# the gpu-marked tests (precision tolerance, compile, checkpointing), then the benchmark at 256 and 512 for
# 1, 4 and 8 concurrent jobs, with and without torch.compile, and the memory of large sizes.
#   bash bench/cuda.sh [OUTDIR]
set -uo pipefail
out=${1:-bench-out}
mkdir -p "$out"
python -m pytest -q -m gpu tests/engine/test_gpu.py -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"
python -m bench.engine --device cuda --sizes 256 512 --batch 1 4 8 --cutn 32 --steps 20 --warmup 3 --flops \
  --json "$out/eager.json" 2>&1 | tee "$out/eager.log"
python -m bench.engine --device cuda --sizes 256 512 --batch 1 8 --cutn 32 --steps 20 --warmup 3 --precision fp32 \
  --no-plain --json "$out/fp32.json" 2>&1 | tee "$out/fp32.log"
python -m bench.engine --device cuda --sizes 1024 --batch 1 --cutn 32 --steps 3 --no-plain \
  --json "$out/1024.json" 2>&1 | tee "$out/1024.log"
python -m bench.engine --device cuda --checkpoint --sizes 1024 --batch 1 --cutn 32 --steps 3 --no-plain \
  --json "$out/1024-checkpoint.json" 2>&1 | tee "$out/1024-checkpoint.log"
python -m bench.engine --device cuda --compile --sizes 512 256 --batch 1 8 --cutn 32 --steps 20 --warmup 3 \
  --no-plain --json "$out/compiled.json" 2>&1 | tee "$out/compiled.log"
