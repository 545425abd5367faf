#!/usr/bin/env python
"""Evaluate a training run by the protocol of `subpixel eval` and, if asked, ship it as a packaged model.

    python benchmarks/ship_model.py runs/ft-x3 -x 3                          # print the table only
    python benchmarks/ship_model.py runs/ft-x3 -x 3 --ship espcn-x3 --notes notes.md

Scores the run folder's weights on Set5, Set14 and BSD100 (``--data``, default ../shared/data
/benchmarks) and, with ``--ship NAME``, writes ``weights/NAME/`` (config.json with the metrics,
model.safetensors, and a model card with the eval table, the training record of the run and the
notes). With ``--only-if-better`` nothing is written unless Set5 and Set14 both beat the model
now in ``weights/NAME``. ``--degrade SPEC`` (repeatable) also scores Set14 and BSD100 with the LR
damaged as ``subpixel eval --degrade SPEC`` damages it, and ``--twin NAME`` records the model the
shipped one pairs with for ``--denoise``:

    python benchmarks/ship_model.py ~/.cache/subpixel-runs/real-x4 -x 4 --ship espcn-x4-real \
        --twin espcn-x4 --degrade jpeg:75 --degrade jpeg:50 --degrade h264:30 --degrade noise:5
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "benchmarks"
DATASETS = ("Set5", "Set14", "BSD100")


def main() -> None:
    from subpixel_cli.evaluate import evaluate_model, format_metrics
    from subpixel_cli.hub import load_folder, save_model
    from subpixel_cli.hub import model_card

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run folder (a model folder)")
    parser.add_argument("-x", "--scale", type=int, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ship", metavar="NAME", help="write weights/NAME from this run")
    parser.add_argument("--notes", type=Path, help="markdown for the model card (how it was trained, what was tried)")
    parser.add_argument("--only-if-better", action="store_true")
    parser.add_argument("--faces", type=Path, metavar="DIR",
                        help="a face model: score it on CelebA's held-out faces in DIR (and espcn-x4 beside it) "
                             "instead of Set5/Set14/BSD100; --only-if-better compares those")
    parser.add_argument("--license", help="the weights' terms for config.json and the card (default: the run's)")
    parser.add_argument("--description", help="one line for config.json and the card (default: the run's)")
    parser.add_argument("--degrade", action="append", default=[], metavar="SPEC",
                        help="also score Set14 and BSD100 on LR damaged by SPEC (repeatable)")
    parser.add_argument("--twin", help="the model this one pairs with for --denoise (both ways: add it to the twin too)")
    args = parser.parse_args()

    loaded = load_folder(args.run)
    if args.faces:
        metrics = _face_metrics(loaded.model, args.faces)
        compared = [FACES_KEY]
    else:
        result = evaluate_model(loaded, args.scale, list(DATASETS), data_dir=args.data)
        metrics = format_metrics(result)
        for name, m in metrics.items():
            m["dataset"] = name
        compared = ["Set5", "Set14"]
        from subpixel_cli.degradations import Degradation

        for spec in args.degrade:
            damaged = evaluate_model(loaded, args.scale, ["Set14", "BSD100"], data_dir=args.data,
                                     damage=Degradation.parse(spec))
            for name, m in format_metrics(damaged).items():
                metrics[f"{name} {spec}"] = {**m, "dataset": f"{name}, LR {spec}"}
    print(f"| data | ×{args.scale} PSNR | SSIM | bicubic PSNR | bicubic SSIM |\n|---|---:|---:|---:|---:|")
    for name, m in metrics.items():
        cells = [f"{m[k]:.4f}" if k.endswith("ssim") and k in m else f"{m[k]:.2f}" if k in m else "–"
                 for k in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")]
        print(f"| {m.get('dataset', name)} | " + " | ".join(cells) + " |")
    if not args.ship:
        return
    target = ROOT / "weights" / args.ship
    if args.only_if_better and (target / "config.json").exists():
        current = load_folder(target).info
        if not all(metrics[d]["psnr"] > (current.psnr(d) or 0) for d in compared):
            now = ", ".join(f"{d} {current.psnr(d)}" for d in compared)
            print(f"not shipped: weights/{args.ship} scores {now}", file=sys.stderr)
            sys.exit(1)
    info = replace(loaded.info, name=args.ship, metrics=metrics, license=args.license or loaded.info.license,
                   description=args.description or loaded.info.description, twin=args.twin or loaded.info.twin,
                   training=_without_home(loaded.info.training))
    notes = _without_home(args.notes.read_text(encoding="utf-8")) if args.notes else ""
    save_model(target, loaded.model, info, card=model_card(info, notes))
    print(f"wrote {target}", file=sys.stderr)


def _without_home(value):
    """``value`` (text, or a JSON-like structure of it) with this machine's home folder as ``~``:
    a shipped card names no one's home."""
    home = str(Path.home())
    if isinstance(value, str):
        return value.replace(home, "~")
    if isinstance(value, dict):
        return {k: _without_home(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_home(v) for v in value]
    return value


FACES_KEY = "celeba_held_out_y"


def _face_metrics(net, data: Path) -> dict:
    """Y-PSNR on the held-out faces (benchmarks/face_eval.py), with bicubic and espcn-x4 beside it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from face_eval import face_psnr, held_out_faces

    from subpixel_cli.registry import load_model

    images = held_out_faces(data)
    general = face_psnr(load_model("espcn-x4").model.eval(), images)
    span = f"{images[0].name}…{images[-1].name}"
    return {FACES_KEY: {"dataset": f"{len(images)} held-out CelebA faces ({span}), Y, 4-px border", "scale": 4,
                        "psnr": round(face_psnr(net.eval(), images), 2),
                        "bicubic_psnr": round(float(sum(i.bicubic_psnr for i in images) / len(images)), 2),
                        "images": len(images)},
            "celeba_held_out_y_espcn_x4": {"dataset": "the same faces, packaged espcn-x4 (Y model)", "scale": 4,
                                           "psnr": round(general, 2), "images": len(images)}}


if __name__ == "__main__":
    main()
