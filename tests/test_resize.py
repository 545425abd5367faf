"""MATLAB-compatible bicubic imresize, checked against values derived independently of the code:
hand-worked examples from the kernel formula, a known Octave output, and a slow reimplementation
of MATLAB's algorithm written here with plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subpixel_cli.resize import imresize


# --- an independent, loop-by-loop reference --------------------------------------------------------

def _keys(x: float) -> float:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _reflect(k: int, n: int) -> int:
    """1-based index ``k`` folded into 1..n by half-sample symmetric padding (… 2 1 | 1 2 … n | n n-1 …)."""
    while k < 1 or k > n:
        k = 1 - k if k < 1 else 2 * n + 1 - k
    return k


def _ref_line(values: list[float], out_len: int, scale: float, antialias: bool) -> list[float]:
    """One row or column resized as MATLAB's imresize does it, one output sample at a time."""
    n = len(values)
    shrink = antialias and scale < 1
    width = 4 / scale if shrink else 4.0
    out = []
    for i in range(1, out_len + 1):
        centre = i / scale + 0.5 * (1 - 1 / scale)  # where output pixel i falls, in input pixels
        first = math.floor(centre - width / 2)
        taps = []
        for j in range(first, first + math.ceil(width) + 2):
            weight = scale * _keys(scale * (centre - j)) if shrink else _keys(centre - j)
            taps.append((j, weight))
        total = sum(w for _, w in taps)
        out.append(sum(w / total * values[_reflect(j, n) - 1] for j, w in taps))
    return out


def _ref_imresize(img: np.ndarray, scale: float | None = None, out_shape: tuple[int, int] | None = None,
                  antialias: bool = True) -> np.ndarray:
    """MATLAB's ``imresize(img, scale)`` (size ``ceil(scale·size)``) or ``imresize(img, out_shape)``
    (per-axis scales ``out/in``)."""
    integer = img.dtype == np.uint8
    a = img.astype(np.float64)
    if a.ndim == 2:
        a = a[..., None]
    if out_shape is None:
        assert scale is not None
        scales = (scale, scale)
        out_shape = (math.ceil(a.shape[0] * scale), math.ceil(a.shape[1] * scale))
    else:
        scales = (out_shape[0] / a.shape[0], out_shape[1] / a.shape[1])
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)  # MATLAB: smaller scale first, rows on a tie
    for axis in order:
        shape = list(a.shape)
        shape[axis] = out_shape[axis]
        b = np.zeros(shape)
        for c in range(a.shape[2]):
            if axis == 0:
                for col in range(a.shape[1]):
                    b[:, col, c] = _ref_line(list(a[:, col, c]), out_shape[0], scales[0], antialias)
            else:
                for row in range(a.shape[0]):
                    b[row, :, c] = _ref_line(list(a[row, :, c]), out_shape[1], scales[1], antialias)
        if integer:  # MATLAB returns uint8 from each pass: round halves away from zero, saturate
            b = np.array([[[min(255, max(0, math.floor(v + 0.5))) for v in px] for px in row] for row in b])
        a = b
    a = a[..., 0] if img.ndim == 2 else a
    return a.astype(np.uint8) if integer else a


# --- worked examples ---------------------------------------------------------------------------------

def test_upscale_two_samples_by_two_matches_hand_computation() -> None:
    # Output pixel 1 sits at u = 0.75: taps at distances 1.75, 0.75, 0.25, 1.25 weigh
    # -0.0234375, 0.2265625, 0.8671875, -0.0703125 on samples 2, 1, 1, 2 (mirrored borders), so
    # out1 = 1.09375·v1 - 0.09375·v2; pixel 2 at u = 1.25 gives 0.796875·v1 + 0.203125·v2.
    out = imresize(np.array([[0.0, 1.0]]), 2)
    expected = [-0.09375, 0.203125, 0.796875, 1.09375]
    np.testing.assert_allclose(out, [expected, expected], atol=1e-15)


