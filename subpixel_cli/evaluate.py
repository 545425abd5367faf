"""Benchmark runs by the super-resolution community's protocol (SRCNN/VDSR/EDSR MATLAB scripts).

For every HR image of a dataset folder, at scale ``r``:

1. the 8-bit HR image is cropped to a multiple of ``r`` (top-left kept);
2. LR = MATLAB ``imresize(HR, 1/r, 'bicubic')`` in ``uint8`` (antialiased, a = −0.5; see
   :mod:`subpixel_cli.resize`); the bicubic baseline is ``uint8`` ``imresize(LR, r)``;
3. the model runs on the LR image through the Upscaler that ``subpixel upscale`` uses, with its
   border rule, in fp32 (Y models on the BT.601 Y of the LR, RGB models on RGB); its output is
   clipped and rounded to 8 bits (a Y model's Y itself; an RGB model's RGB) before scoring;
4. PSNR and SSIM are measured on Y (see :mod:`subpixel_cli.metrics`; grey images are their own
   Y) with ``r`` pixels shaved from each border.

This reproduces the published bicubic baselines (Set5 ×2/×3/×4 = 33.66/30.39/28.42 dB, Set14
30.24/27.55/26.00, BSD100 29.56/27.21/25.96) within 0.02 dB.

The one implementation of this protocol: ``subpixel eval``, training's validation and sample
sheets (:func:`prepare_image`, :func:`validate`, :func:`comparison_sheet`),
``benchmarks/ship_model.py`` and the model cards all call it. The API::

    result = evaluate_model(loaded_or_model_or_None, scale, ["Set5", "path/to/folder"],
                            data_dir=None, save_dir=None, progress=None)
    result.datasets[0].psnr, .ssim, .bicubic_psnr, .bicubic_ssim   # means over the images
    result.datasets[0].images                                      # per-image ImageScore
    format_metrics(result)  # {"Set5": {"scale": 4, "psnr": …, "ssim": …, "bicubic_psnr": …, …}}

``None`` as the model scores bicubic upscaling alone. A dataset is a folder of HR images or a
name (``Set5``) looked up under ``data_dir``, then ``$SUBPIXEL_DATA`` (each also with a
``benchmarks/`` subfolder). Images that cannot be read or are too small are recorded in
``DatasetScore.failures`` and the rest go on. With ``save_dir``, SR outputs are written to
``save_dir/<dataset>/<image>.png`` and a comparison sheet to ``save_dir/<dataset>_comparison.png``
(existing files are replaced).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from subpixel_cli.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from subpixel_cli.choices import EVAL_PRECISIONS
from subpixel_cli.errors import DataError, InputError, ModelError, UsageError
from subpixel_cli.files import atomic_write, make_folder
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.data import DATA_ENV, mod_crop
from subpixel_cli.degradations import Degradation, downscale, seeded
from subpixel_cli.images import IMAGE_SUFFIXES, list_images, read_rgb8
from subpixel_cli.metrics import SSIM_WINDOW, psnr, shave, y_channel, y_psnr_ssim
from subpixel_cli.model import ESPCN
from subpixel_cli.resize import imresize
from subpixel_cli.runtime import resolve_device
from subpixel_cli.upscale import Upscaler

SHEET_ROWS = 10  # images shown on a comparison sheet (the first ones by name)
SHEET_CROP = 160  # side of the HR-pixel crop shown per image

Progress = Callable[[str, int, int], None]  # (dataset name, images done, images in dataset)


@dataclass(frozen=True)
class ImageScore:
    """One image's scores: the evaluated method's (model or bicubic) and bicubic's."""

    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


