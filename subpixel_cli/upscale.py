"""The :class:`Upscaler`: padding, tiles, batches and CUDA streams around an ESPCN, on a device
and in a precision from :mod:`subpixel_cli.runtime`.

A pure call from array to array: ``H×W×C`` pixels in (uint8, uint16, or float32 in [0, 1]),
``rH×rW×C`` of the same type out. Constructing one leaves the process as it is: threads, the
allocator and warnings are the command's to set (:func:`~subpixel_cli.runtime.tune_for`). Nothing is
kept between calls (but for the fp32 redo of an overflowed result, built once on first need from
the weights given at the start). Y-channel models upscale the luminance of BT.601 YCbCr and the chroma is
upscaled bicubically (as the paper); RGB models take RGB. Alpha is upscaled bicubically on its
own.

Every image is mirrored by ``pad`` low-resolution pixels (:func:`border`, :func:`mirror`: the one
rule for the network's border) and cut into overlapping tiles that carry the same context, so a
tiled result equals the untiled one, and image borders never see the convolutions' zero padding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from subpixel_cli.calibration import Calibration
from subpixel_cli.color import Y_OFFSET, Y_RANGE, rgb_to_y
from subpixel_cli.errors import UsageError
from subpixel_cli.fused import BICUBIC_REACH, FusedPath, Laps, chroma_filter
from subpixel_cli.hub import LoadedModel
from subpixel_cli.model import ESPCNConfig, phase_shift, weights_sha256
from subpixel_cli.resize import cubic
from subpixel_cli.kernels import Kernels, default_kernels
from subpixel_cli.runtime import default_memory_budget, exact_fp32, inference_precision, resolve_device

_MIN_RETRY_TILE = 32  # out-of-memory retries halve tiles down to this side
BORDER_MODE = "reflect"  # how pictures are mirrored at the network's border (see border())

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut: into ``tile``-pixel squares (low resolution), unless its padded
    size fits in ``max_pixels`` and the tile side is not ``forced`` (by ``--tile`` or an
    out-of-memory retry) below the image's longer side."""

    tile: int
    max_pixels: int
    forced: bool = False


