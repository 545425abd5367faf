"""The fused 8-bit path: an ESPCN folded for uint8 pictures, on oneDNN (CPUs) or cuDNN (GPUs).

For uint8 pictures everything but the network's convolutions is folded into them or done at low
resolution. The 0…255 scale and RGB→Y go into the weights; the last layer writes, per output
phase (i, j), the value (Y' − 16/255)·255/219 that every colour shares. The chroma's RGB
contribution M[:, 1:]·(CbCr − ½) is linear in RGB, so it is computed at low resolution and only
resized: by OpenCV's float bicubic on the CPU (then saturating adds of the shuffled Y), or as r²
fixed 5×5 phase filters on GPUs (then an add, a clamp and one strided copy to uint8). The
convolutions are unpadded: what zero padding would change lies in the reflect padding that is
cut off anyway.

On the CPU the reduced-precision paths keep every layer in that precision: bf16 runs all three
convolutions in bf16, with the last layer's output and the Y plane centred on zero (a bias of −128
levels, or −½) so that bf16's 8 bits of mantissa round them to ¼–½ of a level instead of 1; int8
runs conv2 on oneDNN's u8×s8 kernels (:mod:`subpixel_cli.quantize`) between bf16 layers (fp32
ones on CPUs without bf16 arithmetic), its input made in one pass (conv1, tanh, levels) and its
tanh done in place by the C kernels of :mod:`subpixel_cli.kernels` where they build.
:meth:`FusedPath.__call__` takes a :class:`Laps` to time each step (``subpixel bench --profile``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import cv2
import torch
import torch.nn.functional as F

from subpixel_cli.calibration import Calibration
from subpixel_cli.color import Y_OFFSET, Y_RANGE, matrices
from subpixel_cli.kernels import Kernels, default_kernels
from subpixel_cli.model import ESPCN
from subpixel_cli.runtime import MKLDNN_CONV, fast_bf16, native_bf16

# The centre a bf16 last layer's outputs (0…255) and Y plane (0…1) are moved to: a bf16 number
# between 128 and 256 is a whole number, between 64 and 128 a multiple of ½, so output values
# centred on 0 keep 4× finer steps than 0…255 would (what that saves in PSNR: benchmarks/README.md).
_HEAD_CENTRE, _Y_CENTRE = 128.0, 0.5

BICUBIC_REACH = 2  # low-resolution pixels on each side that a bicubic output pixel reads


def colour_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """BT.601 RGB→YCbCr matrix ``A`` (on [0, 1] values, :func:`color.matrices`) and its inverse."""
    a = torch.from_numpy(matrices()[0])
    return a, torch.linalg.inv(a)


def chroma_filter(r: int) -> torch.Tensor:
    """``3r² × 3 × 5 × 5``: from RGB, the chroma's RGB contribution ``M[:, 1:]·(CbCr − ½)``
    upscaled ×r bicubically, as phases in :func:`~subpixel_cli.model.phase_shift` order
    (channel (i·r + j)·3 + c). Scale-free: 0…1 or 0…255 in gives the same scale out."""
    a, a_inv = colour_matrices()
    p, w = a_inv[:, 1:] @ a[1:], bicubic_phases(r)
    return torch.einsum("cd,iy,jx->ijcdyx", p, w, w).reshape(r * r * 3, 3, 5, 5)


def bicubic_phases(r: int) -> torch.Tensor:
    """``w[i, o]``: the weight of low-resolution pixel ``y + o`` (o = −2…2) in output pixel
    ``y·r + i`` of ``F.interpolate(mode="bicubic", align_corners=False)``, read off its impulse
    response so that the two agree by construction."""
    impulse = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    impulse[..., 4] = 1
    h = F.interpolate(impulse, scale_factor=r, mode="bicubic", align_corners=False)[0, 0, 0]
    return torch.stack([torch.stack([h[(4 - o) * r + i] for o in range(-2, 3)]) for i in range(r)])


# An activation as a oneDNN post-op: act(z) = α·op(γ·z) + β, with γ folded into this layer and
# α, β into the next. On the CPU in fp32, tanh is 2·sigmoid(2z) − 1, because oneDNN's sigmoid costs
# much less than its tanh on AVX2 (measured; see benchmarks/README.md).
_POST_OPS = {"tanh": ("sigmoid", 2.0, 2.0, -1.0), "relu": ("relu", 1.0, 1.0, 0.0)}
# tanh itself: in bf16 (and fp16) the features are rounded to a few bits of mantissa, and tanh's
# values, centred on 0, keep far more of them than sigmoid's, centred on ½ (−0.11 dB on Set5 ×2
# becomes −0.01); on GPUs there is no oneDNN to favour sigmoid.
_TANH_POST_OPS = {**_POST_OPS, "tanh": ("tanh", 1.0, 1.0, 0.0)}
_ACTIVATIONS = {"sigmoid": torch.sigmoid_, "tanh": torch.tanh_, "relu": torch.relu_}  # off oneDNN


class Laps:
    """Seconds spent in each named step of the path, summed over calls (for profiling)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self._last
        self._last = now


