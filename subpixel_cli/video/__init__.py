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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from subpixel_cli.errors import InputError, OutputError, SubpixelError
from subpixel_cli.files import disk_full, make_folder, remove, remove_stale_temporaries
from subpixel_cli.runtime import is_out_of_memory, out_of_memory_message
from subpixel_cli.shard import Group, rank_0_decides
from subpixel_cli.video.encoders import CODECS, CRF_DEFAULTS, PRESETS
from subpixel_cli.video.options import VideoOptions, check_output, default_output, parse_rate, parse_time
from subpixel_cli.video.pipeline import FrameUpscaler, Pipeline, Progress
from subpixel_cli.video.reading import FileReader, Frame, Reader, open_reader
from subpixel_cli.video.segments import (JOINABLE, SegmentWriter, SkipFinished, WorkFolder, finished_segments,
                                         join_segments, segment_lengths, segment_starts, work_folder)
from subpixel_cli.video.sharded import Part, Plan, check_parts, failed_part, gather_parts, split_segments
from subpixel_cli.video.writing import FolderWriter, VideoWriter, Writer, WriterStats

__all__ = [
    "CODECS", "CRF_DEFAULTS", "PRESETS", "FileReader", "Frame", "FrameUpscaler", "Progress", "VideoOptions",
    "VideoResult", "WriterStats", "check_output", "default_output", "parse_rate", "parse_time", "stopped_note",
    "upscale_video", "wants_planar",
]


@dataclass(frozen=True, kw_only=True)
class VideoResult(WriterStats):
    """What :func:`upscale_video` wrote: what its writer reports (:class:`WriterStats`: codec,
    pixel format, frames, streams copied; ``notes`` here are the whole run's), and the run's own."""

    input: str
    output: str
    frame_rate: float
    size: tuple[int, int]
    input_size: tuple[int, int]
    scale: int
    seconds: float
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


@dataclass(frozen=True)
class _Job:
    """One :func:`upscale_video` call: what each of its steps needs."""

    upscaler: FrameUpscaler
    source: Path
    target: Path
    options: VideoOptions
    progress: Progress | None
    group: Group | None
    started: float
    force: bool = False  # the finished output may replace one at the target

    @property
    def rank(self) -> int:
        return self.group.rank if self.group is not None else 0


