"""The pretrained models that ship inside the package, and the one look-up for a model spec."""

from __future__ import annotations

import json
from pathlib import Path

from subpixel_cli.errors import ModelError
from subpixel_cli.hub import CONFIG_NAME, HF_PREFIX, LoadedModel, ModelInfo, load_folder, load_from_files, load_hub


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


def default_model_name(scale: int) -> str:
    """The packaged model ``-x N`` picks when no ``--model`` is given."""
    return f"espcn-x{scale}"


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