def _no_lap(step: str) -> None:
    pass


class FusedPath:
    """The network folded for uint8 ``C``-channel pictures (C = 3, or 1 for Y models).

    :meth:`__call__` maps padded ``N×C×H×W`` floats in 0…255 to the phases of the result, the
    last layer's ``r²·C'`` channels in 0…255 (``C'`` = 1 for Y models: the value every colour
    shares), and a Y model's chroma term; :meth:`write` turns them into uint8 pixels. The
    convolutions are unpadded ("valid"): what zero padding would change lies in the reflect
    padding that is cut off anyway, so each layer computes only what the next one needs.

    The chroma term is finished on the CPU from the low-resolution planes P·rgb: where the C
    kernels are built with AVX-512 or AVX2 (:mod:`subpixel_cli.kernels`, ``head.c``), one pass
    makes the output pixels (phase shift, bicubic chroma, sum, rounding, interleave); else
    OpenCV's float bicubic resize (the same filter as ``F.interpolate``) and saturating adds of the
    Y plane, half the time of the phase-filter convolution and three torch passes at high
    resolution. Elsewhere (GPUs) it is the 5×5 phase filter at low resolution, added, clamped and
    copied by torch. A Y plane alone (grey pictures, video in YCbCr) is written by a C pass too
    where it is built with AVX-512, and the last layer of ×2 Y models runs in C on CPUs with
    AVX-512 (bf16 or fp32) or AVX2 (fp32): oneDNN wastes 3/4 of its 16-channel blocks (1/2 of its
    8-channel ones) on 4 outputs.

    ``dtype`` ``torch.int8`` is the int8 path: it needs the model's ``calibration``
    (:class:`~subpixel_cli.calibration.Calibration`) and oneDNN's quantized convolution.

    ``luma`` (Y models, ``in_channels`` 1): the input is a Y plane and so is the result, in its
    own levels (16…235 for limited-range video): the Y of YCbCr frames that stay in YCbCr.

    ``kernels``: the C kernels to use where they fit (:func:`~subpixel_cli.kernels.default_kernels`
    unless given).
    """

    def __init__(self, model: ESPCN, in_channels: int, device: torch.device, dtype: torch.dtype,
                 opencv: bool | None = None, calibration: Calibration | None = None, luma: bool = False,
                 kernels: Kernels | None = None) -> None:
        cfg, r = model.config, model.config.scale
        self.kernels = kernels = kernels if kernels is not None else default_kernels()
        if luma and (cfg.channels != 1 or in_channels != 1):
            raise ValueError("the luma path is for Y models on one channel")
        int8 = dtype == torch.int8
        if int8 and (calibration is None or device.type != "cpu"):
            raise ValueError("the int8 path runs on the CPU, with a calibration")
        # int8's layers around conv2: bf16 where the CPU computes it (elsewhere oneDNN emulates it,
        # slower than fp32: a CPU with VNNI but no AVX-512 BF16, such as Cascade Lake, runs them in fp32).
        float_dtype = (torch.bfloat16 if fast_bf16() else torch.float32) if int8 else dtype
        # Where the C kernel takes conv1 (one plane, 64 channels, 5×5, tanh) the int8 path does
        # conv1's tanh and act2 itself: tanh's own form (below), in fp32 too.
        int8_in_c = (int8 and cfg.activation == "tanh" and cfg.features[0] == 64
                     and tuple(model.conv1.weight.shape[1:]) == (1, 5, 5) and kernels.conv1_u8 is not None)
        layers = [(c.weight.detach().to("cpu", torch.float64), c.bias.detach().to("cpu", torch.float64))
                  for c in model.convs]  # conv1, conv2, any further hidden layers, the last layer
        (w1, b1), (w3, b3) = layers[0], layers[-1]
        colour = cfg.channels == 1 and in_channels == 3
        self.opencv = colour and (device.type == "cpu" if opencv is None else opencv)
        half = 0.0 if self.opencv else 0.5  # OpenCV's saturating casts round; torch's truncate
        # bf16 on the CPU keeps the last layer in bf16 too, its outputs centred on zero.
        centred = float_dtype == torch.bfloat16 and device.type == "cpu"
        self.centre = _HEAD_CENTRE if centred else 0.0
        to_y = None
        if cfg.channels == 1:
            a, a_inv = colour_matrices()
            if colour:
                # Y by a 1×1 convolution: oneDNN runs conv1 on one channel much faster than on three.
                y_centre = _Y_CENTRE if centred else 0.0
                to_y = ((a[0] / 255).view(1, 3, 1, 1), torch.tensor([Y_OFFSET - y_centre], dtype=torch.float64))
                layers[0] = (w1, b1 + y_centre * w1.sum(dim=(1, 2, 3)))
            elif luma:  # Y levels in, Y levels out
                layers[0] = (w1 / 255, b1)
            else:  # grey g is Y = 16/255 + g·219/255
                layers[0] = (w1 * Y_RANGE / 255, b1 + Y_OFFSET * w1.sum(dim=(1, 2, 3)))
            if luma:
                layers[-1] = (255 * w3, 255 * b3 + half - self.centre)
            else:  # Y' -> RGB: every colour gets (Y' − 16/255)/(219/255) plus the chroma term.
                gain = 255 / Y_RANGE
                layers[-1] = (gain * w3, gain * (b3 - Y_OFFSET) + half - self.centre)
        else:  # an RGB model on RGB; its channels are already in (i, j, c) order
            layers[0], layers[-1] = (w1 / 255, b1), (255 * w3, 255 * b3 + half - self.centre)
        plain_tanh = float_dtype == torch.bfloat16 or int8_in_c or device.type != "cpu"
        post_ops = _TANH_POST_OPS if plain_tanh else _POST_OPS
        post_op, gamma, alpha, beta = post_ops[cfg.activation]
        for k in range(1, len(layers)):  # the next layer reads α·s + β instead of the activation
            w, b = layers[k]
            layers[k] = (alpha * w, b + beta * w.sum(dim=(1, 2, 3)))
        for k in range(len(layers) - 1):
            layers[k] = (gamma * layers[k][0], gamma * layers[k][1])

        self.scale, self.radius, self.post_op, self.dtype = r, cfg.receptive_radius, post_op, float_dtype
        self.device_type = device.type
        # fp16, and bf16 off the CPU, keep the last layer in fp32: 8 bits of mantissa would round
        # 0…255 to whole levels, fp16's 11 to eighths of one near 255.
        wide_head = dtype == torch.float16 or (dtype == torch.bfloat16 and not centred)
        self.head_dtype = torch.float32 if wide_head else float_dtype
        self.chroma_dtype = torch.float32 if centred else self.head_dtype  # the colours' own precision
        self.mkldnn = MKLDNN_CONV is not None and device.type == "cpu" and (
            float_dtype == torch.float32 or (float_dtype == torch.bfloat16 and native_bf16()))
        self.int8, self.conv1_u8, self.act2 = None, None, None
        if int8:
            self.int8 = Int8Layer(layers[1], calibration, alpha, beta, gamma, float_dtype)
            self.conv1_u8 = self._conv1_u8(cfg, layers[0], to_y)
            if self.conv1_u8 is not None:  # act2 in place by the same C library (one pass, not a conv)
                self.act2 = kernels.tanh_bf16 if float_dtype == torch.bfloat16 else kernels.tanh_f32
            f2 = cfg.features[1]  # what is left of conv2 in float: its activation, on a 1×1 identity
            layers[1] = (torch.eye(f2, dtype=torch.float64).view(f2, f2, 1, 1), None)
        # A last layer with few outputs (×2 Y models) by its C kernel, where it is built: fp32 out.
        self.conv3 = None
        if self.mkldnn and centred:
            self.conv3 = kernels.conv3_bf16(*layers[-1])
        elif self.mkldnn and self.head_dtype == torch.float32:
            self.conv3 = kernels.conv3_f32(*layers[-1])
        dtypes = [float_dtype] * (len(layers) - 1) + [self.head_dtype]
        self.layers = [self._weights(w, b, dt, device) for (w, b), dt in zip(layers, dtypes)]
        self.to_y = None if to_y is None else self._weights(*to_y, float_dtype, device)
        self.chroma = None
        if colour:  # the chroma's RGB contribution: a 3×3 matrix on RGB, or with the filter
            p = a_inv[:, 1:] @ a[1:]
            self.chroma = (p.to(device, torch.float32) if self.opencv
                           else self._weights(chroma_filter(r), None, self.chroma_dtype, device)[0])
        # On the CPU the pixels come out of one C pass where it builds (kernels.write_rgb), else OpenCV's.
        self.write_rgb = kernels.write_rgb if self.opencv else None
        # and a Y model's Y plane (grey pictures, video in YCbCr) likewise, where torch took four passes
        self.write_y = kernels.write_y if cfg.channels == 1 and in_channels == 1 and device.type == "cpu" else None
        self.taps = bicubic_phases(r).float() if self.write_rgb is not None else None
        self.chroma_planes = kernels.chroma_planes if self.write_rgb is not None else None

    @property
    def math(self) -> str:
        """The arithmetic this path runs, in words (``subpixel bench`` reports it)."""
        name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        text = f"int8 conv2 between {name[self.dtype]} layers" if self.int8 is not None else name[self.dtype]
        if self.head_dtype != self.dtype:
            text += ", last layer and chroma in fp32"
        if self.device_type == "cuda" and torch.float32 in (self.dtype, self.head_dtype):
            text += " (IEEE, not TF32)"
        return text

    def _conv1_u8(self, cfg: Any, layer: tuple[torch.Tensor, torch.Tensor], to_y: Any) -> tuple[Any, ...] | None:
        """The int8 path's conv1 → tanh → levels as one C kernel (:attr:`Kernels.conv1_u8 <subpixel_cli.kernels.Kernels.conv1_u8>`) where
        it builds and fits the layer (one plane in, 64 channels, 5×5, tanh), with its fp32
        weights and the plane it reads (RGB → Y as one fp32 row, or the input itself)."""
        fits = (cfg.activation == "tanh" and self.post_op == "tanh" and cfg.features[0] == 64
                and tuple(layer[0].shape[1:]) == (1, 5, 5))
        run = self.kernels.conv1_u8 if fits else None
        if run is None:
            return None
        y_row = None if to_y is None else (to_y[0].reshape(3).float(), float(to_y[1]))
        return run, layer[0].float(), layer[1].float(), self.int8.gain.flatten(), self.int8.shift.flatten(), y_row

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """conv1's output as the int8 layer's input levels, by the C kernel (NCHW view, channels last)."""
        run, w, b, gain, shift, y_row = self.conv1_u8
        if y_row is None:
            planes = x[:, 0]
        else:  # one rounded multiply or add at a time: a matrix product's rounding depends on the
            # picture's size, and tiles must give the pixels the whole picture gives
            (r, g, bl), offset = y_row[0].tolist(), y_row[1]
            planes = x[:, 0] * r
            planes += x[:, 1] * g
            planes += x[:, 2] * bl
            planes += offset
        return run(planes, w, b, gain, shift).permute(0, 3, 1, 2)

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

    def __call__(self, x: torch.Tensor, lap: Laps | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: padded ``N×C×H×W`` (channels last) floats in 0…255. Returns the phases
        (``H − 2·radius`` rows, less :attr:`centre`) and the chroma term: ``N×3×H×W`` planes for
        OpenCV, phases (``H − 4`` rows) otherwise, or ``None``. Neither is clamped yet. ``lap``
        is told when each step ends."""
        lap = lap or _no_lap
        (w2, b2), (w3, b3) = self.layers[1], self.layers[-1]
        xh = x.to(self.chroma_dtype)
        if self.conv1_u8 is not None:
            levels = self._levels(x)
            lap("conv1 + act + levels")
            f = self.int8.convolve(levels, lap)
        else:
            f = self._first_layer(x, lap)
            if self.int8 is not None:
                f = self.int8(f, lap)
        f = self.act2(f) if self.act2 is not None else self._conv(f, w2, b2, self.post_op)
        lap("act2" if self.int8 is not None else "conv2 + act")
        for w, b in self.layers[2:-1]:  # the hidden layers of models deeper than the paper's
            f = self._conv(f, w, b, self.post_op)
        if len(self.layers) > 3:
            lap("hidden layers + act")
        if self.conv3 is not None and f.dtype == self.conv3.dtype:
            t = self.conv3(f)
        else:
            t = self._conv(f.to(self.head_dtype), w3, b3)
        lap("conv3")
        if self.chroma is None:
            return t, None
        if self.chroma_planes is not None and xh.dtype == torch.float32:
            d = self.chroma_planes(xh, self.chroma)
        elif self.opencv:
            d = torch.einsum("cd,ndhw->nchw", self.chroma, xh.float()).contiguous()
        else:
            d = self._conv(xh, self.chroma, None)
        lap("chroma")
        return t, d

    def _first_layer(self, x: torch.Tensor, lap: Callable[[str], None]) -> torch.Tensor:
        """conv1 and its activation on oneDNN (or torch), after RGB → Y for Y models on RGB."""
        w1, b1 = self.layers[0]
        x = x.to(self.dtype)
        lap("input")
        if self.to_y is not None:
            x = self._conv(x, *self.to_y)
            lap("colour to Y")
        f = self._conv(x, w1, b1, self.post_op)
        lap("conv1 + act")
        return f

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, post_op: str = "none") -> torch.Tensor:
        """An unpadded convolution and its activation: one oneDNN call, or two torch ops."""
        if self.mkldnn:
            return MKLDNN_CONV(x, w, b, [0, 0], [1, 1], [1, 1], 1, post_op, [], "")
        y = F.conv2d(x, w, b)
        return _ACTIVATIONS[post_op](y) if post_op in _ACTIVATIONS else y

    def write(self, t: torch.Tensor, d: torch.Tensor | None, out: torch.Tensor, pad: int,
              lap: Laps | None = None) -> None:
        """Pixels ``out`` (``N×rh×rw×C`` uint8) from :meth:`__call__`'s results for an input
        reflect-padded by ``pad`` low-resolution pixels, which are cut off."""
        lap = lap or _no_lap
        n, hr, wr, c = out.shape
        r = self.scale
        h, w = hr // r, wr // r
        crop_t, crop_d = pad - self.radius, pad - BICUBIC_REACH  # what the unpadded layers left
        if self.write_rgb is not None and out.is_contiguous() and t.dtype in (torch.bfloat16, torch.float32):
            self.write_rgb(t, crop_t, d, crop_d, self.taps, self.centre, out)
            lap("write")
            return
        if (self.write_y is not None and t.dtype in (torch.bfloat16, torch.float32)
                and out.stride()[1:3] == (wr, 1) and (n == 1 or out.stride(0) >= hr * wr)):  # each plane in one piece
            self.write_y(t, crop_t, self.centre, out)
            lap("write")
            return
        phases = _phase_view(t, r, crop_t, h, w)
        if self.opencv:
            y = phases[..., 0].permute(0, 1, 3, 2, 4).reshape(n, hr, wr).float().numpy()
            planes, pixels = d.add_(self.centre).numpy(), out.numpy()  # a constant passes through bicubic
            for k in range(n):
                colours = []
                for plane in planes[k]:  # bicubic reaches 2 pixels: resize a 2-pixel margin too
                    lr = plane[crop_d : crop_d + h + 4, crop_d : crop_d + w + 4]
                    hr_plane = cv2.resize(lr, (wr + 4 * r, hr + 4 * r), interpolation=cv2.INTER_CUBIC)
                    colours.append(cv2.add(y[k], hr_plane[2 * r : 2 * r + hr, 2 * r : 2 * r + wr], dtype=cv2.CV_8U))
                cv2.merge(colours, dst=pixels[k])
            lap("write")
            return
        if d is not None:
            phases = torch.add(_phase_view(d, r, crop_d, h, w), phases)
        elif self.centre:
            phases = phases.float()
        if self.centre:
            phases.add_(self.centre)
        phases.clamp_(0.0, 255.0)
        out.view(n, h, r, w, r, c).copy_(phases.permute(0, 1, 3, 2, 4, 5))
        lap("write")


class Int8Layer:
    """conv2 on oneDNN's u8×s8 kernels, from conv1's post-op output ``s`` (the activation is
    α·s + β) to conv2's pre-activation (times γ, what the post-op of act2 expects).

    ``s`` is quantized per channel to 256 levels between the calibrated extremes (one fp32
    multiply-add and oneDNN's quantizer, viewed as uint8 without a copy); the calibration's int8
    weights are conv2's weights times each input channel's level step, rounded per output channel
    with error feedback (:func:`~subpixel_cli.quantize.round_weights`). The levels' offsets go
    into the bias (exact: the convolution is unpadded), so the kernel sees a zero point of 0 and
    an input scale of 1."""

    def __init__(self, layer: tuple[torch.Tensor, torch.Tensor], calibration: Calibration, alpha: float, beta: float,
                 gamma: float, out_dtype: torch.dtype) -> None:
        w, b = layer  # conv2 as folded: α·γ·w and γ·(b + β·Σw), on s
        lo = (calibration.act_min.to(torch.float64) - beta) / alpha  # the levels, in terms of s
        step = calibration.level_steps() / alpha
        self.bias = (b + (w * lo.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))).float()
        # The calibration's weights approximate w·step of the activation (α = γ = 1); here the
        # levels are of s, whose step is step_a/α, and the layer is γ times as large.
        self.w_scale = (gamma * calibration.weight_scale.double()).float()
        self.weight = torch.ops.onednn.qconv_prepack(calibration.weight_int8, self.w_scale, 1.0, 0,
                                                     [1, 1], [0, 0], [1, 1], 1, None)
        self.w_zero = torch.zeros(len(self.bias), dtype=torch.long)
        self.gain = (1 / step).float().view(1, -1, 1, 1)
        self.shift = (-lo / step).float().view(1, -1, 1, 1)
        self.out_dtype = out_dtype

    def __call__(self, s: torch.Tensor, lap: Callable[[str], None]) -> torch.Tensor:
        levels = torch.quantize_per_tensor(torch.addcmul(self.shift, s, self.gain), 1.0, 0, torch.quint8)
        q = torch.empty(0, dtype=torch.uint8).set_(levels.untyped_storage(), levels.storage_offset(),
                                                    levels.shape, levels.stride())
        lap("quantize")
        return self.convolve(q, lap)

    def convolve(self, q: torch.Tensor, lap: Callable[[str], None]) -> torch.Tensor:
        """conv2 on input levels ``q`` (uint8, ``N×C×H×W`` channels last)."""
        z = torch.ops.onednn.qconv2d_pointwise(q, 1.0, 0, self.weight, self.w_scale, self.w_zero, self.bias,
                                               [1, 1], [0, 0], [1, 1], 1, 1.0, 0, self.out_dtype, "none", [], None)
        lap("conv2 (int8)")
        return z


def _phase_view(t: torch.Tensor, r: int, crop: int, h: int, w: int) -> torch.Tensor:
    """Phases ``N×(r²·C)×H×W`` (channel (i·r + j)·C + c) as an ``N×h×w×r×r×C`` view, less ``crop``
    low-resolution pixels at the top and left."""
    return t.permute(0, 2, 3, 1)[:, crop : crop + h, crop : crop + w].unflatten(-1, (r, r, -1))
