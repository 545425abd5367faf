"""Video upscaling, streamed: demux → decode → batches → model → encode → mux.

Three threads overlap the work and bounded queues between them keep memory flat, however long
the video::

    reader thread           main thread                 writer thread
    demux, decode,   ──q──▶ batch_size frames ──q──▶    RGB → YUV, encode, mux;
    YUV → RGB               → Upscaler.upscale_batch    audio/subtitle packets copied

PyAV (FFmpeg) does all container and codec work: it keeps every frame's timestamp (so variable
frame rate survives), it reads each frame's colour range and matrix, and it can copy audio and
subtitle packets into the new file without re-encoding them. The output is written under a
temporary name beside the target and renamed only when complete, so an error or Ctrl-C never
leaves a partial file at the target path.

A folder of numbered frames can stand in for the input (``fps`` gives their rate) and a folder of
PNG frames for the output (``frames_dir=True``).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation

from subpixel_cli.errors import InputError, OutputError, UsageError
from subpixel_cli.files import make_folder, move_into_place, remove_stale_temporaries, temporary_path

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FRAME_PATTERN = "frame_{:06d}.png"  # names written by frames_dir output, numbered from 1
DEFAULT_SUFFIX = ".mp4"

# Friendly codec names -> FFmpeg encoders to try, in order.
CODECS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "libopenh264"),
    "hevc": ("libx265",),
    "h265": ("libx265",),
    "vp9": ("libvpx-vp9",),
    "av1": ("libsvtav1", "libaom-av1", "librav1e"),
    "mpeg4": ("mpeg4",),
    "ffv1": ("ffv1",),
}
# Encoders with a constant-quality knob, and the default quality when --crf is not given
# (a little better than each encoder's own default: upscaled detail is what the user is after).
CRF_DEFAULTS = {"libx264": 18, "libx265": 22, "libvpx-vp9": 30, "libsvtav1": 30, "libaom-av1": 30}
# x264/x265 speed presets. At "medium" the encoder took a quarter to a half of the CPU time of a
# ×2-×4 run on 2 cores (and is the bottleneck behind a GPU); "veryfast" is 2-3× quicker and keeps
# the CRF's quality, at the cost of somewhat larger files.
PRESETS = {"libx264": "veryfast", "libx265": "veryfast"}

# AVColorSpace (stream/frame tag) -> swscale's name for the YUV<->RGB matrix.
_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_SPC_BT709, _SPC_SMPTE170M, _RANGE_MPEG, _RANGE_JPEG, _PRI_BT709, _TRC_BT709 = 1, 6, 1, 2, 1, 1
# swscale flags for YUV<->RGB: exact rounding and full-resolution chroma (the default fast path is
# off by 1-2 levels per conversion, which adds up over decode + encode).
_SWS_FLAGS = int(Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
                 | Interpolation.FULL_CHR_H_INP)
_QUEUE_BATCHES = 2  # batches waiting between threads
_MAX_LOOSE_PACKETS = 256  # audio packets that travel without a frame before they are flushed
_POLL = 0.1  # seconds a blocked thread waits before checking for a stop


class FrameUpscaler(Protocol):
    """What :func:`upscale_video` needs of an upscaler (:class:`subpixel_cli.upscale.Upscaler`)."""

    scale: int

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """``N×H×W×3`` uint8 RGB -> ``N×rH×rW×3`` uint8 RGB."""
        ...


Progress = Callable[[int, "int | None"], None]


@dataclass
class VideoOptions:
    """How to encode and what part of the input to take.

    ``codec``: ``auto`` (H.264 when the container takes it, else the container's default), a name
    from :data:`CODECS` or any FFmpeg encoder. ``crf``: constant quality (lower is better).
    ``start``/``end``: seconds from the start of the input. ``fps``: the rate of a folder of frames.
    """

    codec: str = "auto"
    crf: int | None = None
    start: float | None = None
    end: float | None = None
    fps: Fraction | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.start < 0:
            raise UsageError(f"--start {self.start}: must not be negative")
        if self.end is not None and self.end <= (self.start or 0):
            raise UsageError(f"--end {self.end}: must be after --start ({self.start or 0})")
        if self.fps is not None and self.fps <= 0:
            raise UsageError(f"--fps {self.fps}: must be positive")


@dataclass
class VideoResult:
    """What :func:`upscale_video` wrote."""

    input: str
    output: str
    frames: int
    frame_rate: float
    size: tuple[int, int]
    input_size: tuple[int, int]
    scale: int
    seconds: float
    codec: str | None = None
    pix_fmt: str | None = None
    audio_streams_copied: int = 0
    audio_streams_reencoded: int = 0
    subtitle_streams_copied: int = 0
    streams_dropped: int = 0
    notes: list[str] = field(default_factory=list)
    complete: bool = True  # False: the input ended before its announced length (truncated); see notes

    @property
    def speed(self) -> float:
        """Frames per second of wall-clock time, end to end."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["size"], record["input_size"] = list(self.size), list(self.input_size)
        record["speed_fps"] = round(self.speed, 3)
        return record


# --- parsing helpers -----------------------------------------------------------------------


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
    elif target.exists() and not force:
        raise OutputError(f"{target}: already exists; use --force to overwrite it")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target.parent}: is not a folder")
    if target.parent.is_dir() and not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target.parent}: no permission to write there; choose the output with -o")


