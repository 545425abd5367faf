"""ONNX export: a model as a file that onnxruntime, OpenCV's dnn or any ONNX runtime can run.

Two forms, both with dynamic batch, height and width, fp32 (or fp16) throughout:

- the bare **network**, as trained: ``N×C×H×W`` in [0, 1] (BT.601 studio-swing Y for Y models,
  RGB for RGB models) to ``N×C×rH×rW``, unclipped, with the convolutions' zero padding at the
  borders, exactly :class:`~subpixel_cli.model.ESPCN`'s ``forward``;
- the **rgb** picture model (``--rgb``): ``N×3×H×W`` RGB in [0, 1] to ``N×3×rH×rW`` RGB,
  clipped to [0, 1], computed as ``subpixel upscale`` computes it, so that a runtime needs no
  code of ours: reflect padding, BT.601 Y into the network, the chroma's RGB contribution
  upscaled by ONNX ``Resize`` (cubic, a = −0.75, half-pixel centres: torch's and OpenCV's
  bicubic, which the Upscaler uses), the padding cut off again.

The graph is built node by node with ``onnx.helper`` (a dozen standard operators at opset 17;
the phase shift is one ``DepthToSpace`` in DCR order), checked with ``onnx.checker``, and
written atomically with the model's name, scale, channels, colour space, licence and card PSNR
in its metadata, and its card as ``NAME.md`` beside ``NAME.onnx``. ``onnx`` is an optional dependency: the
``export`` extra.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subpixel_cli import __version__
from subpixel_cli.color import matrices, rgb_to_ycbcr
from subpixel_cli.errors import OutputError, UsageError
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.files import make_folder, remove_stale_temporaries, write_bytes

OPSET = 17
IR_VERSION = 8  # what opset 17 came with; onnxruntime ≥ 1.13 and OpenCV ≥ 4.7 read it
FORMS = ("network", "rgb")
PRECISIONS = {"fp32": np.float32, "fp16": np.float16}
CARD_SUFFIX = ".md"  # NAME.onnx's card is NAME.md: models share a folder, and a README there is the user's
EXTRA_HINT = "pip install 'subpixel[export]'"
CUBIC_COEFF_A = -0.75  # torch's F.interpolate and OpenCV's INTER_CUBIC, which subpixel upscale uses
_ACTIVATION_OPS = {"tanh": "Tanh", "relu": "Relu"}
_TENSOR_TYPES = {"fp32": 1, "fp16": 10}  # onnx.TensorProto.FLOAT, FLOAT16


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


def pad_for(info: ModelInfo) -> int:
    """Low-resolution pixels the rgb graph reflect-pads on each side: the network's receptive
    radius, and at least the 2 pixels bicubic reaches. ONNX's reflect padding needs ``H, W >
    pad``; the result equals ``subpixel upscale``'s for ``H, W > radius + 2``, below which the
    Upscaler pads symmetrically (mirror with the edge repeated), which ONNX's ``Pad`` lacks."""
    return max(info.config.receptive_radius, 2)


def build_onnx(loaded: LoadedModel, rgb: bool = False, precision: str = "fp32") -> Any:
    """The ``onnx.ModelProto`` of ``loaded`` (the network, or with ``rgb`` the picture model),
    with its metadata, checked by ``onnx.checker``."""
    onnx = require_onnx()
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} for export (use {' or '.join(PRECISIONS)})")
    graph = _Graph(onnx, PRECISIONS[precision])
    info = loaded.info
    if rgb:
        _rgb_graph(graph, loaded)
    else:
        _network(graph, loaded, "input", "output")
    channels = 3 if rgb else info.config.channels
    model = graph.model(info.name, channels, info.scale, _TENSOR_TYPES[precision])
    model.doc_string = info.description
    onnx.helper.set_model_props(model, metadata(info, "rgb" if rgb else "network", precision))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug of ours, not the user's: say so, write nothing
        raise OutputError(f"{info.name}: the exported graph failed onnx's checker: {str(exc).splitlines()[0]}") from None
    return model


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
    card = model_card(loaded.info, path.name, "rgb" if rgb else "network", precision)
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


# --- the graphs --------------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers of one ONNX graph in one float type (weights computed in float64)."""

    def __init__(self, onnx: Any, dtype: type) -> None:
        self.onnx, self.dtype = onnx, dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def model(self, name: str, channels: int, scale: int, elem_type: int) -> Any:
        helper = self.onnx.helper
        inputs = [helper.make_tensor_value_info("input", elem_type, ["batch", channels, "height", "width"])]
        outputs = [helper.make_tensor_value_info("output", elem_type, ["batch", channels, f"height*{scale}", f"width*{scale}"])]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="subpixel",
                                  producer_version=__version__)
        model.ir_version = IR_VERSION
        return model


def _layers(loaded: LoadedModel) -> list[tuple[np.ndarray, np.ndarray]]:
    model = loaded.model
    return [(c.weight.detach().cpu().double().numpy(), c.bias.detach().cpu().double().numpy())
            for c in (model.conv1, model.conv2, model.conv3)]


