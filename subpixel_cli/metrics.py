"""Image quality by the super-resolution community's protocol: PSNR and SSIM on the Y channel.

The protocol (SRCNN, VDSR, EDSR and their MATLAB scripts) compares luminance only:

- :func:`y_channel`: Y of BT.601 YCbCr, ``Y = 16 + 65.481·R + 128.553·G + 24.966·B`` with RGB in
  [0, 1], so Y lies in [16, 235] on a 0–255 scale, computed in double precision. A single-channel
  (grey) image is its own Y, unscaled, as those scripts treat grey images.
- :func:`shave`: ``scale`` pixels are cut from every border before measuring.
- :func:`psnr` with ``peak=255`` and :func:`ssim` (Wang et al. 2004, as MATLAB's ``ssim_index``:
  11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of
  the SSIM map).

:func:`y_psnr_ssim` does all of it for a pair of 8-bit images.
"""

from __future__ import annotations

import numpy as np

from subpixel_cli.color import rgb_to_y

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two arrays of the same shape (``peak`` = max value)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} and {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def y_channel(image: np.ndarray) -> np.ndarray:
    """Y of an 8-bit ``H×W×3`` RGB image as float64 on a 0–255 scale (16–235); an ``H×W`` (or
    ``H×W×1``) grey image is returned as float64 unchanged."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"y_channel: expected H×W grey or H×W×3 RGB, got shape {image.shape}")
    return rgb_to_y(image.astype(np.float64) / 255.0)[..., 0] * 255.0


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """``image`` without ``border`` pixels on each side (rows and columns)."""
    if border < 0:
        raise ValueError(f"shave: border must be ≥ 0, got {border}")
    h, w = image.shape[:2]
    if 2 * border >= min(h, w):
        raise ValueError(f"shave: a {h}×{w} image has nothing left after a {border}-pixel border")
    return image[border : h - border, border : w - border] if border else image


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 2-D Gaussian of MATLAB's ``fspecial('gaussian', size, sigma)``, which is the
    outer product of a normalised 1-D Gaussian with itself (so SSIM filters separably)."""
    g = _gaussian_1d(size, sigma)
    return np.outer(g, g)


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB's ``filter2(outer(g, g), image, 'valid')`` for a symmetric 1-D ``g``, separably."""
    n = len(g)
    h, w = image.shape
    rows = sum(g[k] * image[k : h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean structural similarity of two 2-D images (Wang et al. 2004, MATLAB's ``ssim_index``).

    Gaussian 11×11 window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = peak``; statistics are
    taken only where the window fits inside the image ('valid'), and the map is averaged.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: expected two 2-D images of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim: a {a.shape[0]}×{a.shape[1]} image is smaller than the {SSIM_WINDOW}×{SSIM_WINDOW} window")
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def y_psnr_ssim(output: np.ndarray, reference: np.ndarray, border: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of the Y channels of two 8-bit images after shaving ``border`` pixels.

    Either argument may also be a Y channel already (2-D float on a 0–255 scale).
    """
    y_out, y_ref = shave(y_channel(output), border), shave(y_channel(reference), border)
    if y_out.shape != y_ref.shape:
        raise ValueError(f"y_psnr_ssim: sizes differ, {y_out.shape} and {y_ref.shape}")
    return psnr(y_out, y_ref, peak=255.0), ssim(y_out, y_ref, peak=255.0)