# --- the public entry point ----------------------------------------------------------------


def upscale_video(
    upscaler: FrameUpscaler,
    source: str | Path,
    target: str | Path,
    options: VideoOptions | None = None,
    *,
    frames_dir: bool = False,
    force: bool = False,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> VideoResult:
    """Upscale the video (or folder of frames) ``source`` into ``target``.

    ``target`` is a video file, or with ``frames_dir`` a folder of numbered PNGs. It is written
    under a temporary name and renamed when complete; on any error or ``KeyboardInterrupt`` the
    temporary output is removed and the exception propagates. ``progress(done, total)`` is called
    from this thread with the frames written so far and the expected total (``None`` if unknown).
    """
    options = options or VideoOptions()
    source, target = Path(source), Path(target)
    check_output(source, target, frames_dir, force)
    make_folder(target.parent)
    remove_stale_temporaries(target, time.time())
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(_open_reader(source, options))
        size = (reader.width * upscaler.scale, reader.height * upscaler.scale)
        writer: _Writer
        if frames_dir:
            writer = stack.enter_context(_FolderWriter(target))
        else:
            writer = stack.enter_context(_VideoWriter(target, options, reader, size))
        _Pipeline(reader, upscaler, writer, batch_size, progress).run()
        if writer.frames == 0:
            span = " between --start and --end" if options.start is not None or options.end is not None else ""
            raise InputError(f"{source}: no video frames decoded{span}")
        writer.finish()
    result = VideoResult(
        input=str(source), output=str(target), frames=writer.frames, frame_rate=float(reader.rate),
        size=size, input_size=(reader.width, reader.height), scale=upscaler.scale,
        seconds=time.perf_counter() - started, notes=reader.notes + writer.notes, complete=not reader.truncated,
    )
    writer.describe(result)
    return result


# --- readers: a video file, or a folder of frames -------------------------------------------


@dataclass
class _Frame:
    """One decoded frame: RGB pixels and its presentation time in the reader's time base."""

    rgb: np.ndarray
    pts: int


@dataclass
class _Colour:
    """How the input's YUV maps to RGB, and the tags the output will carry."""

    matrix: int = 2  # AVColorSpace of the input (2: unspecified)
    range: int = 0  # AVColorRange of the input (0: unspecified)
    primaries: int = 2
    trc: int = 2


class _Reader:
    """Frames (and packets to copy) in presentation order; iterated on the reader thread."""

    width: int
    height: int
    rate: Fraction  # nominal frame rate
    time_base: Fraction  # of the frames' pts
    total: int | None  # expected frames, for progress
    colour: _Colour
    notes: list[str]
    container: Any = None  # the input container, for copying streams (None for folders)
    sample_aspect_ratio: Fraction | None = None
    rotation: int = 0  # display rotation, counter-clockwise degrees (phone videos), kept as a tag
    truncated: bool = False  # the data ended before the length the container announced

    def items(self, stop: threading.Event) -> Iterator[_Frame | Any]:
        raise NotImplementedError

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _open_reader(source: Path, options: VideoOptions) -> _Reader:
    if source.is_dir():
        return _FolderReader(source, options)
    if options.fps is not None:
        raise UsageError("--fps sets the rate of a folder of frames; a video file keeps its own rate")
    return _FileReader(source, options)


class _FileReader(_Reader):
    """Demuxes and decodes a video file with PyAV; other streams' packets pass through untouched."""

    def __init__(self, source: Path, options: VideoOptions) -> None:
        self.source, self.options, self.notes = source, options, []
        try:
            self.container = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"{source}: cannot read as a video ({_reason(exc)})") from None
        try:
            self._inspect()
        except BaseException:
            self.container.close()
            raise

    def _inspect(self) -> None:
        c = self.container
        if c.format.name == "image2" or c.format.name.endswith("_pipe"):
            raise InputError(f"{self.source}: is a still image, not a video; use `subpixel upscale`")
        if not c.streams.video:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "no streams"
            raise InputError(f"{self.source}: no video stream ({kinds})")
        self.stream = c.streams.video[0]
        self.stream.thread_type = "AUTO"  # frame + slice threads in the decoder
        ctx = self.stream.codec_context
        self.width, self.height = ctx.width, ctx.height
        if not self.width or not self.height:
            raise InputError(f"{self.source}: the video stream has no frame size (unsupported or damaged)")
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate or Fraction(25)
        self.sample_aspect_ratio = ctx.sample_aspect_ratio
        self.rotation = _first_rotation(self.source)
        self.colour = _Colour(ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc)
        self.offset = (c.start_time or 0) / av.time_base + (self.options.start or 0.0)
        self.end = None if self.options.end is None else (c.start_time or 0) / av.time_base + self.options.end
        self.total = self._expected_frames()
        self.passthrough = [s for s in c.streams if s.index != self.stream.index and s.type in ("audio", "subtitle")]
        for s in c.streams:
            if s.index != self.stream.index and s not in self.passthrough:
                self.notes.append(f"stream {s.index} ({s.type}) not copied")

    def _expected_frames(self) -> int | None:
        s, duration = self.stream, None
        if s.duration:
            duration = float(s.duration * s.time_base)
        elif self.container.duration:
            duration = self.container.duration / av.time_base
        if s.frames and self.options.start is None and self.options.end is None:
            return s.frames
        if duration is None:
            return None
        span = min(duration, self.options.end or duration) - (self.options.start or 0.0)
        return max(0, round(span * float(self.rate)))

    def items(self, stop: threading.Event) -> Iterator[_Frame | Any]:
        """Frames from ``offset`` to ``end`` with pts shifted to start at 0, and the packets of
        ``passthrough`` streams in the same window, shifted alike, in demux order."""
        c, video = self.container, self.stream
        if self.options.start:
            c.seek(int(self.offset * av.time_base), backward=True)
        shift = {s.index: round(self.offset / s.time_base) for s in (video, *self.passthrough) if s.time_base}
        copy_ids = {s.index for s in self.passthrough}
        video_done, corrupt, reached = False, 0, None
        clock = _Clock(self.time_base, self.rate, round(self.offset / self.time_base), shift[video.index])
        for packet in c.demux(video, *self.passthrough):
            if stop.is_set():
                return
            if packet.pts is not None and packet.time_base:
                ends = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                reached = ends if reached is None else max(reached, ends)
            if packet.stream.index in copy_ids:
                if self._in_window(packet, shift):
                    yield packet
                elif video_done and packet.pts is not None and self.end is not None and packet.pts * packet.time_base >= self.end:
                    copy_ids.discard(packet.stream.index)
                if video_done and not copy_ids:
                    return
                continue
            if video_done:
                continue
            try:
                frames = video.decode(packet)
            except av.error.InvalidDataError:
                corrupt += 1
                continue
            for frame in frames:
                t = clock.time(frame.pts)
                if t < self.offset - 0.5 * clock.step * float(self.time_base):
                    continue
                if self.end is not None and t >= self.end:
                    video_done = True
                    break
                yield _Frame(self._to_rgb(frame), clock.output_pts())
            if video_done and not copy_ids:
                return
        if corrupt:
            self.notes.append(f"{corrupt} damaged video packet(s) skipped")
        self._check_complete(reached)

    def _check_complete(self, reached: float | None) -> None:
        """At the end of the file: flag data that stops well short of the length the headers
        announce (a copy cut short, a full disk, a recording that was killed)."""
        c, streams = self.container, (self.stream, *self.passthrough)
        ends = [float(((s.start_time or 0) + s.duration) * s.time_base) for s in streams if s.duration and s.time_base]
        announced = max(ends) if ends else ((c.start_time or 0) + c.duration) / av.time_base if c.duration else None
        if announced is None or reached is None:
            return
        expected = announced if self.end is None else min(announced, self.end)
        start = (c.start_time or 0) / av.time_base
        if expected - reached > max(0.5, 0.05 * (announced - start)):
            self.truncated = True
            self.notes.append(f"the input ends at {reached - start:.2f} s of the {announced - start:.2f} s its header "
                              "announces (truncated or damaged): the frames up to there were upscaled")

    def _in_window(self, packet: Any, shift: dict[int, int]) -> bool:
        if packet.size == 0 or packet.dts is None:
            return False  # a flush packet, or one no muxer can place
        if packet.pts is not None:
            t = float(packet.pts * packet.time_base)
            ends = t + float((packet.duration or 0) * packet.time_base)
            # Without --start everything before the end is kept, encoder priming packets included.
            if (self.options.start and ends <= self.offset) or (self.end is not None and t >= self.end):
                return False
        off = shift.get(packet.stream.index, 0)
        if packet.pts is not None:
            packet.pts -= off
        packet.dts -= off
        return True

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as ``H×W×3`` RGB, converted with its own range and matrix (see :func:`_input_colour`)."""
        kwargs: dict[str, Any] = {}
        if not frame.format.is_rgb and frame.format.name not in ("gray", "gray8"):
            matrix, full = _input_colour(frame.colorspace, frame.color_range, frame.format.name, frame.height)
            kwargs = {"src_colorspace": _MATRIX.get(matrix, "ITU601"), "src_color_range": "JPEG" if full else "MPEG",
                      "dst_color_range": "JPEG"}
        if (frame.width, frame.height) != (self.width, self.height):
            kwargs.update(width=self.width, height=self.height)  # a mid-stream size change: back to the first size
        return frame.to_ndarray(format="rgb24", interpolation=_SWS_FLAGS, **kwargs)

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _first_rotation(source: Path) -> int:
    """The display rotation of the first frame (0 if none or unreadable); a separate open, so
    the main reader starts untouched."""
    try:
        with av.open(str(source), metadata_errors="ignore") as c:
            return round(next(c.decode(video=0)).rotation or 0) % 360
    except (av.error.FFmpegError, StopIteration, OSError, ValueError):
        return 0


class _Clock:
    """Output timestamps for decoded frames: synthesised where a raw stream has none, shifted so
    the part taken starts at 0, and strictly increasing (encoders refuse anything else)."""

    def __init__(self, time_base: Fraction, rate: Fraction, first_pts: int, shift: int) -> None:
        self.time_base, self.first_pts, self.shift = time_base, first_pts, shift
        self.step = max(1, round(1 / (rate * time_base)))  # one nominal frame, in time-base units
        self.src_pts: int | None = None
        self.last_pts: int | None = None

    def time(self, pts: int | None) -> float:
        """Take the next frame's pts (None: one nominal frame after the last); its time in seconds."""
        if pts is None:
            pts = self.src_pts + self.step if self.src_pts is not None else self.first_pts
        self.src_pts = pts
        return float(pts * self.time_base)

    def output_pts(self) -> int:
        """The output pts of the frame last given to :meth:`time`."""
        pts = max(0, self.src_pts - self.shift)
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        return pts


