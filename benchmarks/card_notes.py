"""The "how it was trained" notes of a model card, from the run folders of its stages.

    python benchmarks/card_notes.py ~/.cache/subpixel-runs/x3-a ~/.cache/subpixel-runs/x3-b > notes.md
    python benchmarks/ship_model.py ~/.cache/subpixel-runs/x3-b -x 3 --ship espcn-x3 --notes notes.md --only-if-better

Each stage gives its commands, steps, wall time, machine and the validation PSNR at its end (on
training images held back, never on a test set); the data's terms come with the data.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

TERMS = {
    "ImageNet": "ImageNet (one photo per class, 489 images; non-commercial research and educational use)",
    "BSD": "BSD200 (Berkeley Segmentation Dataset train+val; non-commercial research and educational use)",
    "T91": "T91 (Yang et al. 2010; no formal licence)",
    "celeba": "CelebA (aligned faces; non-commercial research only)",
}


def _cpu() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def stage_notes(run: Path) -> list[str]:
    record = json.loads((run / "trainer_state.json").read_text())
    state, config = record["state"], record["config"]
    training = json.loads((run / "config.json").read_text()).get("training", {})
    where = f"{training.get('device', config['device'])}, {training.get('precision', config.get('precision', 'fp32'))}"
    history = [h for h in state["history"] if h.get("val_psnr") is not None]
    last = history[-1] if history else {}
    lines = [f"- **{run.name}**: {state['step']:,} steps of {config['batch_size']} "
             f"{'faces' if config['dataset'].lower() == 'celeba' else str(config['patch_size']) + '-px LR patches'}, "
             f"{config['loss'].upper()} loss, Adam {config['lr']:g} → {config['min_lr']:g} cosine"
             + (f", weights averaged (EMA {config['ema']})" if config.get("ema") else "")
             + f", {state['elapsed'] / 3600:.2f} h of training ({where})"
             + (f"; validation {last['val_psnr']:.2f} dB (bicubic {last['bicubic_psnr']:.2f}) at its end" if last else "")
             + "."]
    lines += [f"  `{command}`" for command in state.get("commands", [])]
    return lines


def main() -> None:
    runs = [Path(a).expanduser() for a in sys.argv[1:]]
    if not runs:
        sys.exit(__doc__)
    datasets = " ".join(json.loads((r / "trainer_state.json").read_text())["config"]["dataset"] for r in runs)
    folders = sorted({p.name for r in runs for p in Path(datasets.split()[0]).glob("*") if p.is_dir()}) \
        if Path(datasets.split()[0]).is_dir() else []
    terms = [t for key, t in TERMS.items() if any(key.lower() in f.lower() for f in folders) or key.lower() in datasets.lower()]
    print("Trained with `subpixel train` (the recipe is `benchmarks/train_cpu.sh`), in stages that each "
          "start from the one before:\n")
    for run in runs:
        print("\n".join(stage_notes(run)))
    print(f"\nHardware: {_cpu()}, one core per run (two runs shared the machine, with other work at times).\n")
    if terms:
        print("Training data: " + "; ".join(terms) + ". The weights are MIT-licensed; where the data's terms "
              "restrict use to non-commercial research, use them under those terms too.\n")
    print("Validation: training images held back (`--val-holdout 20`, named in the card under held_out), by the "
          "protocol of `subpixel eval`; Set5, Set14 and BSD100 were scored once, for this card.")


if __name__ == "__main__":
    main()
