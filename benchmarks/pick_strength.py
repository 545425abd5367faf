#!/usr/bin/env python
"""How far toward its fine-tuned real-world weights each packaged ``-real`` model goes (issue 21).

A model fine-tuned on damaged pictures loses some of its gain on clean ones. The weights between
it and its clean twin (what ``--denoise S`` blends) trade one for the other. This scores the
blends on a validation set that is no test set (Set5 and the 20 training images the real-world
run held back, ``held_out`` in its config.json), clean and JPEG 75, and picks the largest S whose
clean-input Y-PSNR stays within ``--limit`` dB of the clean model's. With ``--out`` it writes that
blend as a model folder, its training record saying so (ship it with benchmarks/ship_model.py).

    python benchmarks/pick_strength.py -x 2 --real ~/.cache/subpixel-runs/real-x2 --out /tmp/real-x2-pick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STRENGTHS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


def validation_folder(held_out: list[str], work: Path) -> Path:
    """Links to Set5 and to the run's held-back training images (found by name under the
    training folder) in one folder: nothing is copied."""
    folder = work / "val"
    folder.mkdir()
    for path in sorted((DATA / "benchmarks" / "Set5").iterdir()):
        (folder / f"set5_{path.name}").symlink_to(path)
    by_name = {p.name: p for p in (DATA / "train").rglob("*") if p.is_file()}
    missing = [name for name in held_out if name not in by_name]
    if missing:
        sys.exit(f"held-back images not found under {DATA / 'train'}: {', '.join(missing)}")
    for name in held_out:
        (folder / name).symlink_to(by_name[name])
    return folder


def mean_psnr(model, scale: int, folder: Path, spec: str | None) -> float:
    from subpixel_cli.degradations import Degradation
    from subpixel_cli.evaluate import evaluate_model

    result = evaluate_model(model, scale, [folder], damage=Degradation.parse(spec) if spec else None)
    return float(np.mean([image.psnr for image in result.datasets[0].images]))


def main() -> None:
    from subpixel_cli.hub import load_folder, save_model
    from subpixel_cli.model import blend
    from subpixel_cli.registry import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-x", "--scale", type=int, required=True)
    parser.add_argument("--real", type=Path, required=True, help="the fine-tuned real-world run folder")
    parser.add_argument("--limit", type=float, default=0.35, help="clean-input dB the blend may lose (default 0.35)")
    parser.add_argument("--out", type=Path, help="write the chosen blend here as a model folder")
    args = parser.parse_args()

    clean, real = load_model(f"espcn-x{args.scale}"), load_folder(args.real)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        val = validation_folder(real.info.training["held_out"], Path(tmp))
        for s in STRENGTHS:
            net = blend(clean.model, real.model, s)
            rows.append((s, mean_psnr(net, args.scale, val, None), mean_psnr(net, args.scale, val, "jpeg:75")))
            print(f"S {s:.2f}: clean {rows[-1][1]:.3f}, jpeg:75 {rows[-1][2]:.3f}", file=sys.stderr, flush=True)
    floor = rows[0][1] - args.limit
    chosen = max(s for s, clean_db, _ in rows if clean_db >= floor)
    print("| S | clean | JPEG 75 |\n|---:|---:|---:|")
    for s, clean_db, jpeg_db in rows:
        print(f"| {s:.2f}{' ←' if s == chosen else ''} | {clean_db:.3f} | {jpeg_db:.3f} |")
    print(json.dumps({"scale": args.scale, "chosen": chosen, "limit": args.limit,
                      "rows": [dict(zip(("strength", "clean", "jpeg:75"), r)) for r in rows]}))
    if args.out:
        record = {**real.info.training, "blend": f"{chosen:g} of the way from espcn-x{args.scale} to the fine-tuned "
                  f"weights (benchmarks/pick_strength.py, --limit {args.limit:g} dB on Set5 and the held-back images)"}
        info = replace(real.info, training=record, metrics={})
        save_model(args.out, blend(clean.model, real.model, chosen), info)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
