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
from typing import TYPE_CHECKING, Any

from subpixel_cli.errors import InputError, OutputError, SubpixelError
from subpixel_cli.files import disk_full, make_folder, remove, remove_stale_temporaries
from subpixel_cli.runtime import is_out_of_memory, out_of_memory_message
from subpixel_cli.video.encoders import CODECS, CRF_DEFAULTS, PRESETS
from subpixel_cli.video.options import VideoOptions, check_output, default_output, parse_rate, parse_time
from subpixel_cli.video.pipeline import FrameUpscaler, Pipeline, Progress
from subpixel_cli.video.reading import FileReader, Frame, Reader, open_reader
from subpixel_cli.video.segments import (JOINABLE, SegmentWriter, SkipFinished, WorkFolder, finished_segments,
                                         join_segments, segment_lengths, segment_starts, work_folder)
from subpixel_cli.video.sharded import Part, Plan, check_parts, failed_part, from_rank_0, gather_parts, split_segments
from subpixel_cli.video.writing import FolderWriter, VideoWriter, Writer, WriterStats

if TYPE_CHECKING:
    from subpixel_cli.shard import Group

__all__ = [
    "CODECS", "CRF_DEFAULTS", "PRESETS", "FileReader", "Frame", "FrameUpscaler", "Progress", "VideoOptions",
    "VideoResult", "WriterStats", "check_output", "default_output", "parse_rate", "parse_time", "stopped_note",
    "upscale_video",
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
    segments: int = 1  # pieces the work was cut into (see :mod:`~subpixel_cli.video.segments`)
    segments_resumed: int = 0  # of them finished by an earlier, stopped run
    frames_upscaled: int | None = None  # by this run (fewer than ``frames`` when it resumed)
    segments_per_process: list[int] | None = None  # under torchrun: segments each rank upscaled in this run

    @property
    def speed(self) -> float:
        """Frames this run upscaled per second of wall-clock time, end to end."""
        frames = self.frames if self.frames_upscaled is None else self.frames_upscaled
        return frames / self.seconds if self.seconds > 0 else 0.0

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
    resume: bool = True,
    group: Group | None = None,
) -> VideoResult | None:
    """Upscale the video (or folder of frames) ``source`` into ``target``.

    ``target`` is a video file, or with ``frames_dir`` a folder of numbered PNGs. It is written
    under a temporary name and renamed when complete; on any error or ``KeyboardInterrupt`` the
    temporary output is removed and the exception propagates. ``progress(done, total)`` is called
    from this thread with the frames written so far and the expected total (``None`` if unknown).

    A video file made from a whole video file is made in segments (see
    :mod:`~subpixel_cli.video.segments`): a run stopped any way continues, when started again, from
    the first unfinished segment; ``resume=False`` starts over.

    Under torchrun, ``group`` (from :func:`subpixel_cli.shard.joined`) shares the segments among
    its processes (:mod:`~subpixel_cli.video.sharded`): rank 0 returns the result, the others
    ``None``. An output that is not made in segments is made by rank 0 alone, with a note.
    """
    options = options or VideoOptions()
    source, target = Path(source), Path(target)
    try:
        return _upscale_video(upscaler, source, target, options, frames_dir, force, batch_size, progress, resume, group)
    except Exception as exc:
        if not disk_full(exc):
            raise
        if not finished_segments(target):
            remove(work_folder(target))  # nothing in it worth keeping
        raise OutputError(_disk_full_message(target)) from None


def stopped_note(target: Path) -> str:
    """What a stopped run (Ctrl-C) leaves for the next one: finished segments, or nothing."""
    kept = finished_segments(target)
    if kept:
        return (f"{kept} finished segment{'s' if kept > 1 else ''} kept in {work_folder(target)}/; "
                "run the same command again to continue from them")
    return "nothing finished was kept; run the same command again to start over"


def _disk_full_message(target: Path) -> str:
    """The line for a full disk: what is kept for a re-run (finished segments), or that nothing is."""
    kept = finished_segments(target)
    if kept:
        return (f"{target}: cannot write (No space left on device); free some space and run the same command "
                f"again: it resumes from the {kept} finished segment{'s' if kept > 1 else ''} kept in "
                f"{work_folder(target)}/")
    return f"{target}: cannot write (No space left on device); nothing was kept: free some space and run again"


