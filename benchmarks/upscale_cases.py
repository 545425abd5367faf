#!/usr/bin/env python
"""Two `subpixel upscale` cases from the upscale issue, timed as a user runs them.

    python benchmarks/upscale_cases.py            # 50 JPEGs 512×512 ×4, and one 8000×8000 RGB ×4
    python benchmarks/upscale_cases.py --no-huge  # only the folder

Inputs are made here in a temporary folder (from BSD100 pictures when ``../shared/data`` is there,
else smooth synthetic pictures). Each command runs as its own process; wall time and peak RSS come
from ``wait4``. The 8000×8000 case is tiled automatically within the default 1 GiB activation
budget, and its PNG output is streamed strip by strip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from run import timed  # wall time and peak RSS of one command (wait4); this folder is on sys.path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks" / "BSD100"


def picture(i: int, size: tuple[int, int]) -> Image.Image:
    sources = sorted(DATA.glob("*.png"))
    if sources:
        with Image.open(sources[i % len(sources)]) as img:
            return img.convert("RGB").resize(size, Image.BICUBIC)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.dstack([np.sin(xx / (7 + i)), np.cos(yy / 5), np.sin((xx + yy) / 11)]) * 100 + 128
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-huge", action="store_true", help="skip the 8000×8000 case")
    args = parser.parse_args()
    subpixel = str(Path(sys.executable).with_name("subpixel"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="subpixel-cases-") as tmp:
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        for i in range(50):
            picture(i, (512, 512)).save(folder / f"photo_{i:02d}.jpg", quality=90)
        for fmt in ("png", "jpg"):
            run = timed([subpixel, "upscale", str(folder), "-x", "4", "-o", str(Path(tmp) / f"out_{fmt}"), "--format", fmt, "--quiet"])
            run["images_per_s"] = round(50 / run["seconds"], 2)
            run["seconds"], run["peak_rss_mib"] = round(run["seconds"], 2), round(run["peak_rss_mib"])
            results[f"folder_50x512_{fmt}"] = run
            print(f"50 JPEGs 512×512 ×4 -> {fmt}: {run['seconds']} s, {run['images_per_s']} img/s, "
                  f"peak RSS {run['peak_rss_mib']} MiB", file=sys.stderr)
        if not args.no_huge:
            huge = Path(tmp) / "huge.png"
            tiles = [picture(i, (2000, 2000)) for i in range(4)]
            canvas = Image.new("RGB", (8000, 8000))
            for i in range(16):
                canvas.paste(tiles[i % 4], ((i % 4) * 2000, (i // 4) * 2000))
            canvas.save(huge, compress_level=1)
            del canvas
            run = timed([subpixel, "upscale", str(huge), "-x", "4", "-o", str(Path(tmp) / "huge_x4.png"), "--quiet"])
            Image.MAX_IMAGE_PIXELS = None  # our own 32000×32000 output: only its header is read
            with Image.open(Path(tmp) / "huge_x4.png") as out:
                run["output_size"] = out.size
            run["output_mib"] = round((Path(tmp) / "huge_x4.png").stat().st_size / 2**20)
            run["seconds"], run["peak_rss_mib"] = round(run["seconds"], 2), round(run["peak_rss_mib"])
            results["huge_8000_x4_png"] = run
            print(f"8000×8000 ×4 -> 32000×32000 png: {run['seconds']} s, peak RSS {run['peak_rss_mib']} MiB", file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
