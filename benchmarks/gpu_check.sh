#!/usr/bin/env bash
# The GPU checks in one short call (issues 9–11): the CUDA tests, `subpixel bench --device cuda` at
# ×2/×3/×4, `subpixel video` end to end, 1 against 2 video workers on one GPU (sharded runs too
# where there are two GPUs), and eval on the GPU; within about 5 minutes on one H200.
#
#   here:   python benchmarks/gpu_prepare.py check
#   there:  run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-check"], timeout_s=420)
#
# Everything is logged to $OUT/gpu_check.log (and the bench JSON to $OUT/gpu_bench.jsonl); put the
# figures into benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
CHECK=${GPU_CHECK_DIR:-.gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
if ! $PY -c "import av" 2>/dev/null; then  # the device image has torch but not PyAV
  $PY -m pip install -q --no-index --no-deps --target /tmp/site "$CHECK"/wheels/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
sp() { $PY -m subpixel_cli "$@"; }
{
  echo "== machine"; nvidia-smi -L 2>&1; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  echo "== CUDA tests"
  timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_data.py::test_device_patches_cut_the_same_batches_as_the_dataset tests/test_upscale.py tests/test_speed_paths.py
  echo "== bench (model only, 1080p out)"
  for s in 2 3 4; do
    for p in auto fp32; do
      timeout 40 $PY -m subpixel_cli bench -x $s --device cuda --precision $p --batch-size 16 --seconds 5 --json \
        | tee -a "$OUT/gpu_bench.jsonl"
    done
  done
  echo "== bench on I420 frames (what video runs; stop 17)"
  timeout 40 $PY -m subpixel_cli bench -x 3 --device cuda --frames i420 --batch-size 16 --seconds 5 --json \
    | tee -a "$OUT/gpu_bench.jsonl"
  echo "== video end to end (×2, H.264, audio copied)"
  timeout 90 $PY -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 -o "$OUT/car_x2.mp4" --device cuda --force --json --quiet
  echo "== eval on the GPU (Set5; must equal the cards)"
  for s in 2 3 4; do timeout 30 $PY -m subpixel_cli eval "$CHECK/Set5" -x $s --json | $PY -c \
    "import json,sys; d=json.load(sys.stdin)['datasets'][0]; print('x$s', d['name'], d['mean']['psnr'])"; done
  echo "== video in segments on one GPU: 1 worker against 2 (issue 11: does a second worker keep it busier?)"
  for n in 1 2; do
    /usr/bin/time -f "workers $n: %e s wall" timeout 90 $PY -m torch.distributed.run --nproc_per_node $n --standalone \
      -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 -o "$OUT/seg$n.mp4" --device cuda --force --json --quiet --no-resume
  done
  rm -f "$OUT"/seg*.mp4
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  if [ "$gpus" -ge 2 ]; then
    echo "== sharded upscale: 2 processes (torchrun), one GPU each, against one process"
    timeout 60 $PY -m subpixel_cli upscale "$CHECK/Set5" -x 2 -o "$OUT/one" --device cuda -q
    timeout 90 $PY -m torch.distributed.run --nproc_per_node 2 --standalone -m subpixel_cli upscale "$CHECK/Set5" \
      -x 2 -o "$OUT/two" --device cuda
    diff -r "$OUT/one" "$OUT/two" && echo "sharded outputs equal the single process's"
    rm -rf "$OUT/one" "$OUT/two"
    echo "== sharded video: 2 processes, one GPU each"
    /usr/bin/time -f "2 GPUs: %e s wall" timeout 90 $PY -m torch.distributed.run --nproc_per_node 2 --standalone \
      -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 -o "$OUT/seg2gpu.mp4" --device cuda --force --json --quiet --no-resume
    rm -f "$OUT/seg2gpu.mp4"
  fi
  rm -f "$OUT/car_x2.mp4"  # big; its figures are in the log
} 2>&1 | tee "$OUT/gpu_check.log"
