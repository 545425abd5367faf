#!/usr/bin/env bash
# The GPU recipe (issues 9, 24): fine-tune ×3, ×2 and ×4 from the shipped weights on a CUDA machine
# within BUDGET seconds of wall time (the device call allows 560) — fp16 AMP, batches of 512 patches
# cut on the GPU from images held there, 16 loading workers — each run stopped by
# `subpixel train --time-limit` (it validates and saves what it has), then scored with
# `subpixel eval` on the GPU against the shipped model, whatever it reached. One line per stage
# and per score on stdout; the logs, the scores and the model folders are left in $OUT.
#
#   here:   python benchmarks/gpu_prepare.py train   # T91 + BSD200 (lossless WebP), ImageNet photos, Set5/14: 54 MiB
#   there:  run(command="bash benchmarks/train_gpu.sh", carry=[".gpu-data"], timeout_s=560)
#   on a CPU, to test the script (DIR holds train/ and benchmarks/Set5, benchmarks/Set14, as ../shared/data does;
#   a few pictures in train/ are enough):
#     DEVICE=cpu STEPS=100000 BATCH=8 TIME_LIMIT=20 HOLDOUT=2 DATA=DIR bash benchmarks/train_gpu.sh
#
# $OUT/train_gpu.log: everything; $OUT/train_gpu_scores.jsonl: one record per run and dataset;
# $OUT/gpu_runs.tar: the model folders (without checkpoints or samples) with each run's training log.
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
HOLDOUT=${HOLDOUT:-20}
BUDGET=${BUDGET:-530}        # seconds for the whole script
TIME_LIMIT=${TIME_LIMIT:-140}  # seconds of training a stage may take at most (data loading included)
RESERVE=35                   # seconds a stage needs beyond its training: start-up, the last save, two evals
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
RUNS=$OUT/runs
LOG=$OUT/train_gpu.log
SCORES=$OUT/train_gpu_scores.jsonl
mkdir -p "$RUNS"
: > "$LOG"
: > "$SCORES"
stages=(3 2 4)

# The scores of a run and of the shipped model, one line (and a record per dataset in $SCORES).
compare() {
  $PY - "$RUNS" "$1" "$SCORES" <<'PY'
import json, sys
runs, s, scores = sys.argv[1], sys.argv[2], sys.argv[3]
new = json.load(open(f"{runs}/gpu-x{s}/eval.json"))["datasets"]
old = json.load(open(f"{runs}/shipped-x{s}.json"))["datasets"]
parts = []
with open(scores, "a") as f:
    for n, o in zip(new, old):
        f.write(json.dumps({"scale": int(s), "dataset": n["name"], "gpu_run": n["mean"]["psnr"],
                            "shipped": o["mean"]["psnr"]}) + "\n")
        parts.append(f"{n['name']} {n['mean']['psnr']:.2f} dB (shipped {o['mean']['psnr']:.2f})")
print(f"x{s}: GPU run " + ", ".join(parts))
PY
}

# How far a run got: steps, wall time, why it stopped, its last validation.
progress() {
  $PY - "$RUNS/gpu-x$1/trainer_state.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
state, total = d["state"], d["config"]["steps"]
last = next((h for h in reversed(state["history"]) if "val_psnr" in h), None)
val = f", val {last['val_psnr']:.2f} dB (bicubic {last['bicubic_psnr']:.2f})" if last else ""
print(f"{state['step']} of {total} steps in {state['elapsed']:.0f} s{val}")
PY
}

for i in "${!stages[@]}"; do
  s=${stages[$i]}
  run=$RUNS/gpu-x$s
  left=$((BUDGET - SECONDS))
  share=$(( left / (${#stages[@]} - i) - RESERVE ))  # what is left, shared by the stages still to come
  limit=$(( share < TIME_LIMIT ? share : TIME_LIMIT ))
  if [ "$limit" -lt 15 ]; then
    echo "x$s: skipped, $left s of the $BUDGET s budget left" | tee -a "$LOG"
    continue
  fi
  echo "== x$s: $(date -u +%T), --time-limit $limit" >> "$LOG"
  start=$SECONDS
  # The hard timeout is only for a hang: --time-limit stops the run and saves it.
  timeout -k 10 $((limit + 60)) $PY -m subpixel_cli train --dataset "$DATA/train" -x "$s" --init-from "espcn-x$s" \
    --device "$DEVICE" --steps "$STEPS" --batch-size "$BATCH" --patch-size 48 --patches-per-image 64 --scale-aug 0.6 \
    --lr 1e-4 --min-lr 1e-6 --loss mse --ema 0.999 --val-holdout "$HOLDOUT" --workers "$WORKERS" \
    --val-every 1000 --checkpoint-every 1000 --time-limit "$limit" --out "$run" --name "gpu-x$s" --quiet \
    > "$OUT/train-x$s.log" 2>&1
  rc=$?
  cat "$OUT/train-x$s.log" >> "$LOG"
  if [ ! -f "$run/model.safetensors" ]; then
    echo "x$s: training failed (exit $rc) before it saved a model: $(tail -n 1 "$OUT/train-x$s.log")" | tee -a "$LOG"
    continue
  fi
  how="exit $rc"
  grep -q "stopped at --time-limit" "$OUT/train-x$s.log" && how="time limit"
  [ "$rc" -eq 0 ] && [ "$how" = "exit 0" ] && how="all steps"
  echo "x$s: trained $(progress "$s" 2>&1 | tail -n 1) ($how; $((SECONDS - start)) s with start-up)" | tee -a "$LOG"
  # Whatever the run saved is scored, on the same device as the shipped model.
  $PY -m subpixel_cli eval "$DATA/benchmarks/Set5" "$DATA/benchmarks/Set14" --model "$run" --device "$DEVICE" \
    --json > "$run/eval.json" 2>> "$LOG" \
    && $PY -m subpixel_cli eval "$DATA/benchmarks/Set5" "$DATA/benchmarks/Set14" -x "$s" --device "$DEVICE" \
      --json > "$RUNS/shipped-x$s.json" 2>> "$LOG" \
    && compare "$s" 2>&1 | tail -n 1 | tee -a "$LOG" \
    || echo "x$s: scoring failed (see $LOG)" | tee -a "$LOG"
  mv "$OUT/train-x$s.log" "$run/train.log"
done
echo "train_gpu: done in $SECONDS s; scores in $SCORES, model folders in $OUT/gpu_runs.tar" | tee -a "$LOG"
# Few files back (the device returns at most 8): the model folders without checkpoints or samples.
tar -C "$RUNS" --exclude checkpoint.safetensors --exclude samples -cf "$OUT/gpu_runs.tar" .
rm -rf "$RUNS"