def _input_colour(colorspace: int, color_range: int, pix_fmt: str, height: int) -> tuple[int, bool]:
    """The matrix (AVColorSpace) and full-range flag to decode with.

    Tags win. Untagged video gets FFmpeg's and players' guesses: BT.709 from 720 lines up,
    BT.601 below; limited range unless the pixel format is a full-range ``yuvj`` one.
    """
    matrix = colorspace if colorspace in _MATRIX else (_SPC_BT709 if height >= 720 else _SPC_SMPTE170M)
    full = color_range == _RANGE_JPEG or (color_range != _RANGE_MPEG and pix_fmt.startswith("yuvj"))
    return matrix, full


class _FolderReader(_Reader):
    """Numbered images from a folder, in natural order (``frame_2`` before ``frame_10``)."""

    def __init__(self, folder: Path, options: VideoOptions) -> None:
        if options.fps is None:
            raise UsageError(f"{folder} is a folder of frames: give their rate with --fps (e.g. --fps 25)")
        if options.start is not None or options.end is not None:
            raise UsageError("--start/--end apply to video files; pick the frames by moving them into a folder")
        self.folder, self.notes = folder, []
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                            key=_natural_key)
        if not self.files:
            raise InputError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder")
        first = self._read(self.files[0])
        self.height, self.width = first.shape[:2]
        self.rate = options.fps
        self.time_base = 1 / options.fps
        self.total = len(self.files)
        self.colour = _Colour(primaries=_PRI_BT709, trc=_TRC_BT709)  # sRGB pictures: BT.709 primaries

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        # From bytes: cv2.imread crashes the process on file names that are not valid UTF-8.
        try:
            data = np.fromfile(path, np.uint8)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        pixels = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if pixels is None:
            raise InputError(f"{path}: cannot read as an image")
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)

    def items(self, stop: threading.Event) -> Iterator[_Frame]:
        for i, path in enumerate(self.files):
            if stop.is_set():
                return
            rgb = self._read(path)
            if rgb.shape[:2] != (self.height, self.width):
                raise InputError(f"{path}: is {rgb.shape[1]}×{rgb.shape[0]}, the first frame {self.width}×{self.height}; "
                                 "all frames must be one size")
            yield _Frame(rgb, i)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