class _MeanScore:
    """A :class:`DatasetScore` attribute: the mean of the :class:`ImageScore` field of its name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, score: Any, owner: type | None = None) -> float:
        if score is None:
            return self  # type: ignore[return-value]  # the class's own attribute
        values = [getattr(i, self.name) for i in score.images]
        return float(np.mean(values)) if values else math.nan


@dataclass
class DatasetScore:
    """Per-image scores of one dataset at one scale; the properties are means over images."""

    name: str
    path: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    sheet: str | None = None  # the comparison sheet's path, when one was written

    # The means over the images of each score (NaN for a dataset with none scored), read-only.
    psnr = _MeanScore()
    ssim = _MeanScore()
    bicubic_psnr = _MeanScore()
    bicubic_ssim = _MeanScore()


@dataclass
class EvalResult:
    """Everything :func:`evaluate_model` measured. ``method`` is the model's name or ``bicubic``."""

    method: str
    scale: int
    datasets: list[DatasetScore]
    degrade: str | None = None  # the damage done to the LR after the downscale (a fixed spec)
    device: str | None = None  # where the model ran, and in what (None: where it was, as it was)
    precision: str | None = None

    @property
    def failed(self) -> int:
        """How many images could not be evaluated, over all datasets."""
        return sum(len(d.failures) for d in self.datasets)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``null`` for the means of a dataset with no scored image)."""

        def num(x: float, digits: int) -> float | None:
            return None if math.isnan(x) else round(x, digits)

        return {
            "method": self.method,
            "scale": self.scale,
            "protocol": "matlab-bicubic-y",
            "degrade": self.degrade,
            "device": self.device,
            "precision": self.precision,
            "datasets": [
                {
                    "name": d.name,
                    "path": d.path,
                    "images": [
                        {"name": i.name, "psnr": num(i.psnr, 4), "ssim": num(i.ssim, 6),
                         "bicubic_psnr": num(i.bicubic_psnr, 4), "bicubic_ssim": num(i.bicubic_ssim, 6)}
                        for i in d.images
                    ],
                    "mean": {"psnr": num(d.psnr, 4), "ssim": num(d.ssim, 6),
                             "bicubic_psnr": num(d.bicubic_psnr, 4), "bicubic_ssim": num(d.bicubic_ssim, 6)},
                    "failures": [{"name": n, "error": e} for n, e in d.failures],
                    "sheet": d.sheet,
                }
                for d in self.datasets
            ],
        }


def format_metrics(result: EvalResult) -> dict[str, dict[str, Any]]:
    """Means per dataset in the shape of ``ModelInfo.metrics`` (PSNR to 0.01 dB, SSIM to 1e-4)."""
    return {
        d.name: {
            "scale": d.scale,
            "psnr": round(d.psnr, 2),
            "ssim": round(d.ssim, 4),
            "bicubic_psnr": round(d.bicubic_psnr, 2),
            "bicubic_ssim": round(d.bicubic_ssim, 4),
            "images": len(d.images),
        }
        for d in result.datasets
        if d.images
    }


def resolve_dataset(spec: str | Path, data_dir: str | Path | None = None) -> Path:
    """A dataset folder: ``spec`` itself when it is a folder, else ``spec`` looked up by name under
    ``data_dir`` and ``$SUBPIXEL_DATA`` (and their ``benchmarks/`` subfolders)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    roots = [Path(r).expanduser() for r in (data_dir, os.environ.get(DATA_ENV)) if r]
    looked = [p for r in roots for p in (r / str(spec), r / "benchmarks" / str(spec))]
    for candidate in looked:
        if candidate.is_dir():
            return candidate
    where = ", ".join(str(p) for p in [path, *looked])
    hint = "" if roots else f"; to use a name, pass --data-dir or set {DATA_ENV}"
    raise DataError(f"dataset {str(spec)!r} not found (looked for a folder at {where}){hint}")


def dataset_files(folder: Path) -> list[Path]:
    """The HR images of a dataset folder, sorted by name; none is a :class:`DataError`."""
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return files


