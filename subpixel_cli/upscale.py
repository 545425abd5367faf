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
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from subpixel_cli.color import rgb_to_ycbcr, ycbcr_to_rgb
from subpixel_cli.errors import UsageError
from subpixel_cli.hub import LoadedModel

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass on the CPU
_Y_OFFSET, _Y_RANGE = 16 / 255, 219 / 255  # studio-swing Y of a grey value g is 16/255 + g·219/255

Progress = Callable[[int, int], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an unavailable device is an error."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r} (use one of {', '.join(DEVICES)})")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if name == "mps" and not mps:
        raise UsageError("--device mps: Apple's MPS is not available here; use --device cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on GPUs (with an fp32 retry on non-finite output) and fp32 on the CPU."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r} (use auto, {', '.join(PRECISIONS)})")
    return PRECISIONS[name]


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
        self.pad = loaded.info.config.receptive_radius + 2  # + the bicubic kernel's reach
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._model = self._prepare(loaded.model, self.dtype)
        self._fp32_model = self._model if self.dtype == torch.float32 else None
        self._source_model = loaded.model
        budget = memory_budget or self._default_budget()
        self.max_pixels = max(64 * 64, budget // self._bytes_per_pixel())
        self.tile = tile or max(64, math.isqrt(self.max_pixels) - 2 * self.pad)
        self._tile_forced = tile is not None

    def _prepare(self, model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        model = copy.deepcopy(model).eval().to(self.device, dtype)
        return model.to(memory_format=torch.channels_last)

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
        x_in = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        y = self._model(x_in).float()
        if self.dtype != torch.float32 and not torch.isfinite(y).all():
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
            ycc = rgb_to_ycbcr(x, dim=1)
            y = self._network(ycc[:, :1])
            cbcr = F.interpolate(ycc[:, 1:], scale_factor=r, mode="bicubic", align_corners=False)
            return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1), dim=1).clamp_(0, 1)
        if grey:
            return self._network(x.expand(-1, 3, -1, -1)).clamp_(0, 1).mean(dim=1, keepdim=True)
        return self._network(x).clamp_(0, 1)

    def _run_padded(self, colour: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Upscale padded ``N×H×W×C`` arrays and cut the padding off the result."""
        peak = float(np.iinfo(colour.dtype).max)
        crop = self.pad * self.scale
        with torch.inference_mode():
            x = _to_tensor(colour, self.device) / peak
            out = self.sr_tensor(x)[..., crop:-crop, crop:-crop]
            colour_out = _to_array(out, colour.dtype)
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
        n, h, w = frames.shape[:3]
        if self.tiles_for(h, w) > 1:
            return np.stack([self.upscale(f)[0] for f in frames])
        per_pass = max(1, min(self.batch_size, self.max_pixels // ((h + 2 * self.pad) * (w + 2 * self.pad))))
        out = np.empty((n, h * self.scale, w * self.scale, frames.shape[3]), frames.dtype)
        for i in range(0, n, per_pass):
            padded = _reflect_pad(frames[i : i + per_pass], self.pad, batch=True)
            out[i : i + per_pass] = self._run_padded(padded, None)[0]
        return out


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
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device, non_blocking=True).float()
    else:
        t = torch.from_numpy(arr.astype(np.float32)).to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2)


def _to_array(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """float ``N×C×H×W`` in [0, 1] -> ``N×H×W×C`` of ``dtype``, rounded."""
    peak = float(np.iinfo(dtype).max)
    t = (t * peak).round_().permute(0, 2, 3, 1)
    torch_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
    return t.to(torch_dtype).cpu().numpy().astype(dtype, copy=False)
