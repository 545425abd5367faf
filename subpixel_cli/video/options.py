"""What to take from the input and how to encode it, and the checks made before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from subpixel_cli.errors import OutputError, UsageError
from subpixel_cli.files import check_folder_writable

# x264's and x265's speed presets, fastest first.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")

DEFAULT_SUFFIX = ".mp4"


@dataclass
class VideoOptions:
    """How to encode and what part of the input to take.

    ``codec``: ``auto`` (H.264 when the container takes it, else the container's default), a name
    from :data:`CODECS` or any FFmpeg encoder. ``crf``: constant quality (lower is better).
    ``start``/``end``: seconds from the start of the input. ``fps``: the rate of a folder of frames.
    ``pix_fmt``: the output's pixel format (default: 4:2:0 at the source's bit depth).
    ``lossless``: encode the model's frames without loss (FFV1 RGB by default; see
    :func:`~subpixel_cli.video.encoders.lossless_options`). ``preset``: x264/x265's speed preset
    (default by frame size, :data:`~subpixel_cli.video.encoders.PRESETS`).
    """

    codec: str = "auto"
    crf: int | None = None
    start: float | None = None
    end: float | None = None
    fps: Fraction | None = None
    pix_fmt: str | None = None
    lossless: bool = False
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.start < 0:
            raise UsageError(f"--start {self.start}: must not be negative")
        if self.end is not None and self.end <= (self.start or 0):
            raise UsageError(f"--end {self.end}: must be after --start ({self.start or 0})")
        if self.fps is not None and self.fps <= 0:
            raise UsageError(f"--fps {self.fps}: must be positive")
        if self.lossless and self.crf is not None:
            raise UsageError("--lossless and --crf exclude each other: lossless has no quality setting")
        if self.preset is not None and self.preset not in X264_PRESETS:
            raise UsageError(f"--preset {self.preset}: x264/x265 presets are {', '.join(X264_PRESETS)}")


def parse_time(text: str | None) -> float | None:
    """``"12.5"``, ``"1:02"`` or ``"00:01:02.5"`` -> seconds."""
    if text is None:
        return None
    parts = text.strip().split(":")
    try:
        if len(parts) > 3 or any(p.strip() == "" for p in parts):
            raise ValueError
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"bad time {text!r}: use seconds (90, 12.5) or [HH:]MM:SS[.ms] (1:30, 00:01:30.5)") from None
    if any(v < 0 or not math.isfinite(v) for v in values) or any(v >= 60 for v in values[1:]):
        raise UsageError(f"bad time {text!r}: use seconds (90, 12.5) or [HH:]MM:SS[.ms] (1:30, 00:01:30.5)")
    seconds = 0.0
    for v in values:
        seconds = seconds * 60 + v
    return seconds


def parse_rate(text: str | None) -> Fraction | None:
    """``"25"``, ``"29.97"`` or ``"30000/1001"`` -> a frame rate."""
    if text is None:
        return None
    try:
        rate = Fraction(text.strip()).limit_denominator(100_000)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"bad frame rate {text!r}: use 25, 29.97 or 30000/1001") from None
    if rate <= 0:
        raise UsageError(f"bad frame rate {text!r}: must be positive")
    return rate


def default_output(source: Path, scale: int, frames_dir: bool = False) -> Path:
    """``clip.mov`` -> ``clip_x2.mp4`` beside it (a folder ``clip_x2/`` for PNG frames)."""
    stem = source.name if source.is_dir() else source.stem
    return source.with_name(f"{stem}_x{scale}" + ("" if frames_dir else DEFAULT_SUFFIX))


def check_output(source: Path, target: Path, frames_dir: bool, force: bool) -> None:
    """Refuse, before any work, a target that exists (without ``force``) or is the input."""
    if target.resolve() == source.resolve():
        raise OutputError(f"{target}: the output would overwrite the input; choose another -o")
    if frames_dir:
        if target.exists() and not target.is_dir():
            raise OutputError(f"{target}: exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not force:
            raise OutputError(f"{target}: folder is not empty; use --force to write frames into it")
    elif target.is_dir():
        raise UsageError(f"-o {target}: is a folder; give the video a file name (-o {target / 'NAME.mp4'}), "
                         f"or write PNG frames into it with --frames-dir {target}")
    elif target.exists() and not force:
        raise OutputError(f"{target}: already exists; use --force to overwrite it")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target.parent}: is not a folder")
    if target.parent.is_dir():
        check_folder_writable(target.parent)