def test_antialiased_halving_matches_hand_computation() -> None:
    # Scale 1/2 widens the kernel to 8 taps: weights ½·k(d/2) at d = ±0.5, ±1.5, ±2.5, ±3.5 are
    # 0.43359375, 0.11328125, -0.03515625, -0.01171875; on [0, 1, 2, 3] with mirrored borders
    # output 1 = 0.4609375, and output 2 = 3 - 0.4609375 by symmetry.
    out = imresize(np.array([[0.0, 1.0, 2.0, 3.0]]), 0.5)
    np.testing.assert_allclose(out, [[0.4609375, 2.5390625]], atol=1e-15)


def test_matches_octave_output_without_antialiasing() -> None:
    # Octave: imresize(transpose(reshape(0:15, 4, 4)), 0.5, 'bicubic', 'AntiAliasing', false)
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = imresize(img, 0.5, antialias=False)
    np.testing.assert_allclose(out, [[2.1875, 4.3125], [10.6875, 12.8125]], atol=1e-12)


def test_uint8_rounds_halves_away_from_zero_and_saturates() -> None:
    # [0, 48] ×2 gives -4.5, 9.75, 38.25, 52.5 in floating point.
    np.testing.assert_allclose(imresize(np.array([[0.0, 48.0]]), 2)[0], [-4.5, 9.75, 38.25, 52.5])
    out = imresize(np.array([[0, 48]], dtype=np.uint8), 2)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 10, 38, 53], [0, 10, 38, 53]]  # round-half-even would give 52


# --- against the loop reference ----------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4, 0.6, 1.5])
@pytest.mark.parametrize("shape", [(12, 12), (9, 13, 3)])
def test_float_matches_loop_reference(scale: float, shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(1).random(shape) * 255
    out = imresize(img, scale)
    expected = _ref_imresize(img, scale)
    assert out.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale), *shape[2:])
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
def test_uint8_matches_loop_reference_rounding_each_pass(scale: float) -> None:
    img = np.random.default_rng(2).integers(0, 256, (12, 15, 3), dtype=np.uint8)
    out = imresize(img, scale)
    expected = _ref_imresize(img, scale)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("out_shape", [(6, 16), (16, 6), (5, 7)])
def test_output_shape_with_different_scales_per_axis(out_shape: tuple[int, int]) -> None:
    img = np.random.default_rng(3).integers(0, 256, (10, 11), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, output_shape=out_shape), _ref_imresize(img, out_shape=out_shape))


def test_without_antialiasing_matches_loop_reference() -> None:
    img = np.random.default_rng(4).random((12, 10))
    np.testing.assert_allclose(imresize(img, 1 / 3, antialias=False), _ref_imresize(img, 1 / 3, antialias=False), atol=1e-12)


# --- properties --------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    value=st.integers(0, 255),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    scale=st.sampled_from([1 / 4, 1 / 3, 1 / 2, 2.0, 3.0, 4.0]),
)
def test_constant_image_stays_constant(value: int, h: int, w: int, scale: float) -> None:
    img = np.full((h, w, 3), value, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(h * scale), math.ceil(w * scale), 3)
    assert (out == value).all()
    np.testing.assert_allclose(imresize(img.astype(np.float64), scale), float(value), atol=1e-9)


def test_scale_one_is_the_identity() -> None:
    img = np.random.default_rng(5).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, 1.0), img)
    np.testing.assert_allclose(imresize(img.astype(np.float64), 1.0), img, atol=1e-12)


def test_mod_cropped_sizes_divide_exactly() -> None:
    # ceil(scale · size) must not overshoot for the sizes evaluation produces (e.g. 321 / 3).
    for s in (2, 3, 4):
        for n in range(s, 1200, s):
            assert imresize(np.zeros((n, s), np.uint8), 1 / s).shape == (n // s, 1)


def test_grey_and_uint16_inputs_keep_their_layout_and_type() -> None:
    grey = np.random.default_rng(6).integers(0, 256, (8, 8), dtype=np.uint8)
    assert imresize(grey, 2).shape == (16, 16)
    wide = (grey.astype(np.uint16) * 257)
    out16 = imresize(wide, 0.5)
    assert out16.dtype == np.uint16 and out16.shape == (4, 4)


def test_bad_arguments_raise() -> None:
    img = np.zeros((4, 4))
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 2, output_shape=(8, 8))
    with pytest.raises(ValueError):
        imresize(img, 0)
