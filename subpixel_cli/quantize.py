"""The int8 path's calibration: what ``subpixel quantize MODEL`` computes and the model folder keeps.

Of the network, only the middle convolution (conv2, ~80 % of the multiply-accumulates) runs in
int8, on oneDNN's u8×s8 kernels (AVX-512 VNNI / AMX-INT8). Its input, the first activation
tanh(conv1), is quantized per channel to the range each channel took on calibration images
(asymmetric: 256 levels between the channel's own minimum and maximum; one scale for all would
cost 0.3 dB at ×4). A kernel takes one input scale, so each channel's level step goes into the
weights, which are then quantized per output channel; narrow channels would get coarse weights
(−0.1 dB at ×2 and ×4 rounded to nearest), so the rounding feeds each weight's error forward into
the weights not yet rounded, weighted by how the inputs co-vary on the calibration images (GPTQ,
Frantar et al. 2022): :func:`round_weights`. Everything else stays in floating point: conv1 (one
input channel: int8 gains nothing there), the second activation and the last layer, whose 8-bit
weights alone would cost ~0.05 dB.

The calibration is a small safetensors file beside the weights (``quantization.safetensors``:
``act1.min``/``act1.max`` per channel, conv2's int8 weights and their scales, with the images it
came from and the PSNR checks in its metadata), so that retrained and hub models get one by the
same command. ``--precision auto``
takes the int8 path only for a model whose file records a check on Set5 and Set14 within
:data:`MAX_LOSS_DB` of fp32, on a CPU with fast int8 (:func:`~subpixel_cli.runtime.fast_int8`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from subpixel_cli.color import rgb_to_y
from subpixel_cli.data import mod_crop, portable_path
from subpixel_cli.degradations import downscale
from subpixel_cli.errors import DataError, SubpixelError, UsageError
from subpixel_cli.files import atomic_path
from subpixel_cli.images import list_images, read_rgb8
from subpixel_cli.model import ESPCN, weights_sha256

CALIBRATION_NAME = "quantization.safetensors"
MAX_LOSS_DB = 0.05  # what --precision auto allows the int8 path to lose on Set5 and Set14 (Y-PSNR)
CHECK_DATASETS = ("Set5", "Set14")
DEFAULT_IMAGES = 48
CALIBRATION_CROP = 192  # low-resolution pixels on a side, from the centre of each image
_FORMAT = "subpixel-int8-v1"

Progress = Callable[[int, int], None]


def level_steps(act_min: torch.Tensor, act_max: torch.Tensor) -> torch.Tensor:
    """The step between 256 levels from ``act_min`` to ``act_max``, per channel (float64): what
    the calibration rounds conv2's weights against and what the int8 path quantizes with."""
    return (act_max.double() - act_min.double()).clamp_min(1e-6) / 255


@dataclass(frozen=True)
class Check:
    """One dataset's Y-PSNR through the Upscaler in fp32 and in int8, by ``subpixel eval``'s protocol."""

    dataset: str
    fp32: float
    int8: float

    @property
    def loss(self) -> float:
        return self.fp32 - self.int8


@dataclass(frozen=True)
class Calibration:
    """Per-channel ranges of the first activation, and what is known of the int8 path's accuracy."""

    act_min: torch.Tensor  # per channel of tanh(conv1)
    act_max: torch.Tensor
    weight_int8: torch.Tensor  # conv2's weights × each input channel's level step, rounded (int8)
    weight_scale: torch.Tensor  # per output channel: weight ≈ weight_int8 · weight_scale
    images: int
    pixels: int
    source: str
    checks: tuple[Check, ...] = field(default=())
    weights: str = ""  # model.weights_sha256 of the model it was made for: other weights do not use it

    def level_steps(self) -> torch.Tensor:
        """Per channel, the step between the 256 levels of tanh(conv1) (float64)."""
        return level_steps(self.act_min, self.act_max)

    def accurate(self, bound: float = MAX_LOSS_DB) -> bool:
        """Checked on every dataset of :data:`CHECK_DATASETS`, and within ``bound`` dB on each."""
        seen = {c.dataset: c for c in self.checks}
        return all(name in seen and seen[name].loss <= bound for name in CHECK_DATASETS)

    def with_checks(self, checks: Sequence[Check]) -> Calibration:
        return replace(self, checks=tuple(checks))

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "pixels": self.pixels, "source": self.source, "weights_sha256": self.weights,
                "checks": {c.dataset: {"fp32": round(c.fp32, 4), "int8": round(c.int8, 4), "loss_db": round(c.loss, 4)}
                           for c in self.checks},
                "auto": self.accurate()}


