"""Face models against the general models on held-out CelebA faces (issue 9's face target).

The faces are those ``subpixel train --dataset celebA`` never trains on: the last 10 % of the
files by name (``data.split_holdout``). Each is made by the original project's recipe (centre crop
108, resize to 128, ×4 MATLAB bicubic down to 32) and scored by the protocol of ``subpixel eval``
(Y-PSNR, 4-pixel border), against bicubic:

    python benchmarks/face_eval.py espcn-celeba-x4 espcn-x4 [RUN_FOLDER ...] [--faces N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "celeba_sample"


def held_out_faces(data: Path, limit: int = 0) -> list:
    """The held-out faces, prepared by the protocol (``evaluate.ProtocolImage``)."""
    from subpixel_cli.data import celeba_hr, find_celeba, split_holdout
    from subpixel_cli.evaluate import prepare_image

    files = sorted(p for p in find_celeba(data).iterdir() if p.suffix.lower() == ".jpg")
    _, held_out = split_holdout(files, 0.1)
    held_out = held_out[:limit] if limit else held_out
    return [prepare_image(p.name, celeba_hr(p), 4, ssim=False) for p in held_out]


def face_psnr(net, images: list) -> float:
    """Mean Y-PSNR of a model over prepared faces."""
    from subpixel_cli.evaluate import protocol_upscaler, score_image

    upscaler = protocol_upscaler(net)
    return float(np.mean([score_image(upscaler, i, ssim=False)[0].psnr for i in images]))


def main() -> None:
    from subpixel_cli.registry import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model specs (packaged names, run folders)")
    parser.add_argument("--data", type=Path, default=FACES, help="the folder holding img_align_celeba/")
    parser.add_argument("--faces", type=int, default=0, help="score only the first N held-out faces (0: all)")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (the CelebA sample of ../shared/data)")
    images = held_out_faces(args.data, args.faces)
    bicubic = float(np.mean([i.bicubic_psnr for i in images]))
    print(f"{len(images)} held-out faces ({images[0].name}…{images[-1].name}), Y-PSNR, 4-px border; "
          f"bicubic {bicubic:.2f} dB\n")
    print("| model | Y-PSNR | over bicubic |\n|---|---:|---:|")
    for spec in args.models:
        score = face_psnr(load_model(spec).model.eval(), images)
        print(f"| {spec} | {score:.2f} dB | {score - bicubic:+.2f} dB |", flush=True)


if __name__ == "__main__":
    main()
