"""The threaded pipeline: reader thread → frames queue → main thread (model) → batches queue →
writer thread, with bounded queues so that memory stays flat."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from subpixel_cli.video.reading import Frame, Reader
from subpixel_cli.video.writing import Writer

_QUEUE_BATCHES = 2  # batches waiting between threads
_MAX_LOOSE_PACKETS = 256  # audio packets that travel without a frame before they are flushed
_POLL = 0.1  # seconds a blocked thread waits before checking for a stop


class FrameUpscaler(Protocol):
    """What :func:`upscale_video` needs of an upscaler (:class:`subpixel_cli.upscale.Upscaler`)."""

    scale: int
    batch_size: int  # frames per call

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """``N×H×W×3`` uint8 or uint16 RGB -> ``N×rH×rW×3`` RGB of the same dtype."""
        ...

    def upscale_i420(self, frames: np.ndarray) -> np.ndarray:
        """``N×(3H/2)×W`` uint8 I420 planes -> ``N×(3rH/2)×rW`` (for a :attr:`Reader.planar` reader)."""
        ...


Progress = Callable[[int, "int | None"], None]


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


class Pipeline:
    """reader thread → frames queue → main thread (model) → batches queue → writer thread."""

    def __init__(self, reader: Reader, upscaler: FrameUpscaler, writer: Writer, progress: Progress | None) -> None:
        self.reader, self.upscaler, self.writer = reader, upscaler, writer
        self.batch_size, self.progress = max(1, upscaler.batch_size), progress
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
        if self.progress is not None:  # the total was an estimate (from the duration): now it is known
            self.progress(self.writer.frames, self.writer.frames)

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
            if isinstance(item, Frame):
                frames.append(item.pixels)
                pts.append(item.pts)
            elif not end:
                packets.append(item)
            if not end and len(frames) < self.batch_size and len(packets) < _MAX_LOOSE_PACKETS:
                continue
            upscaled = self._upscale(np.stack(frames)) if frames else np.empty((0, 0, 0, 3), np.uint8)
            self._put_or_stop(self.batches_q, (upscaled, pts, packets))
            frames, pts, packets = [], [], []
            self._report()
            if end:
                self._put_or_stop(self.batches_q, _END)
                return

    def _upscale(self, frames: np.ndarray) -> np.ndarray:
        return self.upscaler.upscale_i420(frames) if frames.ndim == 3 else self.upscaler.upscale_batch(frames)

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