def save_calibration(folder: Path, calibration: Calibration) -> Path:
    """Write ``folder/quantization.safetensors`` atomically."""
    from safetensors.torch import save_file

    meta = {"format": _FORMAT, **{k: json.dumps(v) for k, v in calibration.as_dict().items()}}
    path = folder / CALIBRATION_NAME
    tensors = {"act1.min": calibration.act_min.float().contiguous(), "act1.max": calibration.act_max.float().contiguous(),
               "conv2.weight_int8": calibration.weight_int8.contiguous(), "conv2.weight_scale": calibration.weight_scale.float().contiguous()}
    with atomic_path(path, file=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_calibration(folder: Path, model: ESPCN) -> Calibration | None:
    """The calibration in a model folder for ``model``, or ``None`` where there is none or it does
    not fit (:func:`read_calibration` says why)."""
    return read_calibration(folder, model)[0]


def read_calibration(folder: Path, model: ESPCN) -> tuple[Calibration | None, str | None]:
    """The calibration in a model folder for ``model``, and why one that is there is not used:
    another format, other layer sizes, values that are not finite, or other weights (a retrained
    model keeps no stale calibration). ``(None, None)`` where there is none."""
    path = folder / CALIBRATION_NAME
    if not path.is_file():
        return None, None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            lo, hi = f.get_tensor("act1.min").float(), f.get_tensor("act1.max").float()
            weight, scale = f.get_tensor("conv2.weight_int8"), f.get_tensor("conv2.weight_scale").float()
        checks = json.loads(meta.get("checks", "{}"))
        calibration = Calibration(lo, hi, weight, scale, int(json.loads(meta.get("images", "0"))),
                                  int(json.loads(meta.get("pixels", "0"))), json.loads(meta.get("source", '""')),
                                  tuple(Check(k, float(v["fp32"]), float(v["int8"])) for k, v in checks.items()),
                                  json.loads(meta.get("weights_sha256", '""')))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError):
        return None, _dropped(path, "cannot be read")
    conv2 = tuple(model.conv2.weight.shape)
    if not (meta.get("format") == _FORMAT and lo.shape == (conv2[1],) and hi.shape == (conv2[1],)
            and tuple(weight.shape) == conv2 and weight.dtype == torch.int8 and scale.shape == (conv2[0],)):
        return None, _dropped(path, "does not fit this model's layers")
    if not all(bool(torch.isfinite(t).all()) for t in (lo, hi, scale)) or not bool((hi >= lo).all()):
        return None, _dropped(path, "holds ranges that are not finite")
    if calibration.weights != weights_sha256(model):
        return None, _dropped(path, "was made for other weights")
    return calibration, None


def _dropped(path: Path, why: str) -> str:
    return f"{path} {why}: not used, so int8 is off for this model (run `subpixel quantize` again)"


