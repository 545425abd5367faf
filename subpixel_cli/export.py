"""ONNX export: a model as a file that onnxruntime, OpenCV's dnn or any ONNX runtime can run.

Two forms, both with dynamic batch, height and width, fp32 (or fp16) throughout:

- the bare **network**, as trained: ``N×C×H×W`` in [0, 1] (BT.601 studio-swing Y for Y models,
  RGB for RGB models) to ``N×C×rH×rW``, unclipped, with the convolutions' zero padding at the
  borders: :class:`~subpixel_cli.model.ESPCN` itself;
- the **rgb** picture model (``--rgb``): ``N×3×H×W`` RGB in [0, 1] to ``N×3×rH×rW`` RGB,
  clipped to [0, 1], as ``subpixel upscale`` computes it, so that a runtime needs no code of
  ours: the border rule (:func:`~subpixel_cli.upscale.border`, by reflection) and the Upscaler's
  float path (:func:`~subpixel_cli.upscale.picture`: BT.601 Y into the network, the chroma's RGB
  contribution upscaled bicubically as phase filters), the border cut off again.

Both are the modules themselves, traced by ``torch.onnx.export``: no forward pass is written a
second time here. What is ours is the file around the graph: checked with ``onnx.checker``, and
written atomically with the model's name, scale, channels, colour space, licence and card PSNR
in its metadata, and its card as ``NAME.md`` beside ``NAME.onnx``. ``onnx`` is an optional dependency: the
``export`` extra.
"""

from __future__ import annotations

import copy
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from subpixel_cli import __version__
from subpixel_cli.errors import OutputError, UsageError, one_line
from subpixel_cli.files import make_folder, remove_stale_temporaries, write_bytes
from subpixel_cli.fused import chroma_filter
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.model import ESPCN
from subpixel_cli.upscale import BORDER_MODE, border, picture

OPSET = 17
IR_VERSION = 8  # what opset 17 came with; onnxruntime ≥ 1.13 and OpenCV ≥ 4.7 read it
FORMS = ("network", "rgb")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
CARD_SUFFIX = ".md"  # NAME.onnx's card is NAME.md: models share a folder, and a README there is the user's
EXTRA_HINT = "pip install 'subpixel[export]'"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    card: Path
    form: str
    precision: str
    size_bytes: int
    metadata: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"output": str(self.path), "card": str(self.card), "form": self.form, "precision": self.precision,
                "bytes": self.size_bytes, "metadata": self.metadata}


def require_onnx() -> Any:
    """The ``onnx`` module, or a :class:`UsageError` that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise UsageError(f"ONNX export needs the optional onnx package: {EXTRA_HINT}") from None
    return onnx


def build_onnx(loaded: LoadedModel, rgb: bool = False, precision: str = "fp32") -> Any:
    """The ``onnx.ModelProto`` of ``loaded`` (the network, or with ``rgb`` the picture model),
    with its metadata, checked by ``onnx.checker``."""
    onnx = require_onnx()
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} for export (use {' or '.join(PRECISIONS)})")
    info = loaded.info
    module = (RGBPicture(loaded.model) if rgb else copy.deepcopy(loaded.model)).to(PRECISIONS[precision]).eval()
    model = onnx.load_from_string(_trace(module, 3 if rgb else info.config.channels, info.scale, PRECISIONS[precision]))
    model.graph.name, model.doc_string = info.name, info.description
    model.producer_name, model.producer_version, model.ir_version = "subpixel", __version__, IR_VERSION
    onnx.helper.set_model_props(model, metadata(info, "rgb" if rgb else "network", precision))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug of ours, not the user's: say so, write nothing
        raise OutputError(f"{info.name}: the exported graph failed onnx's checker: {one_line(exc)}") from None
    return model


class RGBPicture(torch.nn.Module):
    """``subpixel upscale``'s arithmetic on RGB as one module, what ``--rgb`` exports: the picture
    mirrored by :func:`~subpixel_cli.upscale.border` pixels (reflection, the one mode ONNX's
    ``Pad`` shares with the Upscaler: sides must be longer than the border), the Upscaler's
    :func:`~subpixel_cli.upscale.picture`, and the border cut off."""

    def __init__(self, network: ESPCN) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.register_buffer("chroma", chroma_filter(network.config.scale).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.network.config
        p, r = border(cfg), cfg.scale
        out = picture(self.network, F.pad(x, (p, p, p, p), mode=BORDER_MODE), cfg, self.chroma)
        return out[..., p * r : -p * r, p * r : -p * r]


def _trace(module: torch.nn.Module, channels: int, scale: int, dtype: torch.dtype) -> bytes:
    """``module`` as ONNX bytes, batch, height and width left free. By the TorchScript exporter
    (``dynamo=False``): the torch.export one needs onnxscript, which subpixel does not depend on,
    and these modules have no control flow that tracing would miss (the branches on the number
    of channels are fixed by the form). The tracer's warnings (shapes read as numbers) and the
    legacy exporter's notice are about that, and are not the user's."""
    side = 2 * border(getattr(module, "network", module).config) + 5  # any picture the border fits
    probe = torch.rand(1, channels, side, side + 1, dtype=dtype)
    axes = {"input": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 2: f"height*{scale}", 3: f"width*{scale}"}}
    data = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (probe,), data, input_names=["input"], output_names=["output"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return data.getvalue()


def export_model(loaded: LoadedModel, path: str | Path, rgb: bool = False, precision: str = "fp32",
                 force: bool = False) -> ExportResult:
    """Export ``loaded`` to ``path`` (``NAME.onnx``) and its card to ``NAME.md`` beside it.

    Both files are written atomically (temporary name, fsync, rename); an existing one is
    replaced only with ``force``, and is checked before anything is written.
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"{path}: the output must be an .onnx file (-o NAME.onnx)")
    card_path = path.with_suffix(CARD_SUFFIX)
    for target in (path, card_path):
        if target.exists() and not force:
            raise OutputError(f"{target}: exists (use --force to overwrite)")
    model = build_onnx(loaded, rgb, precision)
    data = model.SerializeToString()
    card = onnx_card(loaded.info, path.name, "rgb" if rgb else "network", precision)
    _write(path, data, force)
    try:
        _write(card_path, card.encode("utf-8"), force)
    except BaseException:
        path.unlink(missing_ok=True)  # no model without its card
        raise
    meta = {p.key: p.value for p in model.metadata_props}
    return ExportResult(path, card_path, meta["form"], precision, len(data), meta)


