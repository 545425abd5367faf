"""The :class:`Upscaler`: device, precision, padding, tiles and batches around an ESPCN.

A pure call from array to array: ``H×W×C`` uint8/uint16 pixels in, ``rH×rW×C`` out. Nothing is
kept between calls. Y-channel models upscale the luminance of BT.601 YCbCr and the chroma is
upscaled bicubically (as the paper); RGB models take RGB. Alpha is upscaled bicubically on its
own.

Every image is reflect-padded by ``pad`` low-resolution pixels (the network's receptive radius
plus the bicubic kernel's reach) and cut into overlapping tiles that carry the same context, so a
tiled result equals the untiled one, and image borders never see the convolutions' zero padding.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from subpixel_cli.color import rgb_to_y, rgb_to_ycbcr
from subpixel_cli.errors import UsageError
from subpixel_cli.hub import LoadedModel
from subpixel_cli.model import ESPCN, phase_shift
from subpixel_cli.runtime import MKLDNN_CONV, PRECISIONS, native_bf16, resolve_device, resolve_precision, tune_for

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass on the CPU
_MIN_RETRY_TILE = 32  # out-of-memory retries halve tiles down to this side
_Y_OFFSET, _Y_RANGE = 16 / 255, 219 / 255  # studio-swing Y of a grey value g is 16/255 + g·219/255

Progress = Callable[[int, int], None]


# --- the fused 8-bit path ---------------------------------------------------------------------
#
# For uint8 pictures everything but the network's convolutions is folded into them or done at
# low resolution. The 0…255 scale and RGB→Y go into the weights; the last layer writes, per
# output phase (i, j), the value (Y' − 16/255)·255/219 that every colour shares. The chroma's
# RGB contribution M[:, 1:]·(CbCr − ½) is linear in RGB, so it is computed at low resolution and
# only resized: by OpenCV's float bicubic on the CPU (then saturating adds of the shuffled Y), or
# as r² fixed 5×5 phase filters on GPUs (then an add, a clamp and one strided copy to uint8).
# The convolutions are unpadded: what zero padding would change lies in the reflect padding
# that is cut off anyway.


def _colour_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """BT.601 RGB→YCbCr matrix ``A`` (on [0, 1] values) and its inverse, read off :mod:`color`."""
    zero = rgb_to_ycbcr(np.zeros(3))
    a = torch.from_numpy((rgb_to_ycbcr(np.eye(3)) - zero).T)
    return a, torch.linalg.inv(a)


def _chroma_filter(r: int) -> torch.Tensor:
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


class _FusedPath:
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
                to_y = ((a[0] / 255).view(1, 3, 1, 1), torch.tensor([_Y_OFFSET], dtype=torch.float64))
            else:  # grey g is Y = 16/255 + g·219/255
                layers[0] = (w1 * _Y_RANGE / 255, b1 + _Y_OFFSET * w1.sum(dim=(1, 2, 3)))
            # Y' -> RGB: every colour gets (Y' − 16/255)/(219/255) plus the chroma term.
            gain = 255 / _Y_RANGE
            layers[2] = (gain * w3, gain * (b3 - _Y_OFFSET) + half)
        else:  # an RGB model on RGB; its channels are already in (i, j, c) order
            layers[0], layers[2] = (w1 / 255, b1), (255 * w3, 255 * b3 + half)
        post_ops = _BF16_POST_OPS if dtype == torch.bfloat16 else _POST_OPS
        post_op, gamma, alpha, beta = post_ops[cfg.activation]
        for k in (1, 2):  # the next layer reads α·s + β instead of the activation
            w, b = layers[k]
            layers[k] = (alpha * w, b + beta * w.sum(dim=(1, 2, 3)))
        for k in (0, 1):
            layers[k] = (gamma * layers[k][0], gamma * layers[k][1])

        self.scale, self.post_op, self.dtype = r, post_op, dtype
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
            self.chroma = p.to(device, torch.float32) if self.opencv else self._weights(_chroma_filter(r), None, self.head_dtype, device)[0]

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

    def write(self, t: torch.Tensor, d: torch.Tensor | None, out: torch.Tensor, crop_t: int, crop_d: int) -> None:
        """Pixels ``out`` (``N×rh×rw×C`` uint8) from :meth:`__call__`'s results, less ``crop_t``
        and ``crop_d`` low-resolution pixels (of ``t`` and of ``d``) at the top and left."""
        n, hr, wr, c = out.shape
        r = self.scale
        h, w = hr // r, wr // r
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


class Upscaler:
    """Runs one model on pictures of any size, within a memory budget.

    ``tile``: the side of the square low-resolution tiles; by default derived from
    ``memory_budget`` so that images that fit are done in one piece. ``batch_size``: how many
    same-size images :meth:`upscale_batch` runs at once.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        batch_size: int = 4,
        memory_budget: int | None = None,
    ) -> None:
        if tile is not None and tile < 8:
            raise UsageError(f"--tile {tile}: tiles must be at least 8 pixels")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be at least 1")
        self.info = loaded.info
        self.scale = loaded.info.scale
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        # fp16 tops out at 65504; bf16 has fp32's range, so only fp16 output is checked (a pass
        # over the result that costs a seventh of a bf16 batch on the CPU) and redone in fp32.
        self._may_overflow = self.dtype == torch.float16
        self.pad = loaded.info.config.receptive_radius + 2  # + the bicubic kernel's reach
        tune_for(self.device)
        # The network as a module, for what the fused path does not take (16-bit pictures,
        # RGB models on grey); its values in [0, 1] need more than bf16's 8 bits of mantissa.
        self._model_dtype = torch.float32 if precision == "auto" and self.device.type == "cpu" else self.dtype
        self._model = self._prepare(loaded.model, self._model_dtype)
        self._fp32_model = self._model if self._model_dtype == torch.float32 else None
        self._source_model = loaded.model
        self._fused = self._build_fused(self.dtype)
        self._fused_fp32 = self._fused if self.dtype == torch.float32 else None
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._chroma = _chroma_filter(self.scale).to(self.device, torch.float32)
        budget = memory_budget or self._default_budget()
        self.max_pixels = max(64 * 64, budget // self._bytes_per_pixel())
        self.tile = tile or max(64, math.isqrt(self.max_pixels) - 2 * self.pad)
        self._tile_forced = tile is not None

    def _prepare(self, model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        model = copy.deepcopy(model).eval().to(self.device, dtype)
        return model.to(memory_format=torch.channels_last)

    def _build_fused(self, dtype: torch.dtype) -> dict[int, _FusedPath]:
        """Fused 8-bit paths by input channels: RGB, and grey for Y models (an RGB model's grey
        output is the mean of clamped colours, which does not fold into its convolutions)."""
        channels = (1, 3) if self.info.config.channels == 1 else (3,)
        return {c: _FusedPath(self._source_model, c, self.device, dtype) for c in channels}

    def _default_budget(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * 0.5)
        return DEFAULT_MEMORY_BUDGET

    def _bytes_per_pixel(self) -> int:
        """Activation bytes per low-resolution pixel at the peak of one forward pass."""
        cfg, r2 = self.info.config, self.scale**2
        floats = 2 * cfg.features[0] + 2 * cfg.features[1] + 2 * cfg.channels * r2 + 12 * r2
        return 4 * floats

    # --- the tensor path ------------------------------------------------------------------

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The model on ``x`` (fp32, N×C×H×W), in the chosen precision, fp32 again if that fails."""
        x_in = x.to(self._model_dtype).contiguous(memory_format=torch.channels_last)
        y = self._model(x_in).float()
        if self._may_overflow and not torch.isfinite(y).all():
            if self._fp32_model is None:
                self._fp32_model = self._prepare(self._source_model, torch.float32)
            y = self._fp32_model(x.contiguous(memory_format=torch.channels_last))
        return y

    def sr_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``x`` (N×1×H×W grey or N×3×H×W RGB, float in [0, 1]) without padding."""
        r = self.scale
        grey = x.shape[1] == 1
        if self.info.config.channels == 1:
            if grey:
                y = self._network(x * _Y_RANGE + _Y_OFFSET)
                return ((y - _Y_OFFSET) / _Y_RANGE).clamp_(0, 1)
            y = self._network(rgb_to_y(x, dim=1))
            # RGB = (Y' − 16/255)·255/219 + bicubic(M[:, 1:]·(CbCr − ½)): the chroma term is
            # linear in RGB, so it is filtered at low resolution (replicate padding is bicubic's
            # edge clamping) instead of converting colours at high resolution.
            chroma = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self._chroma.to(x.dtype))
            return phase_shift(chroma, r).add_((y - _Y_OFFSET) / _Y_RANGE).clamp_(0, 1)
        if grey:
            return self._network(x.expand(-1, 3, -1, -1)).clamp_(0, 1).mean(dim=1, keepdim=True)
        return self._network(x).clamp_(0, 1)

    def _fused_pass(self, padded: np.ndarray, out: np.ndarray) -> _Pending:
        """Upscale padded uint8 ``N×H×W×C`` into ``out`` through the fused path. On CUDA with a
        pinned ``out`` the copy back is left in flight on a side stream, so the caller can queue
        the next batch before it :meth:`_finish` es this one."""
        fused = self._fused[padded.shape[-1]]
        t, d = fused(_to_tensor(padded, self.device))
        # Checked on the device and read in _finish, so that CUDA work is not serialised here.
        bad = ~torch.isfinite(t).all() if self._may_overflow else None
        dst = torch.from_numpy(out)
        if self._copy_stream is None or not dst.is_pinned():
            self._write_pixels(fused, t, d, out)
            return _Pending(None, bad, padded, out)
        pixels = torch.empty(out.shape, dtype=torch.uint8, device=self.device)
        self._write_pixels(fused, t, d, pixels)
        self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._copy_stream):
            dst.copy_(pixels, non_blocking=True)
            pixels.record_stream(self._copy_stream)
            done = torch.cuda.Event()
            done.record()
        return _Pending(done, bad, padded, out)

    def _write_pixels(self, fused: _FusedPath, t: torch.Tensor, d: torch.Tensor | None,
                      out: np.ndarray | torch.Tensor) -> None:
        """Fused results -> ``out``: straight into it on the CPU or for a device tensor, else via
        the device."""
        crops = self.pad - self.info.config.receptive_radius, self.pad - 2
        if isinstance(out, torch.Tensor) or self.device.type == "cpu":
            fused.write(t, d, torch.as_tensor(out), *crops)
            return
        pixels = torch.empty(out.shape, dtype=torch.uint8, device=self.device)
        fused.write(t, d, pixels, *crops)
        torch.from_numpy(out).copy_(pixels)

    def _finish(self, pending: _Pending) -> None:
        """Wait for a batch's copy back; redo the batch in fp32 if reduced precision overflowed."""
        if pending.done is not None:
            pending.done.synchronize()
        if pending.bad is not None and bool(pending.bad):
            if self._fused_fp32 is None:
                self._fused_fp32 = self._build_fused(torch.float32)
            fused = self._fused_fp32[pending.padded.shape[-1]]
            self._write_pixels(fused, *fused(_to_tensor(pending.padded, self.device)), pending.out)

    def _run_padded(self, colour: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Upscale padded ``N×H×W×C`` arrays and cut the padding off the result."""
        peak = float(np.iinfo(colour.dtype).max)
        crop = self.pad * self.scale
        with torch.inference_mode():
            if colour.dtype == np.uint8 and colour.shape[-1] in self._fused:
                n, h, w, c = colour.shape
                shape = (n, (h - 2 * self.pad) * self.scale, (w - 2 * self.pad) * self.scale, c)
                colour_out = np.empty(shape, np.uint8)
                self._finish(self._fused_pass(colour, colour_out))
            else:
                x = _to_tensor(colour, self.device) / peak
                colour_out = _to_array(self.sr_tensor(x)[..., crop:-crop, crop:-crop], colour.dtype)
            alpha_out = None
            if alpha is not None:
                a = _to_tensor(alpha[..., None], self.device) / peak
                a = F.interpolate(a, scale_factor=self.scale, mode="bicubic", align_corners=False)
                alpha_out = _to_array(a.clamp_(0, 1)[..., crop:-crop, crop:-crop], alpha.dtype)[..., 0]
        return colour_out, alpha_out

    # --- the array API --------------------------------------------------------------------

    def tiles_for(self, height: int, width: int) -> int:
        """How many tiles an image of this size is cut into."""
        fits = (height + 2 * self.pad) * (width + 2 * self.pad) <= self.max_pixels
        if fits and not (self._tile_forced and max(height, width) > self.tile):
            return 1
        return math.ceil(height / self.tile) * math.ceil(width / self.tile)

    def shrink_tiles(self) -> bool:
        """Halve the tile side after an out-of-memory error (callers retry); ``False`` when tiles
        are already at the 32-pixel floor and retrying cannot help."""
        if self.tile <= _MIN_RETRY_TILE:
            return False
        self.tile = max(_MIN_RETRY_TILE, self.tile // 2)
        self.max_pixels = min(self.max_pixels, (self.tile + 2 * self.pad) ** 2)
        self._tile_forced = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True

    def iter_rows(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None, progress: Progress | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Upscale one ``H×W×C`` image (C = 1 or 3) strip by strip, top to bottom.

        Yields ``(rows, alpha_rows)`` of the output, so a writer can stream a result that would
        not fit in memory whole.
        """
        h, w = pixels.shape[:2]
        p = self.pad
        tile = max(h, w) if self.tiles_for(h, w) == 1 else self.tile
        padded = _reflect_pad(pixels, p)
        padded_alpha = None if alpha is None else _reflect_pad(alpha[..., None], p)[..., 0]
        total, done = math.ceil(h / tile) * math.ceil(w / tile), 0
        r = self.scale
        for ty in range(0, h, tile):
            th = min(tile, h - ty)
            rows = np.empty((th * r, w * r, pixels.shape[2]), pixels.dtype)
            alpha_rows = None if alpha is None else np.empty((th * r, w * r), alpha.dtype)
            for tx in range(0, w, tile):
                tw = min(tile, w - tx)
                window = (slice(ty, ty + th + 2 * p), slice(tx, tx + tw + 2 * p))
                a_in = None if padded_alpha is None else padded_alpha[window][None]
                out, a_out = self._run_padded(padded[window][None], a_in)
                rows[:, tx * r : (tx + tw) * r] = out[0]
                if alpha_rows is not None:
                    alpha_rows[:, tx * r : (tx + tw) * r] = a_out[0]
                done += 1
                if progress:
                    progress(done, total)
            yield rows, alpha_rows

    def upscale(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Upscale one image; returns ``(pixels, alpha)`` ``r×`` larger, same dtype."""
        parts = list(self.iter_rows(_as_hwc(pixels), alpha, progress))
        colour = np.concatenate([c for c, _ in parts])
        return colour, None if alpha is None else np.concatenate([a for _, a in parts])

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """Upscale ``N×H×W×C`` same-size frames (uint8/uint16, C = 1 or 3), ``batch_size`` at a time."""
        n, h, w, c = frames.shape
        if self.tiles_for(h, w) > 1:
            return np.stack([self.upscale(f)[0] for f in frames])
        per_pass = max(1, min(self.batch_size, self.max_pixels // ((h + 2 * self.pad) * (w + 2 * self.pad))))
        out = self._empty_output((n, h * self.scale, w * self.scale, c), frames.dtype)
        pending: list[_Pending] = []
        with torch.inference_mode():
            for i in range(0, n, per_pass):
                padded = _reflect_pad(frames[i : i + per_pass], self.pad, batch=True)
                if frames.dtype == np.uint8 and c in self._fused:
                    pending.append(self._fused_pass(padded, out[i : i + per_pass]))
                else:
                    out[i : i + per_pass] = self._run_padded(padded, None)[0]
            for p in pending:
                self._finish(p)
        return out

    def _empty_output(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked on CUDA, so that results can be copied back asynchronously."""
        if self._copy_stream is not None and dtype == np.uint8:
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()
        return np.empty(shape, dtype)


@dataclass
class _Pending:
    """A fused batch whose copy back may still be in flight (``done``), with what a redo needs."""

    done: Any  # torch.cuda.Event | None
    bad: torch.Tensor | None  # a device bool: the reduced-precision output was not finite
    padded: np.ndarray
    out: np.ndarray


@dataclass
class Throughput:
    """What :func:`measure_throughput` found: ``frames`` of ``size`` (input W×H) in ``seconds``."""

    frames: int
    seconds: float
    size: tuple[int, int]
    scale: int
    device: str
    precision: str
    batch: int
    threads: int
    macs_per_frame: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s, counting the network's multiply-accumulates as two operations."""
        return 2 * self.macs_per_frame * self.fps / 1e9

    def as_dict(self) -> dict[str, Any]:
        w, h = self.size
        return {"frames": self.frames, "seconds": round(self.seconds, 4), "fps": round(self.fps, 3),
                "ms_per_frame": round(1000 / self.fps, 2), "gflops": round(self.gflops, 2),
                "input_size": [w, h], "output_size": [w * self.scale, h * self.scale], "scale": self.scale,
                "device": self.device, "precision": self.precision, "batch": self.batch, "threads": self.threads}


def measure_throughput(upscaler: Upscaler, width: int, height: int, seconds: float = 5.0) -> Throughput:
    """Time :meth:`Upscaler.upscale_batch` on synthetic ``height×width`` uint8 RGB frames, one
    batch of ``batch_size`` after another, for about ``seconds`` (at least two batches) after
    one untimed warm-up batch."""
    if width < 1 or height < 1:
        raise UsageError(f"frame size {width}×{height}: both sides must be at least 1 pixel")
    yy, xx = np.mgrid[0:height, 0:width]
    frame = ((np.sin(xx / 9.0) + np.cos(yy / 7.0) + 2) * 60).astype(np.uint8)
    frames = np.repeat(frame[None, ..., None], upscaler.batch_size, axis=0).repeat(3, axis=3)
    upscaler.upscale_batch(frames)
    done, started = 0, time.perf_counter()
    while done < 2 * len(frames) or time.perf_counter() - started < seconds:
        upscaler.upscale_batch(frames)
        done += len(frames)
    elapsed = time.perf_counter() - started
    threads = torch.get_num_threads() if upscaler.device.type == "cpu" else 0
    precision = next(name for name, dtype in PRECISIONS.items() if dtype == upscaler.dtype)
    return Throughput(done, elapsed, (width, height), upscaler.scale, upscaler.device.type, precision, len(frames), threads,
                      upscaler.info.config.macs_per_pixel() * width * height)


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _reflect_pad(arr: np.ndarray, p: int, batch: bool = False) -> np.ndarray:
    """Mirror ``p`` pixels around the spatial axes (edge-repeat for axes too short to mirror)."""
    spatial = (1, 2) if batch else (0, 1)
    widths = [(p, p) if ax in spatial else (0, 0) for ax in range(arr.ndim)]
    short = min(arr.shape[ax] for ax in spatial) <= p
    return np.pad(arr, widths, mode="symmetric" if short else "reflect")


def _to_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """``N×H×W×C`` uint8/uint16 -> float32 ``N×C×H×W`` on ``device`` (a channels-last view)."""
    t = torch.from_numpy(np.ascontiguousarray(arr) if arr.dtype == np.uint8 else arr.astype(np.float32))
    if device.type == "cuda":
        t = t.pin_memory()  # so that the upload is asynchronous
    t = t.to(device, non_blocking=True).float()
    return t.permute(0, 3, 1, 2)


def _to_array(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """float ``N×C×H×W`` in [0, 1] -> ``N×H×W×C`` of ``dtype``, rounded."""
    peak = float(np.iinfo(dtype).max)
    t = (t * peak).round_().permute(0, 2, 3, 1)
    torch_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
    return t.to(torch_dtype).cpu().numpy().astype(dtype, copy=False)
