"""Resumable video: the work is cut at keyframes into segments, each kept, encoded, in a hidden
work folder beside the target (``.NAME.work/``) until the end, then joined by stream copy.

A run stopped any way (Ctrl-C, ``kill -9``, a power cut) and started again with the same command
upscales only the segments not yet finished. The work folder's ``manifest.json`` records the
source's identity (size, mtime, a hash of its first MiB), the options and the model; a folder
whose manifest differs is not reused. The source is still decoded from its start on a resume
(decoding is cheap beside the model): only the upscaling and encoding of finished segments is
skipped, and every frame keeps the timestamp a single pass gives it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av
import numpy as np

from subpixel_cli.files import hidden_sibling, make_folder, remove, write_text
from subpixel_cli.video.options import VideoOptions
from subpixel_cli.video.reading import FileReader, Frame, Reader
from subpixel_cli.video.writing import VideoWriter, Writer, WriterStats

MIN_SEGMENT_SECONDS = 2.0  # a segment is at least this long (more where keyframes are sparse)
MANIFEST = "manifest.json"
# Encoders whose segments are tested to join by stream copy into one stream equal to a single
# pass; others (AV1, VP9, HEVC) work in one pass, without resume.
JOINABLE = {"libx264", "ffv1", "mpeg4"}
# Containers whose segments start at time 0 (MP4/MOV round a later start to their movie clock);
# the others keep each frame's own time, which a millisecond clock (Matroska) rounds as one pass does.
REBASED = {".mp4", ".mov", ".m4v"}
_HEAD_BYTES = 1 << 20
_VERSION = 1


def work_folder(target: Path) -> Path:
    """The hidden folder beside ``target`` that holds finished segments."""
    return hidden_sibling(target, "work")


def finished_segments(target: Path) -> int:
    """How many finished segments the work folder of ``target`` holds (0 when there is none)."""
    try:
        return sum(1 for p in work_folder(target).glob("segment_*") if p.is_file())
    except OSError:
        return 0


def segment_starts(reader: FileReader, min_seconds: float = MIN_SEGMENT_SECONDS) -> list[int]:
    """Frame indices (in presentation order) at which segments start: keyframes found from the
    source's packets (no decoding), at least ``min_seconds`` apart. ``[0]``: one segment."""
    pts, keys = [], []
    with av.open(str(reader.source), metadata_errors="ignore") as c:
        for packet in c.demux(c.streams.video[reader.stream.index]):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return [0]  # no timestamps to place keyframes: one segment
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    order = {p: i for i, p in enumerate(sorted(set(pts)))}
    min_frames = max(1, round(min_seconds * float(reader.rate)))
    starts = [0]
    for k in sorted(order[p] for p in keys):
        if k - starts[-1] >= min_frames and len(order) - k >= min_frames // 2:
            starts.append(k)
    return starts


def segment_lengths(starts: list[int], total: int | None) -> list[int]:
    """Each segment's frame count; the last one's is 0 when the source's ``total`` is unknown."""
    ends = [*starts[1:], total or starts[-1]]
    return [max(0, end - start) for start, end in zip(starts, ends)]


def _source_identity(source: Path) -> dict[str, Any]:
    st = source.stat()
    with open(source, "rb") as f:
        head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


def _model_identity(upscaler: Any) -> dict[str, Any]:
    """Scale, precision and a hash of the weights, where the upscaler has them."""
    weights = getattr(upscaler, "weights_sha256", None)
    return {"scale": upscaler.scale, "precision": repr(getattr(upscaler, "precision", None)),
            "weights_sha256": weights() if weights is not None else type(upscaler).__qualname__}