def read_hr(path: Path) -> np.ndarray:
    """An HR image as ``uint8``: ``H×W`` for grey pictures, else ``H×W×3`` RGB (alpha dropped,
    palettes expanded, EXIF orientation applied, 16-bit rounded)."""
    return read_rgb8(path, keep_grey=True)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: ``uint8`` MATLAB bicubic ``imresize(lr, scale)``."""
    return imresize(lr, float(scale))


def _to_uint8(x255: np.ndarray) -> np.ndarray:
    """Round (halves up, as MATLAB's ``uint8`` for non-negative values) and saturate."""
    return np.clip(np.floor(x255 + 0.5), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ProtocolImage:
    """One HR image made ready for scoring: mod-cropped HR, its LR, the bicubic baseline and
    bicubic's scores."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    bicubic: np.ndarray
    bicubic_psnr: float
    bicubic_ssim: float


def prepare_image(name: str, hr: np.ndarray, scale: int, ssim: bool = True,
                  damage: Degradation | None = None) -> ProtocolImage:
    """Steps 1–2 of the protocol for an 8-bit HR image (``H×W`` grey or ``H×W×3``); a
    :class:`ValueError` if it is too small to score at ``scale``. ``damage`` is done to the LR
    after the downscale, by draws seeded from ``name`` (:func:`~subpixel_cli.degradations.seeded`):
    the same LR for everyone (a grey image is damaged as RGB and made grey again)."""
    hr = mod_crop(hr, scale)
    h, w = hr.shape[:2]
    if min(h, w) - 2 * scale < SSIM_WINDOW:
        need = SSIM_WINDOW + 2 * scale
        raise ValueError(f"{name}: {w}×{h} is too small for ×{scale} scoring (needs at least {need}×{need})")
    lr = downscale(hr, scale)
    if damage:
        lr = _damaged(lr, damage, name)
    bicubic = bicubic_upscale(lr, scale)
    bic_psnr, bic_ssim = _scores(bicubic, y_channel(hr), scale, ssim)
    return ProtocolImage(name, hr, lr, bicubic, bic_psnr, bic_ssim)


def _damaged(lr: np.ndarray, damage: Degradation, name: str) -> np.ndarray:
    grey = lr.ndim == 2
    out = damage.apply(np.repeat(lr[..., None], 3, axis=2) if grey else lr, seeded(name))
    return _to_uint8(out.mean(axis=2)) if grey else out


def _scores(output: np.ndarray, y_hr: np.ndarray, scale: int, ssim: bool) -> tuple[float, float]:
    if ssim:
        return y_psnr_ssim(output, y_hr, scale)
    y = output if output.ndim == 2 else y_channel(output)
    return psnr(shave(y, scale), shave(y_hr, scale), peak=255.0), math.nan


def protocol_upscaler(model: LoadedModel | ESPCN, device: str | None = None, precision: str | None = None) -> Upscaler:
    """The :class:`~subpixel_cli.upscale.Upscaler` the protocol runs ``model`` through, the one
    ``subpixel upscale`` uses: its border rule and its float path (the network's own output in
    fp32, not the 8-bit folding), on the device the weights are on unless ``device`` says another
    (``precision``: fp32, fp16 or bf16; fp32 on CUDA is IEEE fp32, not TF32). Evaluation does not
    change the model: the Upscaler runs a copy of its weights."""
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, ModelInfo("model", model.config))
    where = resolve_device(device) if device is not None else next(loaded.model.parameters()).device
    return Upscaler(loaded, device=where, precision=precision or "fp32", fused=False)


def score_image(upscaler: Upscaler | None, image: ProtocolImage, ssim: bool = True) -> tuple[ImageScore, np.ndarray]:
    """Steps 3–4: the method's (``None``: bicubic's) scores on ``image`` and its 8-bit output;
    ``upscaler`` from :func:`protocol_upscaler`."""
    if upscaler is None:
        return ImageScore(image.name, image.bicubic_psnr, image.bicubic_ssim, image.bicubic_psnr,
                          image.bicubic_ssim), image.bicubic
    sr, y_sr = super_resolve(upscaler, image.lr, image.bicubic)
    sr_psnr, sr_ssim = _scores(y_sr, y_channel(image.hr), upscaler.scale, ssim)
    return ImageScore(image.name, sr_psnr, sr_ssim, image.bicubic_psnr, image.bicubic_ssim), sr


def validate(net: ESPCN, images: Sequence[ProtocolImage]) -> tuple[float, float]:
    """Mean Y-PSNR (dB) of ``net`` and of bicubic over prepared images: training's validation,
    by the same protocol as ``subpixel eval`` (SSIM left out for speed)."""
    upscaler = protocol_upscaler(net)
    scores = [score_image(upscaler, image, ssim=False)[0] for image in images]
    return float(np.mean([s.psnr for s in scores])), float(np.mean([s.bicubic_psnr for s in scores]))


def upscaler_psnr(upscalers: Sequence[Upscaler], folder: Path) -> list[float]:
    """Mean Y-PSNR of each :class:`~subpixel_cli.upscale.Upscaler` (all of one scale and model)
    in its own precision on a folder of HR images, by this module's protocol (:func:`super_resolve`,
    as ``subpixel eval`` scores :func:`protocol_upscaler`), each image prepared once for all. How
    ``subpixel quantize`` and the benchmarks compare precisions."""
    scale = upscalers[0].scale
    scores: list[list[float]] = [[] for _ in upscalers]
    for path in dataset_files(folder):
        image = prepare_image(path.stem, read_hr(path), scale, ssim=False)
        y_hr = shave(y_channel(image.hr), scale)
        for upscaler, mine in zip(upscalers, scores):
            _, y_sr = super_resolve(upscaler, image.lr, image.bicubic)
            mine.append(psnr(shave(y_sr, scale), y_hr, peak=255.0))
    return [float(np.mean(mine)) for mine in scores]


def super_resolve(upscaler: Upscaler, lr: np.ndarray, bicubic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``upscaler`` (:func:`protocol_upscaler`, or one with the fused 8-bit path, to score its
    precision) on an 8-bit LR image; returns ``(sr, y)``:
    the 8-bit SR image (grey for grey input) and the Y that is scored (0–255 scale, already
    rounded to 8 bits as the protocol asks).

    A Y model sees the BT.601 Y of the LR (unrounded: float32) and its chroma comes from
    ``bicubic`` (the bicubic upscale of ``lr``). Grey images go in as their studio-swing Y and
    come back to grey, whose value is their Y in the protocol.
    """
    grey = lr.ndim == 2
    rgb = np.repeat(lr[..., None], 3, axis=2) if grey else lr
    x = rgb.astype(np.float64) / 255.0
    if upscaler.info.config.channels == 1:
        y255 = upscaler.upscale_plane(rgb_to_y(x)[..., 0].astype(np.float32)).astype(np.float64) * 255.0
    else:
        if upscaler.fused_paths:  # an 8-bit path (int8, bf16… as `upscale` runs them): 8-bit pictures in
            out = upscaler.upscale(rgb)[0].astype(np.float64) / 255.0
        else:
            out = upscaler.upscale(x.astype(np.float32))[0].astype(np.float64)
        if not grey:
            sr = _to_uint8(out * 255.0)
            return sr, y_channel(sr)
        y255 = rgb_to_y(out)[..., 0] * 255.0
    if grey:
        g = _to_uint8((y255 - 16.0) * 255.0 / 219.0)
        return g, g.astype(np.float64)
    y8 = _to_uint8(y255)
    cbcr = rgb_to_ycbcr(bicubic.astype(np.float64) / 255.0)[..., 1:]
    sr = _to_uint8(ycbcr_to_rgb(np.concatenate([y8[..., None] / 255.0, cbcr], axis=-1)) * 255.0)
    return sr, y8.astype(np.float64)


