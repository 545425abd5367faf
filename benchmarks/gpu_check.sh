#!/usr/bin/env bash
# The GPU checks in one short call (issues 9–11, 24): the CUDA tests, `subpixel bench --device cuda`
# at ×2/×3/×4 (auto and fp32), `subpixel video` end to end, eval on the GPU against the model cards,
# 1 against 2 video workers on one GPU (sharded runs too where there are two GPUs). Every check
# runs within its own time limit and what is left of BUDGET seconds (the device call allows 420),
# and prints one line: ok/FAIL/skip, its name, its wall time (timed in bash) and its result.
#
#   here:   python benchmarks/gpu_prepare.py check
#   there:  run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-check"], timeout_s=420)
#   on a CPU, to test the script (DIR holds Set5/ and car_traffic_small.mp4):
#     DEVICE=cpu GPU_CHECK_DIR=DIR BUDGET=1500 BENCH_SECONDS=0.2 BENCH_SIZE=64x36 VIDEO_END=0.3 \
#       TESTS=tests/test_cuda.py bash benchmarks/gpu_check.sh
#
# Everything is logged to $OUT/gpu_check.log, the bench records to $OUT/gpu_bench.jsonl and the eval
# records to $OUT/gpu_eval.jsonl; put the figures into benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
CHECK=${GPU_CHECK_DIR:-.gpu-check}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-400}
BENCH_SECONDS=${BENCH_SECONDS:-4}
BENCH_SIZE=${BENCH_SIZE:-}  # input frames WxH (default: what makes 1080p at each scale)
VIDEO_END=${VIDEO_END:-}  # seconds of the clip to upscale (default: all 30 s)
TESTS=${TESTS:-tests/test_cuda.py tests/test_data.py::test_device_patches_cut_the_same_batches_as_the_dataset tests/test_upscale.py tests/test_speed_paths.py}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
if ! $PY -c "import av" 2>/dev/null; then  # the device image has torch but not PyAV
  $PY -m pip install -q --no-index --no-deps --target /tmp/site "$CHECK"/wheels/*.whl >> "$LOG" 2>&1 \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
clip=() size=()
[ -n "$VIDEO_END" ] && clip=(--end "$VIDEO_END")
[ -n "$BENCH_SIZE" ] && size=(--size "$BENCH_SIZE")
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
passed=0 failed=0 skipped=0

# check NAME SECONDS SUMMARY CMD...: run CMD (output to the log) for at most SECONDS, and print one
# line; SUMMARY is a function that reads the output in $TMP and prints the result in a few words.
check() {
  local name=$1 limit=$2 summary=$3
  shift 3
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 10 ]; then
    printf 'skip %-36s (the %s s budget is spent)\n' "$name" "$BUDGET"
    skipped=$((skipped + 1))
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name: $*" >> "$LOG"
  local start=$EPOCHREALTIME
  timeout -k 5 "$limit" "$@" > "$TMP" 2>&1
  local rc=$?
  local took
  took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  cat "$TMP" >> "$LOG"
  echo "-- exit $rc after $took s" >> "$LOG"
  local result
  result=$($summary 2>&1 | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'ok   %-36s %6s s  %s\n' "$name" "$took" "$result"
  else
    failed=$((failed + 1))
    [ "$rc" -eq 124 ] && result="timed out after $limit s; $result"
    printf 'FAIL %-36s %6s s  %s\n' "$name" "$took" "$result"
  fi
}

last_line() { grep -v '^\s*$' "$TMP" | tail -n 1; }
machine() { grep -v '^\s*$' "$TMP" | tr '\n' ' '; }
json_line() {  # the command's JSON record, or what it said instead
  local line
  line=$(grep '^{' "$TMP" | tail -n 1)
  [ -n "$line" ] && echo "$line" || { echo "no result: $(last_line)"; return 1; }
}
bench_result() {
  local j
  j=$(json_line) || { echo "$j"; return; }
  echo "$j" >> "$OUT/gpu_bench.jsonl"
  echo "$j" | $PY -c \
    'import json, sys; d = json.load(sys.stdin); print("%.1f frames/s of %dx%d in %s" % (d["fps"], *d["output_size"], d["math"]))'
}
video_result() {
  local j
  j=$(json_line) || { echo "$j"; return; }
  echo "$j" | $PY -c \
    'import json, sys; d = json.load(sys.stdin); print("%d frames, %.1f frames/s, %s %s" % (d["frames"], d["speed_fps"], d["codec"], d["pix_fmt"]))'
}
eval_result() {
  local j
  j=$(json_line) || { echo "$j"; return; }
  echo "$j" >> "$OUT/gpu_eval.jsonl"
  echo "$j" | $PY -c '
import json, sys
from subpixel_cli.registry import packaged_models
d = json.load(sys.stdin)
ours = d["datasets"][0]["mean"]["psnr"]
card = packaged_models()[d["method"]].psnr("Set5")
same = card is not None and round(ours, 2) == round(card, 2)
print("%s Set5 %.2f dB on %s %s, card %s: %s" % (d["method"], ours, d["device"], d["precision"], card, "same" if same else "DIFFERS"))'
}

check "machine" 30 machine sh -c "nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi'; \
  $PY -c \"import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')\""
# shellcheck disable=SC2086  # TESTS is a list of test ids
check "tests" 150 last_line $PY -m pytest -q -p no:cacheprovider $TESTS
for s in 2 3 4; do
  for p in auto fp32; do
    check "bench x$s $p" 40 bench_result $PY -m subpixel_cli bench -x $s --device "$DEVICE" --precision $p \
      --batch-size 16 --seconds "$BENCH_SECONDS" "${size[@]}" --json
  done
done
check "bench x3 i420 (what video runs)" 40 bench_result $PY -m subpixel_cli bench -x 3 --device "$DEVICE" \
  --frames i420 --batch-size 16 --seconds "$BENCH_SECONDS" "${size[@]}" --json
check "video x2 end to end" 90 video_result $PY -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 \
  -o "$OUT/car_x2.mp4" --device "$DEVICE" --force --json --quiet "${clip[@]}"
rm -f "$OUT/car_x2.mp4"  # big; its figures are in the log
for s in 2 3 4; do
  check "eval x$s Set5 (as the card)" 40 eval_result $PY -m subpixel_cli eval "$CHECK/Set5" -x $s \
    --device "$DEVICE" --json
done
for n in 1 2; do  # issue 11: does a second worker keep one GPU busier?
  check "video in segments, $n worker(s), 1 GPU" 90 video_result $PY -m torch.distributed.run --nproc_per_node $n \
    --standalone -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 -o "$OUT/seg$n.mp4" --device "$DEVICE" \
    --force --json --quiet --no-resume "${clip[@]}"
  rm -f "$OUT/seg$n.mp4"
done
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$gpus" -ge 2 ]; then
  check "upscale, 1 process" 60 last_line $PY -m subpixel_cli upscale "$CHECK/Set5" -x 2 -o "$OUT/one" \
    --device cuda -q
  check "upscale, 2 processes (2 GPUs)" 90 last_line $PY -m torch.distributed.run --nproc_per_node 2 --standalone \
    -m subpixel_cli upscale "$CHECK/Set5" -x 2 -o "$OUT/two" --device cuda
  check "sharded outputs equal one process's" 10 last_line diff -r "$OUT/one" "$OUT/two"
  rm -rf "$OUT/one" "$OUT/two"
  check "video in segments, 2 GPUs" 90 video_result $PY -m torch.distributed.run --nproc_per_node 2 --standalone \
    -m subpixel_cli video "$CHECK/car_traffic_small.mp4" -x 2 -o "$OUT/seg2gpu.mp4" --device cuda --force --json \
    --quiet --no-resume "${clip[@]}"
  rm -f "$OUT/seg2gpu.mp4"
fi
echo "gpu_check: $passed ok, $failed failed, $skipped skipped in $SECONDS s; log in $LOG"
[ "$failed" -eq 0 ]
