"""BT.601 YCbCr (studio swing), the colour space of the super-resolution literature.

``Y = 16 + 65.481·R + 128.553·G + 24.966·B`` (RGB in [0, 1], Y in [16, 235]); here all three
channels are divided by 255 so they live in [0, 1] like RGB. The same functions serve numpy
arrays (channels last, ``dim=-1``) and torch tensors (channels first, ``dim=1``).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
Y_OFFSET, Y_RANGE = 16 / 255, 219 / 255  # the Y of a grey value g (in [0, 1]) is Y_OFFSET + g·Y_RANGE


def matrices() -> tuple[np.ndarray, np.ndarray]:
    """The RGB→YCbCr matrix (on [0, 1] values, offsets apart) and its inverse."""
    return _RGB_TO_YCBCR.copy(), _YCBCR_TO_RGB.copy()


def _apply(x: Array, matrix: np.ndarray, pre: np.ndarray, post: np.ndarray, dim: int) -> Array:
    if isinstance(x, torch.Tensor):
        m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
        shape = [1] * x.ndim
        shape[dim] = 3
        a = torch.as_tensor(pre, dtype=x.dtype, device=x.device).reshape(shape)
        b = torch.as_tensor(post, dtype=x.dtype, device=x.device).reshape(shape)
        last = x.ndim - 1  # not -1: traced for ONNX export, a negative axis becomes an invalid Transpose
        moved = (x - a).movedim(dim, last)
        return (moved @ m.T).movedim(last, dim) + b
    x = np.moveaxis(np.asarray(x, dtype=np.float64), dim, -1)
    return np.moveaxis((x - pre) @ matrix.T + post, -1, dim)


def rgb_to_ycbcr(rgb: Array, dim: int = -1) -> Array:
    """RGB in [0, 1] -> YCbCr in [0, 1] (BT.601 studio swing / 255)."""
    return _apply(rgb, _RGB_TO_YCBCR, np.zeros(3), _YCBCR_OFFSET, dim)


def ycbcr_to_rgb(ycc: Array, dim: int = -1) -> Array:
    """Inverse of :func:`rgb_to_ycbcr` (unclipped)."""
    return _apply(ycc, _YCBCR_TO_RGB, _YCBCR_OFFSET, np.zeros(3), dim)


def rgb_to_y(rgb: Array, dim: int = -1) -> Array:
    """Only the Y channel of :func:`rgb_to_ycbcr`, keeping ``dim`` with size 1."""
    return rgb_to_ycbcr(rgb, dim).narrow(dim, 0, 1) if isinstance(rgb, torch.Tensor) else np.take(
        rgb_to_ycbcr(rgb, dim), [0], axis=dim
    )
