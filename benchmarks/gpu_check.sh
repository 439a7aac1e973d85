#!/usr/bin/env bash
# Everything we check on a lent CUDA machine, in one call (the device tool runs it from the repo root):
#   the CPU-independent tests of common/ on CUDA, then benchmarks.gpu_bench. Writes $OUT/gpu_check.md.
# The device image has torch/transformers/accelerate/peft/tensorboard but not vllm, datasets or the
# two model packages, so tests needing those are deselected there (they run in CI on the CPU).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  echo "# GPU check, $(date -u +%F)"; nvidia-smi -L
  python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__)"
} | tee "$OUT/gpu_check.md"
echo '```' >> "$OUT/gpu_check.md"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" --import-mode=importlib \
  tests/common/test_models.py tests/common/test_train.py tests/common/test_generation.py \
  -m "not vllm" -k "not smollm2 and not minilm" 2>&1 | tail -25 | tee -a "$OUT/gpu_check.md"
echo '```' >> "$OUT/gpu_check.md"
timeout 300 python3 -m benchmarks.gpu_bench 2>&1 | grep -v -E "Warning|warn" | tee -a "$OUT/gpu_check.md"