# --- writers: a video file, or a folder of PNGs --------------------------------------------


class _Writer:
    """Takes upscaled frames and passed-through packets on the writer thread."""

    frames: int = 0
    notes: list[str]

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """End of input (writer thread): drain the encoders."""

    def finish(self) -> None:
        """Close and move the complete output into place (main thread)."""
        raise NotImplementedError

    def describe(self, result: VideoResult) -> None:
        pass

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        """Remove whatever is still under the temporary name (after an error)."""


class _VideoWriter(_Writer):
    """Encodes frames and muxes them with the copied streams into a temporary file."""

    def __init__(self, target: Path, options: VideoOptions, reader: _Reader, size: tuple[int, int]) -> None:
        self.target, self.notes, self.frames = target, [], 0
        self.audio_copied = self.audio_reencoded = self.subs_copied = self.dropped = 0
        self.tmp = temporary_path(target)
        try:
            self.container = av.open(str(self.tmp), "w", format=_format_for(target))
            self.stream = self._add_video(options, reader, size)
            self.routes: dict[int, tuple[str, Any]] = self._add_passthrough(reader)
            self.container.start_encoding()  # opens the encoders now, so a bad one fails before any work
        except av.error.FFmpegError as exc:
            self._discard()
            raise OutputError(f"{target}: cannot start writing ({_reason(exc)})") from None
        except BaseException:
            self._discard()
            raise

    def _add_video(self, options: VideoOptions, reader: _Reader, size: tuple[int, int]) -> Any:
        encoder = _pick_encoder(options.codec, self.container, self.notes)
        rate = reader.rate.limit_denominator(100_000)
        stream = self.container.add_stream(encoder, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = _pick_pix_fmt(encoder, size, self.notes)
        stream.codec_context.time_base = reader.time_base  # keep every frame's own timestamp (VFR)
        stream.time_base = reader.time_base
        if reader.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = reader.sample_aspect_ratio
        if reader.rotation:
            stream.set_display_rotation(reader.rotation)  # shown upright, as the input is
        self.matrix, self.full_range = _output_colour(reader, size[1])
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range = self.matrix, _RANGE_JPEG if self.full_range else _RANGE_MPEG
        ctx.color_primaries, ctx.color_trc = reader.colour.primaries, reader.colour.trc
        stream.options = _quality_options(encoder, options.crf, stream, rate)
        return stream

    def _add_passthrough(self, reader: _Reader) -> dict[int, tuple[str, Any]]:
        """Copy each audio and subtitle stream the container can hold; re-encode audio it cannot."""
        routes: dict[int, tuple[str, Any]] = {}
        for s in getattr(reader, "passthrough", []):
            try:
                out = self.container.add_stream_from_template(s)
                routes[s.index] = ("copy", out)
                if s.type == "audio":
                    self.audio_copied += 1
                else:
                    self.subs_copied += 1
            except ValueError:
                name = s.codec_context.name if s.codec_context else s.type
                fmt = self.container.format.name.split(",")[0]
                if s.type == "audio" and self.container.default_audio_codec not in (None, "none"):
                    codec = self.container.default_audio_codec
                    ctx = s.codec_context
                    out = self.container.add_stream(codec, rate=_audio_rate(codec, ctx.sample_rate), layout=ctx.layout.name)
                    routes[s.index] = ("encode", out)
                    self.audio_reencoded += 1
                    self.notes.append(f"audio stream {s.index} ({name}) re-encoded to {codec}: {fmt} cannot hold {name} "
                                      "(use .mkv to copy it unchanged)")
                else:
                    self.dropped += 1
                    self.notes.append(f"{s.type} stream {s.index} ({name}) dropped: {fmt} cannot hold it (use .mkv)")
                    continue
            out.metadata.update({k: v for k, v in s.metadata.items() if k in ("language", "title", "handler_name")})
        return routes

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        mux = self.container.mux
        for packet in packets:
            kind, out = self.routes.get(packet.stream.index, ("drop", None))
            if kind == "drop":
                continue
            if kind == "copy":
                packet.stream = out
                mux(packet)
            else:
                for frame in packet.stream.codec_context.decode(packet):
                    mux(out.encode(frame))
        full = "JPEG" if self.full_range else "MPEG"
        for rgb, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if not av.video.format.VideoFormat(self.stream.pix_fmt).is_rgb:
                frame = frame.reformat(format=self.stream.pix_fmt, src_color_range="JPEG", interpolation=_SWS_FLAGS,
                                       dst_colorspace=_MATRIX[self.matrix], dst_color_range=full)
            frame.pts, frame.time_base = p, self.stream.codec_context.time_base
            mux(self.stream.encode(frame))
            self.frames += 1

    def flush(self) -> None:
        self.container.mux(self.stream.encode(None))
        for kind, out in self.routes.values():
            if kind == "encode":
                self.container.mux(out.encode(None))

    def finish(self) -> None:
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.target}: cannot finish writing ({_reason(exc)})") from None
        move_into_place(self.tmp, self.target)

    def describe(self, result: VideoResult) -> None:
        result.codec, result.pix_fmt = self.stream.codec_context.name, self.stream.pix_fmt
        result.audio_streams_copied, result.audio_streams_reencoded = self.audio_copied, self.audio_reencoded
        result.subtitle_streams_copied, result.streams_dropped = self.subs_copied, self.dropped

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        self.tmp.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if self.tmp.exists():
            self._discard()


