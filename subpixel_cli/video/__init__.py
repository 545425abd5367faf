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

The package's parts: :mod:`~subpixel_cli.video.options` (options and the checks before any work),
:mod:`~subpixel_cli.video.reading` (a video file or a folder of frames in),
:mod:`~subpixel_cli.video.colour` (YUV <-> RGB, HDR10 metadata), :mod:`~subpixel_cli.video.encoders`
(encoder, pixel format and depth, quality, lossless), :mod:`~subpixel_cli.video.extras` (chapters,
attachments, tags, dispositions), :mod:`~subpixel_cli.video.writing` (a video file or PNG frames
out) and :mod:`~subpixel_cli.video.pipeline` (the threads between them).

Frames are uint8 RGB from 8-bit sources and uint16 RGB from deeper ones (10/12-bit, HDR), which
the writer encodes back at the source's depth.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from subpixel_cli.errors import InputError, SubpixelError
from subpixel_cli.files import make_folder, remove_stale_temporaries
from subpixel_cli.runtime import is_out_of_memory, out_of_memory_message
from subpixel_cli.video.encoders import CODECS, CRF_DEFAULTS, PRESETS
from subpixel_cli.video.options import VideoOptions, check_output, default_output, parse_rate, parse_time
from subpixel_cli.video.pipeline import FrameUpscaler, Pipeline, Progress
from subpixel_cli.video.reading import FileReader, Frame, open_reader
from subpixel_cli.video.writing import FolderWriter, VideoWriter, Writer, WriterStats

__all__ = [
    "CODECS", "CRF_DEFAULTS", "PRESETS", "FileReader", "Frame", "FrameUpscaler", "Progress", "VideoOptions",
    "VideoResult", "WriterStats", "check_output", "default_output", "parse_rate", "parse_time", "upscale_video",
]


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
    data_streams_copied: int = 0
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
        reader = stack.enter_context(open_reader(source, options))
        size = (reader.width * upscaler.scale, reader.height * upscaler.scale)
        writer: Writer
        if frames_dir:
            writer = stack.enter_context(FolderWriter(target))
        else:
            writer = stack.enter_context(VideoWriter(target, options, reader, size))
        try:
            Pipeline(reader, upscaler, writer, batch_size, progress).run()
        except Exception as exc:  # the one out-of-memory message, as `subpixel upscale` gives it
            if not is_out_of_memory(exc):
                raise
            plan = getattr(upscaler, "plan", None)
            raise SubpixelError(out_of_memory_message(plan.tile if plan else None)) from None
        if writer.frames == 0:
            span = " between --start and --end" if options.start is not None or options.end is not None else ""
            raise InputError(f"{source}: no video frames decoded{span}")
        stats = writer.finish()
    return VideoResult(
        input=str(source), output=str(target), frames=stats.frames, frame_rate=float(reader.rate),
        size=size, input_size=(reader.width, reader.height), scale=upscaler.scale,
        seconds=time.perf_counter() - started, codec=stats.codec, pix_fmt=stats.pix_fmt,
        audio_streams_copied=stats.audio_streams_copied, audio_streams_reencoded=stats.audio_streams_reencoded,
        subtitle_streams_copied=stats.subtitle_streams_copied, data_streams_copied=stats.data_streams_copied,
        streams_dropped=stats.streams_dropped,
        notes=reader.notes + stats.notes, complete=not reader.truncated,
    )
