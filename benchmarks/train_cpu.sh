#!/usr/bin/env bash
# The CPU recipe behind the shipped weights (issue 9): resumable stages in two chains that run
# side by side, one core each (OMP_NUM_THREADS=1), with run folders outside the work tree.
#
#   benchmarks/train_cpu.sh chain1   # ×3 then ×2
#   benchmarks/train_cpu.sh chain2   # ×4 then the CelebA face model
#   benchmarks/train_cpu.sh x3-long  # a ~2-hour ×3 cycle from the shipped weights, one core
#   benchmarks/train_cpu.sh x4-long  # the same for ×4, ~1.2 hours
#   benchmarks/train_cpu.sh x2-long  # the same for ×2, ~30 minutes (after x3-long, on its core)
#   benchmarks/train_cpu.sh third    # a third cycle from the second: ×2 (~65 min) then ×4 (~35 min)
#   benchmarks/train_cpu.sh third-x3 # the same for ×3 (~1.5 h), to resume in a later session
#   benchmarks/train_cpu.sh fourth-x3 # a fourth ×3 cycle from the third, on 64-px patches (~1.8 h)
#   benchmarks/train_cpu.sh fourth-x2 # the same for ×2 (~1.5 h), on the other core
#
# Run it again after any interruption: a finished stage is skipped, a stopped one resumed from
# its last checkpoint. Each stage's run folder is a model folder (subpixel eval --model DIR).
# Stage A starts from the weights shipped before this recipe (every layer: fine-tuning) with an
# L1 loss; stage B continues from A's averaged weights with MSE (PSNR is MSE) at a lower rate.
# ×2 and the face model had one MSE stage each, to fit the 3-hour session they ran in;
# stage A of ×3/×4 was started for 40,000 steps and resumed at step ~11,500 with 24,000 (the
# cosine schedule jumped from 4.1e-4 to 3.2e-4 there).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${SUBPIXEL_RUNS:-$HOME/.cache/subpixel-runs}
DATA=${SUBPIXEL_SHARED_DATA:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$RUNS"

finished() {  # finished DIR: the run in DIR reached its total steps
  python - "$1" <<'PY'
import json, sys
from pathlib import Path
p = Path(sys.argv[1]) / "trainer_state.json"
if not p.is_file():
    sys.exit(1)
d = json.loads(p.read_text())
sys.exit(0 if d["state"]["step"] >= (d["config"]["steps"] or 0) else 1)
PY
}

stage() {  # stage NAME ARGS...: train into $RUNS/NAME unless it is done; resume if stopped
  local name=$1 out=$RUNS/$1; shift
  if finished "$out"; then echo "$name: done"; return; fi
  local resume=()
  [ -f "$out/checkpoint.safetensors" ] && resume=(--resume)
  echo "$name: $(date -u +%H:%M:%S) start ${resume[*]}"
  subpixel train "$@" --out "$out" --name "$name" --checkpoint-every 1000 --quiet "${resume[@]}"
  echo "$name: $(date -u +%H:%M:%S) end"
}

Y=(--dataset "$DATA/train" --workers 2 --patch-size 48 --batch-size 32 --patches-per-image 64 --scale-aug 0.6
   --ema 0.999 --val-holdout 20 --seed 0)

long_cycle() {  # long_cycle SCALE L1_STEPS MSE_STEPS: the second, longer cycle from the shipped espcn-xSCALE
  # (already fine-tuned at 5e-4): L1 at a higher rate with twice the shrunk copies per image, then MSE.
  local x=$1 long=(--dataset "$DATA/train" --workers 0 --patch-size 48 --batch-size 32 --patches-per-image 64
                   --scale-aug 0.6 --scale-versions 8 --ema 0.999 --val-holdout 20 --seed 2)
  stage "x$x-c" "${long[@]}" -x "$x" --steps "$2" --loss l1 --lr 1e-3 --min-lr 1e-5 --init-from "espcn-x$x"
  stage "x$x-d" "${long[@]}" -x "$x" --steps "$3" --loss mse --lr 1e-4 --min-lr 1e-6 --init-from "$RUNS/x$x-c"
}

third_cycle() {  # third_cycle SCALE L1_STEPS MSE_STEPS: another warm restart, from cycle two's last stage
  local x=$1 long=(--dataset "$DATA/train" --workers 0 --patch-size 48 --batch-size 32 --patches-per-image 64
                   --scale-aug 0.6 --scale-versions 8 --ema 0.999 --val-holdout 20 --seed 3)
  stage "x$x-e" "${long[@]}" -x "$x" --steps "$2" --loss l1 --lr 5e-4 --min-lr 1e-5 --init-from "$RUNS/x$x-d"
  stage "x$x-f" "${long[@]}" -x "$x" --steps "$3" --loss mse --lr 1e-4 --min-lr 1e-6 --init-from "$RUNS/x$x-e"
}

fourth_cycle() {  # fourth_cycle SCALE L1_STEPS MSE_STEPS: from cycle three, on longer (64-px) patches
  local x=$1 long=(--dataset "$DATA/train" --workers 0 --patch-size 64 --batch-size 32 --patches-per-image 64
                   --scale-aug 0.6 --scale-versions 8 --ema 0.999 --val-holdout 20 --seed 4)
  stage "x$x-g" "${long[@]}" -x "$x" --steps "$2" --loss l1 --lr 3e-4 --min-lr 1e-5 --init-from "$RUNS/x$x-f"
  stage "x$x-h" "${long[@]}" -x "$x" --steps "$3" --loss mse --lr 1e-4 --min-lr 1e-6 --init-from "$RUNS/x$x-g"
}

case "${1:-}" in
  chain1)
    stage x3-a "${Y[@]}" -x 3 --steps 24000 --loss l1 --lr 5e-4 --min-lr 1e-5 --init-from espcn-x3
    stage x3-b "${Y[@]}" -x 3 --steps 4000 --loss mse --lr 1e-4 --min-lr 1e-6 --init-from "$RUNS/x3-a"
    stage x2-m "${Y[@]}" -x 2 --steps 10000 --loss mse --lr 2e-4 --min-lr 1e-6 --init-from espcn-x2
    ;;
  chain2)
    stage x4-a "${Y[@]}" -x 4 --steps 24000 --loss l1 --lr 5e-4 --min-lr 1e-5 --init-from espcn-x4
    F=(--dataset celebA --data-dir "$DATA/celeba_sample" -x 4 --batch-size 32 --ema 0.999 --seed 0)
    # The face model starts from ×4's Y model made RGB (train.y_model_as_rgb): the Y of its output
    # is the general model's, and the faces teach it the rest. (From the old face model it trailed.)
    stage face-m "${F[@]}" --steps 10000 --loss mse --lr 2e-4 --min-lr 1e-6 --init-from "$RUNS/x4-a"
    stage x4-b "${Y[@]}" -x 4 --steps 4000 --loss mse --lr 1e-4 --min-lr 1e-6 --init-from "$RUNS/x4-a"
    ;;
  x3-long)
    # Stage x3-c was started for 60,000 steps and resumed at step 14,000 with 40,000, to end
    # within the session (the cosine rate jumped from 8.8e-4 to 7.5e-4 there); ~1.5 h on one core.
    long_cycle 3 40000 8000 ;;
  x4-long) long_cycle 4 30000 5000 ;;
  x2-long) long_cycle 2 10000 3000 ;;
  third) third_cycle 2 40000 4000; third_cycle 4 20000 3000 ;;
  third-x3) third_cycle 3 40000 8000 ;;
  fourth-x3) fourth_cycle 3 30000 6000 ;;
  fourth-x2) fourth_cycle 2 18000 3000 ;;
  *) echo "usage: $0 chain1|chain2|x3-long|x4-long|x2-long|third|third-x3|fourth-x3|fourth-x2" >&2; exit 2 ;;
esac
