#!/usr/bin/env bash
# GPU benchmark for pixsieve: decode, CLIP ViT-L/14 embedding (bf16), the LAION heads and a
# full pipeline run, on synthetic ~512-px JPEG shards made on the spot. Needs no network:
# random-weight models, nothing downloaded. Run from anywhere:
#
#   bash benchmarks/gpu.sh                        # one GPU: 6,000 images
#   bash benchmarks/gpu.sh --images 20000         # longer run
#   bash benchmarks/gpu.sh --cpu --images 64      # smoke mode on a CPU-only machine
#   bash benchmarks/gpu.sh --cpu --images 64 --tiny   # faster smoke (2-layer CLIP)
#
# Needs (see docs/gpu.md): a CUDA build of torch, transformers, and pixsieve's dependencies;
# optional nvidia-dali-cuda12x/-cuda130 (DALI decode) and a torchvision built for the same torch
# (nvJPEG decode). Results go to stdout and to $PIXSIEVE_BENCH_OUT (default benchmarks/results)
# as gpu-<host>-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" - <<'PY'
import importlib, torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
for mod in ("transformers", "torchvision", "nvidia.dali"):
    try:
        print(f"{mod} {importlib.import_module(mod).__version__}")
    except Exception as e:  # optional backends
        print(f"{mod}: not usable ({type(e).__name__})")
PY

stamp="$(date +%Y%m%d-%H%M%S)"
dir="${PIXSIEVE_BENCH_OUT:-benchmarks/results}"
out="$dir/gpu-$(hostname -s)-${stamp}.json"
mkdir -p "$dir"
"$PY" benchmarks/gpu_bench.py --json "$out" "$@"
echo "results: $out"