class _FolderWriter(_Writer):
    """Writes ``frame_000001.png``… into a temporary folder that becomes ``target`` at the end."""

    def __init__(self, target: Path) -> None:
        self.target, self.notes, self.frames = target, [], 0
        self.tmp = temporary_path(target)
        self.tmp.mkdir()

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        for rgb in frames:
            self.frames += 1
            path = self.tmp / FRAME_PATTERN.format(self.frames)
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            try:
                if not ok:
                    raise OSError("PNG encoding failed")
                png.tofile(path)  # not cv2.imwrite: it crashes on file names that are not valid UTF-8
            except OSError as exc:
                raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def finish(self) -> None:
        if not self.target.exists():
            move_into_place(self.tmp, self.target)
            return
        for path in sorted(self.tmp.iterdir()):  # --force into an existing folder: same names are replaced
            move_into_place(path, self.target / path.name)
        self.tmp.rmdir()

    def describe(self, result: VideoResult) -> None:
        result.codec, result.pix_fmt = "png", "rgb24"

    def __exit__(self, *exc: object) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


def _format_for(target: Path) -> str:
    """The FFmpeg muxer for ``target``'s suffix; an unknown suffix is a usage error."""
    fmt = _MUXERS.get(target.suffix.lower())
    if fmt is None:
        raise UsageError(f"{target}: unknown video suffix {target.suffix!r}; use one of {', '.join(sorted(_MUXERS))} "
                         "(or --frames-dir for PNG frames)")
    return fmt