def calibration_images(folder: Path, count: int) -> list[Path]:
    """Up to ``count`` images of ``folder`` (recursively), spread evenly over its sorted list."""
    if not folder.is_dir():
        raise UsageError(f"--data {folder}: no such folder (give a folder of training images)")
    folders = [folder, *sorted(d for d in folder.rglob("*") if d.is_dir() and not d.name.startswith("."))]
    files = [f for d in folders for f in list_images(d)]
    if not files:
        raise DataError(f"--data {folder}: no images in it")
    step = max(1, len(files) // count)
    return files[::step][:count]


def calibrate(net: ESPCN, files: Sequence[Path], progress: Progress | None = None) -> Calibration:
    """The int8 path's calibration of ``net`` on the LR versions of ``files`` (as the evaluation
    protocol makes them: MATLAB bicubic at the model's scale), a centre crop of each: the
    per-channel range of tanh(conv1), then conv2's weights rounded against the quantized
    activations (:func:`round_weights`). In fp32; ``progress(done, total)`` over both passes."""
    cfg = net.config
    inputs = []
    for path in files:
        try:
            hr = mod_crop(read_rgb8(path), cfg.scale)
        except (SubpixelError, OSError, ValueError):  # an unreadable file is not worth stopping a calibration for
            continue
        x = _centre(downscale(hr, cfg.scale), CALIBRATION_CROP).astype(np.float32) / 255
        x = rgb_to_y(x).astype(np.float32) if cfg.channels == 1 else x
        inputs.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
    if not inputs:
        raise DataError("no calibration image could be read")
    total = 2 * len(inputs)
    lo = torch.full((cfg.features[0],), math.inf)
    hi = torch.full((cfg.features[0],), -math.inf)
    with torch.inference_mode():
        for k, x in enumerate(inputs):
            a = net.act1(net.conv1(x.float()))
            lo, hi = torch.minimum(lo, a.amin(dim=(0, 2, 3))), torch.maximum(hi, a.amax(dim=(0, 2, 3)))
            if progress:
                progress(k + 1, total)
        step = level_steps(lo, hi).float().view(1, -1, 1, 1)
        k2 = cfg.kernel_sizes[1]
        gram = torch.zeros(cfg.features[0] * k2 * k2, cfg.features[0] * k2 * k2, dtype=torch.float64)
        for k, x in enumerate(inputs):  # what conv2 sees: the levels, as columns of its patches
            a = net.act1(net.conv1(x.float()))
            levels = ((a - lo.view(1, -1, 1, 1)) / step).round_().clamp_(0, 255)
            cols = F.unfold(levels, k2, stride=2)[0].double()  # every other position: plenty, 4× cheaper
            gram += cols @ cols.T
            if progress:
                progress(len(inputs) + k + 1, total)
    weight = net.conv2.weight.detach().double() * level_steps(lo, hi).view(1, -1, 1, 1)
    weight_int8, weight_scale = round_weights(weight, gram)
    pixels = sum(x.shape[-1] * x.shape[-2] for x in inputs)
    return Calibration(lo, hi, weight_int8, weight_scale, len(inputs), pixels, "", weights=weights_sha256(net))


def round_weights(weight: torch.Tensor, gram: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (``O×I×k×k``) as int8 with one scale per output channel (its largest weight is
    ±127), rounded one input column at a time, each column's rounding error fed forward into the
    columns not yet rounded through the inverse of ``gram`` (the inputs' ``XᵀX``, damped by
    ``damp`` of its mean diagonal): GPTQ's rule, which minimises ``‖(W − Ŵ)X‖²`` column by column
    instead of ``‖W − Ŵ‖²``. Returns ``(int8 weights, scales)``."""
    w = weight.reshape(weight.shape[0], -1).clone().double()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127)
    h = gram.double().clone()
    dead = torch.diag(h) == 0  # inputs never seen: nothing to keep their weights for
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.diag(h).mean() * torch.eye(len(h), dtype=torch.float64)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.empty_like(w)
    for i in range(w.shape[1]):
        column = w[:, i]
        q[:, i] = (column / scale).round().clamp(-127, 127)
        error = (column - q[:, i] * scale) / upper[i, i]
        w[:, i + 1 :] -= error[:, None] * upper[i, i + 1 :][None, :]
    return q.to(torch.int8).reshape(weight.shape), scale.float()


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top : top + side, left : left + side]


@dataclass
class QuantizeResult:
    folder: Path
    calibration: Calibration
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "file": str(self.folder / CALIBRATION_NAME),
                "seconds": round(self.seconds, 1), **self.calibration.as_dict()}


def check_accuracy(loaded: Any, calibration: Calibration, data_dir: str | None,
                   datasets: Sequence[str] = CHECK_DATASETS) -> list[Check]:
    """Y-PSNR of ``loaded`` on ``datasets`` through the Upscaler in fp32 and in int8 (with
    ``calibration``), by the protocol of ``subpixel eval`` and the model cards
    (:func:`~subpixel_cli.evaluate.upscaler_psnr`). Datasets that cannot be found are left out."""
    from subpixel_cli.evaluate import resolve_dataset, upscaler_psnr
    from subpixel_cli.upscale import Upscaler

    upscalers = [Upscaler(loaded, device="cpu", precision=name, calibration=calibration) for name in ("fp32", "int8")]
    checks = []
    for name in datasets:
        try:
            folder = resolve_dataset(name, data_dir)
        except DataError:
            continue
        checks.append(Check(folder.name, *upscaler_psnr(upscalers, folder)))
    return checks


def quantize_model(spec: str, data: Path, output: Path | None = None, images: int = DEFAULT_IMAGES,
                   data_dir: str | None = None, force: bool = False, progress: Progress | None = None) -> QuantizeResult:
    """``subpixel quantize``: calibrate the model ``spec`` on ``images`` pictures of ``data``,
    check it on Set5/Set14 when they can be found, and write the calibration into the model's
    folder (a model folder given as ``spec``) or into ``output`` (a copy of the model with it)."""
    from subpixel_cli.hub import CARD_NAME, model_card, save_model
    from subpixel_cli.registry import load_model, weights_root
    from subpixel_cli.runtime import int8_kernels

    if not int8_kernels():
        raise UsageError("this torch build has no oneDNN quantized convolution: the int8 path cannot run here")
    started = time.perf_counter()
    loaded = load_model(spec)
    folder = _target_folder(spec, output, force)
    calibration = replace(calibrate(loaded.model, calibration_images(data, images), progress), source=portable_path(data))
    calibration = calibration.with_checks(check_accuracy(loaded, calibration, data_dir))
    if output is not None:  # a copy of the model, with its card, and the calibration beside it
        cards = [base / CARD_NAME for base in (Path(loaded.info.source), weights_root() / loaded.info.source)]
        card = next((c.read_text(encoding="utf-8") for c in cards if c.is_file()), None)
        save_model(folder, loaded.model, loaded.info, card or model_card(loaded.info))
    save_calibration(folder, calibration)
    return QuantizeResult(folder, calibration, time.perf_counter() - started)


def _target_folder(spec: str, output: Path | None, force: bool) -> Path:
    """Where the calibration goes: ``output``, else the model folder ``spec`` itself. Packaged
    and hub models need ``-o`` (their files are not ours to change)."""
    from subpixel_cli.hub import CONFIG_NAME, WEIGHTS_NAME

    if output is None:
        folder = Path(spec).expanduser()
        if not (folder / WEIGHTS_NAME).is_file():
            raise UsageError(f"{spec}: not a model folder; give -o DIR to write a quantized copy of it there")
        if (folder / CALIBRATION_NAME).exists() and not force:
            raise UsageError(f"{folder / CALIBRATION_NAME} exists; use --force to replace it")
        return folder
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: exists and is not a folder")
    if output.is_dir() and any((output / name).exists() for name in (WEIGHTS_NAME, CONFIG_NAME, CALIBRATION_NAME)) and not force:
        raise UsageError(f"-o {output}: already holds a model; use --force to replace it")
    return output
