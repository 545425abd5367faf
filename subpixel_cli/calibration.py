"""The int8 path's calibration as a model folder keeps it: the file format, read by the model
loader (:mod:`subpixel_cli.hub`) and written by ``subpixel quantize`` (:mod:`subpixel_cli.quantize`,
which computes it).

A small safetensors file beside the weights (``quantization.safetensors``): ``act1.min``/
``act1.max`` per channel of tanh(conv1), conv2's int8 weights and their scales, with the images
it came from, the weights it was made for and the PSNR checks in its metadata. ``--precision
auto`` takes the int8 path only for a model whose file records a check on Set5 and Set14 within
:data:`MAX_LOSS_DB` of fp32, on a CPU with fast int8 (:func:`~subpixel_cli.runtime.fast_int8`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from subpixel_cli.model import ESPCN, weights_sha256
from subpixel_cli.tensorfile import UnreadableTensors, not_finite, read_tensors, write_tensors

CALIBRATION_NAME = "quantization.safetensors"
MAX_LOSS_DB = 0.05  # what --precision auto allows the int8 path to lose on Set5 and Set14 (Y-PSNR)
CHECK_DATASETS = ("Set5", "Set14")
_FORMAT = "subpixel-int8-v1"


def level_steps(act_min: torch.Tensor, act_max: torch.Tensor) -> torch.Tensor:
    """The step between 256 levels from ``act_min`` to ``act_max``, per channel (float64): what
    the calibration rounds conv2's weights against and what the int8 path quantizes with."""
    return (act_max.double() - act_min.double()).clamp_min(1e-6) / 255


@dataclass(frozen=True)
class Check:
    """One dataset's Y-PSNR through ``subpixel upscale`` (RGB in, RGB out) in fp32 and in int8."""

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
    meta = {"format": _FORMAT, **{k: json.dumps(v) for k, v in calibration.as_dict().items()}}
    tensors = {"act1.min": calibration.act_min.float(), "act1.max": calibration.act_max.float(),
               "conv2.weight_int8": calibration.weight_int8, "conv2.weight_scale": calibration.weight_scale.float()}
    return write_tensors(folder / CALIBRATION_NAME, tensors, meta)


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
    try:
        found, meta = read_tensors(path)
        lo, hi = found["act1.min"].float(), found["act1.max"].float()
        weight, scale = found["conv2.weight_int8"], found["conv2.weight_scale"].float()
        checks = json.loads(meta.get("checks", "{}"))
        calibration = Calibration(lo, hi, weight, scale, int(json.loads(meta.get("images", "0"))),
                                  int(json.loads(meta.get("pixels", "0"))), json.loads(meta.get("source", '""')),
                                  tuple(Check(k, float(v["fp32"]), float(v["int8"])) for k, v in checks.items()),
                                  json.loads(meta.get("weights_sha256", '""')))
    except (UnreadableTensors, KeyError, ValueError, TypeError, AttributeError):  # or readable, but not one
        return None, _dropped(path, "cannot be read")
    conv2 = tuple(model.conv2.weight.shape)
    if not (meta.get("format") == _FORMAT and lo.shape == (conv2[1],) and hi.shape == (conv2[1],)
            and tuple(weight.shape) == conv2 and weight.dtype == torch.int8 and scale.shape == (conv2[0],)):
        return None, _dropped(path, "does not fit this model's layers")
    if not_finite(found) or not bool((hi >= lo).all()):
        return None, _dropped(path, "holds ranges that are not finite")
    if calibration.weights != weights_sha256(model):
        return None, _dropped(path, "was made for other weights")
    return calibration, None


def _dropped(path: Path, why: str) -> str:
    return f"{path} {why}: not used, so int8 is off for this model (run `subpixel quantize` again)"