_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
           ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".flv": "flv", ".ogv": "ogg", ".nut": "nut"}


def _pick_encoder(codec: str, container: Any, notes: list[str]) -> str:
    """An encoder that exists in this FFmpeg build and that the container can hold."""
    fmt = container.format.name.split(",")[0]
    supported = container.supported_codecs
    if codec == "auto":
        for name in (*CODECS["h264"], container.default_video_codec, "mpeg4"):
            if _encoder_exists(name) and _stream_codec(name) in supported:
                name = av.codec.Codec(name, "w").name  # "vp9" -> "libvpx-vp9"
                if _stream_codec(name) != "h264":
                    why = "this FFmpeg build has no H.264 encoder" if "h264" in supported else f"{fmt} cannot hold H.264"
                    notes.append(f"wrote {_stream_codec(name)} ({name}), not H.264: {why}; choose with --codec")
                return name
        raise UsageError(f"no video encoder available for {fmt} output; try an .mp4 or .mkv output")
    candidates = CODECS.get(codec.lower(), (codec,))
    found = [name for name in candidates if _encoder_exists(name)]
    if not found:
        known = ", ".join(n for n, encs in CODECS.items() if any(_encoder_exists(e) for e in encs))
        raise UsageError(f"--codec {codec}: no such encoder in this FFmpeg build (available: {known}, or an FFmpeg encoder name)")
    for name in found:
        if _stream_codec(name) in supported or not supported:
            return av.codec.Codec(name, "w").name
    raise UsageError(f"--codec {codec}: {fmt} cannot hold {_stream_codec(found[0])}; use an .mkv output or another codec")


