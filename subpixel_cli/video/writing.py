"""Writers: upscaled frames (and copied packets) into a video file, or into a folder of PNGs."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from subpixel_cli.errors import OutputError
from subpixel_cli.files import move_into_place, temporary_path
from subpixel_cli.video.colour import (HDR_TRANSFERS, MATRIX, RANGE_JPEG, RANGE_MPEG, SWS_FLAGS, input_colour,
                                      output_colour)
from subpixel_cli.video.encoders import (LOSSLESS, audio_rate, bit_depth, check_preset, format_for, hdr_options,
                                         lossless_pix_fmt, merge_params, pick_encoder, pick_lossless_encoder,
                                         pick_pix_fmt, quality_options)
from subpixel_cli.video.extras import copy_container_extras, copy_stream_extras
from subpixel_cli.video.options import VideoOptions
from subpixel_cli.video.reading import Reader, ffmpeg_reason

FRAME_PATTERN = "frame_{:06d}.png"  # names written by frames_dir output, numbered from 1
# Muxers whose data streams (KLV, SCTE-35…) are copied from an input of the same kind; others
# refuse data codecs when the header is written, which would fail the whole run.
DATA_MUXERS = {"mpegts"}


@dataclass(frozen=True)
class WriterStats:
    """What a writer put into its finished output."""

    codec: str
    pix_fmt: str
    frames: int
    audio_streams_copied: int = 0
    audio_streams_reencoded: int = 0
    subtitle_streams_copied: int = 0
    data_streams_copied: int = 0
    streams_dropped: int = 0
    notes: list[str] = field(default_factory=list)  # choices that differ from what was asked, streams left out


class Writer(contextlib.AbstractContextManager):
    """Takes upscaled frames and passed-through packets on the writer thread."""

    frames: int = 0  # written so far (read by the main thread for progress)
    notes: list[str]

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """End of input (writer thread): drain the encoders."""

    def finish(self) -> WriterStats:
        """Close and move the complete output into place (main thread); what was written."""
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        """Remove whatever is still under the temporary name (after an error)."""


class VideoWriter(Writer):
    """Encodes frames and muxes them with the copied streams into a temporary file."""

    def __init__(self, target: Path, options: VideoOptions, reader: Reader, size: tuple[int, int],
                 template: Any = None, replace: bool = True) -> None:
        """``template``: a video stream whose packets are copied (:meth:`mux_copied_video`) instead
        of frames encoded, for joining segments. ``replace``: whether the finished file may replace
        one at ``target`` (``--force``); without it one that appeared meanwhile is kept."""
        self.target, self.notes, self.frames, self.replace = target, [], 0, replace
        self.copying = template is not None
        self.audio_copied = self.audio_reencoded = self.subs_copied = self.data_copied = self.dropped = 0
        self.tmp = temporary_path(target)
        try:
            self.container = av.open(str(self.tmp), "w", format=format_for(target))
            self.stream = self._add_video(options, reader, size) if template is None else self._add_copy(template, reader)
            self.routes: dict[int, tuple[str, Any]] = self._add_passthrough(reader)
            if reader.container is not None:  # chapters, attachments, tags (not for a folder of frames)
                copy_stream_extras(reader.stream, self.stream)
                copy_container_extras(reader.container, self.container, reader.offset, reader.end, self.notes)
            self.container.start_encoding()  # opens the encoders now, so a bad one fails before any work
        except av.error.FFmpegError as exc:
            self._discard()
            raise OutputError(f"{target}: cannot start writing ({ffmpeg_reason(exc)})") from None
        except BaseException:
            self._discard()
            raise

    def _add_video(self, options: VideoOptions, reader: Reader, size: tuple[int, int]) -> Any:
        if options.lossless:
            encoder = pick_lossless_encoder(options.codec, self.container, self.notes, reader.depth)
        else:
            encoder = pick_encoder(options.codec, self.container, self.notes, reader.depth)
        rate = reader.rate.limit_denominator(100_000)
        stream = self.container.add_stream(encoder, rate=rate)
        stream.width, stream.height = size
        if options.lossless:
            stream.pix_fmt = lossless_pix_fmt(encoder, size, self.notes, reader.depth, reader.chroma, options.pix_fmt)
        else:
            stream.pix_fmt = pick_pix_fmt(encoder, size, self.notes, reader.depth, options.pix_fmt)
        stream.codec_context.time_base = reader.time_base  # keep every frame's own timestamp (VFR)
        stream.time_base = reader.time_base
        if reader.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = reader.sample_aspect_ratio
        if reader.rotation:
            stream.set_display_rotation(reader.rotation)  # shown upright, as the input is
        if reader.planar:  # the frames stay in the source's YCbCr: they keep its matrix, now tagged
            self.matrix, self.full_range = input_colour(reader.colour.matrix, reader.colour.range, "yuv420p", reader.height)
        else:
            self.matrix, self.full_range = output_colour(reader.colour, size[1])
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range = self.matrix, RANGE_JPEG if self.full_range else RANGE_MPEG
        ctx.color_primaries, ctx.color_trc = reader.colour.primaries, reader.colour.trc
        if reader.colour.trc in HDR_TRANSFERS and bit_depth(stream.pix_fmt) <= 8:
            self.notes.append(f"{stream.pix_fmt} is 8-bit but the video is {HDR_TRANSFERS[reader.colour.trc]} HDR: "
                              "expect banding (H.264 or HEVC in .mkv/.mp4 keep 10 bits)")
        check_preset(encoder, options.preset)
        if options.lossless:
            quality = {**LOSSLESS[encoder], **({"preset": options.preset} if options.preset else {})}
        else:
            quality = quality_options(encoder, options.crf, stream, rate, options.preset)
        stream.options = merge_params(quality, hdr_options(encoder, reader.hdr, self.notes))
        return stream

    def _add_copy(self, template: Any, reader: Reader) -> Any:
        stream = self.container.add_stream_from_template(template)
        stream.time_base = template.time_base
        self.matrix, self.full_range = None, False  # nothing is encoded
        if reader.rotation:
            stream.set_display_rotation(reader.rotation)
        return stream

    def mux_copied_video(self, packet: Any) -> None:
        """One packet of an encoded segment, copied unchanged."""
        packet.stream = self.stream
        self.container.mux(packet)
        self.frames += 1

    def _add_passthrough(self, reader: Reader) -> dict[int, tuple[str, Any]]:
        """Copy each audio and subtitle stream the container can hold; re-encode audio it cannot.
        Data streams (KLV, timecodes) are copied between containers of one kind that take them."""
        routes: dict[int, tuple[str, Any]] = {}
        fmt = self.container.format.name.split(",")[0]
        for s in getattr(reader, "passthrough", []):
            if s.type == "data":
                if fmt not in DATA_MUXERS or reader.container.format.name.split(",")[0] != fmt:
                    self.dropped += 1
                    self.notes.append(f"data stream {s.index} not copied: only {', '.join(sorted(DATA_MUXERS))} "
                                      "to the same kind of container carries data streams")
                    continue
                routes[s.index] = ("copy", self.container.add_stream_from_template(s))
                self.data_copied += 1
                continue
            try:
                out = self.container.add_stream_from_template(s)
                routes[s.index] = ("copy", out)
                if s.type == "audio":
                    self.audio_copied += 1
                else:
                    self.subs_copied += 1
            except ValueError:
                name = s.codec_context.name if s.codec_context else s.type
                if s.type == "audio" and self.container.default_audio_codec not in (None, "none"):
                    codec = self.container.default_audio_codec
                    ctx = s.codec_context
                    out = self.container.add_stream(codec, rate=audio_rate(codec, ctx.sample_rate), layout=ctx.layout.name)
                    routes[s.index] = ("encode", out)
                    self.audio_reencoded += 1
                    self.notes.append(f"audio stream {s.index} ({name}) re-encoded to {codec}: {fmt} cannot hold {name} "
                                      "(use .mkv to copy it unchanged)")
                else:
                    self.dropped += 1
                    self.notes.append(f"{s.type} stream {s.index} ({name}) dropped: {fmt} cannot hold it (use .mkv)")
                    continue
            copy_stream_extras(s, out)
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
        for pixels, p in zip(frames, pts):
            frame = self._frame(pixels, full)
            frame.pts, frame.time_base = p, self.stream.codec_context.time_base
            mux(self.stream.encode(frame))
            self.frames += 1

    def _frame(self, pixels: np.ndarray, full: str) -> av.VideoFrame:
        """An upscaled frame (RGB, or I420 planes) in the stream's pixel format."""
        if pixels.ndim == 2:  # I420 planes, in the output's matrix and range already
            frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
            if frame.format.name != self.stream.pix_fmt:
                matrix = MATRIX[self.matrix]
                frame = frame.reformat(format=self.stream.pix_fmt, interpolation=SWS_FLAGS, src_colorspace=matrix,
                                       src_color_range=full, dst_colorspace=matrix, dst_color_range=full)
            return frame
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le" if pixels.dtype == np.uint16 else "rgb24")
        if not av.video.format.VideoFormat(self.stream.pix_fmt).is_rgb:
                frame = frame.reformat(format=self.stream.pix_fmt, src_color_range="JPEG", interpolation=SWS_FLAGS,
                                       dst_colorspace=MATRIX[self.matrix], dst_color_range=full)
        elif frame.format.name != self.stream.pix_fmt:  # RGB to RGB: a repacking, exact
            frame = frame.reformat(format=self.stream.pix_fmt)
        return frame

    def flush(self) -> None:
        if not self.copying:
            self.container.mux(self.stream.encode(None))
        for kind, out in self.routes.values():
            if kind == "encode":
                self.container.mux(out.encode(None))

    def finish(self) -> WriterStats:
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.target}: cannot finish writing ({ffmpeg_reason(exc)})") from None
        move_into_place(self.tmp, self.target, replace=self.replace)
        return WriterStats(self.stream.codec_context.name, self.stream.pix_fmt, self.frames,
                           audio_streams_copied=self.audio_copied, audio_streams_reencoded=self.audio_reencoded,
                           subtitle_streams_copied=self.subs_copied, data_streams_copied=self.data_copied,
                           streams_dropped=self.dropped, notes=list(self.notes))

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        self.tmp.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if self.tmp.exists():
            self._discard()


