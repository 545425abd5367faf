"""MATLAB-compatible bicubic ``imresize``: the degradation the super-resolution literature uses.

PIL, OpenCV and torch bicubic differ from MATLAB (kernel a, antialiasing, borders) and give
different PSNR figures, so LR images for training and evaluation are made here.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5, as MATLAB's (it carries a ramp over exactly)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(out_len, P)`` and 0-based source indices ``(out_len, P)`` along one axis."""
    kernel_width = 4.0
    shrink = antialias and scale < 1
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if shrink else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric (mirror) padding at the borders, as MATLAB.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    weights, indices = _contributions(img.shape[axis], out_len, scale, antialias)
    moved = np.moveaxis(img, axis, 0)  # (L, ...)
    gathered = moved[indices]  # (out, P, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    return np.moveaxis((gathered * w).sum(axis=1), 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize an ``H×W`` or ``H×W×C`` image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Give ``scale`` (the same for both axes) or ``output_shape`` ``(H, W)``; the output size for a
    scale is ``ceil(scale · size)``, as MATLAB's. A ``uint8``/``uint16`` input gives the same type,
    rounded and saturated after each axis as MATLAB does; a float input gives float64, unclipped.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale or output_shape")
    h, w = img.shape[:2]
    if output_shape is None:
        scales = (float(scale), float(scale))
        output_shape = (int(math.ceil(h * scale)), int(math.ceil(w * scale)))
    else:
        scales = (output_shape[0] / h, output_shape[1] / w)
    if min(h, w) < 1 or min(output_shape) < 1 or min(scales) <= 0:
        raise ValueError(f"cannot resize a {h}×{w} image to {output_shape[0]}×{output_shape[1]}")
    integer = img.dtype in (np.uint8, np.uint16)
    out = img.astype(np.float64)
    # MATLAB resizes the axis with the smaller scale first (rows first on a tie).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        out = _resize_axis(out, axis, output_shape[axis], scales[axis], antialias)
        if integer:
            # MATLAB's imresizemex returns the input's class after *each* pass, so an integer
            # image is rounded (halves away from zero, not to even) and saturated twice.
            out = np.clip(np.floor(out + 0.5), 0, np.iinfo(img.dtype).max)
    return out.astype(img.dtype) if integer else out
