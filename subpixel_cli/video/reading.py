"""Readers: frames (and the packets of streams to copy) from a video file or a folder of frames."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from subpixel_cli.errors import InputError, UsageError
from subpixel_cli.images import IMAGE_SUFFIXES, read_image, to_8bit
from subpixel_cli.video.colour import (MATRIX, PRI_BT709, SWS_FLAGS, TRC_BT709, Colour, Hdr, hdr_from_side_data,
                                      input_colour)
from subpixel_cli.video.encoders import bit_depth
from subpixel_cli.video.options import VideoOptions


@dataclass
class Frame:
    """One decoded frame and its presentation time in the reader's time base: ``H×W×3`` RGB
    pixels (uint8, or uint16 from a source deeper than 8 bits), or, from a reader that is
    :attr:`Reader.planar`, the ``(3H/2)×W`` uint8 I420 planes as decoded."""

    pixels: np.ndarray
    pts: int


class Reader(contextlib.AbstractContextManager):
    """Frames (and packets to copy) in presentation order; iterated on the reader thread."""

    width: int
    height: int
    rate: Fraction  # nominal frame rate
    time_base: Fraction  # of the frames' pts
    total: int | None  # expected frames, for progress
    colour: Colour
    notes: list[str]
    container: Any = None  # the input container, for copying streams (None for folders)
    sample_aspect_ratio: Fraction | None = None
    rotation: int = 0  # display rotation, counter-clockwise degrees (phone videos), kept as a tag
    truncated: bool = False  # the data ended before the length the container announced
    depth: int = 8  # bits per component of the source; above 8, frames are uint16 RGB (rgb48)
    chroma: str = "420"  # the source's chroma subsampling: "420", "422" or "444"
    hdr: Hdr | None = None  # mastering display and content light level of the first frame
    # Frames stay in YCbCr, as I420 planes: where they may (open_reader's planar: a Y model into
    # 4:2:0 video) and the source allows it (FileReader.planar_ok: 8-bit limited-range 4:2:0).
    planar: bool = False

    def items(self, stop: threading.Event) -> Iterator[Frame | Any]:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        pass


def open_reader(source: Path, options: VideoOptions, planar: bool = False) -> Reader:
    """A :class:`FolderReader` for a folder of frames, else a :class:`FileReader`; ``planar``:
    frames may stay in YCbCr (:attr:`Reader.planar`) where the source allows it."""
    if source.is_dir():
        return FolderReader(source, options)
    if options.fps is not None:
        raise UsageError("--fps sets the rate of a folder of frames; a video file keeps its own rate")
    return FileReader(source, options, planar)


class FileReader(Reader):
    """Demuxes and decodes a video file with PyAV; other streams' packets pass through untouched."""

    def __init__(self, source: Path, options: VideoOptions, planar: bool = False) -> None:
        self.source, self.options, self.notes = source, options, []
        try:
            self.container = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"{source}: cannot read as a video ({ffmpeg_reason(exc)})") from None
        try:
            self._inspect()
        except BaseException:
            self.container.close()
            raise
        self.planar = planar and self.planar_ok()

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
        self.rotation, self.hdr = _first_frame_tags(self.source)
        self.colour = Colour(ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc)
        self.depth = bit_depth(ctx.pix_fmt)
        self.chroma = next((sub for sub in ("444", "422") if sub in (ctx.pix_fmt or "")), "420")
        self.offset = (c.start_time or 0) / av.time_base + (self.options.start or 0.0)
        self.end = None if self.options.end is None else (c.start_time or 0) / av.time_base + self.options.end
        self.total = self._expected_frames()
        self.passthrough = [s for s in c.streams if s.index != self.stream.index and s.type in ("audio", "subtitle", "data")]
        for s in c.streams:
            if s.index != self.stream.index and s not in self.passthrough and s.type != "attachment":
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

    def items(self, stop: threading.Event) -> Iterator[Frame | Any]:
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
                yield Frame(self._to_i420(frame) if self.planar else self._to_rgb(frame), clock.output_pts())
            if video_done and not copy_ids:
                return
        if corrupt:
            self.notes.append(f"{corrupt} damaged video packet(s) skipped")
        self._check_complete(reached)

    def passthrough_packets(self) -> Iterator[Any]:
        """The packets of the ``passthrough`` streams alone, as :meth:`items` gives them (a separate
        demux from the start; for joining segments, whole files only)."""
        if not self.passthrough:
            return
        with av.open(str(self.source), metadata_errors="ignore") as c:
            streams = [c.streams[s.index] for s in self.passthrough]
            shift = {s.index: round(self.offset / s.time_base) for s in streams if s.time_base}
            for packet in c.demux(*streams):
                if self._in_window(packet, shift):
                    yield packet

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
        """The frame as ``H×W×3`` RGB, converted with its own range and matrix (see :func:`input_colour`):
        uint8 from 8-bit sources, uint16 (all 16 bits used) from deeper ones, so no level is lost."""
        kwargs: dict[str, Any] = {}
        if not frame.format.is_rgb and frame.format.name not in ("gray", "gray8"):
            matrix, full = input_colour(frame.colorspace, frame.color_range, frame.format.name, frame.height)
            kwargs = {"src_colorspace": MATRIX.get(matrix, "ITU601"), "src_color_range": "JPEG" if full else "MPEG",
                      "dst_color_range": "JPEG"}
        if (frame.width, frame.height) != (self.width, self.height):
            kwargs.update(width=self.width, height=self.height)  # a mid-stream size change: back to the first size
        return frame.to_ndarray(format="rgb48le" if self.depth > 8 else "rgb24", interpolation=SWS_FLAGS, **kwargs)

    def _to_i420(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame's I420 planes as decoded; a frame that changed size or format mid-stream is
        converted back to the first one's (limited range, the matrix left as it is)."""
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != (self.width, self.height):
            _, full = input_colour(frame.colorspace, frame.color_range, frame.format.name, frame.height)
            frame = frame.reformat(format="yuv420p", width=self.width, height=self.height, interpolation=SWS_FLAGS,
                                   src_color_range="JPEG" if full else "MPEG", dst_color_range="MPEG")
        return frame.to_ndarray()

    def planar_ok(self) -> bool:
        """Whether frames can stay in YCbCr: an even-sized 8-bit 4:2:0 limited-range source."""
        ctx = self.stream.codec_context
        _, full = input_colour(ctx.colorspace, ctx.color_range, ctx.pix_fmt or "", self.height)
        return ctx.pix_fmt == "yuv420p" and not full and self.width % 2 == 0 and self.height % 2 == 0

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _first_frame_tags(source: Path) -> tuple[int, Hdr]:
    """The display rotation (counter-clockwise degrees) and HDR metadata of the first frame
    (0 and none if unreadable); a separate open, so the main reader starts untouched."""
    try:
        with av.open(str(source), metadata_errors="ignore") as c:
            frame = next(c.decode(video=0))
            return round(frame.rotation or 0) % 360, hdr_from_side_data(frame.side_data)
    except (av.error.FFmpegError, StopIteration, OSError, ValueError):
        return 0, Hdr()


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


class FolderReader(Reader):
    """Numbered images from a folder, in natural order (``frame_2`` before ``frame_10``)."""

    def __init__(self, folder: Path, options: VideoOptions) -> None:
        if options.fps is None:
            raise UsageError(f"{folder} is a folder of frames: give their rate with --fps (e.g. --fps 25)")
        if options.start is not None or options.end is not None:
            raise UsageError("--start/--end apply to video files; pick the frames by moving them into a folder")
        self.folder, self.notes = folder, []
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                            key=_natural_key)
        if not self.files:
            raise InputError(f"{folder}: no frames ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        first = self._read(self.files[0])
        self.height, self.width = first.shape[:2]
        self.rate = options.fps
        self.time_base = 1 / options.fps
        self.total = len(self.files)
        self.colour = Colour(primaries=PRI_BT709, trc=TRC_BT709)  # sRGB pictures: BT.709 primaries

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        """A frame as ``H×W×3`` uint8 RGB: 16-bit rounded to 8 bits, grey repeated, alpha dropped."""
        pixels = to_8bit(read_image(path)).pixels
        return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels

    def items(self, stop: threading.Event) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            if stop.is_set():
                return
            rgb = self._read(path)
            if rgb.shape[:2] != (self.height, self.width):
                raise InputError(f"{path}: is {rgb.shape[1]}×{rgb.shape[0]}, the first frame {self.width}×{self.height}; "
                                 "all frames must be one size")
            yield Frame(rgb, i)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def ffmpeg_reason(exc: BaseException) -> str:
    """An FFmpeg error without its errno and file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() if isinstance(exc, av.error.FFmpegError) else text