def _network(graph: _Graph, loaded: LoadedModel, x: str, out: str,
             head: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """The ESPCN on ``x``: zero-padded convolutions, activations and the phase shift
    (``DepthToSpace`` DCR is :func:`~subpixel_cli.model.phase_shift`'s order for any C). ``head``
    replaces the last layer's weights (the rgb graph folds its colour conversion into them)."""
    cfg = loaded.info.config
    layers = _layers(loaded)
    if head is not None:
        layers[2] = head
    for k, (w, b) in enumerate(layers, start=1):
        p = w.shape[-1] // 2
        x = graph.node("Conv", [x, graph.const(f"conv{k}.weight", w), graph.const(f"conv{k}.bias", b)], f"conv{k}",
                       kernel_shape=list(w.shape[-2:]), pads=[p, p, p, p])
        if k < 3:
            x = graph.node(_ACTIVATION_OPS[cfg.activation], [x], f"act{k}")
    return graph.node("DepthToSpace", [x], out, blocksize=cfg.scale, mode="DCR")


def _rgb_graph(graph: _Graph, loaded: LoadedModel) -> str:
    """RGB in, RGB out, as ``subpixel upscale``: reflect padding, the network (on BT.601 Y for
    Y models, its output as the value all three colours share) plus the bicubic chroma term,
    the padding cut off, clipped to [0, 1]."""
    info = loaded.info
    p, r = pad_for(info), info.scale
    padded = graph.node("Pad", ["input", graph.const("pads", [0, 0, p, p, 0, 0, p, p], np.int64)], "padded",
                        mode="reflect")
    if info.config.channels == 3:
        sr = _network(graph, loaded, padded, "sr")
    else:
        sr = _y_and_chroma(graph, loaded, padded)
    crop = [graph.const(n, v, np.int64) for n, v in (("crop_starts", [p * r] * 2), ("crop_ends", [-p * r] * 2),
                                                     ("crop_axes", [2, 3]))]
    cropped = graph.node("Slice", [sr, *crop], "cropped")
    return graph.node("Clip", [cropped, graph.const("zero", 0.0), graph.const("one", 1.0)], "output")


def _y_and_chroma(graph: _Graph, loaded: LoadedModel, rgb: str) -> str:
    """RGB = (Y' − Y₀)·g + bicubic(P·rgb), the Upscaler's arithmetic: Y' the network's output
    (``g`` and ``Y₀`` folded into its last layer) and ``P`` the chroma's RGB contribution, linear
    in RGB, so it is taken at low resolution and only resized."""
    a, a_inv = matrices()
    y0 = float(rgb_to_ycbcr(np.zeros(3))[0])  # 16/255
    gain = a_inv[:, 0]  # what one unit of Y adds to R, G and B: the same for all three
    assert np.allclose(gain, gain[0]), "BT.601: Y adds equally to R, G and B"
    y = graph.node("Conv", [rgb, graph.const("to_y.weight", a[0].reshape(1, 3, 1, 1)), graph.const("to_y.bias", [y0])],
                   "y", kernel_shape=[1, 1])
    w3, b3 = _layers(loaded)[2]
    shared = _network(graph, loaded, y, "shared", head=(gain[0] * w3, gain[0] * (b3 - y0)))
    chroma = a_inv[:, 1:] @ a[1:]
    lr = graph.node("Conv", [rgb, graph.const("chroma.weight", chroma.reshape(3, 3, 1, 1))], "chroma_lr", kernel_shape=[1, 1])
    scales = graph.const("scales", [1, 1, loaded.info.scale, loaded.info.scale], np.float32)
    hr = graph.node("Resize", [lr, "", scales], "chroma", mode="cubic", cubic_coeff_a=CUBIC_COEFF_A,
                    coordinate_transformation_mode="half_pixel", exclude_outside=0)
    return graph.node("Add", [hr, shared], "sr")


# --- the card ----------------------------------------------------------------------------------


def model_card(info: ModelInfo, filename: str, form: str, precision: str) -> str:
    """The card written beside an export (``NAME.md``): what goes in and out, and the card's PSNR."""
    r, radius = info.scale, info.config.receptive_radius
    rows = [f"| {name} | ×{e.get('scale', r)} | {e['psnr']:.2f} |" for name, e in info.metrics.items()
            if isinstance(e, dict) and e.get("psnr") is not None]
    scores = "\n".join(["| dataset | scale | PSNR (dB, Y) |", "| --- | --- | --- |", *rows]) if rows else "(none recorded)"
    if form == "rgb":
        io = (f"`input`: N×3×H×W RGB in [0, 1], H and W at least {radius + 3} pixels; `output`: N×3×{r}H×{r}W RGB "
              "in [0, 1]. Borders are reflect-padded inside the graph; Y models take BT.601 Y and upscale the "
              "chroma bicubically (ONNX `Resize` cubic, a = −0.75, half-pixel), as `subpixel upscale` does.")
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
