"""Training data: LR/HR pairs, the degradations that make them, and where datasets are found.

Two kinds of training set:

- :class:`PatchDataset` — any folder of images. Every image is mod-cropped to the scale, its LR
  made once (``uint8`` MATLAB bicubic as the evaluation protocol, or the paper's Gaussian blur and
  subsampling), and both kept in memory; items are random aligned patches (HR patch = LR patch ×
  scale) with random flips and 90° rotations.
- :class:`FaceDataset` — the original project's CelebA recipe: aligned faces, centre crop 108,
  resize to 128 (HR), ×4 down to 32 (LR), RGB, the whole face as one item.

Both hand out ``(lr, hr)`` float32 tensors ``C×h×w`` in [0, 1]: the BT.601 Y channel (``C = 1``)
or RGB (``C = 3``). Item ``k`` of a dataset of ``n`` items is item ``k mod n`` of epoch ``k // n``
(:class:`EpochSampler` hands out such keys), and every random choice comes from
``(seed, epoch, index)``: an item is the same whichever worker makes it and whenever a run is
resumed, and workers need no per-epoch state.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from subpixel_cli.color import rgb_to_y
from subpixel_cli.degradations import Degradation, downscale
from subpixel_cli.errors import DataError, InputError, one_line
from subpixel_cli.images import IMAGE_SUFFIXES, list_images, read_rgb8
from subpixel_cli.resize import imresize

DATA_ENV = "SUBPIXEL_DATA"
CELEBA_FOLDER = "img_align_celeba"
CELEBA_CROP, CELEBA_HR = 108, 128
CELEBA_HELP = (
    "CelebA's aligned faces (img_align_celeba/*.jpg) are for non-commercial research only and are "
    "not shipped with subpixel. Download img_align_celeba.zip from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (or torchvision.datasets.CelebA(download=True)), "
    "unzip it and pass --data-dir DIR (the folder holding img_align_celeba/, or torchvision's root with "
    "celeba/img_align_celeba/), or set $SUBPIXEL_DATA; or fetch a copy from a Hugging Face dataset "
    "repository you are allowed to use with --data-dir hf://datasets/OWNER/NAME"
)


# --- images and degradations ----------------------------------------------------------------


def read_rgb(path: Path) -> np.ndarray:
    """A training image as ``H×W×3`` ``uint8`` RGB (:func:`subpixel_cli.images.read_rgb8`); one
    that cannot be read is a :class:`DataError` (bad training data stops a run before it starts)."""
    try:
        return read_rgb8(path)
    except InputError as exc:
        raise DataError(str(exc)) from None


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``image`` whose sides are multiples of ``scale``."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A ``uint8`` RGB image as float32 ``C×H×W`` in [0, 1]: BT.601 Y for 1 channel, else RGB."""
    rgb = image.astype(np.float32) / 255.0
    out = rgb_to_y(rgb).astype(np.float32) if channels == 1 else rgb
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True)
class Pair:
    """One training image: its LR and HR as float32 ``C×H×W`` in [0, 1]."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    lr_rgb: np.ndarray | None = None  # the LR as H×W×3 uint8 RGB, for damage done per patch


def make_pair(path: Path, scale: int, channels: int, degradation: str = "bicubic", shrink: float = 1.0,
              image: np.ndarray | None = None, keep_rgb: bool = False) -> Pair:
    """Read an image, shrink it by ``shrink`` (MATLAB bicubic; scale augmentation), mod-crop it,
    downscale it once and convert both to the model's channels (``keep_rgb``: keep the LR's
    ``uint8`` RGB too)."""
    hr = read_rgb(path) if image is None else image
    if shrink != 1.0:
        hr = imresize(hr, shrink)
    hr = mod_crop(hr, scale)
    lr = downscale(hr, scale, degradation)
    return Pair(path.name, to_channels(lr, channels), to_channels(hr, channels), lr if keep_rgb else None)


LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg"})  # always lossy; WebP is either (see is_lossy)


def is_lossy(path: Path) -> bool:
    """Whether an image file holds lossy pixels: JPEG always; WebP when its image is a ``VP8 ``
    chunk (lossy) rather than ``VP8L`` (lossless), read from the file's RIFF chunks. A WebP that
    cannot be read counts as lossy."""
    suffix = path.suffix.lower()
    if suffix != ".webp":
        return suffix in LOSSY_SUFFIXES
    try:
        with open(path, "rb") as f:
            if f.read(12)[8:12] != b"WEBP":
                return True
            while header := f.read(8):
                if len(header) < 8:
                    break
                kind, size = header[:4], int.from_bytes(header[4:], "little")
                if kind in (b"VP8 ", b"VP8L"):
                    return kind == b"VP8 "
                f.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size
    except OSError:
        pass
    return True


def shrink_factors(path: Path, versions: int, smallest: float, rng: np.random.Generator) -> list[float]:
    """Scale augmentation: the factors an HR image is shrunk by before its patches are cut.

    A lossless image keeps its own size as one version; a lossy one's (JPEG, lossy WebP:
    :func:`is_lossy`) are all shrunk (at most 0.9), so that its block artefacts, averaged away by
    the shrinking, never become targets.
    """
    lossy = is_lossy(path)
    largest = 0.9 if lossy else 1.0
    factors = [] if lossy else [1.0]
    while len(factors) < versions:
        factors.append(float(rng.uniform(min(smallest, largest), largest)))
    return factors


# --- datasets -------------------------------------------------------------------------------


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of ``uint64`` that scatters neighbouring inputs."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def item_draws(seed: int, epochs: np.ndarray, indices: np.ndarray, streams: int) -> np.ndarray:
    """``len(indices) × streams`` uniform numbers in [0, 1), each a hash of ``(seed, epoch, index,
    stream)``: one vectorised pass for a whole batch, and still every item's own numbers, the
    same in whichever batch, worker or resumed run it is made."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(seed % 2**64) * _GOLDEN + np.asarray(epochs, np.uint64))
        h = _mix(h ^ (np.asarray(indices, np.uint64) * _GOLDEN))
        u = _mix(h[:, None] + (np.arange(1, streams + 1, dtype=np.uint64) * _GOLDEN)[None, :])
    return (u >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _load_versions(job: tuple[Path, int, int, int, int, str, int, float, bool]) -> list[Pair]:
    """One training image's versions (a top-level function, for worker processes)."""
    path, i, seed, scale, channels, degradation, versions, smallest, keep_rgb = job
    image = read_rgb(path)
    factors = [1.0] if versions == 1 and smallest >= 1.0 else shrink_factors(
        path, versions, smallest, np.random.default_rng([seed, i, 7919]))
    return [make_pair(path, scale, channels, degradation, f, image=image, keep_rgb=keep_rgb) for f in factors]


class PatchDataset(Dataset):
    """Random aligned patches of a folder of images, held in memory with their LR.

    ``len()`` is ``patches_per_image`` × the number of images; item ``i`` of an epoch is a patch of
    image ``i mod images`` at a position and orientation drawn from ``(seed, epoch, i)``.

    With a ``damage`` chain (:class:`~subpixel_cli.degradations.Degradation`; its pairs need
    ``lr_rgb``) every LR patch is damaged when it is cut, by draws from ``(seed, epoch, i)`` too:
    every epoch sees new damage, the same in whichever worker and after a resume.
    """

    def __init__(self, pairs: Sequence[Pair] | Sequence[Sequence[Pair]], scale: int, patch_size: int,
                 patches_per_image: int = 16, seed: int = 0, augment: bool = True,
                 damage: Degradation | None = None) -> None:
        # Each image is a pool of versions (its scale augmentation): a plain Pair is a pool of one.
        pools = [[p] if isinstance(p, Pair) else list(p) for p in pairs]
        pools = [[v for v in pool if min(v.lr.shape[1:]) >= patch_size] for pool in pools]
        self.images = [pool for pool in pools if pool]
        if not self.images:
            raise DataError(f"no training image is large enough for {patch_size}-pixel LR patches at ×{scale} "
                            f"(needs {patch_size * scale} HR pixels a side); use a smaller --patch-size")
        self.scale, self.patch_size = scale, patch_size
        self.patches_per_image, self.seed, self.augment = patches_per_image, seed, augment
        self.damage = damage or None
        if self.damage is not None and any(v.lr_rgb is None for pool in self.images for v in pool):
            raise ValueError("damaged patches need each pair's lr_rgb (make_pair(keep_rgb=True))")

    @property
    def pairs(self) -> list[Pair]:
        """Each image's first version."""
        return [pool[0] for pool in self.images]

    @classmethod
    def from_files(cls, files: Sequence[Path], scale: int, channels: int, patch_size: int,
                   degradation: str = "bicubic", versions: int = 1, smallest: float = 1.0, workers: int = 0,
                   **kwargs: Any) -> "PatchDataset":
        """Load ``files``, each as ``versions`` shrunk copies (:func:`shrink_factors`; one
        unshrunk copy when ``versions`` is 1 and ``smallest`` is 1), as a :class:`PatchDataset`;
        ``workers`` processes share the loading."""
        seed, keep_rgb = int(kwargs.get("seed", 0)), bool(kwargs.get("damage"))
        jobs = [(path, i, seed, scale, channels, degradation, versions, smallest, keep_rgb)
                for i, path in enumerate(files)]
        if workers > 0 and len(jobs) > 1:
            with concurrent.futures.ProcessPoolExecutor(workers) as pool:
                pools = list(pool.map(_load_versions, jobs, chunksize=4))
        else:
            pools = [_load_versions(job) for job in jobs]
        return cls(pools, scale, patch_size, **kwargs)

    @classmethod
    def from_folder(cls, folder: Path, scale: int, channels: int, patch_size: int, degradation: str = "bicubic",
                    **kwargs: Any) -> "PatchDataset":
        """Load every image of ``folder`` (and its direct sub-folders) as a :class:`PatchDataset`."""
        return cls.from_files(find_images(folder), scale, channels, patch_size, degradation, **kwargs)

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def draw(self, key: int) -> tuple[int, int, int, int, bool]:
        """Where item ``key`` comes from: ``(version, y, x, quarter_turns, flip)``, ``version`` an
        index into :attr:`versions` (one row of :meth:`draws`)."""
        version, y, x, k, flip = (int(v) for v in self.draws([key])[0])
        return version, y, x, k, bool(flip)

    def draws(self, keys: Sequence[int]) -> np.ndarray:
        """:meth:`draw` for a batch of keys at once, as ``N×5`` ``int64`` rows ``(version, y, x,
        quarter_turns, flip)``: the numbers of each item come from ``(seed, epoch, index)``
        (:func:`item_draws`), in one vectorised pass rather than a generator per patch."""
        epochs, indices = np.divmod(np.asarray(keys, np.int64), len(self))
        images = indices % len(self.images)
        u = item_draws(self.seed, epochs, indices, 5)
        version = self._first[images] + (u[:, 0] * self._pool_sizes[images]).astype(np.int64)
        room_y = self._lr_sizes[version, 0] - self.patch_size + 1
        room_x = self._lr_sizes[version, 1] - self.patch_size + 1
        y, x = (u[:, 1] * room_y).astype(np.int64), (u[:, 2] * room_x).astype(np.int64)
        k = (u[:, 3] * 4).astype(np.int64) if self.augment else np.zeros_like(y)
        flip = (u[:, 4] * 2).astype(np.int64) if self.augment else np.zeros_like(y)
        return np.stack([version, y, x, k, flip], axis=1)

    @functools.cached_property
    def versions(self) -> list[Pair]:
        """Every version of every image, in order (what :meth:`draw` indexes)."""
        return [v for pool in self.images for v in pool]

    @functools.cached_property
    def _first(self) -> np.ndarray:
        return np.cumsum([0] + [len(pool) for pool in self.images[:-1]]).astype(np.int64)

    @functools.cached_property
    def _pool_sizes(self) -> np.ndarray:
        return np.array([len(pool) for pool in self.images], np.int64)

    @functools.cached_property
    def _lr_sizes(self) -> np.ndarray:
        return np.array([v.lr.shape[1:] for v in self.versions], np.int64)

    def _cut(self, draw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """An item's LR (``C×p×p``, or ``p×p×3`` RGB ``uint8`` when patches are damaged)
        and HR patch, cut where ``draw`` (its row of :meth:`draws`) says, flipped and turned."""
        version, y, x, k, flip = (int(v) for v in draw)
        pair, p, s = self.versions[version], self.patch_size, self.scale
        hr = pair.hr[:, y * s : (y + p) * s, x * s : (x + p) * s]
        if self.damage is not None:
            lr = pair.lr_rgb[y : y + p, x : x + p].transpose(2, 0, 1)  # C×H×W to turn alike
        else:
            lr = pair.lr[:, y : y + p, x : x + p]
        if flip:
            lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
        lr, hr = np.rot90(lr, k, axes=(1, 2)), np.rot90(hr, k, axes=(1, 2))
        return (lr.transpose(1, 2, 0) if self.damage is not None else lr), hr

    def _damaged(self, keys: Sequence[int], patches: list[np.ndarray]) -> list[np.ndarray]:
        """RGB LR patches damaged by the chain and converted to the model's channels."""
        rngs = [np.random.default_rng([self.seed, *divmod(int(k), len(self)), 1]) for k in keys]
        damaged = self.damage.apply_many(patches, rngs, np.random.default_rng([self.seed, int(keys[0]), 2]))
        channels = self.versions[0].lr.shape[0]
        return [to_channels(d, channels) for d in damaged]

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = self.__getitems__([key])
        return lr[0], hr[0]

    def __getitems__(self, keys: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch at once: each patch is copied once, straight into the batch (the
        DataLoader passes this to :func:`collate_batch`)."""
        cuts = [self._cut(d) for d in self.draws(keys)]
        lrs = [c[0] for c in cuts]
        if self.damage is not None:
            lrs = self._damaged(keys, lrs)
        return torch.from_numpy(np.stack(lrs)), torch.from_numpy(np.stack([c[1] for c in cuts]))


class DevicePatches:
    """A :class:`PatchDataset` held on a device (a GPU): every version of every image packed into
    one flat tensor, and a batch cut with one gather for LR and one for HR. The patches (their
    positions, rotations and flips, from :meth:`PatchDataset.draw`) are the dataset's own, so a
    run gives the same batches on the GPU as through the DataLoader, and resumes the same way."""

    def __init__(self, dataset: PatchDataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device
        self.lr, self.lr_index = self._pack([v.lr for v in dataset.versions])
        self.hr, self.hr_index = self._pack([v.hr for v in dataset.versions])

    def _pack(self, planes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """One flat tensor, and per version: its offset, height and width."""
        sizes = [a.size for a in planes]
        offsets = np.cumsum([0] + sizes[:-1])
        flat = torch.from_numpy(np.concatenate([a.ravel() for a in planes])).to(self.device)
        index = torch.tensor([[o, a.shape[1], a.shape[2]] for o, a in zip(offsets, planes)], dtype=torch.int64)
        return flat, index.to(self.device)

    def batch(self, keys: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """LR and HR patches ``N×C×p×p`` and ``N×C×sp×sp`` for ``keys``, on the device."""
        draws = torch.from_numpy(self.dataset.draws(keys)).to(self.device)
        p, s = self.dataset.patch_size, self.dataset.scale
        return (self._gather(self.lr, self.lr_index, draws, p, 1),
                self._gather(self.hr, self.hr_index, draws, p * s, s))

    def _gather(self, flat: torch.Tensor, index: torch.Tensor, draws: torch.Tensor, side: int,
                scale: int) -> torch.Tensor:
        version, y, x, k, flip = draws.unbind(1)
        offset, height, width = index[version].unbind(1)
        channels = self.dataset.versions[0].lr.shape[0]
        i = torch.arange(side, device=flat.device).view(1, side, 1).expand(len(draws), side, side)
        j = torch.arange(side, device=flat.device).view(1, 1, side).expand(len(draws), side, side)
        last = side - 1
        kk, ff = k.view(-1, 1, 1), flip.view(-1, 1, 1).bool()
        # np.rot90(a, k)[i, j] is a[j, last - i] for k = 1, a[last - i, last - j] for k = 2 and
        # a[last - j, i] for k = 3; the flip (a[:, ::-1]) comes before the turn.
        ai = torch.where(kk == 0, i, torch.where(kk == 1, j, torch.where(kk == 2, last - i, last - j)))
        aj = torch.where(kk == 0, j, torch.where(kk == 1, last - i, torch.where(kk == 2, last - j, i)))
        aj = torch.where(ff, last - aj, aj)
        rows = (y * scale).view(-1, 1, 1) + ai
        cols = (x * scale).view(-1, 1, 1) + aj
        plane = (height * width).view(-1, 1, 1, 1)
        c = torch.arange(channels, device=flat.device).view(1, -1, 1, 1)
        at = offset.view(-1, 1, 1, 1) + c * plane + (rows * width.view(-1, 1, 1)).unsqueeze(1) + cols.unsqueeze(1)
        return flat[at]


def collate_batch(batch: Any) -> Any:
    """The DataLoader's collate for datasets whose ``__getitems__`` already makes the batch."""
    return batch


def celeba_hr(path: Path) -> np.ndarray:
    """The original project's HR face: centre crop 108×108 of an aligned face, resized to 128."""
    img = read_rgb(path)
    h, w = img.shape[:2]
    if min(h, w) < CELEBA_CROP:
        raise DataError(f"{path}: {w}×{h} is smaller than the {CELEBA_CROP}-pixel face crop")
    top, left = (h - CELEBA_CROP) // 2, (w - CELEBA_CROP) // 2
    crop = np.ascontiguousarray(img[top : top + CELEBA_CROP, left : left + CELEBA_CROP])
    return imresize(crop, output_shape=(CELEBA_HR, CELEBA_HR))


class FaceDataset(Dataset):
    """CelebA faces by the original recipe: HR 128×128, LR 32×32 (×4), one face per item.

    Faces are decoded when asked for (so workers share the work), or all at once with
    ``preload=True``; augmentation is a horizontal flip only (faces are aligned upright).
    """

    def __init__(self, files: Sequence[Path], scale: int = 4, channels: int = 3, seed: int = 0,
                 augment: bool = True, preload: bool = False, degradation: str = "bicubic") -> None:
        if CELEBA_HR % scale:
            raise DataError(f"the CelebA recipe makes 128-pixel faces; ×{scale} does not divide 128")
        self.files, self.scale, self.channels = list(files), scale, channels
        self.seed, self.augment, self.degradation = seed, augment, degradation
        self._cache = [self._load(i) for i in range(len(self.files))] if preload else None

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hr = celeba_hr(self.files[index])
        lr = downscale(hr, self.scale, self.degradation)
        return to_channels(lr, self.channels), to_channels(hr, self.channels)

    def pair(self, index: int) -> Pair:
        """Face ``index`` without augmentation (for validation)."""
        lr, hr = self._cache[index] if self._cache is not None else self._load(index)
        return Pair(self.files[index].name, lr, hr)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(int(key), len(self))
        lr, hr = self._cache[index] if self._cache is not None else self._load(index)
        if self.augment and _item_rng(self.seed, epoch, index).integers(2):
            lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(lr)), torch.from_numpy(np.ascontiguousarray(hr))


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, split across ``world`` ranks, starting ``skip`` items in.

    It yields keys ``epoch · size + index`` (see the module docstring). Every rank sees
    ``size // world`` items (the remainder is dropped, so ranks stay in step), and a resumed run
    skips exactly the items the interrupted run had used.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.size // self.world - self.skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)[: self.size // self.world * self.world]
        base = self.epoch * self.size
        return iter((base + order[self.rank :: self.world][self.skip :]).tolist())


# --- finding datasets -------------------------------------------------------------------------


def find_images(folder: Path) -> list[Path]:
    """Images in ``folder`` and one level of sub-folders (T91/, BSD200/ …), sorted by path."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; --dataset takes 'celebA' or a folder of training images")
    files = list_images(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files += list_images(sub)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or its sub-folders")
    return files


def portable_path(path: str | Path, in_command: bool = False) -> str:
    """``path`` as a run's record keeps it, without the training machine's own folders: relative
    to the data root (``$SUBPIXEL_DATA``) where it lies under it (``in_command``: as
    ``"$SUBPIXEL_DATA"/…``), under the home folder as ``~/…``, else as given."""
    text, given = str(path), Path(str(path)).expanduser()
    full, root = Path(os.path.abspath(given)), os.environ.get(DATA_ENV)
    if "://" in text:
        return text
    if root and full.is_relative_to(os.path.abspath(root)):
        rel = full.relative_to(os.path.abspath(root)).as_posix()
        return f'"${DATA_ENV}"/{shlex.quote(rel)}' if in_command else rel
    if given.is_absolute() and full.is_relative_to(Path.home()):
        rel = full.relative_to(Path.home()).as_posix()
        return f"~/{shlex.quote(rel)}" if in_command else f"~/{rel}"
    return shlex.quote(text) if in_command else text


_PATH_OPTIONS = {"--dataset", "--data-dir", "--val", "--out", "--init-from"}


def portable_command(command: str) -> str:
    """A ``subpixel train`` command line with :func:`portable_path` for its paths."""
    words = shlex.split(command)
    out = [shlex.quote(w) if k == 0 or words[k - 1] not in _PATH_OPTIONS else portable_path(w, in_command=True)
           for k, w in enumerate(words)]
    return " ".join(out)


def celeba_search_paths(data_dir: Path | None) -> list[Path]:
    """Where ``img_align_celeba`` is looked for, in order."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(data_dir)
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]))
    roots += [Path.cwd() / "data", Path.home() / ".cache" / "subpixel"]
    paths: list[Path] = []
    for root in roots:
        paths += [root / CELEBA_FOLDER, root / "celeba" / CELEBA_FOLDER, root / "celebA" / CELEBA_FOLDER]
    if data_dir is not None:
        paths.insert(0, data_dir)  # a plain folder of the faces themselves
    return paths