def _upscale_video(upscaler: FrameUpscaler, source: Path, target: Path, options: VideoOptions, frames_dir: bool,
                   force: bool, batch_size: int, progress: Progress | None, resume: bool,
                   group: Group | None) -> VideoResult | None:
    started = time.perf_counter()
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        opened = _open(upscaler, source, target, options, frames_dir, force, group)
        if opened is None:
            return None  # not rank 0, and rank 0 does the whole job or failed (and says why)
        reader, size, segmented = opened
        stack.enter_context(reader)
        writer: Writer
        if segmented:
            return _upscale_segmented(upscaler, reader, source, target, options, size, batch_size, progress, resume,
                                      started, group, force)
        if group is not None:
            notes.append(f"made in one pass, not in segments, so process 0 did it alone and the other "
                         f"{group.world - 1} had nothing to do (segments need a whole video file into a video "
                         f"file, without --start/--end, with {', '.join(sorted(JOINABLE))})")
        if frames_dir:
            writer = stack.enter_context(FolderWriter(target))
        else:
            writer = stack.enter_context(VideoWriter(target, options, reader, size, replace=force))
        _run(upscaler, reader, writer, batch_size, progress)
        if writer.frames == 0:
            span = " between --start and --end" if options.start is not None or options.end is not None else ""
            raise InputError(f"{source}: no video frames decoded{span}")
        stats = writer.finish()
    return _result(upscaler, reader, source, target, size, started, stats, notes + reader.notes + stats.notes)


def _open(upscaler: FrameUpscaler, source: Path, target: Path, options: VideoOptions, frames_dir: bool, force: bool,
          group: Group | None) -> tuple[Reader, tuple[int, int], bool] | None:
    """The checked output, the opened source, the output size and whether to work in segments.
    In a group rank 0 checks, cleans up and decides, then tells the others: they open the
    source only to share its segments, and get ``None`` when rank 0 works alone or failed."""
    if group is not None and not group.main:
        if not from_rank_0(group, None):
            return None
        reader = open_reader(source, options)
        reader.planar = _stays_planar(upscaler, reader, options, frames_dir)
        return reader, (reader.width * upscaler.scale, reader.height * upscaler.scale), True
    try:
        check_output(source, target, frames_dir, force)
        make_folder(target.parent)
        remove_stale_temporaries(target, time.time())
        reader = open_reader(source, options)
    except Exception:
        if group is not None:
            from_rank_0(group, None)
        raise
    size = (reader.width * upscaler.scale, reader.height * upscaler.scale)
    reader.planar = _stays_planar(upscaler, reader, options, frames_dir)
    try:
        segmented = _segmentable(reader, target, options, size, frames_dir)
    except BaseException:
        reader.__exit__(None, None, None)
        if group is not None:
            from_rank_0(group, None)
        raise
    if group is not None:
        from_rank_0(group, segmented)
    return reader, size, segmented


def _stays_planar(upscaler: FrameUpscaler, reader: Reader, options: VideoOptions, frames_dir: bool) -> bool:
    """Whether frames go from decoder to encoder without leaving YCbCr: a Y model (its network
    sees the decoded Y plane, the chroma is resized) on an 8-bit limited-range 4:2:0 video file
    into a 4:2:0 video file. Saves two colour conversions per frame and the RGB work at high
    resolution. ``--lossless`` keeps RGB: it promises the model's RGB frames exactly."""
    takes = getattr(upscaler, "takes_i420", False)
    return (bool(takes) and not frames_dir and not options.lossless and options.pix_fmt in (None, "yuv420p")
            and isinstance(reader, FileReader) and reader.planar_ok())


def _result(upscaler: FrameUpscaler, reader: Any, source: Path, target: Path, size: tuple[int, int], started: float,
            stats: WriterStats, notes: list[str], complete: bool | None = None, **segmented: Any) -> VideoResult:
    """The :class:`VideoResult` of a finished run from what its writer reports."""
    return VideoResult(
        input=str(source), output=str(target), frames=stats.frames, frame_rate=float(reader.rate),
        size=size, input_size=(reader.width, reader.height), scale=upscaler.scale,
        seconds=time.perf_counter() - started, codec=stats.codec, pix_fmt=stats.pix_fmt,
        audio_streams_copied=stats.audio_streams_copied, audio_streams_reencoded=stats.audio_streams_reencoded,
        subtitle_streams_copied=stats.subtitle_streams_copied, data_streams_copied=stats.data_streams_copied,
        streams_dropped=stats.streams_dropped, notes=list(dict.fromkeys(notes)),
        complete=not reader.truncated if complete is None else complete, **segmented,
    )


def _segmentable(reader: Any, target: Path, options: VideoOptions, size: tuple[int, int], frames_dir: bool) -> bool:
    """Whether to work in segments: a whole video file into a video file, with an encoder whose
    segments are known to join by stream copy. Opens the output's encoders once, so that a bad
    encoder or container fails before any work, as in one pass."""
    if frames_dir or not isinstance(reader, FileReader) or options.start is not None or options.end is not None:
        return False
    probe = VideoWriter(target, options, reader, size)
    probe.__exit__()
    return probe.stream.codec_context.name in JOINABLE


