"""What a training run is made of: its :class:`TrainConfig`, and the data it asks for (the
training set, the validation images and what the model card says about them). :mod:`subpixel_cli.train`
runs the loop on these."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from subpixel_cli import data as datasets
from subpixel_cli.choices import DEGRADATIONS, LOSSES, SCHEDULES, TRAIN_PRECISIONS
from subpixel_cli.degradations import Degradation
from subpixel_cli.errors import DataError, UsageError
from subpixel_cli.evaluate import (ProtocolImage, centre_crops, comparison_sheet, prepare_image, protocol_upscaler,
                                   score_image)
from subpixel_cli.images import list_images
from subpixel_cli.model import ESPCN

CELEBA = "celeba"


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint and the model card."""

    dataset: str  # "celebA" or a folder of training images
    scale: int
    out: str = "runs/espcn"
    data_dir: str | None = None
    steps: int | None = None  # total optimiser steps; or
    epochs: int | None = None  # total epochs (one epoch = every item once); default 100
    batch_size: int = 16  # per process
    patch_size: int = 32  # LR pixels (folder datasets); the loss covers all but the receptive radius
    patches_per_image: int = 16  # items per image per epoch (folder datasets)
    lr: float = 1e-3
    min_lr: float = 1e-5
    schedule: str = "cosine"
    loss: str = "l1"
    channels: int | None = None  # 1 = Y, 3 = RGB; default 3 for celebA, else 1
    degradation: str = "bicubic"
    device: str = "auto"
    workers: int = 0
    val: str | None = None  # a folder of HR images; celebA defaults to its held-out faces
    val_max_images: int = 200
    holdout: float = 0.1  # celebA: the last 10 % of files by name are never trained on
    resume: bool = False
    seed: int = 0
    checkpoint_every: int = 500  # steps; also at each validation and at the end
    val_every: int | None = None  # steps between validations; default: each epoch, or a few (validation_interval)
    time_limit: float | None = None  # seconds of wall time: then validate, save and stop (resumable)
    precision: str = "auto"  # CPU: bf16 autocast where the CPU has bf16 arithmetic; CUDA: fp16 AMP
    scale_aug: float = 1.0  # folder datasets: smallest factor HR images are shrunk by (1 = off)
    scale_versions: int = 4  # shrunk copies of each image kept in memory when scale_aug < 1
    ema: float | None = None  # decay of an exponential moving average of the weights (what is saved)
    val_holdout: int = 0  # folder datasets: training images held back (chosen by name) for validation
    device_data: bool | None = None  # patches cut on the device (default: on CUDA, for folder datasets)
    features: tuple[int, ...] = (64, 32)  # hidden layers' widths: the paper's two, or more 3×3 ones
    init_from: str | None = None  # a model spec whose layers start this run: conv1/conv2 (FSRCNN-style
    # transfer from another scale), every layer when scale and channels match (fine-tuning); layers
    # the donor lacks (a deeper --features) start as near-identities (train.transplant)
    name: str | None = None
    degrade: str | None = None  # a damage spec (subpixel_cli.degradations) done to every LR patch
    command: str = ""  # how the run was started, for the model card

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        if self.channels is None:
            self.channels = 3 if self.is_celeba else 1
        checks = [
            (self.scale >= 2, f"scale must be ≥ 2, got {self.scale}"),
            (self.channels in (1, 3), f"--channels must be 1 or 3, got {self.channels}"),
            (self.loss in LOSSES, f"--loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.degradation in DEGRADATIONS, f"degradation must be one of {DEGRADATIONS}"),
            (self.steps is None or self.epochs is None, "give --steps or --epochs, not both"),
            (min(self.batch_size, self.patch_size, self.patches_per_image, self.checkpoint_every) >= 1,
             "batch size, patch size, patches per image and checkpoint interval must be ≥ 1"),
            ((self.steps or 1) >= 1 and (self.epochs or 1) >= 1, "--steps/--epochs must be ≥ 1"),
            (0 <= self.holdout < 1, f"holdout must be in [0, 1), got {self.holdout}"),
            (self.lr > 0 and self.workers >= 0, "--lr must be > 0 and --workers ≥ 0"),
            (self.precision in TRAIN_PRECISIONS, f"--precision must be one of {TRAIN_PRECISIONS}"),
            (0.2 <= self.scale_aug <= 1.0, f"--scale-aug must be in [0.2, 1], got {self.scale_aug}"),
            (self.scale_versions >= 1, "--scale-versions must be ≥ 1"),
            (self.ema is None or 0 < self.ema < 1, f"--ema must be in (0, 1), got {self.ema}"),
            (self.val_holdout >= 0, "--val-holdout must be ≥ 0"),
            ((self.val_every or 1) >= 1, "--val-every must be ≥ 1"),
            (self.time_limit is None or self.time_limit > 0, "--time-limit must be > 0 seconds"),
            (len(self.features) >= 2 and min(self.features) >= 1, f"--features: two or more widths ≥ 1, got {self.features}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.degrade is not None:
            self.degrade = str(self.damage) if self.damage else None  # its canonical form; checks it
        if self.degrade and self.is_celeba:
            raise UsageError("--degrade damages patches of folder datasets; celebA trains on whole faces")
        if self.degrade and self.device_data:
            raise UsageError("--degrade damages patches on the CPU as they are cut: drop --device-data")

    @property
    def damage(self) -> Degradation | None:
        """The parsed ``degrade`` spec."""
        return Degradation.parse(self.degrade) if self.degrade else None

    @property
    def is_celeba(self) -> bool:
        return self.dataset.lower() == CELEBA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --- validation -------------------------------------------------------------------------------


def load_val_images(files: Sequence[Path], scale: int, reader: Callable[[Path], np.ndarray],
                    damage: Degradation | None = None) -> list[ProtocolImage]:
    """Validation images by the evaluation protocol (``reader`` gives ``uint8`` RGB), their LR
    damaged as the training patches are (one draw per image, seeded by its name); files too small
    to score at ``scale`` are left out."""
    images = []
    for f in files:
        with contextlib.suppress(ValueError):
            images.append(prepare_image(f.name, reader(f), scale, ssim=False, damage=damage))
    if not images:
        raise DataError(f"no usable validation images at ×{scale}")
    return images


def sample_sheet(model: ESPCN, images: Sequence[ProtocolImage]) -> Image.Image:
    """The comparison sheet of ``subpixel eval --save-images`` for a few validation images."""
    rows, upscaler = [], protocol_upscaler(model)
    for image in images:
        score, sr = score_image(upscaler, image, ssim=False)
        rows.append((Path(image.name).stem, centre_crops([image.bicubic, sr, image.hr]), score))
    return comparison_sheet(rows, with_model=True)


# --- data -------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The training set, the validation images and what the model card says about them."""

    train: Dataset
    val: list[ProtocolImage]
    description: dict[str, Any]


def build_data(config: TrainConfig, say: Callable[[str], None] = lambda text: None) -> RunData:
    """The training and validation data a config asks for; ``say`` hears what is being read."""
    if config.is_celeba:
        return _celeba_data(config, say)
    folder = Path(config.dataset).expanduser()
    files, held_out = datasets.split_by_name(datasets.find_images(folder), config.val_holdout)
    say(f"reading {len(files) + len(held_out):,} images from {folder}…")
    versions = config.scale_versions if config.scale_aug < 1 else 1
    train = datasets.PatchDataset.from_files(
        files, config.scale, config.channels, config.patch_size, config.degradation, versions=versions,
        smallest=config.scale_aug, workers=config.workers, patches_per_image=config.patches_per_image, seed=config.seed,
        damage=config.damage)
    if config.val:
        val = _folder_val(config)
        val_name = datasets.portable_path(config.val)
    elif held_out:
        val = load_val_images(held_out, config.scale, datasets.read_rgb, config.damage)
        val_name = f"{len(val)} held-back training images"
    else:
        val, val_name = [], None
    description = {"dataset": datasets.portable_path(folder), "train_images": len(train.images), "degradation": config.degradation,
                   "damage": config.degrade,
                   "scale_augmentation": (f"{versions} copies shrunk by {config.scale_aug}–1 (JPEG ≤ 0.9)"
                                          if versions > 1 else None),
                   "patch_size_lr": config.patch_size, "val": val_name, "val_images": len(val),
                   "held_out": [f.name for f in held_out] or None}
    return RunData(train, val, description)


def _folder_val(config: TrainConfig) -> list[ProtocolImage]:
    folder = Path(config.val).expanduser()
    if not folder.is_dir():
        raise DataError(f"--val {config.val}: no such folder (give a folder of HR images, e.g. benchmarks/Set5)")
    files = list_images(folder)
    if not files:
        raise DataError(f"--val {config.val}: no images in it")
    return load_val_images(files[: config.val_max_images], config.scale, datasets.read_rgb, config.damage)


def _celeba_data(config: TrainConfig, say: Callable[[str], None]) -> RunData:
    spec = config.data_dir
    root = datasets.fetch_hf_dataset(spec) if spec and spec.startswith("hf://") else (Path(spec).expanduser() if spec else None)
    folder = datasets.find_celeba(root)
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".jpg"]
    say(f"reading {len(files):,} faces from {folder}…")
    train_files, held_out = datasets.split_holdout(files, config.holdout)
    preload = len(train_files) <= 20_000  # ~60 KB a face: keep small sets in memory
    train = datasets.FaceDataset(train_files, config.scale, config.channels, seed=config.seed, preload=preload,
                                 degradation=config.degradation)
    if config.val:
        val = _folder_val(config)
    else:
        val = load_val_images(held_out[: config.val_max_images], config.scale, datasets.celeba_hr)
    faces = f"{len(val)} held-out faces" if len(val) == len(held_out) else f"{len(val)} of the {len(held_out)} held-out faces"
    description = {"dataset": "CelebA img_align_celeba", "data_dir": datasets.portable_path(folder), "train_images": len(train_files),
                   "held_out_images": len(held_out), "held_out_first": held_out[0].name if held_out else None,
                   "recipe": "centre crop 108, resize to 128 (HR), ×4 MATLAB bicubic to 32 (LR), RGB",
                   "val": datasets.portable_path(config.val) if config.val else faces, "val_images": len(val)}
    return RunData(train, val, description)