class WorkFolder:
    """The work folder of one target: its manifest, finished segments and their names. Made
    ready by :meth:`prepare` (once, by one process); any process may then add segments."""

    def __init__(self, target: Path, starts: list[int]) -> None:
        self.path, self.suffix, self.starts = work_folder(target), target.suffix, starts

    @classmethod
    def prepare(cls, target: Path, source: Path, options: VideoOptions, upscaler: Any, starts: list[int],
                resume: bool, notes: list[str], planar: bool = False) -> WorkFolder:
        """The work folder for this source, options and model: the existing one when its manifest
        matches and ``resume``, else a fresh one; a killed run's half-written segments are removed."""
        work = cls(target, starts)
        opts = asdict(options)
        opts["fps"] = None if options.fps is None else str(options.fps)
        manifest = {"version": _VERSION, "source": _source_identity(source), "options": opts,
                    "model": _model_identity(upscaler), "suffix": work.suffix, "starts": starts, "planar": planar}
        old = work._read_manifest()
        if not resume or old != manifest:  # a folder without a readable manifest is not trusted either
            if resume and old is not None:
                notes.append("not resuming: the source, options or model changed since the unfinished run; starting over")
            remove(work.path)
        make_folder(work.path)
        started = time.time()
        for stale in work.path.glob(".*.partial"):  # a segment being written when the run was killed
            if stale.stat().st_mtime < started:
                remove(stale)
        if old != manifest or not resume:
            write_text(work.path / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return work

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def segment(self, k: int, offset: int) -> Path:
        """Segment ``k``, whose frames were shifted back by ``offset`` (the pts of its first frame,
        in the source's time base) so that it starts at 0, as a whole file does: containers
        such as MP4 round a start later than 0 to their own, coarser, clock."""
        return self.path / f"segment_{k:05d}_{offset}{self.suffix}"

    def finished(self, k: int) -> tuple[Path, int] | None:
        """Segment ``k``'s file and offset, if it is done."""
        for path in self.path.glob(f"segment_{k:05d}_*{self.suffix}"):
            offset = path.name[len(f"segment_{k:05d}_"):-len(self.suffix) or None]
            if offset.isdigit():
                return path, int(offset)
        return None

    def done(self) -> list[bool]:
        return [self.finished(k) is not None for k in range(len(self.starts))]


class SkipFinished(Reader):
    """The source's frames without those of finished segments (``done``: finished, or another
    process's), and without packets to copy (the join copies them once); remembers each frame's
    segment for :class:`SegmentWriter`. Without ``read_to_end`` decoding stops after the last
    segment not done; with it the source is read to its end, which notices a truncated one."""

    def __init__(self, reader: FileReader, starts: list[int], done: list[bool], read_to_end: bool = True) -> None:
        self.reader, self.starts, self.finished = reader, starts, done
        todo = [k for k, d in enumerate(done) if not d]
        self.last = len(starts) - 1 if read_to_end or not todo else todo[-1]
        for name in ("width", "height", "rate", "time_base", "colour", "notes", "sample_aspect_ratio", "rotation",
                     "depth", "chroma", "hdr", "planar"):
            setattr(self, name, getattr(reader, name))
        self.container, self.passthrough = None, []
        lengths = segment_lengths(starts, reader.total)
        skipped = sum(n for n, d in zip(lengths, done) if d)
        self.total = None if reader.total is None else max(0, reader.total - skipped)
        self.segment_of: dict[int, int] = {}

    def items(self, stop: threading.Event) -> Iterator[Frame]:
        index, k = 0, 0
        for item in self.reader.items(stop):
            if not isinstance(item, Frame):
                continue
            while k + 1 < len(self.starts) and index >= self.starts[k + 1]:
                k += 1
            if k > self.last:
                return
            index += 1
            if not self.finished[k]:
                self.segment_of[item.pts] = k
                yield item

    @property
    def truncated(self) -> bool:  # type: ignore[override]
        return self.reader.truncated


class SegmentWriter(Writer):
    """Encodes each segment into its own file in the work folder; a segment is kept (renamed into
    place) only once all its frames are encoded."""

    def __init__(self, work: WorkFolder, options: VideoOptions, reader: SkipFinished, size: tuple[int, int]) -> None:
        self.work, self.options, self.reader, self.size = work, options, reader, size
        self.notes, self.frames, self.written = [], 0, 0
        self.current: tuple[int, VideoWriter] | None = None
        self.offset = 0  # the current segment's first pts

    def write(self, frames: np.ndarray, pts: list[int], packets: list[Any]) -> None:
        for pixels, p in zip(frames, pts):
            k = self.reader.segment_of.pop(p)
            if self.current is None or self.current[0] != k:
                self._close()
                self.offset = p if self.work.suffix.lower() in REBASED else 0
                self.current = (k, VideoWriter(self.work.segment(k, self.offset), self.options, self.reader, self.size))
            self.current[1].write(pixels[None], [p - self.offset], [])
            self.frames += 1

    def _close(self) -> None:
        if self.current is not None:
            writer = self.current[1]
            writer.flush()
            writer.finish()
            self.notes.extend(n for n in writer.notes if n not in self.notes)
            self.current = None

    def flush(self) -> None:
        self._close()

    def finish(self) -> WriterStats:
        self._close()
        return WriterStats("", "", self.frames, notes=list(self.notes))

    def __exit__(self, *exc: object) -> None:
        if self.current is not None:
            self.current[1].__exit__(*exc)


def join_segments(work: WorkFolder, reader: FileReader, options: VideoOptions, target: Path,
                  size: tuple[int, int], replace: bool = True) -> WriterStats:
    """Stream-copy the segments, in order, with the source's audio and subtitles into ``target``
    (a temporary name renamed into place); then remove the work folder."""
    with av.open(str(work.finished(0)[0])) as first:
        template = first.streams.video[0]
        with VideoWriter(target, options, reader, size, template=template, replace=replace) as writer:
            merged = heapq.merge(_segment_packets(work, reader.time_base), _source_packets(reader), key=lambda p: p[0])
            for _, is_video, packet in merged:
                if is_video:
                    writer.mux_copied_video(packet)
                else:
                    writer.write(np.empty((0, 0, 0, 3), np.uint8), [], [packet])
            writer.flush()
            stats = writer.finish()
    remove(work.path)
    return stats


def _segment_packets(work: WorkFolder, time_base: Any) -> Iterator[tuple[float, bool, Any]]:
    """The segments' video packets in order. Each encoder starts its decode times a few frames
    before its first frame, by nominal frame lengths; where frames before a cut were shorter (a
    variable rate) they overlap the last segment's, and are moved just after it (never past the
    packet's own presentation time), so decode times keep increasing across the joins."""
    last: Any = None  # the last decode time, in seconds (segments share one time base)
    for k in range(len(work.starts)):
        path, offset = work.finished(k)
        with av.open(str(path)) as c:
            for packet in c.demux(c.streams.video[0]):
                if packet.size == 0:
                    continue
                shift = round(offset * time_base / packet.time_base)  # back to the frames' own times
                if packet.pts is not None:
                    packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
                if packet.dts is None:  # Matroska stores none: one after the last (the muxer needs them increasing)
                    packet.dts = packet.pts if last is None or packet.pts is None else int(last / packet.time_base) + 1
                if last is not None and packet.dts * packet.time_base <= last:
                    packet.dts = min(int(last / packet.time_base) + 1, packet.pts if packet.pts is not None else packet.dts)
                last = packet.dts * packet.time_base
                yield float(packet.dts * packet.time_base), True, packet


def _source_packets(reader: FileReader) -> Iterator[tuple[float, bool, Any]]:
    for packet in reader.passthrough_packets():
        yield float(packet.dts * packet.time_base), False, packet
