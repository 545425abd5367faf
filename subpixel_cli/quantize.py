"""The int8 path's calibration: how ``subpixel quantize MODEL`` computes and checks it.

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

The calibration is kept beside the weights in the file format of :mod:`subpixel_cli.calibration`,
so that retrained and hub models get one by the same command.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from subpixel_cli.calibration import CALIBRATION_NAME, CHECK_DATASETS, Calibration, Check, level_steps, save_calibration
from subpixel_cli.color import rgb_to_y
from subpixel_cli.data import mod_crop, portable_path
from subpixel_cli.degradations import downscale
from subpixel_cli.errors import DataError, SubpixelError, UsageError
from subpixel_cli.evaluate import protocol_upscaler, resolve_dataset, upscaler_psnr
from subpixel_cli.hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, LoadedModel, model_card, save_model
from subpixel_cli.images import list_images, read_rgb8
from subpixel_cli.model import ESPCN, weights_sha256
from subpixel_cli.registry import load_model, weights_root
from subpixel_cli.runtime import int8_kernels
from subpixel_cli.upscale import Upscaler

DEFAULT_IMAGES = 48
CALIBRATION_CROP = 192  # low-resolution pixels on a side, from the centre of each image

Progress = Callable[[int, int], None]


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


def check_accuracy(loaded: LoadedModel, calibration: Calibration, data_dir: str | None,
                   datasets: Sequence[str] = CHECK_DATASETS) -> list[Check]:
    """Y-PSNR of ``loaded`` on ``datasets`` through the Upscaler in fp32 and in int8 (with
    ``calibration``), by the protocol of ``subpixel eval`` and the model cards
    (:func:`~subpixel_cli.evaluate.upscaler_psnr`). Datasets that cannot be found are left out."""
    upscalers = [protocol_upscaler(loaded), Upscaler(loaded, device="cpu", precision="int8", calibration=calibration)]
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
