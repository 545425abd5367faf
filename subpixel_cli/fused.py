"""The fused 8-bit path: an ESPCN folded for uint8 pictures, on oneDNN (CPUs) or cuDNN (GPUs).

For uint8 pictures everything but the network's convolutions is folded into them or done at low
resolution. The 0…255 scale and RGB→Y go into the weights; the last layer writes, per output
phase (i, j), the value (Y' − 16/255)·255/219 that every colour shares. The chroma's RGB
contribution M[:, 1:]·(CbCr − ½) is linear in RGB, so it is computed at low resolution and only
resized: by OpenCV's float bicubic on the CPU (then saturating adds of the shuffled Y), or as r²
fixed 5×5 phase filters on GPUs (then an add, a clamp and one strided copy to uint8). The
convolutions are unpadded: what zero padding would change lies in the reflect padding that is
cut off anyway.
"""

from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F

from subpixel_cli.color import Y_OFFSET, Y_RANGE, matrices
from subpixel_cli.model import ESPCN
from subpixel_cli.runtime import MKLDNN_CONV, native_bf16

_BICUBIC_REACH = 2  # low-resolution pixels on each side that a bicubic output pixel reads


def _colour_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """BT.601 RGB→YCbCr matrix ``A`` (on [0, 1] values, :func:`color.matrices`) and its inverse."""
    a = torch.from_numpy(matrices()[0])
    return a, torch.linalg.inv(a)


def chroma_filter(r: int) -> torch.Tensor:
    """``3r² × 3 × 5 × 5``: from RGB, the chroma's RGB contribution ``M[:, 1:]·(CbCr − ½)``
    upscaled ×r bicubically, as phases in :func:`~subpixel_cli.model.phase_shift` order
    (channel (i·r + j)·3 + c). Scale-free: 0…1 or 0…255 in gives the same scale out."""
    a, a_inv = _colour_matrices()
    p, w = a_inv[:, 1:] @ a[1:], _bicubic_phases(r)
    return torch.einsum("cd,iy,jx->ijcdyx", p, w, w).reshape(r * r * 3, 3, 5, 5)


def _bicubic_phases(r: int) -> torch.Tensor:
    """``w[i, o]``: the weight of low-resolution pixel ``y + o`` (o = −2…2) in output pixel
    ``y·r + i`` of ``F.interpolate(mode="bicubic", align_corners=False)``, read off its impulse
    response so that the two agree by construction."""
    impulse = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    impulse[..., 4] = 1
    h = F.interpolate(impulse, scale_factor=r, mode="bicubic", align_corners=False)[0, 0, 0]
    return torch.stack([torch.stack([h[(4 - o) * r + i] for o in range(-2, 3)]) for i in range(r)])


# An activation as a oneDNN post-op: act(z) = α·op(γ·z) + β, with γ folded into this layer and
# α, β into the next. tanh is 2·sigmoid(2z) − 1, because oneDNN's sigmoid costs much less than its
# tanh on AVX2 (measured; see benchmarks/README.md).
_POST_OPS = {"tanh": ("sigmoid", 2.0, 2.0, -1.0), "relu": ("relu", 1.0, 1.0, 0.0)}
# In bf16 the features themselves are rounded to 8 bits of mantissa, and tanh's values, centred
# on 0, keep far more of them than sigmoid's, centred on ½: −0.11 dB on Set5 ×2 becomes −0.01.
_BF16_POST_OPS = {**_POST_OPS, "tanh": ("tanh", 1.0, 1.0, 0.0)}
_ACTIVATIONS = {"sigmoid": torch.sigmoid_, "tanh": torch.tanh_, "relu": torch.relu_}  # off oneDNN


