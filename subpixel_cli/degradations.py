"""Every way an LR picture is made from an HR one: the downscale, and what real pictures went
through after it.

The downscale is :func:`downscale` (MATLAB bicubic, the evaluation protocol; or the paper's
Gaussian blur and subsampling). After it, a :class:`Degradation` is a seeded chain of the damage
real inputs carry, each step with a range and a probability, always in this order:

==========  =====================================================  ==========  ===========
kind        what                                                   value       allowed
==========  =====================================================  ==========  ===========
``blur``    Gaussian blur (lens, motion, a soft resize)            σ, LR px    0.1 – 3
``noise``   Gaussian noise, independent per colour                 σ, levels   0 – 50
``poisson`` signal-dependent (shot) noise, ``σ·√(level/128)``      σ at 128    0 – 50
``jpeg``    JPEG with 4:2:0 chroma, as cameras and browsers save   quality     1 – 100
``h264``    an H.264 intra frame (x264 through PyAV, yuv420p)      CRF         0 – 51
==========  =====================================================  ==========  ===========

A spec is written ``KIND:VALUE`` or ``KIND:LOW-HIGH``, optionally ``@P`` (the probability the
step happens, default 1), steps joined by commas: ``jpeg:30-95@0.8,noise:0-8@0.3``. A spec whose
every step has one value and probability 1 (``jpeg:75``) is *fixed*: what ``subpixel eval
--degrade`` takes, so that every figure can be reproduced. Values are drawn uniformly in their
range (qualities and CRFs as whole numbers).

Randomness comes only from the generator the caller passes; the same generator state gives the
same picture. H.264 is costly to start (~10 ms an encoder), so :meth:`Degradation.apply_many`
encodes every picture of a batch that draws it as one frame (a mosaic, each picture on whole
16-pixel macroblocks) at one CRF drawn for the batch.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from subpixel_cli.choices import DEGRADATIONS
from subpixel_cli.errors import UsageError
from subpixel_cli.resize import imresize

# The order steps run in, whatever order a spec gives them: optics, sensor, then compression.
KINDS = ("blur", "noise", "poisson", "jpeg", "h264")
_LIMITS = {"blur": (0.1, 3.0), "noise": (0.0, 50.0), "poisson": (0.0, 50.0), "jpeg": (1.0, 100.0), "h264": (0.0, 51.0)}
_WHOLE = frozenset({"jpeg", "h264"})  # drawn as whole numbers
_MACROBLOCK = 16
_H264_PRESET = "veryfast"
SPEC_HELP = ("KIND:VALUE or KIND:LOW-HIGH, optionally @P, joined by commas, KIND one of "
             f"{', '.join(KINDS)} (e.g. jpeg:30-95@0.8,noise:0-8@0.3)")


# --- the downscale --------------------------------------------------------------------------


def gaussian_sigma(scale: int) -> float:
    """The default blur for the Gaussian downscale: σ = 0.5·scale, roughly the support of
    MATLAB's antialiasing kernel."""
    return 0.5 * scale


def downscale(hr: np.ndarray, scale: int, method: str = "bicubic", sigma: float | None = None) -> np.ndarray:
    """The LR image of a ``uint8`` HR image whose sides are multiples of ``scale``.

    ``bicubic``: MATLAB ``imresize(hr, 1/scale)`` in ``uint8`` (the evaluation protocol).
    ``gaussian``: the paper's Gaussian blur (σ from :func:`gaussian_sigma` unless given) and
    subsampling at the centre of each ``scale×scale`` block.
    """
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(f"downscale: a {hr.shape[0]}×{hr.shape[1]} image is not a multiple of {scale}; mod-crop it")
    if method == "bicubic":
        return imresize(hr, 1.0 / scale)
    if method == "gaussian":
        s = gaussian_sigma(scale) if sigma is None else sigma
        blurred = cv2.GaussianBlur(hr, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)
        off = scale // 2
        return np.ascontiguousarray(blurred.reshape(hr.shape)[off::scale, off::scale])
    raise ValueError(f"downscale method must be one of {DEGRADATIONS}, got {method!r}")


# --- the chain ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One kind of damage: its value drawn from ``low…high``, applied with ``probability``."""

    kind: str
    low: float
    high: float
    probability: float = 1.0

    def __str__(self) -> str:
        value = _number(self.low) if self.low == self.high else f"{_number(self.low)}-{_number(self.high)}"
        return f"{self.kind}:{value}" + ("" if self.probability == 1 else f"@{_number(self.probability)}")

    def draw(self, rng: np.random.Generator) -> float | None:
        """This step's value for one picture, or ``None`` when it does not happen. Always takes
        the same two draws from ``rng``, so one step's settings never shift another's."""
        happens, u = rng.random(), rng.random()
        if happens >= self.probability:
            return None
        if self.kind in _WHOLE:
            return float(np.floor(self.low + u * (self.high - self.low + 1))) if self.high > self.low else self.low
        return self.low + u * (self.high - self.low)


def _number(x: float) -> str:
    return f"{x:g}"


_STEP = re.compile(r"^(?P<kind>[a-z0-9]+):(?P<low>[0-9.]+)(?:-(?P<high>[0-9.]+))?(?:@(?P<p>[0-9.]+))?$")