class Upscaler:
    """Runs one model on pictures of any size, within a memory budget.

    ``tile``: the side of the square low-resolution tiles; by default derived from
    ``memory_budget`` so that images that fit are done in one piece. Both make :attr:`plan`, the
    :class:`TilePlan` every call uses unless it is given a smaller one for that image alone
    (:meth:`smaller_plan`, after an out-of-memory error). ``batch_size``: how many
    same-size images :meth:`upscale_batch` runs at once. ``fused``: uint8 pictures go through
    the fused 8-bit path (:mod:`subpixel_cli.fused`); ``False`` sends them through the float
    path that 16-bit pictures take (same pixels within one level, slower; for comparisons).
    ``calibration``: the int8 path's (:mod:`subpixel_cli.calibration`), by default the model
    folder's; :attr:`notice` says why a precision asked for was not used, if it was not.
    ``device``: a name for :func:`~subpixel_cli.runtime.resolve_device`, or a ``torch.device``
    (training's validation runs where the model trains). ``kernels``: the C kernels of the fused
    path (:func:`~subpixel_cli.kernels.default_kernels` unless given).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | None = None,
        batch_size: int = 4,
        memory_budget: int | None = None,
        fused: bool = True,
        calibration: Calibration | None = None,
        kernels: Kernels | None = None,
    ) -> None:
        if tile is not None and tile < 8:
            raise UsageError(f"--tile {tile}: tiles must be at least 8 pixels")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be at least 1")
        self.info = loaded.info
        self.scale = loaded.info.scale
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.calibration = calibration if calibration is not None else loaded.calibration
        self.kernels = kernels if kernels is not None else default_kernels()
        self.precision = inference_precision(precision, self.device, self.calibration, self.kernels)
        self.notice = "; ".join([*loaded.notes, *filter(None, [self.precision.notice])]) or None
        self.batch_size = batch_size
        self.pad = border(loaded.info.config)
        # A snapshot, so that the fp32 redo built on first need is of the weights given here.
        self._source_model = copy.deepcopy(loaded.model).eval()
        self._model = self._prepare(self.precision.module)
        self._fused = self._build_fused(self.precision.fused) if fused else {}
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._chroma = chroma_filter(self.scale).to(self.device, torch.float32)
        budget = memory_budget or default_memory_budget(self.device)
        max_pixels = max(64 * 64, budget // self._bytes_per_pixel())
        self.plan = TilePlan(tile or max(64, math.isqrt(max_pixels) - 2 * self.pad), max_pixels, tile is not None)

    @property
    def dtype(self) -> torch.dtype:
        """The chosen precision: the fused 8-bit path's dtype (see :attr:`precision`)."""
        return self.precision.fused

    @property
    def math(self) -> str:
        """The arithmetic 8-bit pictures go through, in words: the fused path's
        (:attr:`FusedPath.math <subpixel_cli.fused.FusedPath.math>`), else the module's dtype."""
        if 3 in self._fused:
            return self._fused[3].math
        name = str(self.precision.module).removeprefix("torch.").replace("float", "fp")
        return name + (" (IEEE, not TF32)" if name == "fp32" and self.device.type == "cuda" else "")

    def weights_sha256(self) -> str:
        """A hash of the weights this upscaler runs (names and values), e.g. to tell whether
        finished work came from the same model."""
        return weights_sha256(self._source_model)

    def _prepare(self, dtype: torch.dtype) -> torch.nn.Module:
        """The network as a module in ``dtype``, for what the fused path does not take."""
        model = copy.deepcopy(self._source_model).to(self.device, dtype)
        return model.to(memory_format=torch.channels_last)

    def _build_fused(self, dtype: torch.dtype) -> dict[int | str, FusedPath]:
        """Fused 8-bit paths by input channels: RGB, and grey and the Y plane (key ``"y"``) for Y
        models (an RGB model's grey output is the mean of clamped colours, which does not fold
        into its convolutions)."""
        paths: dict[int | str, FusedPath] = {3: FusedPath(self._source_model, 3, self.device, dtype,
                                                           calibration=self.calibration, kernels=self.kernels)}
        if self.info.config.channels == 1:
            for key in (1, "y"):
                paths[key] = FusedPath(self._source_model, 1, self.device, dtype, calibration=self.calibration,
                                       luma=key == "y", kernels=self.kernels)
        return paths

    @property
    def fused_paths(self) -> Mapping[int | str, FusedPath]:
        """The fused 8-bit paths this upscaler runs, by what they take: ``3`` RGB, ``1`` grey and
        ``"y"`` a Y plane (Y models); empty with ``fused=False``. Read-only."""
        return MappingProxyType(self._fused)

    @cached_property
    def _fp32_model(self) -> torch.nn.Module:
        """The module in fp32, to redo an overflowed result: built on first need, then reused."""
        return self._model if self.precision.module == torch.float32 else self._prepare(torch.float32)

    @cached_property
    def _fp32_fused(self) -> dict[int | str, FusedPath]:
        """The fused paths in fp32, to redo an overflowed batch: built on first need, then reused."""
        return self._fused if self.precision.fused == torch.float32 else self._build_fused(torch.float32)

    def _bytes_per_pixel(self) -> int:
        """Activation bytes per low-resolution pixel at the peak of one forward pass."""
        cfg, r2 = self.info.config, self.scale**2
        widest = max(a + b for a, b in zip(cfg.features, cfg.features[1:]))  # two hidden layers alive at once
        floats = 2 * widest + 2 * cfg.channels * r2 + 12 * r2
        return 4 * floats

    # --- the tensor path ------------------------------------------------------------------

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The model on ``x`` (fp32, N×C×H×W), in the chosen precision, fp32 again if that fails."""
        x_in = x.to(self.precision.module).contiguous(memory_format=torch.channels_last)
        y = self._model(x_in).float()
        if self.precision.checks_overflow and not torch.isfinite(y).all():
            y = self._fp32_model(x.contiguous(memory_format=torch.channels_last))
        return y

    def sr_tensor(self, x: torch.Tensor, luma: bool = False) -> torch.Tensor:
        """Super-resolve ``x`` (N×1×H×W grey or N×3×H×W RGB, float in [0, 1]; ``luma``: a Y
        model's Y plane) without padding: :func:`picture` in this upscaler's precision."""
        with exact_fp32(self.device):  # what runs in fp32 on CUDA is fp32, not TF32
            return picture(self._network, x, self.info.config, self._chroma, luma)

    def fused_pass(self, padded: np.ndarray, out: np.ndarray, lap: Laps | None = None,
                   key: int | str | None = None) -> Pending:
        """Upscale padded uint8 ``N×H×W×C`` into ``out`` through the fused path ``key`` (by
        default the one for C channels). On CUDA with a pinned ``out`` the copy back is left in
        flight on a side stream, so the caller can queue the next batch before it
        :meth:`_finish` es this one. ``lap`` times the steps."""
        key = padded.shape[-1] if key is None else key
        fused = self._fused[key]
        t, d = fused(_to_tensor(padded, self.device), lap)
        # Checked on the device and read in _finish, so that CUDA work is not serialised here.
        bad = ~torch.isfinite(t).all() if self.precision.checks_overflow else None
        dst = torch.from_numpy(out)
        if self._copy_stream is None or not dst.is_pinned():
            self._write_pixels(fused, t, d, out, lap)
            return Pending(None, bad, padded, out, key)
        pixels = torch.empty(out.shape, dtype=torch.uint8, device=self.device)
        self._write_pixels(fused, t, d, pixels)
        self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._copy_stream):
            dst.copy_(pixels, non_blocking=True)
            pixels.record_stream(self._copy_stream)
            done = torch.cuda.Event()
            done.record()
        return Pending(done, bad, padded, out, key)

    def _write_pixels(self, fused: FusedPath, t: torch.Tensor, d: torch.Tensor | None,
                      out: np.ndarray | torch.Tensor, lap: Laps | None = None) -> None:
        """Fused results -> ``out``: straight into it on the CPU or for a device tensor, else via
        the device."""
        if isinstance(out, torch.Tensor) or self.device.type == "cpu":
            fused.write(t, d, torch.as_tensor(out), self.pad, lap)
            return
        pixels = torch.empty(out.shape, dtype=torch.uint8, device=self.device)
        fused.write(t, d, pixels, self.pad)
        torch.from_numpy(out).copy_(pixels)

    def _finish(self, pending: Pending) -> None:
        """Wait for a batch's copy back; redo the batch in fp32 if reduced precision overflowed."""
        if pending.done is not None:
            pending.done.synchronize()
        if pending.bad is not None and bool(pending.bad):
            fused = self._fp32_fused[pending.key]
            self._write_pixels(fused, *fused(_to_tensor(pending.padded, self.device)), pending.out)

    def _run_padded(self, colour: np.ndarray, alpha: np.ndarray | None,
                    key: int | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Upscale padded ``N×H×W×C`` arrays and cut the padding off the result (``key``: a
        fused path other than the one for C channels, for a Y plane)."""
        peak = _peak(colour.dtype)
        crop = self.pad * self.scale
        with torch.inference_mode(), exact_fp32(self.device):
            # 8-bit pictures, and a float Y plane in levels (upscale_plane), through the fused path
            eight_bit = colour.dtype == np.uint8 or (key == "y" and colour.dtype == np.float32)
            if eight_bit and (key or colour.shape[-1]) in self._fused:
                n, h, w, c = colour.shape
                shape = (n, (h - 2 * self.pad) * self.scale, (w - 2 * self.pad) * self.scale, c)
                colour_out = np.empty(shape, np.uint8)
                self._finish(self.fused_pass(colour, colour_out, key=key))
            else:
                x = _to_tensor(colour, self.device) / peak
                sr = self.sr_tensor(x, luma=key == "y")
                colour_out = _to_array(sr[..., crop:-crop, crop:-crop], colour.dtype)
            alpha_out = None
            if alpha is not None:
                a = _to_tensor(alpha[..., None], self.device) / peak
                a = F.interpolate(a, scale_factor=self.scale, mode="bicubic", align_corners=False)
                alpha_out = _to_array(a.clamp_(0, 1)[..., crop:-crop, crop:-crop], alpha.dtype)[..., 0]
        return colour_out, alpha_out

    # --- the array API --------------------------------------------------------------------

    def tiles_for(self, height: int, width: int, plan: TilePlan | None = None) -> int:
        """How many tiles an image of this size is cut into (by :attr:`plan` unless given)."""
        plan = plan or self.plan
        fits = (height + 2 * self.pad) * (width + 2 * self.pad) <= plan.max_pixels
        if fits and not (plan.forced and max(height, width) > plan.tile):
            return 1
        return math.ceil(height / plan.tile) * math.ceil(width / plan.tile)

    def smaller_plan(self, plan: TilePlan | None = None) -> TilePlan | None:
        """The plan to retry one image with after an out-of-memory error: tiles of half the side
        (of :attr:`plan` unless given), always cut; ``None`` when tiles are already at the
        32-pixel floor and retrying cannot help. On CUDA, cached blocks go back to the driver
        first, so that the retry starts from what is free."""
        plan = plan or self.plan
        if plan.tile <= _MIN_RETRY_TILE:
            return None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        tile = max(_MIN_RETRY_TILE, plan.tile // 2)
        return TilePlan(tile, min(plan.max_pixels, (tile + 2 * self.pad) ** 2), forced=True)

    def iter_rows(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None, progress: Progress | None = None,
        plan: TilePlan | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Upscale one ``H×W×C`` image (C = 1 or 3) strip by strip, top to bottom, cut by
        :attr:`plan` unless another is given.

        Yields ``(rows, alpha_rows)`` of the output, so a writer can stream a result that would
        not fit in memory whole.
        """
        return self._iter_rows(pixels, alpha, progress, plan)

    def _iter_rows(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None, progress: Progress | None = None,
        plan: TilePlan | None = None, key: int | str | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        h, w = pixels.shape[:2]
        p = self.pad
        plan = plan or self.plan
        tile = max(h, w) if self.tiles_for(h, w, plan) == 1 else plan.tile
        padded = mirror(pixels, p)
        padded_alpha = None if alpha is None else mirror(alpha[..., None], p)[..., 0]
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
                out, a_out = self._run_padded(padded[window][None], a_in, key)
                rows[:, tx * r : (tx + tw) * r] = out[0]
                if alpha_rows is not None:
                    alpha_rows[:, tx * r : (tx + tw) * r] = a_out[0]
                done += 1
                if progress:
                    progress(done, total)
            yield rows, alpha_rows

    def upscale(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None, progress: Progress | None = None,
        plan: TilePlan | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Upscale one image (cut by :attr:`plan` unless another is given); returns
        ``(pixels, alpha)`` ``r×`` larger, same dtype."""
        parts = list(self.iter_rows(_as_hwc(pixels), alpha, progress, plan))
        colour = np.concatenate([c for c, _ in parts])
        return colour, None if alpha is None else np.concatenate([a for _, a in parts])

    def upscale_batch(self, frames: np.ndarray, plan: TilePlan | None = None, lap: Laps | None = None) -> np.ndarray:
        """Upscale ``N×H×W×C`` same-size frames (uint8/uint16, C = 1 or 3), ``batch_size`` at a
        time, or one by one in tiles where :attr:`plan` (or the one given) cuts them. ``lap``
        (:class:`~subpixel_cli.fused.Laps`) times the steps of the fused path."""
        n, h, w, c = frames.shape
        plan = plan or self.plan
        if self.tiles_for(h, w, plan) > 1:
            return np.stack([self.upscale(f, plan=plan)[0] for f in frames])
        out = self._empty_output((n, h * self.scale, w * self.scale, c), frames.dtype)
        self._batches(frames, out, plan, c if frames.dtype == np.uint8 and c in self._fused else None, lap)
        return out

    def upscale_plane(self, plane: np.ndarray, plan: TilePlan | None = None) -> np.ndarray:
        """A Y model on the Y plane of YCbCr, ``H×W`` (uint8, uint16, or float32 in [0, 1]), in
        its own levels (any range and matrix): the plane ``r×`` larger, of the same dtype, clipped
        but otherwise as the network gives it. Evaluation scores this Y; I420 video is upscaled
        through it. Where this upscaler has the fused 8-bit path (its int8, bf16… as `upscale`
        runs them), a float32 plane goes through it too, unrounded, and comes back rounded to
        8-bit levels: how a precision is scored by the protocol."""
        if self.info.config.channels != 1:
            raise UsageError(f"{self.info.name} is an RGB model: a Y plane needs a Y model")
        if plane.dtype == np.float32 and "y" in self._fused:
            levels = self._iter_rows((plane * 255.0)[..., None], plan=plan, key="y")
            return np.concatenate([r for r, _ in levels])[..., 0].astype(np.float32) / 255.0
        rows = self._iter_rows(plane[..., None], plan=plan, key="y")
        return np.concatenate([r for r, _ in rows])[..., 0]
    @property
    def takes_i420(self) -> bool:
        """Whether :meth:`upscale_i420` can run: a Y model on the fused path."""
        return "y" in self._fused

    def upscale_i420(self, frames: np.ndarray, plan: TilePlan | None = None, lap: Laps | None = None) -> np.ndarray:
        """Upscale ``N×(3H/2)×W`` uint8 I420 frames (the Y plane, then the half-size U and V
        planes, one after the other, as PyAV stacks ``yuv420p``) into the same layout ``r×``
        larger, without leaving YCbCr: the Y plane by the network in its own levels (any range
        and matrix; Y models only), U and V bicubically for MPEG-2/H.264 chroma siting (left,
        centred vertically). ``H`` and ``W`` must be even."""
        if "y" not in self._fused:
            raise UsageError(f"{self.info.name} is an RGB model: I420 frames need a Y model")
        n, rows, w = frames.shape
        h, r = rows * 2 // 3, self.scale
        if frames.dtype != np.uint8 or h % 2 or w % 2 or rows != h + h // 2:
            raise ValueError(f"{w}×{rows} {frames.dtype} is not a stack of 8-bit I420 planes of an even-sized frame")
        plan = plan or self.plan
        out = self._empty_output((n, rows * r, w * r), np.uint8)
        flat_in, flat_out = frames.reshape(n, -1), out.reshape(n, -1)
        y_in = flat_in[:, : h * w].reshape(n, h, w, 1)
        y_out = flat_out[:, : h * w * r * r].reshape(n, h * r, w * r, 1)
        if self.tiles_for(h, w, plan) > 1:
            for k in range(n):
                y_out[k, ..., 0] = self.upscale_plane(y_in[k, ..., 0], plan)
        elif self.device.type == "cpu":
            self._batches(y_in, y_out, plan, "y", lap)
        else:  # asynchronous copies back want a dense (pinned) target, not a view into the planes
            dense = self._empty_output(y_out.shape, np.uint8)
            self._batches(y_in, dense, plan, "y", lap)
            y_out[...] = dense
        ch, cw = h // 2, w // 2
        for k in range(n):
            for p in range(2):
                start, start_out = h * w + p * ch * cw, (h * w + p * ch * cw) * r * r
                plane = flat_in[k, start : start + ch * cw].reshape(ch, cw)
                upscale_chroma(plane, r, flat_out[k, start_out : start_out + ch * cw * r * r].reshape(ch * r, cw * r))
        if lap:
            lap("chroma")
        return out

    def _batches(self, frames: np.ndarray, out: np.ndarray, plan: TilePlan, key: int | str | None,
                 lap: Laps | None) -> None:
        """Same-size frames that fit ``plan`` into ``out``, ``batch_size`` (or fewer) at a time:
        through the fused path ``key``, or the float path where it is ``None``."""
        n, h, w, _ = frames.shape
        per_pass = max(1, min(self.batch_size, plan.max_pixels // ((h + 2 * self.pad) * (w + 2 * self.pad))))
        pending: list[Pending] = []
        with torch.inference_mode(), exact_fp32(self.device):
            try:
                for i in range(0, n, per_pass):
                    if lap:
                        lap.start()
                    padded = mirror(frames[i : i + per_pass], self.pad, batch=True)
                    if lap:
                        lap("pad")
                    if key is not None:
                        pending.append(self.fused_pass(padded, out[i : i + per_pass], lap, key))
                    else:
                        out[i : i + per_pass] = self._run_padded(padded, None)[0]
                while pending:
                    self._finish(pending.pop(0))
            finally:
                # After an error part-way, the copies already queued still land in ``out``: wait
                # for them before a retry (or the allocator) reuses those pinned pages.
                for p in pending:
                    if p.done is not None:
                        p.done.synchronize()

    def _empty_output(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked on CUDA, so that results can be copied back asynchronously."""
        if self._copy_stream is not None and dtype == np.uint8:
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()
        return np.empty(shape, dtype)


@dataclass
class Pending:
    """A fused batch whose copy back may still be in flight (``done``), with what a redo needs."""

    done: Any  # torch.cuda.Event | None
    bad: torch.Tensor | None  # a device bool: the reduced-precision output was not finite
    padded: np.ndarray
    out: np.ndarray
    key: int | str  # the fused path it went through


def upscale_chroma(plane: np.ndarray, r: int, out: np.ndarray) -> None:
    """A 4:2:0 chroma plane ``r×`` larger into ``out``, bicubically, for MPEG-2/H.264 siting: a
    chroma sample lies on the left luma column of its pair and halfway between its two rows, so
    the sample grid moves by ``¼ − ¼/r`` chroma pixels to the right against OpenCV's centred one
    (a 4-tap shift at low resolution, then its resize: ``cv2.warpAffine`` would take 8× as long)."""
    s = 0.25 - 0.25 / r
    # pixels x − 1 … x + 2 for the value at x + s, by Keys' a = −½ (not OpenCV's −¾): it carries a
    # ramp over exactly, so the shift adds no ripple to the resize's
    taps = cubic(np.array([s + 1, s, 1 - s, 2 - s])).astype(np.float32)
    cv2.resize(cv2.sepFilter2D(plane, -1, taps, np.ones(1, np.float32), anchor=(1, 0), borderType=cv2.BORDER_REPLICATE),
               (out.shape[1], out.shape[0]), dst=out, interpolation=cv2.INTER_CUBIC)


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., None] if pixels.ndim == 2 else pixels


def border(config: ESPCNConfig) -> int:
    """The network's border, how much: every picture is mirrored by this many low-resolution
    pixels on each side before the network sees it (its receptive radius, and the pixels the
    bicubic chroma reads), and the result cut by as much, so that no pixel kept depends on the
    convolutions' zero padding. How: :func:`mirror`. The one rule for the Upscaler, evaluation
    (which runs through it) and the ONNX ``--rgb`` graph."""
    return config.receptive_radius + BICUBIC_REACH


def mirror(arr: np.ndarray, p: int, batch: bool = False) -> np.ndarray:
    """``arr`` (``H×W×C``, or ``N×H×W×C`` with ``batch``) mirrored by ``p`` pixels around its
    spatial axes by :data:`BORDER_MODE` (reflection: the edge pixel is not repeated, as torch's
    and ONNX's ``reflect``). Sides of ``p`` pixels or fewer have too few to reflect and are
    mirrored with the edge repeated (numpy's ``symmetric``); ONNX's ``Pad`` has no such mode,
    so the exported graph takes sides longer than ``p``."""
    spatial = (1, 2) if batch else (0, 1)
    widths = [(p, p) if ax in spatial else (0, 0) for ax in range(arr.ndim)]
    short = min(arr.shape[ax] for ax in spatial) <= p
    return np.pad(arr, widths, mode="symmetric" if short else BORDER_MODE)


def picture(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, config: ESPCNConfig,
            chroma: torch.Tensor, luma: bool = False) -> torch.Tensor:
    """The float path's arithmetic, without padding: ``network`` (an ESPCN's forward, in any
    precision) on pictures ``x`` in [0, 1] (N×1×H×W grey, N×3×H×W RGB; ``luma``: a Y model's Y
    plane, in and out), the result r× larger and clipped to [0, 1]. A Y model sees BT.601 Y
    and its output is the value all three colours share, plus the chroma term bicubically
    upscaled (``chroma``: :func:`~subpixel_cli.fused.chroma_filter`); grey is Y = 16/255 +
    g·219/255 and back; an RGB model's grey is the mean of its clipped colours. What the Upscaler
    runs where its fused path does not, and what the ONNX ``--rgb`` graph is exported from."""
    grey = x.shape[1] == 1
    if config.channels == 1:
        if luma:
            return network(x).clamp_(0, 1)
        if grey:
            y = network(x * Y_RANGE + Y_OFFSET)
            return ((y - Y_OFFSET) / Y_RANGE).clamp_(0, 1)
        y = network(rgb_to_y(x, dim=1))
        # RGB = (Y' − 16/255)·255/219 + bicubic(M[:, 1:]·(CbCr − ½)): the chroma term is linear in
        # RGB, so it is filtered at low resolution (replicate padding is bicubic's edge clamping)
        # instead of converting colours at high resolution.
        term = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), chroma.to(x.dtype))
        return phase_shift(term, config.scale).add_((y - Y_OFFSET) / Y_RANGE).clamp_(0, 1)
    if grey:
        return network(x.expand(-1, 3, -1, -1)).clamp_(0, 1).mean(dim=1, keepdim=True)
    return network(x).clamp_(0, 1)


def _to_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """``N×H×W×C`` uint8/uint16 -> float32 ``N×C×H×W`` on ``device`` (a channels-last view)."""
    t = torch.from_numpy(np.ascontiguousarray(arr) if arr.dtype == np.uint8 else arr.astype(np.float32))
    if device.type == "cuda":
        t = t.pin_memory()  # so that the upload is asynchronous
    t = t.to(device, non_blocking=True).float()
    return t.permute(0, 3, 1, 2)


def _peak(dtype: np.dtype) -> float:
    """The value of white: 255 or 65535 for pictures of whole levels, 1 for float32 ones."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def _to_array(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """float ``N×C×H×W`` in [0, 1] -> ``N×H×W×C`` of ``dtype``: rounded levels, or float32 as it is."""
    if not np.issubdtype(dtype, np.integer):
        return t.permute(0, 2, 3, 1).float().cpu().numpy()
    peak = _peak(dtype)
    t = (t * peak).round_().permute(0, 2, 3, 1)
    torch_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
    return t.to(torch_dtype).cpu().numpy().astype(dtype, copy=False)