class FolderWriter(Writer):
    """Writes ``frame_000001.png``… into a temporary folder that becomes ``target`` at the end."""

    def __init__(self, target: Path) -> None:
        self.target, self.notes, self.frames = target, [], 0
        self.pix_fmt = "rgb24"  # rgb48le once 16-bit frames (from a deeper source) arrive
        self.tmp = temporary_path(target)
        self.tmp.mkdir()

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        for rgb in frames:  # 16-bit frames make 16-bit PNGs
            self.frames += 1
            if rgb.dtype == np.uint16:
                self.pix_fmt = "rgb48le"
            path = self.tmp / FRAME_PATTERN.format(self.frames)
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            try:
                if not ok:
                    raise OSError("PNG encoding failed")
                png.tofile(path)  # not cv2.imwrite: it crashes on file names that are not valid UTF-8
            except OSError as exc:
                raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def finish(self) -> WriterStats:
        if not self.target.exists():
            move_into_place(self.tmp, self.target)
        else:
            for path in sorted(self.tmp.iterdir()):  # --force into an existing folder: same names are replaced
                move_into_place(path, self.target / path.name)
            self.tmp.rmdir()
        return WriterStats("png", self.pix_fmt, self.frames, notes=list(self.notes))

    def __exit__(self, *exc: object) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