@dataclass(frozen=True)
class Degradation:
    """A chain of :class:`Step`\\ s in :data:`KINDS` order; :meth:`parse` reads a spec."""

    steps: tuple[Step, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Degradation":
        """The chain a spec describes (see the module docstring); a malformed one is a
        :class:`UsageError` that says which part and how it is written."""
        steps: dict[str, Step] = {}
        for part in (p.strip() for p in spec.strip().lower().split(",")):
            if not part or part == "none":
                continue
            kind, m = part.split(":", 1)[0], _STEP.match(part)
            if kind not in _LIMITS or m is None:
                why = f"unknown kind {kind!r}" if kind not in _LIMITS else "malformed"
                raise UsageError(f"--degrade {spec!r}: {part!r}: {why}; write {SPEC_HELP}")
            try:
                low = float(m["low"])
                high = float(m["high"]) if m["high"] is not None else low
                p = float(m["p"]) if m["p"] is not None else 1.0
            except ValueError:
                raise UsageError(f"--degrade {spec!r}: {part!r}: not a number; write {SPEC_HELP}") from None
            lo, hi = _LIMITS[kind]
            if not lo <= low <= high <= hi:
                raise UsageError(f"--degrade {spec!r}: {kind} takes values in {_number(lo)}-{_number(hi)} "
                                 f"with LOW ≤ HIGH, not {part.split(':', 1)[1].split('@')[0]}")
            if not 0 < p <= 1:
                raise UsageError(f"--degrade {spec!r}: {part!r}: the probability after @ must be in (0, 1]")
            if kind in steps:
                raise UsageError(f"--degrade {spec!r}: {kind} is given twice")
            steps[kind] = Step(kind, low, high, p)
        return cls(tuple(steps[k] for k in KINDS if k in steps))

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps) or "none"

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def fixed(self) -> bool:
        """Whether every step has one value and always happens: no randomness but noise's."""
        return all(s.low == s.high and s.probability == 1 for s in self.steps)

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One ``H×W×3`` ``uint8`` RGB picture, damaged."""
        return self.apply_many([rgb], [rng], rng)[0]

    def apply_many(self, pictures: Sequence[np.ndarray], rngs: Sequence[np.random.Generator],
                   batch_rng: np.random.Generator) -> list[np.ndarray]:
        """Each ``uint8`` RGB picture damaged by draws from its own generator; H.264's CRF is
        drawn once from ``batch_rng`` and every picture that draws H.264 shares one encode."""
        out = [np.ascontiguousarray(p) for p in pictures]
        h264: list[int] = []
        for i, rng in enumerate(rngs):
            for step in self.steps:
                value = step.draw(rng)
                if value is None:
                    continue
                if step.kind == "h264":
                    h264.append(i)
                else:
                    out[i] = _APPLY[step.kind](out[i], value, rng)
        step = next((s for s in self.steps if s.kind == "h264"), None)
        if h264 and step is not None:
            crf = step.low if step.low == step.high else float(batch_rng.integers(int(step.low), int(step.high) + 1))
            for i, damaged in zip(h264, h264_intra([out[i] for i in h264], int(crf))):
                out[i] = damaged
        return out


def _blur(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT).reshape(rgb.shape)


def _noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _quantize(rgb + rng.normal(0.0, sigma, rgb.shape))


def _poisson(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    x = rgb.astype(np.float64)
    return _quantize(x + rng.standard_normal(rgb.shape) * sigma * np.sqrt(x / 128.0))


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    return jpeg(rgb, int(quality))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` saved as a JPEG of ``quality`` with 4:2:0 chroma by Pillow (libjpeg's tables) and
    read back."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


_APPLY = {"blur": _blur, "noise": _noise, "poisson": _poisson, "jpeg": _jpeg}


def h264_intra(pictures: Sequence[np.ndarray], crf: int) -> list[np.ndarray]:
    """``uint8`` RGB pictures encoded together by x264 as one intra frame at ``crf`` (a mosaic in
    which each starts on a macroblock, its sides padded by repetition to whole macroblocks) and
    decoded back: the damage of an H.264 key frame, one encoder start for all of them."""
    import av  # only here: the rest of the module is needed without a video stack

    mb = _MACROBLOCK
    sizes = [(-(-p.shape[0] // mb) * mb, -(-p.shape[1] // mb) * mb) for p in pictures]
    columns = max(1, int(np.ceil(np.sqrt(len(pictures)))))
    rows = -(-len(pictures) // columns)
    cell_h, cell_w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    mosaic = np.zeros((rows * cell_h, columns * cell_w, 3), np.uint8)
    for k, (p, (h, w)) in enumerate(zip(pictures, sizes)):
        r, c = divmod(k, columns)
        padded = np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)), mode="edge")
        mosaic[r * cell_h : r * cell_h + h, c * cell_w : c * cell_w + w] = padded
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = mosaic.shape[1], mosaic.shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": _H264_PRESET, "x264-params": "keyint=1:threads=1:log-level=error"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(mosaic, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer, "r", format="h264") as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    out = []
    for k, p in enumerate(pictures):
        r, c = divmod(k, columns)
        out.append(np.ascontiguousarray(decoded[r * cell_h : r * cell_h + p.shape[0], c * cell_w : c * cell_w + p.shape[1]]))
    return out


def seeded(name: str, seed: int = 0) -> np.random.Generator:
    """The generator for the fixed degradation of a picture called ``name``: the same for
    everyone, whatever order pictures are read in."""
    import zlib

    return np.random.default_rng([seed, zlib.crc32(name.encode())])