def _encoder_exists(name: str) -> bool:
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        return False
    return codec.type == "video" and not name.endswith(("_nvenc", "_qsv", "_amf", "_vaapi", "_v4l2m2m", "_videotoolbox"))


def _stream_codec(encoder: str) -> str:
    """The codec an encoder produces (``libx264`` -> ``h264``), as containers name it."""
    return av.codec.Codec(encoder, "w").canonical_name if _encoder_exists(encoder) else encoder


def _pick_pix_fmt(encoder: str, size: tuple[int, int], notes: list[str]) -> str:
    """yuv420p where the encoder and the size allow; else the nearest the encoder has."""
    formats = [f.name for f in av.codec.Codec(encoder, "w").video_formats or []]
    odd = size[0] % 2 or size[1] % 2
    if "yuv420p" in formats and not odd:
        return "yuv420p"
    for choice in ("yuv444p", "yuv420p", "rgb24", "bgr0", "gbrp"):
        if choice in formats and not (odd and choice == "yuv420p"):
            if odd:
                notes.append(f"{size[0]}×{size[1]} is odd, so 4:2:0 chroma cannot be used: wrote {choice} "
                             "(some players cannot play it; an even scale avoids this)")
            return choice
    if formats:
        return formats[0]
    return "yuv420p"


def _output_colour(reader: _Reader, out_height: int) -> tuple[int, bool]:
    """The output's matrix (AVColorSpace) and range: the input's own where tagged; otherwise
    what a player guesses for the output size, written into the file so none has to guess."""
    c = reader.colour
    full = c.range == _RANGE_JPEG
    if c.matrix in _MATRIX:
        return c.matrix, full
    return (_SPC_BT709 if out_height >= 720 else _SPC_SMPTE170M), full


