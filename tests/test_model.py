"""The ESPCN network and the phase shift (periodic shuffle) of the paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from subpixel_cli.model import ESPCN, ESPCNConfig, phase_shift, phase_unshift


def phase_shift_by_definition(t: torch.Tensor, r: int) -> torch.Tensor:
    """A direct loop transcription of the paper's eq. 4, in its own H×W×C layout:
    PS(T)[x, y, c] = T[⌊x/r⌋, ⌊y/r⌋, C·r·mod(y, r) + C·mod(x, r) + c], x horizontal, y vertical."""
    n, crr, h, w = t.shape
    c_out = crr // (r * r)
    out = torch.empty(n, c_out, h * r, w * r, dtype=t.dtype)
    for b in range(n):
        for y in range(h * r):
            for x in range(w * r):
                for c in range(c_out):
                    out[b, c, y, x] = t[b, c_out * r * (y % r) + c_out * (x % r) + c, y // r, x // r]
    return out


@pytest.mark.parametrize("r,c", [(2, 1), (3, 1), (2, 3), (3, 3), (4, 2)])
def test_phase_shift_matches_the_papers_definition(r, c):
    t = torch.randn(2, c * r * r, 3, 4)
    assert torch.equal(phase_shift(t, r), phase_shift_by_definition(t, r))


@pytest.mark.parametrize("r", [2, 3, 4, 5])
def test_phase_shift_is_pixel_shuffle_for_one_channel(r):
    t = torch.randn(2, r * r, 5, 6)
    assert torch.equal(phase_shift(t, r), F.pixel_shuffle(t, r))


@pytest.mark.parametrize("r,c", [(2, 3), (3, 3), (4, 3)])
def test_phase_shift_is_pixel_shuffle_after_a_channel_permutation(r, c):
    # The paper (and TF's depth_to_space) lets the colour vary fastest; torch lets it vary slowest.
    t = torch.randn(1, c * r * r, 4, 5)
    perm = [phase * c + colour for colour in range(c) for phase in range(r * r)]
    assert torch.equal(phase_shift(t, r), F.pixel_shuffle(t[:, perm], r))
    assert not torch.equal(phase_shift(t, r), F.pixel_shuffle(t, r))


@pytest.mark.parametrize("r,c", [(2, 1), (3, 3), (4, 1)])
def test_phase_unshift_inverts_phase_shift(r, c):
    t = torch.randn(2, c * r * r, 5, 7)
    assert torch.equal(phase_unshift(phase_shift(t, r), r), t)
    image = torch.randn(2, c, 5 * r, 7 * r)
    assert torch.equal(phase_shift(phase_unshift(image, r), r), image)
    if c == 1:
        assert torch.equal(phase_unshift(image, r), F.pixel_unshuffle(image, r))


def test_phase_shift_rejects_channel_counts_that_do_not_fit():
    with pytest.raises(ValueError):
        phase_shift(torch.zeros(1, 5, 2, 2), 2)


@pytest.mark.parametrize("scale,channels", [(2, 1), (3, 3), (4, 1), (5, 3)])
def test_espcn_is_the_papers_network(scale, channels):
    model = ESPCN(ESPCNConfig(scale=scale, channels=channels))
    convs = [model.conv1, model.conv2, model.conv3]
    assert [(m.kernel_size, m.out_channels) for m in convs] == [((5, 5), 64), ((3, 3), 32), ((3, 3), channels * scale**2)]
    assert isinstance(model.act1, torch.nn.Tanh) and isinstance(model.act2, torch.nn.Tanh)
    out = model(torch.rand(2, channels, 7, 9))
    assert out.shape == (2, channels, 7 * scale, 9 * scale)


def test_config_validation_and_round_trip():
    cfg = ESPCNConfig(scale=3, channels=3)
    assert ESPCNConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.receptive_radius == 4
    assert cfg.macs_per_pixel() == 5 * 5 * 3 * 64 + 3 * 3 * 64 * 32 + 3 * 3 * 32 * 27
    for bad in [dict(scale=1), dict(scale=2, channels=2), dict(scale=2, activation="gelu"), dict(scale=2, kernel_sizes=(4, 3, 3))]:
        with pytest.raises(ValueError):
            ESPCNConfig(**bad)
