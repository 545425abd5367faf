"""The pretrained models that ship inside the package, and the one look-up for a model spec."""

from __future__ import annotations

import json
from pathlib import Path

from dataclasses import replace

from subpixel_cli.errors import ModelError, UsageError
from subpixel_cli.hub import CONFIG_NAME, HF_PREFIX, LoadedModel, ModelInfo, load_folder, load_from_files, load_hub
from subpixel_cli.model import blend


def weights_root() -> Path:
    """Where the packaged model folders are: ``subpixel_cli/weights`` once installed, or the
    repository's top-level ``weights/`` when running from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "weights", here.parent / "weights"):
        if candidate.is_dir():
            return candidate
    return here / "weights"


def packaged_models() -> dict[str, ModelInfo]:
    """Every packaged model, by name, read from its ``config.json``."""
    models = {}
    for config in sorted(weights_root().glob(f"*/{CONFIG_NAME}")):
        info = ModelInfo.from_json(json.loads(config.read_text(encoding="utf-8")), str(config.parent))
        models[config.parent.name] = info
    return models


def default_model_name(scale: int, real: bool = False) -> str:
    """The packaged model ``-x N`` picks when no ``--model`` is given; ``real``: its twin for
    real-world (compressed, noisy) inputs."""
    return f"espcn-x{scale}" + (REAL_SUFFIX if real else "")


REAL_SUFFIX = "-real"


def is_real_world(info: ModelInfo) -> bool:
    """Whether a model was trained on damaged inputs (``subpixel train --degrade``)."""
    return bool(info.training.get("damage")) or info.name.endswith(REAL_SUFFIX)


def load_denoise(spec: str | None, scale: int | None, strength: float) -> LoadedModel:
    """The model ``strength`` (0…1) of the way from a clean model to its real-world twin (the
    ``twin`` of its ``config.json``): ``spec`` may name either of the pair, or be ``None`` for the
    packaged pair of ``scale``. 0 and 1 are the models themselves (with their int8 calibrations);
    points between are blends of the weights (:func:`~subpixel_cli.model.blend`), without one."""
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"--denoise takes a strength in 0…1, not {strength}")
    first = load_model(spec if spec is not None else default_model_name(scale or 4), scale)
    if not first.info.twin:
        raise UsageError(f"--denoise: model {first.info.name} has no real-world twin to blend with "
                         f"(the packaged espcn-xN and espcn-xN{REAL_SUFFIX} pair up); drop --denoise or pick one of those")
    second = load_model(first.info.twin, first.info.scale)
    if second.model.config != first.model.config:
        raise ModelError(f"--denoise: {first.info.name} and its twin {second.info.name} differ in shape")
    clean, real = (second, first) if is_real_world(first.info) else (first, second)
    if strength in (0.0, 1.0):
        return clean if strength == 0.0 else real
    info = replace(clean.info, name=f"{clean.info.name}~{real.info.name}@{strength:g}",
                   description=f"{1 - strength:g}·{clean.info.name} + {strength:g}·{real.info.name} (--denoise {strength:g})",
                   metrics={}, twin="")
    return LoadedModel(blend(clean.model, real.model, strength), info)


def load_model(spec: str | None = None, scale: int | None = None) -> LoadedModel:
    """Load a model by spec (see :mod:`subpixel_cli.hub`), or the packaged default for ``scale``.

    When both are given, the model must do that scale.
    """
    if spec is None:
        if scale is None:
            raise ModelError("give a scale (-x N) or a model (--model)")
        spec = default_model_name(scale)
        packaged = packaged_models()
        if spec not in packaged:
            scales = sorted({i.scale for n, i in packaged.items() if n == default_model_name(i.scale)})
            have = f"packaged scales: {', '.join(f'×{s}' for s in scales)}" if scales else "no packaged models are installed"
            raise ModelError(f"no packaged model for ×{scale} ({have}); pass --model")
    loaded = _load_spec(spec)
    if scale is not None and loaded.info.scale != scale:
        raise ModelError(f"model {spec} upscales ×{loaded.info.scale}, not ×{scale}; drop -x or pick another model")
    return loaded


def _load_spec(spec: str) -> LoadedModel:
    if spec.startswith(HF_PREFIX):
        return load_hub(spec)
    packaged = packaged_models()
    if spec in packaged:
        return load_folder(weights_root() / spec, source=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        return load_from_files(path, path.parent / CONFIG_NAME if path.name == "model.safetensors" else None, spec)
    valid = ", ".join(packaged) or "none installed"
    raise ModelError(
        f"unknown model {spec!r}: not a packaged name ({valid}), a local folder or .safetensors file, "
        "or hf://owner/repo[@revision]"
    )
