"""How YUV maps to RGB on the way in and back on the way out: the matrices and ranges swscale
takes, the tags the output carries, and the swscale flags for exact conversions."""

from __future__ import annotations

from dataclasses import dataclass

from av.video.reformatter import Interpolation

# AVColorSpace (stream/frame tag) -> swscale's name for the YUV<->RGB matrix.
MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
SPC_BT709, SPC_SMPTE170M, RANGE_MPEG, RANGE_JPEG, PRI_BT709, TRC_BT709 = 1, 6, 1, 2, 1, 1
# swscale flags for YUV<->RGB: exact rounding and full-resolution chroma (the default fast path is
# off by 1-2 levels per conversion, which adds up over decode + encode).
SWS_FLAGS = int(Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
                | Interpolation.FULL_CHR_H_INP)


@dataclass
class Colour:
    """How the input's YUV maps to RGB, and the tags the output will carry."""

    matrix: int = 2  # AVColorSpace of the input (2: unspecified)
    range: int = 0  # AVColorRange of the input (0: unspecified)
    primaries: int = 2
    trc: int = 2


def input_colour(colorspace: int, color_range: int, pix_fmt: str, height: int) -> tuple[int, bool]:
    """The matrix (AVColorSpace) and full-range flag to decode with.

    Tags win. Untagged video gets FFmpeg's and players' guesses: BT.709 from 720 lines up,
    BT.601 below; limited range unless the pixel format is a full-range ``yuvj`` one.
    """
    matrix = colorspace if colorspace in MATRIX else (SPC_BT709 if height >= 720 else SPC_SMPTE170M)
    full = color_range == RANGE_JPEG or (color_range != RANGE_MPEG and pix_fmt.startswith("yuvj"))
    return matrix, full


def output_colour(c: Colour, out_height: int) -> tuple[int, bool]:
    """The output's matrix (AVColorSpace) and range: the input's own (``c``) where tagged; otherwise
    what a player guesses for the output size, written into the file so none has to guess."""
    full = c.range == RANGE_JPEG
    if c.matrix in MATRIX:
        return c.matrix, full
    return (SPC_BT709 if out_height >= 720 else SPC_SMPTE170M), full
