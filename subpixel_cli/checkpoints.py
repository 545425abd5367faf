"""Training checkpoints: one safetensors file per run, replaced atomically, never pickled.

``checkpoint.safetensors`` holds the model's weights (``model.*``), their moving average
(``ema.*``) and Adam's state (``optim.*``) as tensors, and the trainer's JSON record (config, step,
history, AMP scaler) in the file's metadata; ``trainer_state.json`` is a readable copy of that
record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from subpixel_cli.errors import DataError, UsageError, one_line
from subpixel_cli.files import write_text
from subpixel_cli.model import ESPCN
from subpixel_cli.tensorfile import UnreadableTensors, read_tensors, write_tensors

CHECKPOINT_NAME = "checkpoint.safetensors"
STATE_NAME = "trainer_state.json"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(out: Path, model: ESPCN, optimizer: torch.optim.Optimizer, trainer: dict[str, Any],
                    ema: ESPCN | None = None) -> Path:
    """Write ``checkpoint.safetensors`` (atomically) and ``trainer_state.json`` into ``out``;
    ``trainer`` is the trainer's JSON record (its config and state)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    record = {**trainer, "param_groups": groups, "model_config": model.config.to_dict()}
    path = write_tensors(out / CHECKPOINT_NAME, tensors, {"format": "pt", "trainer": json.dumps(record)})
    write_text(out / STATE_NAME, json.dumps(record, indent=2, default=str))
    return path


def load_checkpoint(out: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON record and tensors of ``out/checkpoint.safetensors``."""
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"--resume: no {CHECKPOINT_NAME} in {out}; start without --resume")
    try:
        tensors, metadata = read_tensors(path)
        record = json.loads(metadata["trainer"])
    except (UnreadableTensors, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a readable subpixel checkpoint ({one_line(exc)})") from None
    return record, tensors


def restore(record: dict[str, Any], tensors: dict[str, torch.Tensor], model: ESPCN,
            optimizer: torch.optim.Optimizer, ema: ESPCN | None = None) -> dict[str, Any]:
    """Load a checkpoint's weights, Adam state and weight average into ``model``/``optimizer``/
    ``ema`` (an average the checkpoint lacks starts from the weights); the trainer's state."""
    if record["model_config"] != model.config.to_dict():
        raise UsageError(f"--resume: the checkpoint's model {record['model_config']} differs from this run's "
                         f"{model.config.to_dict()}; use the same -x/--channels or another --out")
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    if ema is not None:
        averaged = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(averaged or weights)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    return record["state"]