class FusedPath:
    """The network folded for uint8 ``C``-channel pictures (C = 3, or 1 for Y models).

    :meth:`__call__` maps padded ``N×C×H×W`` floats in 0…255 to the phases of the result, the
    last layer's ``r²·C'`` channels in 0…255 (``C'`` = 1 for Y models: the value every colour
    shares), and a Y model's chroma term; :meth:`write` turns them into uint8 pixels. The
    convolutions are unpadded ("valid"): what zero padding would change lies in the reflect
    padding that is cut off anyway, so each layer computes only what the next one needs.

    The chroma term is finished by OpenCV on the CPU: the low-resolution planes P·rgb, its float
    bicubic resize (the same filter as ``F.interpolate``) and saturating adds of the Y plane take
    half the time of the phase-filter convolution and three torch passes at high resolution.
    Elsewhere it is the 5×5 phase filter at low resolution, added, clamped and copied by torch.
    """

    def __init__(self, model: ESPCN, in_channels: int, device: torch.device, dtype: torch.dtype,
                 opencv: bool | None = None) -> None:
        cfg, r = model.config, model.config.scale
        layers = [(c.weight.detach().to("cpu", torch.float64), c.bias.detach().to("cpu", torch.float64))
                  for c in (model.conv1, model.conv2, model.conv3)]
        (w1, b1), (w3, b3) = layers[0], layers[2]
        colour = cfg.channels == 1 and in_channels == 3
        self.opencv = colour and (device.type == "cpu" if opencv is None else opencv)
        half = 0.0 if self.opencv else 0.5  # OpenCV's saturating casts round; torch's truncate
        to_y = None
        if cfg.channels == 1:
            a, a_inv = _colour_matrices()
            if colour:
                # Y by a 1×1 convolution: oneDNN runs conv1 on one channel ~2× faster than on three.
                to_y = ((a[0] / 255).view(1, 3, 1, 1), torch.tensor([Y_OFFSET], dtype=torch.float64))
            else:  # grey g is Y = 16/255 + g·219/255
                layers[0] = (w1 * Y_RANGE / 255, b1 + Y_OFFSET * w1.sum(dim=(1, 2, 3)))
            # Y' -> RGB: every colour gets (Y' − 16/255)/(219/255) plus the chroma term.
            gain = 255 / Y_RANGE
            layers[2] = (gain * w3, gain * (b3 - Y_OFFSET) + half)
        else:  # an RGB model on RGB; its channels are already in (i, j, c) order
            layers[0], layers[2] = (w1 / 255, b1), (255 * w3, 255 * b3 + half)
        post_ops = _BF16_POST_OPS if dtype == torch.bfloat16 else _POST_OPS
        post_op, gamma, alpha, beta = post_ops[cfg.activation]
        for k in (1, 2):  # the next layer reads α·s + β instead of the activation
            w, b = layers[k]
            layers[k] = (alpha * w, b + beta * w.sum(dim=(1, 2, 3)))
        for k in (0, 1):
            layers[k] = (gamma * layers[k][0], gamma * layers[k][1])

        self.scale, self.radius, self.post_op, self.dtype = r, cfg.receptive_radius, post_op, dtype
        # bf16 keeps 8 bits of mantissa: too coarse for 0…255 outputs, so the last layer stays fp32.
        self.head_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
        self.mkldnn = MKLDNN_CONV is not None and device.type == "cpu" and (
            dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16()))
        dtypes = (dtype, dtype, self.head_dtype)
        self.layers = [self._weights(w, b, dt, device) for (w, b), dt in zip(layers, dtypes)]
        self.to_y = None if to_y is None else self._weights(*to_y, dtype, device)
        self.chroma = None
        if colour:  # the chroma's RGB contribution: a 3×3 matrix on RGB, or with the filter
            p = a_inv[:, 1:] @ a[1:]
            self.chroma = p.to(device, torch.float32) if self.opencv else self._weights(chroma_filter(r), None, self.head_dtype, device)[0]

    def _weights(self, w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = w.to(device, dtype)
        if self.mkldnn:  # oneDNN's blocked layout, once, instead of a reorder per call
            w = torch.ops.mkldnn._reorder_convolution_weight(w, [0, 0], [1, 1], [1, 1], 1)
            # oneDNN adds an fp32 bias to its fp32 accumulators: in bf16 the folded biases
            # (up to ~10) would shift every pixel of a channel by as much as 0.02.
            bias_dtype = torch.float32
        else:  # cuDNN's NHWC kernels want NHWC weights too
            w = w.contiguous(memory_format=torch.channels_last)
            bias_dtype = dtype
        return w, None if b is None else b.to(device, bias_dtype)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: padded ``N×C×H×W`` (channels last) floats in 0…255. Returns the phases
        (``H − 2·radius`` rows) and the chroma term: ``N×3×H×W`` planes for OpenCV, phases
        (``H − 4`` rows) otherwise, or ``None``. Neither is clamped yet."""
        (w1, b1), (w2, b2), (w3, b3) = self.layers
        xh, x = x.to(self.head_dtype), x.to(self.dtype)
        if self.to_y is not None:
            x = self._conv(x, *self.to_y)
        f = self._conv(x, w1, b1, self.post_op)
        f = self._conv(f, w2, b2, self.post_op).to(self.head_dtype)
        t = self._conv(f, w3, b3)
        if self.chroma is None:
            return t, None
        if self.opencv:
            return t, torch.einsum("cd,ndhw->nchw", self.chroma, xh.float()).contiguous()
        return t, self._conv(xh, self.chroma, None)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, post_op: str = "none") -> torch.Tensor:
        """An unpadded convolution and its activation: one oneDNN call, or two torch ops."""
        if self.mkldnn:
            return MKLDNN_CONV(x, w, b, [0, 0], [1, 1], [1, 1], 1, post_op, [], "")
        y = F.conv2d(x, w, b)
        return _ACTIVATIONS[post_op](y) if post_op in _ACTIVATIONS else y

    def write(self, t: torch.Tensor, d: torch.Tensor | None, out: torch.Tensor, pad: int) -> None:
        """Pixels ``out`` (``N×rh×rw×C`` uint8) from :meth:`__call__`'s results for an input
        reflect-padded by ``pad`` low-resolution pixels, which are cut off."""
        n, hr, wr, c = out.shape
        r = self.scale
        h, w = hr // r, wr // r
        crop_t, crop_d = pad - self.radius, pad - _BICUBIC_REACH  # what the unpadded layers left
        phases = _phase_view(t, r, crop_t, h, w)
        if self.opencv:
            y = phases[..., 0].permute(0, 1, 3, 2, 4).reshape(n, hr, wr).float().numpy()
            planes, pixels = d.numpy(), out.numpy()
            for k in range(n):
                colours = []
                for plane in planes[k]:  # bicubic reaches 2 pixels: resize a 2-pixel margin too
                    lr = plane[crop_d : crop_d + h + 4, crop_d : crop_d + w + 4]
                    hr_plane = cv2.resize(lr, (wr + 4 * r, hr + 4 * r), interpolation=cv2.INTER_CUBIC)
                    colours.append(cv2.add(y[k], hr_plane[2 * r : 2 * r + hr, 2 * r : 2 * r + wr], dtype=cv2.CV_8U))
                cv2.merge(colours, dst=pixels[k])
            return
        if d is not None:
            phases = torch.add(_phase_view(d, r, crop_d, h, w), phases)
        phases.clamp_(0.0, 255.0)
        out.view(n, h, r, w, r, c).copy_(phases.permute(0, 1, 3, 2, 4, 5))


def _phase_view(t: torch.Tensor, r: int, crop: int, h: int, w: int) -> torch.Tensor:
    """Phases ``N×(r²·C)×H×W`` (channel (i·r + j)·C + c) as an ``N×h×w×r×r×C`` view, less ``crop``
    low-resolution pixels at the top and left."""
    return t.permute(0, 2, 3, 1)[:, crop : crop + h, crop : crop + w].unflatten(-1, (r, r, -1))