def _upscale_segmented(upscaler: FrameUpscaler, reader: FileReader, source: Path, target: Path, options: VideoOptions,
                       size: tuple[int, int], batch_size: int, progress: Progress | None, resume: bool,
                       started: float, group: Group | None, force: bool = False) -> VideoResult | None:
    """Upscale the unfinished segments (in a group, this process's share of them) into the work
    folder, then join them all into ``target`` (in a group, rank 0 does, once all are done)."""
    notes: list[str] = []
    planned = _plan(upscaler, reader, source, target, options, resume, notes, group)
    if planned is None:
        return None  # rank 0 could not make the work folder ready: it reports why
    work, plan = planned
    rank = group.rank if group is not None else 0
    if group is None:
        parts = [_upscale_part(upscaler, reader, work, plan, rank, options, size, batch_size, progress)]
    else:
        try:
            part = _upscale_part(upscaler, reader, work, plan, rank, options, size, batch_size, progress)
        except Exception as exc:  # noqa: BLE001 - handed to rank 0, so that no process waits for this one in vain
            part = failed_part(rank, exc)
        gathered = gather_parts(group, part)
        if gathered is None:
            return None
        parts = gathered
        check_parts(parts, work.path, sum(work.done()), len(plan.starts))
    frames = sum(p.frames for p in parts)
    if frames == 0 and not any(plan.done):
        raise InputError(f"{source}: no video frames decoded")
    if any(plan.done):
        notes.append(f"resuming: {sum(plan.done)} of {len(plan.done)} segments done")
    stats = join_segments(work, reader, options, target, size, replace=force)
    return _result(upscaler, reader, source, target, size, started, stats,
                   notes + reader.notes + [n for p in parts for n in p.notes] + stats.notes,
                   complete=not any(p.truncated for p in parts), segments=len(plan.done),
                   segments_resumed=sum(plan.done), frames_upscaled=frames,
                   segments_per_process=None if group is None else [len(p.segments) for p in parts])


def _plan(upscaler: FrameUpscaler, reader: FileReader, source: Path, target: Path, options: VideoOptions,
          resume: bool, notes: list[str], group: Group | None) -> tuple[WorkFolder, Plan] | None:
    """The work folder, made ready by rank 0 (or the one process), and the plan it sends to the
    others once it is; ``None`` on the others if rank 0 failed."""
    if group is not None and not group.main:
        plan = from_rank_0(group, None)
        return None if plan is None else (WorkFolder(target, plan.starts), plan)
    try:
        starts = segment_starts(reader)
        work = WorkFolder.prepare(target, source, options, upscaler, starts, resume, notes, reader.planar)
        done = work.done()
        todo = [k for k, d in enumerate(done) if not d]
        plan = Plan(starts, done, split_segments(segment_lengths(starts, reader.total), todo,
                                                 1 if group is None else group.world))
    except Exception:
        if group is not None:
            from_rank_0(group, None)
        raise
    if group is not None:
        from_rank_0(group, plan)
    return work, plan


def _upscale_part(upscaler: FrameUpscaler, reader: FileReader, work: WorkFolder, plan: Plan, rank: int,
                  options: VideoOptions, size: tuple[int, int], batch_size: int, progress: Progress | None) -> Part:
    """Upscale this process's segments of ``plan`` into the work folder. The process with the last
    segment to do reads the source to its end (as one pass does, to notice a truncated source);
    the others stop after their own last segment."""
    mine = plan.parts[rank]
    if not mine:
        return Part(rank)
    others = [k not in mine for k in range(len(plan.starts))]
    read_to_end = mine[-1] == max(k for part in plan.parts for k in part)
    skipping = SkipFinished(reader, plan.starts, others, read_to_end)
    with SegmentWriter(work, options, skipping, size) as writer:
        _run(upscaler, skipping, writer, batch_size, progress)
        upscaled = writer.finish()
    return Part(rank, mine, upscaled.frames, (reader.notes if rank else []) + upscaled.notes, reader.truncated)


def _run(upscaler: FrameUpscaler, reader: Any, writer: Writer, batch_size: int, progress: Progress | None) -> None:
    try:
        Pipeline(reader, upscaler, writer, batch_size, progress).run()
    except Exception as exc:  # the one out-of-memory message, as `subpixel upscale` gives it
        if not is_out_of_memory(exc):
            raise
        plan = getattr(upscaler, "plan", None)
        raise SubpixelError(out_of_memory_message(plan.tile if plan else None)) from None
