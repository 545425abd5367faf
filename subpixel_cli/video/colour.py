"""How YUV maps to RGB on the way in and back on the way out: the matrices and ranges swscale
takes, the tags the output carries, and the swscale flags for exact conversions."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from av.sidedata.sidedata import Type
from av.video.reformatter import Interpolation

# AVColorSpace (stream/frame tag) -> swscale's name for the YUV<->RGB matrix.
MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
SPC_BT709, SPC_SMPTE170M, RANGE_MPEG, RANGE_JPEG, PRI_BT709, TRC_BT709 = 1, 6, 1, 2, 1, 1
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}  # AVColorTransferCharacteristic: SMPTE ST 2084, ARIB STD-B67
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


@dataclass
class Hdr:
    """HDR10 static metadata of the input: the mastering display (SMPTE ST 2086) as x264/x265
    count it, ``(gx, gy, bx, by, rx, ry, wx, wy)`` chromaticities in 0.00002 units and
    ``(max, min)`` luminance in 0.0001 cd/m², and the content light level (MaxCLL, MaxFALL in
    cd/m²)."""

    display: tuple[int, ...] | None = None  # gx, gy, bx, by, rx, ry, wx, wy, max, min
    max_cll: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return self.display is not None or self.max_cll is not None

    @property
    def master_display(self) -> str | None:
        """x264/x265 syntax: ``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)`` in integer units."""
        return self._display(lambda v: f"{v}", lambda v: f"{v}")

    @property
    def master_display_float(self) -> str | None:
        """SVT-AV1 syntax: the same in chromaticities and cd/m²."""
        return self._display(lambda v: f"{v / 50000:g}", lambda v: f"{v / 10000:g}")

    def _display(self, chromaticity: Callable[[int], str], luminance: Callable[[int], str]) -> str | None:
        if self.display is None:
            return None
        gx, gy, bx, by, rx, ry, wx, wy = (chromaticity(v) for v in self.display[:8])
        lmax, lmin = (luminance(v) for v in self.display[8:])
        return f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({lmax},{lmin})"


def hdr_from_side_data(side_data: Any) -> Hdr:
    """:class:`Hdr` from a decoded frame's side data (``AVMasteringDisplayMetadata`` and
    ``AVContentLightMetadata`` structs); what is absent stays ``None``."""
    hdr = Hdr()
    for item in side_data:
        raw = bytes(item)
        if item.type == Type.MASTERING_DISPLAY_METADATA and len(raw) >= 88:
            v = struct.unpack_from("<22i", raw)  # R, G, B, white point (x, y rationals), min, max, flags
            ratio = [v[k] / v[k + 1] if v[k + 1] else 0.0 for k in range(0, 20, 2)]
            if v[20] and v[21]:
                rx, ry, gx, gy, bx, by, wx, wy = (round(r * 50000) for r in ratio[:8])
                hdr.display = (gx, gy, bx, by, rx, ry, wx, wy, round(ratio[9] * 10000), round(ratio[8] * 10000))
        elif item.type == Type.CONTENT_LIGHT_LEVEL and len(raw) >= 8:
            hdr.max_cll = struct.unpack_from("<2I", raw)
    return hdr
