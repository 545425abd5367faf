"""BT.601 studio-swing YCbCr: the literature's values, the inverse, numpy and torch alike."""

from __future__ import annotations

import numpy as np
import torch

from subpixel_cli.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb


def test_black_white_and_primaries_have_the_standard_values():
    ycc = rgb_to_ycbcr(np.array([[0.0, 0, 0], [1, 1, 1], [1, 0, 0]])) * 255
    np.testing.assert_allclose(ycc[0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[1], [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[2], [16 + 65.481, 128 - 37.797, 128 + 112], atol=1e-9)


def test_the_inverse_round_trips_and_torch_matches_numpy():
    rgb = np.random.default_rng(0).random((5, 7, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    t = torch.from_numpy(rgb.transpose(2, 0, 1))[None]  # channels first, dim=1
    np.testing.assert_allclose(rgb_to_ycbcr(t, dim=1)[0].numpy().transpose(1, 2, 0), rgb_to_ycbcr(rgb), atol=1e-12)
    assert rgb_to_y(t, dim=1).shape == (1, 1, 5, 7) and rgb_to_y(rgb).shape == (5, 7, 1)
    np.testing.assert_allclose(rgb_to_y(rgb)[..., 0], rgb_to_ycbcr(rgb)[..., 0])