def _as_upscaler(model: LoadedModel | ESPCN | None, scale: int, device: str | None = None,
                 precision: str | None = None) -> tuple[Upscaler | None, str]:
    if model is None:
        return None, "bicubic"
    net, name = (model.model, model.info.name) if isinstance(model, LoadedModel) else (model, "model")
    if net.config.scale != scale:
        raise ModelError(f"the model upscales ×{net.config.scale}, not ×{scale}")
    return protocol_upscaler(model, device, precision), name


def evaluate_model(
    model: LoadedModel | ESPCN | None,
    scale: int,
    datasets: Sequence[str | Path],
    *,
    data_dir: str | Path | None = None,
    save_dir: str | Path | None = None,
    progress: Progress | None = None,
    damage: Degradation | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> EvalResult:
    """Score ``model`` (``None``: bicubic alone) at ``scale`` on each dataset (see the module
    docstring for the protocol and for what ``save_dir`` receives); ``damage``: LR pictures
    damaged as :func:`prepare_image` says. ``device`` (``auto``, ``cpu``, ``cuda``…) and
    ``precision`` (``fp32``, ``fp16``, ``bf16``) run a copy of the model there and so (fp32 on
    CUDA as IEEE fp32, not TF32); by default it runs where it is, as it is."""
    if not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an integer ≥ 2, got {scale!r}")
    placed = device is not None or precision is not None
    if placed:
        precision = precision or "fp32"
        if precision not in EVAL_PRECISIONS:
            raise UsageError(f"--precision {precision}: eval runs the network in {', '.join(EVAL_PRECISIONS)}")
    upscaler, method = _as_upscaler(model, scale, (device or "cpu") if placed else None, precision)
    folders = [resolve_dataset(d, data_dir) for d in datasets]  # fail on a typo before any work
    out_root = make_folder(Path(save_dir)) if save_dir is not None else None
    scores, used = [], set()
    for folder in folders:
        name = _unique(folder.name, used)
        scores.append(_evaluate_folder(upscaler, scale, folder, name, out_root, progress, damage))
    where = None if not placed else (upscaler.device.type if upscaler is not None else resolve_device(device or "cpu").type)
    return EvalResult(method=method, scale=scale, datasets=scores, degrade=str(damage) if damage else None,
                      device=where, precision=precision if placed else None)


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate


def _evaluate_folder(
    upscaler: Upscaler | None, scale: int, folder: Path, name: str, out_root: Path | None, progress: Progress | None,
    damage: Degradation | None = None,
) -> DatasetScore:
    files = dataset_files(folder)
    score = DatasetScore(name=name, path=str(folder), scale=scale)
    out_dir = make_folder(out_root / name) if out_root is not None else None
    crops: list[tuple[str, list[np.ndarray], ImageScore]] = []
    for k, path in enumerate(files):
        try:
            image, bicubic, sr, hr = _evaluate_image(upscaler, scale, path, damage)
        except (InputError, ValueError) as exc:
            score.failures.append((path.name, str(exc)))
        else:
            score.images.append(image)
            if out_dir is not None:
                _save_png(sr, out_dir / f"{path.stem}.png")
                if len(crops) < SHEET_ROWS:
                    tiles = [bicubic, sr, hr] if upscaler is not None else [bicubic, hr]
                    crops.append((path.stem, centre_crops(tiles), image))
        if progress is not None:
            progress(name, k + 1, len(files))
    if out_root is not None and crops:
        sheet = out_root / f"{name}_comparison.png"
        _save_png(np.asarray(comparison_sheet(crops, upscaler is not None)), sheet)
        score.sheet = str(sheet)
    return score


def _evaluate_image(
    upscaler: Upscaler | None, scale: int, path: Path, damage: Degradation | None = None
) -> tuple[ImageScore, np.ndarray, np.ndarray, np.ndarray]:
    """Score one HR file; returns its score and the bicubic, SR and (cropped) HR images."""
    image = prepare_image(path.name, read_hr(path), scale, damage=damage)
    score, sr = score_image(upscaler, image)
    return replace(score, name=path.stem), image.bicubic, sr, image.hr


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")


def centre_crops(images: list[np.ndarray]) -> list[np.ndarray]:
    """The same centre crop (at most ``SHEET_CROP`` square) of each image, as RGB."""
    h, w = images[0].shape[:2]
    c = min(SHEET_CROP, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    crops = [a[top : top + c, left : left + c] for a in images]
    return [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a.copy() for a in crops]


def comparison_sheet(rows: list[tuple[str, list[np.ndarray], ImageScore]], with_model: bool) -> Image.Image:
    """Rows of bicubic | model | ground truth crops (see :func:`centre_crops`), each captioned with
    its name and PSNR: ``subpixel eval --save-images`` and training's sample sheets."""
    font = ImageFont.load_default()
    pad, caption = 6, 14
    ncols = len(rows[0][1])
    tile = max(t.shape[0] for _, tiles, _ in rows for t in tiles)
    col_w = max(tile, 150)
    width = pad + ncols * (col_w + pad)
    height = pad + len(rows) * (caption + tile + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, tiles, score) in enumerate(rows):
        y = pad + r * (caption + tile + pad)
        labels = [f"{name} bicubic {score.bicubic_psnr:.2f} dB"]
        if with_model:
            labels.append(f"model {score.psnr:.2f} dB")
        labels.append("ground truth")
        for c, (t, label) in enumerate(zip(tiles, labels)):
            x = pad + c * (col_w + pad)
            draw.text((x, y), label, fill="black", font=font)
            sheet.paste(Image.fromarray(t), (x, y + caption))
    return sheet
