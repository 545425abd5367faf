"""PSNR, SSIM and the Y channel on hand-made cases with known answers, and SSIM against a slow
window-by-window implementation of Wang et al.'s definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from subpixel_cli.color import rgb_to_y
from subpixel_cli.metrics import gaussian_window, psnr, shave, ssim, y_channel, y_psnr_ssim

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


# --- Y channel ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rgb", "y"),
    [
        ((0, 0, 0), 16.0),
        ((255, 255, 255), 235.0),
        ((255, 0, 0), 16 + 65.481),
        ((0, 255, 0), 16 + 128.553),
        ((0, 0, 255), 16 + 24.966),
        ((51, 102, 204), 16 + (65.481 * 51 + 128.553 * 102 + 24.966 * 204) / 255),
    ],
)
def test_y_channel_is_bt601_studio_swing(rgb: tuple[int, int, int], y: float) -> None:
    img = np.array(rgb, dtype=np.uint8).reshape(1, 1, 3)
    out = y_channel(img)
    assert out.shape == (1, 1) and out.dtype == np.float64
    assert out[0, 0] == pytest.approx(y, abs=1e-9)


def test_y_channel_matches_formula_on_random_pixels_and_colour_module() -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    r, g, b = (img[..., k].astype(np.float64) / 255 for k in range(3))
    expected = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    np.testing.assert_allclose(y_channel(img), expected, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(img / 255.0)[..., 0] * 255, expected, atol=1e-9)


def test_grey_image_is_its_own_y() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(y_channel(grey), grey.astype(np.float64))
    np.testing.assert_array_equal(y_channel(grey[..., None]), grey.astype(np.float64))
    with pytest.raises(ValueError):
        y_channel(np.zeros((4, 4, 4), np.uint8))


# --- PSNR --------------------------------------------------------------------------------------------

def test_psnr_known_values() -> None:
    a = np.zeros((4, 4))
    assert psnr(a, a) == math.inf
    assert psnr(a, np.full((4, 4), 0.1)) == pytest.approx(20.0)  # MSE 0.01 at peak 1
    assert psnr(a, np.ones((4, 4)), peak=255) == pytest.approx(20 * math.log10(255))  # MSE 1
    b = a.copy()
    b[0, 0] = 4.0  # MSE = 16 / 16 = 1
    assert psnr(a, b, peak=255) == pytest.approx(48.130803608679104)
    assert psnr(b, a, peak=255) == psnr(a, b, peak=255)


def test_psnr_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)))


# --- SSIM --------------------------------------------------------------------------------------------

def test_gaussian_window_is_matlab_fspecial() -> None:
    w = gaussian_window()
    yy, xx = np.mgrid[-5:6, -5:6]
    direct = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    np.testing.assert_allclose(w, direct / direct.sum(), rtol=1e-13)
    assert w.shape == (11, 11) and w.sum() == pytest.approx(1.0)


def _ssim_by_windows(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM computed window position by window position, straight from its formula."""
    w = gaussian_window()
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
            var_a = (w * (pa - mu_a) ** 2).sum()
            var_b = (w * (pb - mu_b) ** 2).sum()
            cov = (w * (pa - mu_a) * (pb - mu_b)).sum()
            values.append(((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)))
    return float(np.mean(values))


@pytest.mark.parametrize("shape", [(11, 11), (13, 17), (20, 14)])
def test_ssim_matches_window_by_window_definition(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, shape).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_by_windows(a, b), abs=1e-10)


def test_ssim_identical_images_is_one() -> None:
    a = np.random.default_rng(2).integers(0, 256, (32, 24)).astype(np.float64)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    # No variance and no covariance: SSIM = (2·μa·μb + C1) / (μa² + μb² + C1) exactly.
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 120.0)
    expected = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_of_a_mirrored_image_is_negative() -> None:
    # b = 256 - a: every window has σb = σa and cov = -σa², so the structure term
    # (2·cov + C2) / (σa² + σb² + C2) is negative wherever the texture is strong.
    rng = np.random.default_rng(3)
    a = rng.integers(28, 229, (24, 24)).astype(np.float64)
    b = 256.0 - a
    assert ssim(a, b) == pytest.approx(_ssim_by_windows(a, b), abs=1e-10)
    assert ssim(a, b) < 0


def test_ssim_is_symmetric_and_falls_with_noise() -> None:
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:48, 0:48]
    a = 128 + 60 * np.sin(xx / 4) * np.cos(yy / 5)
    scores = [ssim(a, a + rng.normal(0, s, a.shape)) for s in (1, 5, 20, 60)]
    assert scores == sorted(scores, reverse=True)
    assert all(-1 <= s <= 1 for s in scores)
    b = a + rng.normal(0, 10, a.shape)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)


def test_ssim_rejects_small_or_mismatched_images() -> None:
    with pytest.raises(ValueError):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12)), np.zeros((12, 13)))
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12, 3)), np.zeros((12, 12, 3)))


# --- shave and the combined score ----------------------------------------------------------------------

def test_shave() -> None:
    img = np.arange(100).reshape(10, 10)
    assert shave(img, 0) is img
    np.testing.assert_array_equal(shave(img, 2), img[2:8, 2:8])
    with pytest.raises(ValueError):
        shave(img, 5)


def test_y_psnr_ssim_ignores_the_border_and_chroma() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    out = ref.copy()
    out[:3, :] = 0  # damage only inside the 3-pixel border
    assert y_psnr_ssim(out, ref, 3) == (math.inf, pytest.approx(1.0))
    assert y_psnr_ssim(out, ref, 2)[0] < 30
    # Swapping R and B where they are equal changes nothing: same Y.
    grey_rgb = np.repeat(ref[..., :1], 3, axis=2)
    assert y_psnr_ssim(grey_rgb[..., ::-1], grey_rgb, 2)[0] == math.inf


def test_y_psnr_ssim_of_a_known_error() -> None:
    # A uniform Y error of 1 (on the 0–255 scale) everywhere: MSE 1, PSNR 20·log10(255).
    ref = np.full((20, 20, 3), 100, dtype=np.uint8)
    y_ref = y_channel(ref)
    value, structure = y_psnr_ssim(y_ref + 1.0, ref, 4)
    assert value == pytest.approx(20 * math.log10(255))
    m = y_ref[0, 0]
    assert structure == pytest.approx((2 * m * (m + 1) + C1) / (m**2 + (m + 1) ** 2 + C1))