def upscale_video(
    upscaler: FrameUpscaler,
    source: str | Path,
    target: str | Path,
    options: VideoOptions | None = None,
    *,
    frames_dir: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    resume: bool = True,
    group: Group | None = None,
) -> VideoResult | None:
    """Upscale the video (or folder of frames) ``source`` into ``target``, ``upscaler.batch_size``
    frames at a time.

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
    job = _Job(upscaler, Path(source), Path(target), options or VideoOptions(), progress, group, time.perf_counter(),
               force)
    try:
        return _upscale_video(job, frames_dir, resume)
    except Exception as exc:
        if not disk_full(exc):
            raise
        if not finished_segments(job.target):
            remove(work_folder(job.target))  # nothing in it worth keeping
        raise OutputError(_disk_full_message(job.target)) from None


def _kept(target: Path) -> str | None:
    """'3 finished segments kept in .NAME.work/', or ``None`` when nothing finished is kept."""
    kept = finished_segments(target)
    return f"{kept} finished segment{'s' if kept > 1 else ''} kept in {work_folder(target)}/" if kept else None


def stopped_note(target: Path) -> str:
    """What a stopped run (Ctrl-C) leaves for the next one: finished segments, or nothing."""
    kept = _kept(target)
    if kept:
        return f"{kept}; run the same command again to continue from them"
    return "nothing finished was kept; run the same command again to start over"


def _disk_full_message(target: Path) -> str:
    """The line for a full disk: what is kept for a re-run (finished segments), or that nothing is."""
    kept, full = _kept(target), f"{target}: cannot write (No space left on device)"
    if kept:
        return f"{full}; free some space and run the same command again: it resumes from the {kept}"
    return f"{full}; nothing was kept: free some space and run again"


def _upscale_video(job: _Job, frames_dir: bool, resume: bool) -> VideoResult | None:
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        opened = _open(job, frames_dir)
        if opened is None:
            return None  # not rank 0, and rank 0 does the whole job or failed (and says why)
        reader, size, segmented = opened
        stack.enter_context(reader)
        writer: Writer
        if segmented:
            return _upscale_segmented(job, reader, size, resume)
        if job.group is not None:
            notes.append(f"made in one pass, not in segments, so process 0 did it alone and the other "
                         f"{job.group.world - 1} had nothing to do (segments need a whole video file into a video "
                         f"file, without --start/--end, with {', '.join(sorted(JOINABLE))})")
        if frames_dir:
            writer = stack.enter_context(FolderWriter(job.target))
        else:
            writer = stack.enter_context(VideoWriter(job.target, job.options, reader, size, replace=job.force))
        _run(job, reader, writer)
        if writer.frames == 0:
            span = " between --start and --end" if job.options.start is not None or job.options.end is not None else ""
            raise InputError(f"{job.source}: no video frames decoded{span}")
        stats = writer.finish()
    return _result(job, reader, size, stats, notes + reader.notes + stats.notes)


def _open(job: _Job, frames_dir: bool) -> tuple[Reader, tuple[int, int], bool] | None:
    """The checked output, the opened source, the output size and whether to work in segments.
    In a group rank 0 checks, cleans up and decides, then tells the others: they open the
    source only to share its segments, and get ``None`` when rank 0 works alone or failed."""
    planar = wants_planar(job.upscaler, job.options, frames_dir)
    opened: list[Reader] = []

    def decide() -> bool:
        check_output(job.source, job.target, frames_dir, job.force)
        make_folder(job.target.parent)
        remove_stale_temporaries(job.target, time.time())
        opened.append(open_reader(job.source, job.options, planar))
        try:
            return _segmentable(opened[0], job.target, job.options, _size(job, opened[0]), frames_dir)
        except BaseException:
            opened[0].__exit__(None, None, None)
            raise

    segmented = rank_0_decides(job.group, decide)
    if not opened:  # another process than rank 0: the source, only to share its segments
        if not segmented:
            return None
        opened.append(open_reader(job.source, job.options, planar))
    return opened[0], _size(job, opened[0]), bool(segmented)


def _size(job: _Job, reader: Reader) -> tuple[int, int]:
    return reader.width * job.upscaler.scale, reader.height * job.upscaler.scale


def wants_planar(upscaler: FrameUpscaler, options: VideoOptions, frames_dir: bool) -> bool:
    """Whether frames may go from decoder to encoder without leaving YCbCr, as far as the model
    and the output go: a Y model (its network sees the decoded Y plane, the chroma is resized)
    into a 4:2:0 video file. The reader decides for the source (8-bit limited-range 4:2:0:
    :meth:`~subpixel_cli.video.reading.FileReader.planar_ok`). Saves two colour conversions per
    frame and the RGB work at high resolution. ``--lossless`` keeps RGB: it promises the model's
    RGB frames exactly."""
    takes = getattr(upscaler, "takes_i420", False)
    return bool(takes) and not frames_dir and not options.lossless and options.pix_fmt in (None, "yuv420p")


def _result(job: _Job, reader: Reader, size: tuple[int, int], stats: WriterStats, notes: list[str],
            complete: bool | None = None, **segmented: Any) -> VideoResult:
    """The :class:`VideoResult` of a finished run from what its writer reports."""
    return VideoResult(
        **{**vars(stats), "notes": list(dict.fromkeys(notes))},
        input=str(job.source), output=str(job.target), frame_rate=float(reader.rate), size=size,
        input_size=(reader.width, reader.height), scale=job.upscaler.scale,
        seconds=time.perf_counter() - job.started,
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


def _upscale_segmented(job: _Job, reader: FileReader, size: tuple[int, int], resume: bool) -> VideoResult | None:
    """Upscale the unfinished segments (in a group, this process's share of them) into the work
    folder, then join them all into ``target`` (in a group, rank 0 does, once all are done)."""
    notes: list[str] = []
    planned = _plan(job, reader, resume, notes)
    if planned is None:
        return None  # rank 0 could not make the work folder ready: it reports why
    work, plan = planned
    if job.group is None:
        parts = [_upscale_part(job, reader, work, plan, size)]
    else:
        try:
            part = _upscale_part(job, reader, work, plan, size)
        except Exception as exc:  # noqa: BLE001 - handed to rank 0, so that no process waits for this one in vain
            part = failed_part(job.rank, exc)
        gathered = gather_parts(job.group, part)
        if gathered is None:
            return None
        parts = gathered
        check_parts(parts, work.path, sum(work.done()), len(plan.starts))
    frames = sum(p.frames for p in parts)
    if frames == 0 and not any(plan.done):
        raise InputError(f"{job.source}: no video frames decoded")
    if any(plan.done):
        notes.append(f"resuming: {sum(plan.done)} of {len(plan.done)} segments done")
    stats = join_segments(work, reader, job.options, job.target, size, replace=job.force)
    return _result(job, reader, size, stats, notes + reader.notes + [n for p in parts for n in p.notes] + stats.notes,
                   complete=not any(p.truncated for p in parts), segments=len(plan.done),
                   segments_resumed=sum(plan.done), frames_upscaled=frames,
                   segments_per_process=None if job.group is None else [len(p.segments) for p in parts])


def _plan(job: _Job, reader: FileReader, resume: bool, notes: list[str]) -> tuple[WorkFolder, Plan] | None:
    """The work folder, made ready by rank 0 (or the one process), and the plan it sends to the
    others once it is; ``None`` on the others if rank 0 failed."""
    ready: list[WorkFolder] = []

    def decide() -> Plan:
        starts = segment_starts(reader)
        ready.append(WorkFolder.prepare(job.target, job.source, job.options, job.upscaler, starts, resume, notes,
                                        reader.planar))
        done = ready[0].done()
        todo = [k for k, d in enumerate(done) if not d]
        return Plan(starts, done, split_segments(segment_lengths(starts, reader.total), todo,
                                                 1 if job.group is None else job.group.world))

    plan = rank_0_decides(job.group, decide)
    if plan is None:
        return None
    return (ready[0] if ready else WorkFolder(job.target, plan.starts)), plan


def _upscale_part(job: _Job, reader: FileReader, work: WorkFolder, plan: Plan, size: tuple[int, int]) -> Part:
    """Upscale this process's segments of ``plan`` into the work folder. The process with the last
    segment to do reads the source to its end (as one pass does, to notice a truncated source);
    the others stop after their own last segment."""
    rank = job.rank
    mine = plan.parts[rank]
    if not mine:
        return Part(rank)
    others = [k not in mine for k in range(len(plan.starts))]
    read_to_end = mine[-1] == max(k for part in plan.parts for k in part)
    skipping = SkipFinished(reader, plan.starts, others, read_to_end)
    with SegmentWriter(work, job.options, skipping, size) as writer:
        _run(job, skipping, writer)
        upscaled = writer.finish()
    return Part(rank, mine, upscaled.frames, (reader.notes if rank else []) + upscaled.notes, reader.truncated)


def _run(job: _Job, reader: Any, writer: Writer) -> None:
    try:
        Pipeline(reader, job.upscaler, writer, job.progress).run()
    except Exception as exc:  # the one out-of-memory message, as `subpixel upscale` gives it
        if not is_out_of_memory(exc):
            raise
        plan = getattr(job.upscaler, "plan", None)
        raise SubpixelError(out_of_memory_message(plan.tile if plan else None)) from None
