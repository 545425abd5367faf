"""Model folders in Hugging Face layout: ``config.json`` + ``model.safetensors`` + ``README.md``.

A model spec is one of
- a packaged name (``espcn-x4``; see :mod:`subpixel_cli.registry`),
- a local model folder, or a ``.safetensors`` file (its config from a ``config.json`` beside it,
  from the file's metadata, or read off the tensor shapes),
- ``hf://owner/repo[@revision]``, fetched through huggingface_hub and its cache (offline mode and
  ``HF_TOKEN`` are honoured as huggingface_hub honours them).

Weights are only ever read with safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from subpixel_cli.calibration import CALIBRATION_NAME, Calibration, read_calibration
from subpixel_cli.errors import ModelError, one_line
from subpixel_cli.files import make_folder, write_text
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.tensorfile import UnreadableTensors, not_finite, read_tensors, write_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HF_PREFIX = "hf://"
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}  # refused: unpickling can run code
COLOR_SPACES = {1: "y", 3: "rgb"}  # Y of BT.601 YCbCr (studio swing), or RGB; values in [0, 1]


@dataclass
class ModelInfo:
    """What a model is, where it came from and how well it does: the data of ``config.json``."""

    name: str
    config: ESPCNConfig
    source: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = "MIT"
    twin: str = ""  # the model of the same shape this one pairs with for --denoise (clean <-> real-world)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def color_space(self) -> str:
        return COLOR_SPACES[self.config.channels]

    def psnr(self, dataset: str = "Set5") -> float | None:
        """The model card's PSNR (dB) on ``dataset`` at the model's scale, if recorded."""
        entry = self.metrics.get(dataset, {})
        value = entry.get("psnr") if isinstance(entry, dict) else None
        return float(value) if value is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "architecture": "espcn",
            "name": self.name,
            **self.config.to_dict(),
            "color_space": self.color_space,
            "description": self.description,
            "training": self.training,
            "metrics": self.metrics,
            "license": self.license,
            **({"twin": self.twin} if self.twin else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> "ModelInfo":
        if not isinstance(data, dict):
            raise ModelError(f"{source}: bad config.json: a JSON object is expected, not {type(data).__name__}")
        if data.get("architecture", "espcn") != "espcn":
            raise ModelError(f"{source}: architecture {data.get('architecture')!r} is not supported (only 'espcn')")
        try:
            config = ESPCNConfig.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: bad config.json: {exc}") from None
        space = data.get("color_space", COLOR_SPACES[config.channels])
        if space != COLOR_SPACES[config.channels]:
            raise ModelError(f"{source}: color_space {space!r} does not match channels={config.channels}")
        for key in ("training", "metrics"):
            if not isinstance(data.get(key) or {}, dict):
                raise ModelError(f"{source}: bad config.json: {key!r} must be a JSON object")
        return cls(
            name=str(data.get("name") or Path(source).name),
            config=config,
            source=source,
            description=str(data.get("description", "")),
            training=dict(data.get("training") or {}),
            metrics=dict(data.get("metrics") or {}),
            license=str(data.get("license", "unknown")),
            twin=str(data.get("twin") or ""),
        )


@dataclass
class LoadedModel:
    model: ESPCN
    info: ModelInfo
    calibration: Calibration | None = None  # the int8 path's, from the model folder
    notes: list[str] = field(default_factory=list)  # what loading left out, for the user (a calibration not used)


def save_model(folder: str | Path, model: ESPCN, info: ModelInfo, card: str | None = None) -> Path:
    """Write ``model`` as a model folder (each file atomically); returns the folder."""
    folder = make_folder(Path(folder))
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    config_json = json.dumps(info.to_json(), indent=2, ensure_ascii=False) + "\n"
    write_tensors(folder / WEIGHTS_NAME, tensors, {"format": "pt", "subpixel_config": json.dumps(info.to_json())})
    write_text(folder / CONFIG_NAME, config_json)
    if card is not None:
        write_text(folder / CARD_NAME, card)
    return folder


def model_card(info: ModelInfo, notes: str = "", spec: str | None = None) -> str:
    """A Hugging Face model card (YAML front matter + markdown) from a model's metadata; ``spec``:
    what ``--model`` loads it by (a run folder), if not its name (a packaged model)."""
    c = info.config
    lines = ["---", "library_name: subpixel", "tags:", "- super-resolution", "- espcn",
             f"license: {'other' if 'CelebA' in info.license else 'mit'}", "---", "",
             f"# {info.name}", "", info.description, "",
             f"ESPCN (Shi et al. 2016, arXiv:1609.05158): ×{c.scale}, {c.channels} channel(s) "
             f"({info.color_space}), features {list(c.features)}, kernels {list(c.kernel_sizes)}, {c.activation}.",
             "", f"Licence: {info.license}", ""]
    if notes:
        lines += [notes.strip(), ""]
    if info.metrics:
        lines += ["## Evaluation", "", "Y-PSNR (dB) / SSIM, MATLAB bicubic LR, `scale` border pixels shaved.", "",
                  "| data | scale | PSNR | SSIM | bicubic PSNR | bicubic SSIM |", "| --- | --- | --- | --- | --- | --- |"]
        for name, m in info.metrics.items():
            if isinstance(m, dict):
                lines.append(f"| {m.get('dataset') or name} | ×{m.get('scale', c.scale)} | {_fmt(m.get('psnr'))} | "
                             f"{_fmt(m.get('ssim'), 4)} | {_fmt(m.get('bicubic_psnr'))} | {_fmt(m.get('bicubic_ssim'), 4)} |")
        lines.append("")
    if info.training:
        lines += ["## Training", ""]
        lines += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in info.training.items()
                  if v not in (None, "")]
        lines.append("")
    lines += ["## Use", "", "```", f"subpixel upscale photo.png --model {spec or info.name}", "```", ""]
    if spec:
        lines += ["(this folder; `--model hf://OWNER/NAME` once it is uploaded to the hub as it is)", ""]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _infer_config(tensors: dict[str, torch.Tensor], source: str) -> ESPCNConfig:
    """Rebuild a config from tensor shapes when a bare ``.safetensors`` file has none: conv1 …
    convN, the last one the phase-shifted layer."""
    depth = 0
    while f"conv{depth + 1}.weight" in tensors:
        depth += 1
    if depth < 3:
        raise ModelError(f"{source}: not an ESPCN checkpoint (no tensor 'conv{depth + 1}.weight')")
    weights = [tensors[f"conv{i}.weight"] for i in range(1, depth + 1)]
    if any(w.ndim != 4 for w in weights):
        raise ModelError(f"{source}: not an ESPCN checkpoint (convolution weights must have 4 dimensions)")
    channels, last = weights[0].shape[1], weights[-1]
    r2, rem = divmod(last.shape[0], max(channels, 1))
    scale = round(r2**0.5)
    if rem or scale * scale != r2:
        raise ModelError(f"{source}: conv{depth} has {last.shape[0]} outputs, not channels·r² for any integer r")
    try:
        return ESPCNConfig(scale=scale, channels=channels, features=tuple(w.shape[0] for w in weights[:-1]),
                           kernel_sizes=tuple(w.shape[-1] for w in weights))
    except ValueError as exc:
        raise ModelError(f"{source}: not an ESPCN checkpoint ({exc})") from None


def load_from_files(weights: Path, config_path: Path | None, source: str) -> LoadedModel:
    """Build a model from a safetensors file and, when there is one, its ``config.json``."""
    if weights.suffix in PICKLE_SUFFIXES:
        raise ModelError(f"{source}: refusing to load {weights.name}: pickled checkpoints can run code; convert it to .safetensors")
    try:
        tensors, metadata = read_tensors(weights)
    except UnreadableTensors as exc:
        raise ModelError(f"{source}: cannot read weights ({exc}); a model must be a .safetensors file") from None
    if config_path is not None and config_path.is_file():
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{source}: cannot read {config_path.name}: {exc}") from None
        info = ModelInfo.from_json(data, source)
    elif "subpixel_config" in metadata:
        try:
            data = json.loads(metadata["subpixel_config"])
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: the config in the file's metadata is not JSON ({exc})") from None
        info = ModelInfo.from_json(data, source)
    else:
        info = ModelInfo(name=weights.stem, config=_infer_config(tensors, source), source=source, license="unknown")
    info.source = source
    expected = _expected_shapes(info.config, source)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    if missing or extra:
        raise ModelError(f"{source}: weights do not match the config (missing {missing}, unexpected {extra})")
    wrong = [f"{k} {got[k]} != {expected[k]}" for k in expected if got[k] != expected[k]]
    if wrong:
        raise ModelError(f"{source}: tensor shapes do not match the config ({'; '.join(wrong)})")
    broken = not_finite(tensors)
    if broken:
        raise ModelError(f"{source}: weights are not finite (NaN or infinity in {', '.join(broken)}): "
                         "the file is damaged, or the training that made it diverged")
    model = ESPCN(info.config)  # only now: a config is not trusted to say how much memory to take
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return LoadedModel(model.eval(), info)


def _expected_shapes(config: ESPCNConfig, source: str) -> dict[str, tuple[int, ...]]:
    """The tensor shapes ``config`` builds, found on the meta device (no memory is allocated,
    however large the config says the layers are)."""
    try:
        with torch.device("meta"):
            model = ESPCN(config)
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise ModelError(f"{source}: bad config: {one_line(exc)}") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_folder(folder: Path, source: str | None = None) -> LoadedModel:
    """Load a model folder (``config.json`` + ``model.safetensors``)."""
    source = source or str(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        pickles = [p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found {', '.join(pickles)}: pickled checkpoints are not loaded)" if pickles else ""
        raise ModelError(f"{source}: no {WEIGHTS_NAME} in this folder{hint}")
    loaded = load_from_files(weights, folder / CONFIG_NAME, source)
    loaded.calibration, dropped = read_calibration(folder, loaded.model)
    loaded.notes += [dropped] if dropped else []
    return loaded


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """``hf://owner/repo[@revision]`` -> ``(repo_id, revision)``."""
    body = spec[len(HF_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelError(f"{spec}: a hub model is written hf://owner/repo or hf://owner/repo@revision")
    return repo_id, revision or None


def load_hub(spec: str) -> LoadedModel:
    """Fetch ``hf://owner/repo[@revision]`` through huggingface_hub's cache and load it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # huggingface_hub >= 1.0 says "cached, but not every file" with its own error.
    not_cached = (LocalEntryNotFoundError, getattr(hf_errors, "IncompleteSnapshotError", LocalEntryNotFoundError))

    repo_id, revision = parse_hf_spec(spec)
    refused = [  # the hub's answers, most specific first (a gated repository is a RepositoryNotFoundError)
        (RevisionNotFoundError, f"revision {revision!r} does not exist in {repo_id}"),
        (GatedRepoError, "the repository is gated; accept its terms on huggingface.co and set HF_TOKEN"),
        (RepositoryNotFoundError, "no such model repository, or it is private (set HF_TOKEN to a token with access)"),
    ]
    try:
        folder = snapshot_download(repo_id, revision=revision,
                                   allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, CALIBRATION_NAME])  # the int8 path's, if any
    except tuple(kind for kind, _ in refused) as exc:
        raise ModelError(f"{spec}: {next(why for kind, why in refused if isinstance(exc, kind))}") from None
    except not_cached:
        if constants.HF_HUB_OFFLINE:
            raise ModelError(
                f"{spec}: not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1); "
                "unset it and run once with a connection, or pass a local model folder"
            ) from None
        raise ModelError(
            f"{spec}: the Hugging Face hub cannot be reached and the model is not cached; "
            "check the connection (or HF_ENDPOINT) and retry, or pass a local model folder"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"{spec}: download failed: {one_line(exc)}") from None
    return load_folder(Path(folder), source=spec)