def _quality_options(encoder: str, crf: int | None, stream: Any, rate: Fraction) -> dict[str, str]:
    """Encoder options: constant quality where the encoder has it, else a generous bit rate."""
    if encoder in CRF_DEFAULTS:
        options = {"crf": str(crf if crf is not None else CRF_DEFAULTS[encoder])}
        if encoder == "libvpx-vp9":
            options["b"] = "0"  # constant-quality mode
        if encoder in PRESETS:
            options["preset"] = PRESETS[encoder]
        return options
    if crf is not None:
        raise UsageError(f"--crf does not apply to {encoder}; it works with {', '.join(CRF_DEFAULTS)}")
    if not av.codec.Codec(encoder, "w").lossless:
        stream.codec_context.bit_rate = int(0.25 * stream.width * stream.height * float(rate))  # ≈ 0.25 bit/pixel
    return {}


def _audio_rate(encoder: str, rate: int) -> int:
    """``rate`` if the encoder takes it, else the nearest rate above it that it does (Opus: 48 kHz)."""
    rates = av.codec.Codec(encoder, "w").audio_rates
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)


def _reason(exc: BaseException) -> str:
    """An FFmpeg error without its errno and file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() if isinstance(exc, av.error.FFmpegError) else text


# --- the pipeline --------------------------------------------------------------------------


class _Worker(threading.Thread):
    """A daemon thread that records its exception and raises the stop flag."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._stop_flag = work, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self._stop_flag.set()


class _Stopped(Exception):
    """Another thread stopped the pipeline."""


_END = object()


class _Pipeline:
    """reader thread → frames queue → main thread (model) → batches queue → writer thread."""

    def __init__(self, reader: _Reader, upscaler: FrameUpscaler, writer: _Writer, batch_size: int,
                 progress: Progress | None) -> None:
        self.reader, self.upscaler, self.writer = reader, upscaler, writer
        self.batch_size, self.progress = max(1, batch_size), progress
        self.stop = threading.Event()
        self.frames_q: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES * self.batch_size)
        self.batches_q: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.workers = [_Worker("subpixel-read", self._read, self.stop), _Worker("subpixel-write", self._write, self.stop)]

    def run(self) -> None:
        """Run to the end; on any error or Ctrl-C stop the threads, then re-raise."""
        self._report()  # 0 of the total, before the first batch
        for w in self.workers:
            w.start()
        try:
            self._infer()
            self._join()
        except _Stopped:
            pass  # a worker failed: its error is raised below, outside this handler
        except BaseException:
            self._shutdown()
            raise
        self._shutdown()
        self._raise_worker_error()

    def _read(self) -> None:
        for item in self.reader.items(self.stop):
            if not self._put(self.frames_q, item):
                return
        self._put(self.frames_q, _END)

    def _infer(self) -> None:
        """Gather ``batch_size`` frames, upscale them, hand them on with the packets read meanwhile."""
        frames: list[np.ndarray] = []
        pts: list[int] = []
        packets: list[Any] = []
        while True:
            item = self._get(self.frames_q)
            end = item is _END
            if isinstance(item, _Frame):
                frames.append(item.rgb)
                pts.append(item.pts)
            elif not end:
                packets.append(item)
            if not end and len(frames) < self.batch_size and len(packets) < _MAX_LOOSE_PACKETS:
                continue
            upscaled = self.upscaler.upscale_batch(np.stack(frames)) if frames else np.empty((0, 0, 0, 3), np.uint8)
            self._put_or_stop(self.batches_q, (upscaled, pts, packets))
            frames, pts, packets = [], [], []
            self._report()
            if end:
                self._put_or_stop(self.batches_q, _END)
                return

    def _write(self) -> None:
        while True:
            item = self._get(self.batches_q)
            if item is _END:
                self.writer.flush()
                return
            self.writer.write(*item)

    def _join(self) -> None:
        for w in self.workers:
            while w.is_alive():
                w.join(_POLL)
                self._report()
                if self.stop.is_set():
                    raise _Stopped
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.writer.frames, self.reader.total)

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Put unless the pipeline stops first; False if it did."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _put_or_stop(self, q: queue.Queue[Any], item: Any) -> None:
        if not self._put(q, item):
            raise _Stopped

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        raise _Stopped

    def _shutdown(self) -> None:
        self.stop.set()
        for w in self.workers:
            w.join()

    def _raise_worker_error(self) -> None:
        for w in self.workers:
            if w.error is not None:
                raise w.error
