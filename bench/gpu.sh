#!/usr/bin/env bash
# The GPU benchmark, prepared for the `device` tool (one call, well under 8 minutes on an H100):
# SAM vit_h automatic masks + CLIP ViT-B-32 on every segment, bf16, ~200 generated 1024-px images.
#
# Here, once:  mkdir -p .whl && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                --implementation cp --platform manylinux2014_x86_64 -d .whl \
#                open_clip_torch==3.3.0 segment-anything==1.0 ftfy wcwidth platformdirs==4.14.5
# Then (device tool):  run  command="bash bench/gpu.sh"  carry=[".whl"]
# The machine there has torch, torchvision, timm, numpy, pillow, opencv; the rest travels as wheels.
# Chroma is not installed there: the run times the compute path (decode, SAM, CLIP) of the pipeline;
# Chroma's insert rate is measured on the CPU by bench/search_latency.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
out="${OUT:-bench/results}"
mkdir -p "$out"
python3 -W ignore bench/index_throughput.py --gpu --images "${IMAGES:-200}" --json "$out/gpu.json" 2>&1 | tee "$out/gpu.txt"

# Optionally also train the small synthetic CLIP there (seconds on a GPU, ~25 minutes on 2 CPU cores).
if [ -n "${TRAIN_OUT:-}" ]; then
    python3 -W ignore bench/train_synthetic_clip.py --device cuda --out "$TRAIN_OUT" 2>&1 | tee "$out/train.txt"
fi
