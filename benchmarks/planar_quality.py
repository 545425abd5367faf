#!/usr/bin/env python
"""Does keeping video in YCbCr cost quality? Set5 + Set14 as 4:2:0 video frames, through
`subpixel video`'s two paths, scored by the SR protocol.

    python benchmarks/planar_quality.py          # ~1 min; needs ../shared/data/benchmarks

Each HR image (mod-cropped so that the LR frame has even sides) is degraded by the protocol
(MATLAB bicubic), converted to limited-range I420 in BT.601 or BT.709 as a decoder would hand it
over, and upscaled (packaged models, fp32) by
- the RGB path: I420 → RGB (swscale, the reader's exact flags), ``Upscaler.upscale_batch``,
  RGB → I420 (the writer's flags);
- the planar path: ``Upscaler.upscale_i420`` on the I420 planes.
Both results are converted back to RGB and scored on Y (BT.601, MATLAB protocol, border shaved)
against the HR image. Prints mean Y-PSNR per scale and matrix.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from subpixel_cli.data import mod_crop
from subpixel_cli.degradations import downscale
from subpixel_cli.images import read_rgb8
from subpixel_cli.metrics import psnr, shave, y_channel
from subpixel_cli.registry import load_model
from subpixel_cli.upscale import Upscaler
from subpixel_cli.video.colour import SWS_FLAGS

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def to_i420(rgb: np.ndarray, matrix: str) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", src_color_range="JPEG", dst_colorspace=matrix, dst_color_range="MPEG",
                          interpolation=SWS_FLAGS).to_ndarray()


def to_rgb(i420: np.ndarray, matrix: str) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    return frame.to_ndarray(format="rgb24", src_colorspace=matrix, src_color_range="MPEG", dst_color_range="JPEG",
                            interpolation=SWS_FLAGS)


def main() -> None:
    paths = sorted((BENCHMARKS / "Set5").glob("*.png")) + sorted((BENCHMARKS / "Set14").glob("*.png"))
    if not paths:
        raise SystemExit(f"no Set5/Set14 images under {BENCHMARKS}")
    print("| scale | matrix | RGB path dB | planar path dB | planar − RGB |")
    print("|---|---|---:|---:|---:|")
    for scale in (2, 3, 4):
        up = Upscaler(load_model(None, scale), device="cpu", precision="fp32")
        for matrix in ("ITU601", "ITU709"):
            rgb_path, planar = [], []
            for path in paths:
                hr = mod_crop(read_rgb8(path), 2 * scale)
                source = to_i420(downscale(hr, scale), matrix)

                def score(rgb: np.ndarray) -> float:
                    return psnr(shave(y_channel(rgb), scale), shave(y_channel(hr), scale), peak=255.0)

                rgb_path.append(score(to_rgb(to_i420(up.upscale_batch(to_rgb(source, matrix)[None])[0], matrix), matrix)))
                planar.append(score(to_rgb(up.upscale_i420(source[None])[0], matrix)))
            a, b = float(np.mean(rgb_path)), float(np.mean(planar))
            print(f"| ×{scale} | {matrix} | {a:.3f} | {b:.3f} | {b - a:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
