#!/usr/bin/env bash
# The GPU recipe (issue 9): fine-tune ×3, ×2 and ×4 from the shipped weights on a CUDA machine in
# about 8 minutes of wall time — fp16 AMP, batches of 512 patches cut on the GPU from images held
# there (--device-data), 16 loading workers — score each run with `subpixel eval`, and leave the
# model folders, logs and scores in $OUT/gpu_runs.tar.
#
#   here:   python benchmarks/gpu_prepare.py train   # T91 + BSD200 (lossless WebP), 67 ImageNet photos, Set5/14: 54 MiB
#   there:  run(command="bash benchmarks/train_gpu.sh", carry=[".gpu-data"], timeout_s=560)
#   on a CPU, a few steps to test it: DEVICE=cpu STEPS=3 BATCH=8 STAGE_TIMEOUT=0 DATA=DIR bash benchmarks/train_gpu.sh
#   (DIR holds train/ and benchmarks/Set5, benchmarks/Set14, as ../shared/data does)
#
# Ship a run only if it beats the shipped model on Set5 and Set14:
#   python benchmarks/ship_model.py RUN -x N --ship espcn-xN --only-if-better
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-train}
DATA=${DATA:-.gpu-data}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-6000}
BATCH=${BATCH:-512}
WORKERS=${WORKERS:-$(nproc)}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-150}  # seconds a model's training may take (0: no limit)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
RUNS=$OUT/runs
mkdir -p "$RUNS"
{
  for s in 3 2 4; do
    echo "== ×$s: $(date -u +%T)"
    timeout "$STAGE_TIMEOUT" $PY -m subpixel_cli train --dataset "$DATA/train" -x $s --init-from espcn-x$s --device "$DEVICE" \
      --steps "$STEPS" --batch-size "$BATCH" --patch-size 48 --patches-per-image 64 --scale-aug 0.6 \
      --lr 1e-4 --min-lr 1e-6 --loss mse --ema 0.999 --val-holdout 20 --workers "$WORKERS" \
      --checkpoint-every 100000 --out "$RUNS/gpu-x$s" --name "gpu-x$s" --quiet || { echo "×$s: training failed"; continue; }
    $PY -m subpixel_cli eval "$DATA/benchmarks/Set5" "$DATA/benchmarks/Set14" --model "$RUNS/gpu-x$s" --json \
      > "$RUNS/gpu-x$s/eval.json"
    $PY -m subpixel_cli eval "$DATA/benchmarks/Set5" "$DATA/benchmarks/Set14" -x $s --json > "$RUNS/shipped-x$s.json"
    $PY - "$RUNS" $s <<'PY'
import json, sys
runs, s = sys.argv[1], sys.argv[2]
new = json.load(open(f"{runs}/gpu-x{s}/eval.json"))["datasets"]
old = json.load(open(f"{runs}/shipped-x{s}.json"))["datasets"]
for n, o in zip(new, old):
    print(f"x{s} {n['name']}: GPU run {n['mean']['psnr']:.2f} dB, shipped {o['mean']['psnr']:.2f} dB")
PY
  done
  echo "== done $(date -u +%T)"
} 2>&1 | tee "$OUT/train_gpu.log"
# One file back (the device returns at most 8): the model folders without checkpoints or samples.
tar -C "$RUNS" --exclude checkpoint.safetensors --exclude samples -cf "$OUT/gpu_runs.tar" .
rm -rf "$RUNS"
