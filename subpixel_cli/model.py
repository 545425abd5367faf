"""ESPCN (Shi et al., CVPR 2016, arXiv:1609.05158): the network, its config and the phase shift.

The network works entirely in low resolution and upscales only at its end: a convolution to
``C·r²`` channels followed by a periodic shuffle (the *phase shift*) into an ``r×`` larger image.
"""

from __future__ import annotations

import hashlib

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def phase_shift(x: torch.Tensor, r: int) -> torch.Tensor:
    """The paper's periodic shuffle: ``(N, C·r², H, W) -> (N, C, H·r, W·r)``.

    With ``x`` the horizontal and ``y`` the vertical output position (the paper's eq. 4),
    ``PS(T)[x, y, c] = T[⌊x/r⌋, ⌊y/r⌋, C·r·mod(y, r) + C·mod(x, r) + c]``: the colour channel
    varies fastest along the input channels. This is TensorFlow's ``depth_to_space`` order, the
    one OpenCV's ESPCN models use. For ``C = 1`` it is exactly ``torch.pixel_shuffle``; for
    ``C > 1`` it equals ``pixel_shuffle`` after a fixed permutation of the input channels.
    """
    n, crr, h, w = x.shape
    c = crr // (r * r)
    if c * r * r != crr:
        raise ValueError(f"phase_shift: {crr} channels is not a multiple of r² = {r * r}")
    # Input channel k = (i·r + j)·C + c, with i the row and j the column offset.
    x = x.reshape(n, r, r, c, h, w)
    x = x.permute(0, 3, 4, 1, 5, 2)  # n, c, h, i, w, j
    return x.reshape(n, c, h * r, w * r)


def phase_unshift(x: torch.Tensor, r: int) -> torch.Tensor:
    """The inverse of :func:`phase_shift`: ``(N, C, H·r, W·r) -> (N, C·r², H, W)``."""
    n, c, hr, wr = x.shape
    if hr % r or wr % r:
        raise ValueError(f"phase_unshift: size {hr}×{wr} is not a multiple of r = {r}")
    h, w = hr // r, wr // r
    x = x.reshape(n, c, h, r, w, r)
    x = x.permute(0, 3, 5, 1, 2, 4)  # n, i, j, c, h, w
    return x.reshape(n, r * r * c, h, w)


@dataclass(frozen=True)
class ESPCNConfig:
    """Hyperparameters that build an :class:`ESPCN`. The defaults are the paper's."""

    scale: int
    channels: int = 1
    features: tuple[int, ...] = (64, 32)  # the hidden layers' widths: the paper's two, or more
    kernel_sizes: tuple[int, ...] = (5, 3, 3)  # one per layer, the last one's included
    activation: str = "tanh"

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 2:
            raise ValueError(f"scale must be an integer ≥ 2, got {self.scale!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (Y) or 3 (RGB), got {self.channels!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.kernel_sizes}")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        if len(self.features) < 2 or len(self.kernel_sizes) != len(self.features) + 1:
            raise ValueError(f"an ESPCN has two or more hidden layers and one kernel size per layer, got "
                             f"features {self.features} and kernel sizes {self.kernel_sizes}")

    @property
    def depth(self) -> int:
        """The number of convolutions (3 for the paper's ESPCN)."""
        return len(self.kernel_sizes)

    @property
    def receptive_radius(self) -> int:
        """How many low-resolution pixels on each side influence one output pixel."""
        return sum(k // 2 for k in self.kernel_sizes)

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per low-resolution pixel (for GFLOP/s figures)."""
        widths = (self.channels, *self.features, self.channels * self.scale**2)
        return sum(k * k * a * b for k, a, b in zip(self.kernel_sizes, widths, widths[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ESPCNConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


class ESPCN(nn.Module):
    """conv k1×k1→f1, act, conv k2×k2→f2, act, conv k3×k3→C·r², phase shift (the paper's), or with
    more hidden layers of the same kind (``config.features``) before the last one: conv1 … convN,
    with N = ``config.depth`` and convN the last layer (:attr:`head`).

    Works on images in [0, 1] (the Y channel or RGB); padding keeps the low-resolution size, so
    the output is exactly ``r×`` the input.
    """

    def __init__(self, config: ESPCNConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.channels, *config.features, config.channels * config.scale**2)
        act = ACTIVATIONS[config.activation]
        for i, k in enumerate(config.kernel_sizes, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], k, padding=k // 2))
            if i < config.depth:
                self.add_module(f"act{i}", act())

    @property
    def convs(self) -> list[nn.Conv2d]:
        """conv1 … convN, in order."""
        return [getattr(self, f"conv{i}") for i in range(1, self.config.depth + 1)]

    @property
    def head(self) -> nn.Conv2d:
        """The last layer: ``C·r²`` outputs, phase-shifted into the picture."""
        return getattr(self, f"conv{self.config.depth}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs[:-1], start=1):
            x = getattr(self, f"act{i}")(conv(x))
        return phase_shift(self.head(x), self.config.scale)


def weights_sha256(model: nn.Module) -> str:
    """A hash of ``model``'s weights (names and values), e.g. to tell whether finished work or a
    calibration came from the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def blend(a: ESPCN, b: ESPCN, t: float) -> ESPCN:
    """The model whose every weight is ``(1 − t)·a + t·b``: a point between two models of one
    shape, as Real-ESRGAN's ``-dn`` moves between a clean and a denoising model. Twins fine-tuned
    from one another stay close enough in weight space for the points between to be models too."""
    if a.config != b.config:
        raise ValueError(f"blend: the models differ in shape ({a.config} and {b.config})")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"blend: t must be in [0, 1], got {t}")
    out = ESPCN(a.config)
    theirs = b.state_dict()
    out.load_state_dict({k: torch.lerp(v.float(), theirs[k].float(), t) for k, v in a.state_dict().items()})
    return out.eval()