def _write(path: Path, data: bytes, force: bool) -> None:
    make_folder(path.parent)
    remove_stale_temporaries(path, time.time())  # left by an export that was killed
    write_bytes(path, data, force)


def metadata(info: ModelInfo, form: str, precision: str) -> dict[str, str]:
    """The ONNX metadata of an export: strings, numbers and JSON (``psnr``: dataset -> dB)."""
    psnr = {name: entry["psnr"] for name, entry in info.metrics.items()
            if isinstance(entry, dict) and entry.get("psnr") is not None}
    if form == "rgb":
        io = ("RGB in [0, 1], N×3×H×W (H, W ≥ receptive_radius + 3) -> RGB in [0, 1], N×3×rH×rW; "
              "borders reflect-padded inside the graph")
    else:
        io = (f"{'BT.601 studio-swing Y' if info.config.channels == 1 else 'RGB'} in [0, 1], N×C×H×W -> "
              "N×C×rH×rW, unclipped; convolutions zero-padded (reflect-pad by receptive_radius for subpixel's borders)")
    return {
        "name": info.name,
        "scale": str(info.scale),
        "channels": str(info.config.channels),
        "color_space": info.color_space,
        "license": info.license,
        "psnr": json.dumps(psnr),
        "form": form,
        "precision": precision,
        "io": io,
        "receptive_radius": str(info.config.receptive_radius),
        "description": info.description,
        "training_data": str(info.training.get("dataset") or ""),
        "subpixel_version": __version__,
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """An exported file's metadata, with ``scale``, ``channels`` and ``receptive_radius`` as
    ints and ``psnr`` as a dict."""
    onnx = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    meta: dict[str, Any] = {p.key: p.value for p in model.metadata_props}
    for key in ("scale", "channels", "receptive_radius"):
        if key in meta:
            meta[key] = int(meta[key])
    meta["psnr"] = json.loads(meta.get("psnr", "{}"))
    return meta


# --- the card ----------------------------------------------------------------------------------


def onnx_card(info: ModelInfo, filename: str, form: str, precision: str) -> str:
    """The card written beside an export (``NAME.md``): what goes in and out, and the card's PSNR."""
    r, radius = info.scale, info.config.receptive_radius
    rows = [f"| {name} | ×{e.get('scale', r)} | {e['psnr']:.2f} |" for name, e in info.metrics.items()
            if isinstance(e, dict) and e.get("psnr") is not None]
    scores = "\n".join(["| dataset | scale | PSNR (dB, Y) |", "| --- | --- | --- |", *rows]) if rows else "(none recorded)"
    if form == "rgb":
        io = (f"`input`: N×3×H×W RGB in [0, 1], H and W at least {radius + 3} pixels; `output`: N×3×{r}H×{r}W RGB "
              "in [0, 1]. Borders are reflect-padded inside the graph; Y models take BT.601 Y and upscale the "
              "chroma bicubically (torch's bicubic, a = −0.75, as phase filters), as `subpixel upscale` does.")
    else:
        what = "BT.601 studio-swing Y (`16/255 + (65.481·R + 128.553·G + 24.966·B)/255`)" if info.config.channels == 1 else "RGB"
        io = (f"`input`: N×{info.config.channels}×H×W {what} in [0, 1]; `output`: N×{info.config.channels}×{r}H×{r}W, "
              f"unclipped. The convolutions are zero-padded at the borders; for the borders of `subpixel upscale`, "
              f"reflect-pad the input by {radius} pixels and cut {radius * r} from each side of the output.")
    return f"""# {info.name} ({form}, {precision}) — ONNX

{_sentence(info.description) or 'An ESPCN super-resolution model.'} Exported by subpixel {__version__} as `{filename}`
(opset {OPSET}, dynamic batch, height and width; runs in onnxruntime and OpenCV's `cv2.dnn`).

- scale ×{r}, {info.config.channels} channel(s), colour space {info.color_space}
- {io}
- licence: {info.license}

Scores from the model card (the literature's protocol, see `subpixel eval`):

{scores}

The same facts are in the file's ONNX metadata (`name`, `scale`, `channels`, `color_space`,
`license`, `psnr`, `form`, `precision`, `io`, `receptive_radius`, `description`, `training_data`).
"""


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."
