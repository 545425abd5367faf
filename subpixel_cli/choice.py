"""Which packaged model fits an input when the user names none: the clean ``espcn-xN`` or its
real-world twin ``espcn-xN-real``, by what the input went through.

A JPEG says how hard it was compressed in its quantization tables: :func:`jpeg_quality` finds
the libjpeg quality whose scaled standard tables are nearest (cameras and editors that use other
tables get the quality that compresses alike). The thresholds below come from measurement
(``benchmarks/real_world.py``; the table is in README.md): below them the real-world model scores
higher than the clean one on Set14 and BSD100, above them the clean one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# JPEGs of this estimated quality or lower take the real-world model (README.md, "Which model").
JPEG_REAL_AT_OR_BELOW = 90
# Video in a lossy codec at fewer bits per pixel than this takes the real-world model (README.md,
# "Which model"). x264 (×2 down, preset medium) on two clips: the models cross near 0.047 bits a
# pixel on car_traffic_small (CRF 25) and near 0.08 on vtest.avi (CRF 24); between the two, each
# clip loses at most 0.06 dB to the better model, and the real-world one flickers less throughout.
VIDEO_REAL_BELOW_BPP = 0.06
LOSSLESS_VIDEO_CODECS = frozenset({"ffv1", "huffyuv", "png", "rawvideo", "utvideo", "qtrle", "ffvhuff", "v210", "r210",
                                   "prores"})

# The example tables of the JPEG standard (ITU T.81, Annex K), in row order, which libjpeg
# scales by the quality.
LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
CHROMA_TABLE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32)], dtype=np.float64)


def scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling``: the table a quality (1–100) writes."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def quality_from_tables(tables: dict[int, list[int]]) -> int | None:
    """The libjpeg quality whose tables are nearest ``tables`` (Pillow's ``quantization``,
    64 values each in row order; 0 is luma, 1 chroma), or ``None`` without a usable table."""
    mine = [np.asarray(tables[k], dtype=np.float64) for k in (0, 1) if k in tables and len(tables[k]) == 64]
    if not mine:
        return None
    bases = (LUMA_TABLE, CHROMA_TABLE)[: len(mine)]
    errors = [sum(np.abs(np.log(t) - np.log(scaled_table(b, q))).sum() for t, b in zip(mine, bases))
              for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def jpeg_quality(path: Path) -> int | None:
    """The estimated quality of a JPEG file (reading its header only), or ``None`` for other
    files and JPEGs without tables."""
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return None
            return quality_from_tables(getattr(image, "quantization", None) or {})
    except (OSError, UnidentifiedImageError, ValueError):
        return None


@dataclass(frozen=True)
class Pick:
    """The model chosen for an input, and why (for the summary and ``--json``)."""

    real: bool
    reason: str


def pick_for_image(path: Path) -> Pick:
    """The clean model, or the real-world one for JPEGs at or below :data:`JPEG_REAL_AT_OR_BELOW`."""
    quality = jpeg_quality(path)
    if quality is None:
        return Pick(False, "not a JPEG")
    if quality <= JPEG_REAL_AT_OR_BELOW:
        return Pick(True, f"JPEG quality ~{quality} (≤ {JPEG_REAL_AT_OR_BELOW})")
    return Pick(False, f"JPEG quality ~{quality} (> {JPEG_REAL_AT_OR_BELOW})")


def pick_for_video_source(source: Path) -> Pick:
    """:func:`pick_for_video` for a video file's first video stream (its codec, and its bits per
    pixel from the stream's or the file's bit rate), or :func:`pick_for_image` for a folder of
    frames (its first image); the clean model where the source cannot be read (the video command
    reports that itself)."""
    if source.is_dir():
        from subpixel_cli.images import list_images

        frames = list_images(source)
        return pick_for_image(frames[0]) if frames else Pick(False, "no frames")
    import av

    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            rate = stream.bit_rate or container.bit_rate
            fps = float(stream.average_rate or 0)
            bpp = rate / (stream.width * stream.height * fps) if rate and fps and stream.width and stream.height else None
            return pick_for_video(stream.codec_context.name, bpp)
    except (av.FFmpegError, IndexError, OSError, ZeroDivisionError):
        return Pick(False, "unreadable")


def pick_for_video(codec: str, bits_per_pixel: float | None = None) -> Pick:
    """The real-world model for video in a lossy codec (H.264, HEVC, VP9, AV1, MPEG-4 …) coded
    with fewer than :data:`VIDEO_REAL_BELOW_BPP` bits a pixel; the clean one for lossless codecs,
    richer streams, and streams whose bit rate is unknown."""
    if codec.lower() in LOSSLESS_VIDEO_CODECS:
        return Pick(False, f"{codec}: lossless")
    if bits_per_pixel is None:
        return Pick(False, f"{codec}: bit rate unknown")
    if bits_per_pixel < VIDEO_REAL_BELOW_BPP:
        return Pick(True, f"{codec} at {bits_per_pixel:.3f} bits/pixel (< {VIDEO_REAL_BELOW_BPP})")
    return Pick(False, f"{codec} at {bits_per_pixel:.3f} bits/pixel (≥ {VIDEO_REAL_BELOW_BPP})")
