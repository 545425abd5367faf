#!/usr/bin/env bash
# The recipe behind espcn-x{2,3,4}-real (issue 21): each fine-tuned from its clean twin on the CPU
# training set with every LR patch damaged as real pictures are (subpixel train --degrade), one
# core each (OMP_NUM_THREADS=1), run folders outside the work tree so that a later session can
# resume them.
#
#   benchmarks/train_real.sh x4                    # ×4 (8,000 steps, ~40 min on one core)
#   benchmarks/train_real.sh x3                    # ×3 on the other core (the same)
#   REAL_STEPS=4000 benchmarks/train_real.sh x2    # ×2 after either (~20 min)
#
# The shipped models were trained so (x2 with 4,000 steps: the validation PSNR of x3 and x4 was
# flat after ~1,500). Run it from a snapshot of the tree, so that editing the work tree cannot
# break a run that imports a module late:
#   git worktree add --detach ../train-snap HEAD && cd ../train-snap && PYTHONPATH=$PWD benchmarks/train_real.sh x4
#
# The shipped weights are then blended back toward the clean model, as far as keeps clean input
# within 0.4 dB of it on validation (×2 0.7, ×3 0.85, ×4 0.95 of the way), and shipped:
#   python benchmarks/pick_strength.py -x 4 --real $RUNS/real-x4 --limit 0.4 --out /tmp/real-x4-pick
#   python benchmarks/ship_model.py /tmp/real-x4-pick -x 4 --ship espcn-x4-real --twin espcn-x4 \
#       --degrade jpeg:75 --degrade jpeg:50 --notes NOTES.md && subpixel quantize weights/espcn-x4-real --force ...
#
# Run it again after any interruption: a finished stage is skipped, a stopped one resumed from
# its last checkpoint. Each run folder is a model folder (subpixel eval --model DIR --degrade jpeg:75).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${SUBPIXEL_RUNS:-$HOME/.cache/subpixel-runs}
DATA=${SUBPIXEL_SHARED_DATA:-../shared/data}
STEPS=${REAL_STEPS:-8000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$RUNS"
# What real pictures went through: JPEG most often (cameras, the web), H.264 key frames, sensor
# noise, a soft lens or resize; about one patch in five stays clean, so clean input keeps its gain.
DAMAGE="blur:0.2-1.2@0.2,noise:1-8@0.3,poisson:1-6@0.1,jpeg:30-95@0.75,h264:18-38@0.2"

real() {  # real SCALE: fine-tune espcn-xSCALE into $RUNS/real-xSCALE (resumes a stopped run)
  local x=$1 out=$RUNS/real-x$1 resume=()
  [ -f "$out/checkpoint.safetensors" ] && resume=(--resume)
  echo "real-x$x: $(date -u +%H:%M:%S) start ${resume[*]}"
  subpixel train --dataset "$DATA/train" -x "$x" --steps "$STEPS" --batch-size 32 --patch-size 48 \
    --patches-per-image 64 --scale-aug 0.6 --scale-versions 4 --loss l1 --lr 5e-4 --min-lr 1e-5 \
    --ema 0.999 --val-holdout 20 --seed 5 --workers 0 --checkpoint-every 500 --init-from "espcn-x$x" \
    --degrade "$DAMAGE" --out "$out" --name "espcn-x$x-real" --quiet "${resume[@]}" || return $?
  echo "real-x$x: $(date -u +%H:%M:%S) end"
}

case "${1:-}" in
  x4) real 4 ;;
  x3) real 3 ;;
  x2) real 2 ;;
  *) echo "usage: $0 x4|x3|x2" >&2; exit 2 ;;
esac