def _has_jpgs(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() == ".jpg" for p in folder.iterdir())


def find_celeba(data_dir: Path | None) -> Path:
    """The ``img_align_celeba`` folder, or a :class:`DataError` that says where it was looked for."""
    candidates = celeba_search_paths(data_dir)
    for folder in candidates:
        if _has_jpgs(folder):
            return folder
    looked = "\n  ".join(str(p) for p in dict.fromkeys(candidates))
    raise DataError(f"CelebA not found; looked for {CELEBA_FOLDER}/*.jpg in:\n  {looked}\n{CELEBA_HELP}")


def fetch_hf_dataset(spec: str) -> Path:
    """Download ``hf://datasets/OWNER/NAME[@REV]`` (its ``img_align_celeba`` files) into the
    Hugging Face cache and return the snapshot folder."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    body = spec.removeprefix("hf://").removeprefix("datasets/")
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1:
        raise DataError(f"{spec}: a hub dataset is written hf://datasets/OWNER/NAME[@REVISION]")
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision or None,
                                   allow_patterns=[f"{CELEBA_FOLDER}/*", f"*/{CELEBA_FOLDER}/*"])
    except RepositoryNotFoundError:
        raise DataError(f"{spec}: no such dataset repository, or it is private/gated (set HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise DataError(f"{spec}: not in the local Hugging Face cache and {why}. {CELEBA_HELP}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise DataError(f"{spec}: download failed: {one_line(exc)}") from None
    return Path(folder)


def split_by_name(files: Sequence[Path], count: int) -> tuple[list[Path], list[Path]]:
    """``count`` files held out for validation, and the rest (in their order) for training.

    The files held out are those whose names without suffix (stems) hash lowest: the same
    pictures whatever format they are stored in (PNG, lossless WebP), whichever folder they are
    read from, and in any subset of a set that keeps them, however the rest of the list differs;
    sub-folders contribute about in proportion to their size."""
    if count <= 0:
        return list(files), []
    if count >= len(files):
        raise DataError(f"cannot hold back {count} of {len(files)} training images for validation")
    ranked = sorted(files, key=lambda p: (hashlib.blake2b(p.stem.encode(), digest_size=8).digest(), str(p)))
    held = set(ranked[:count])
    return [f for f in files if f not in held], [f for f in files if f in held]


def split_holdout(files: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Files sorted by name: the first ``1 - fraction`` for training, the rest held out."""
    ordered = sorted(files, key=lambda p: p.name)
    cut = len(ordered) - int(round(len(ordered) * fraction))
    return ordered[:cut], ordered[cut:]
