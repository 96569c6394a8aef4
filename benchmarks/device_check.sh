#!/usr/bin/env bash
# One prepared check of pixsieve's GPU path on one GPU machine (an H200 with no network).
# Finishes within 10 minutes; every result goes into the folder given as the first argument.
#
#   bash benchmarks/device_check.sh RESULTS_DIR          # on the GPU machine
#   bash benchmarks/device_check.sh RESULTS_DIR --cpu    # smoke here: small sizes, CPU only
#
# Steps, each under its own `timeout`, output unbuffered and kept in RESULTS_DIR/<step>.log:
#   0. env        nvidia-smi, torch / transformers / torchvision / DALI versions
#   1. wheels     simplejpeg and faiss-cpu from .whl/*.whl (cp312 manylinux), when present
#   2. probe      one line per decode backend (set up + one small batch), gpu_bench --probe-only
#   3. pytest     pytest -m gpu (the CUDA-only tests)
#   4. bench      benchmarks/gpu.sh: >= 20,000 images, decode per backend, embed eager and
#                 compiled, heads, end-to-end curate, GPU utilisation timeline (gpu-*.json)
#   5. dedup      semantic dedup with the torch backend on 1M planted 768-d embeddings
# nvidia-smi samples utilisation and memory every 500 ms for the whole run (nvidia-smi.csv).
# A failed or timed-out step is recorded in RESULTS_DIR/steps.txt and the next one runs.
# Test data comes from the repository (tests/data); models have random weights; nothing is
# downloaded. DALI's wheels are too large to carry, so the GPU decode measured is nvJPEG.
set -uo pipefail
out="${1:?usage: device_check.sh RESULTS_DIR [--cpu]}"
mode="${2:-gpu}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
: >"$out/steps.txt"

if [ "$mode" = "--cpu" ]; then  # smoke sizes
    IMAGES=64 DEDUP_N=20000 BENCH_FLAGS="--cpu --tiny --batch 16" DEDUP_FLAGS="--cpu"
    T_BENCH=900 T_DEDUP=300 T_TEST=300
else
    IMAGES=20000 DEDUP_N=1000000 BENCH_FLAGS="--batch 512" DEDUP_FLAGS=""
    T_BENCH=330 T_DEDUP=100 T_TEST=120
fi

step() {  # step NAME SECONDS COMMAND...: run under timeout, log, record the exit status
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$out/steps.txt"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/steps.txt"
    tail -n 5 "$out/$name.log"
}

smi_pid=""
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw \
        --format=csv -lms 500 >"$out/nvidia-smi.csv" 2>/dev/null &
    smi_pid=$!
fi
trap '[ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null' EXIT

step env 60 bash -c "nvidia-smi || true; $PY - <<'PY'
import importlib, os, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', os.cpu_count())
for m in ('transformers', 'torchvision', 'nvidia.dali', 'simplejpeg', 'faiss'):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, 'missing:', type(e).__name__)
PY"

if ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/pixsieve-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/pixsieve-site"
fi

step probe 90 "$PY" benchmarks/gpu_bench.py --probe-only --images 16 $BENCH_FLAGS \
    --json "$out/probe.json"
step pytest "$T_TEST" "$PY" -m pytest -m gpu -q -p no:cacheprovider -x -ra
PIXSIEVE_BENCH_OUT="$out" step bench "$T_BENCH" bash benchmarks/gpu.sh \
    --images "$IMAGES" $BENCH_FLAGS
step dedup "$T_DEDUP" "$PY" benchmarks/dedup_gpu_bench.py --n "$DEDUP_N" $DEDUP_FLAGS \
    --json "$out/dedup.json"
echo "results in $out" | tee -a "$out/steps.txt"
