"""Upscaling files and folders: which inputs, which outputs, and a report of what happened.

One bad file never stops a batch: each file ends ``ok``, ``skipped`` (its output exists) or
``failed`` (with a one-line reason), and :attr:`Report.return_code` says how the run went.
Same-size images are batched through the :class:`~subpixel_cli.upscale.Upscaler`; encoding runs
in a background thread while the next batch is upscaled.
"""

from __future__ import annotations

import glob
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from subpixel_cli.errors import EXIT_FAILED, EXIT_OK, OutputExists, SubpixelError, UsageError, named
from subpixel_cli.images import (
    FORMATS,
    is_image_name,
    Picture,
    PngWriter,
    check_output_size,
    output_format,
    read_image,
    write_image,
)
from subpixel_cli.files import atomic_write, check_folder_writable, make_folder, remove_stale_temporaries
from subpixel_cli.runtime import is_out_of_memory, out_of_memory_message
from subpixel_cli.upscale import Progress, TilePlan, Upscaler

_GLOB_CHARS = set("*?[")
_T = TypeVar("_T")


@dataclass
class Job:
    source: Path
    target: Path


@dataclass
class Result:
    """What happened to one input; ``as_dict`` is its ``--json`` record."""

    source: Path
    target: Path | None
    status: str  # ok | skipped | failed
    message: str = ""
    size: tuple[int, int] | None = None  # input width, height
    out_size: tuple[int, int] | None = None
    mode: str = ""
    seconds: float = 0.0
    frames: int = 1  # frames in the input; only the first is upscaled
    traceback: str | None = None  # of an unexpected failure, for --debug; not in --json
    model: str | None = None  # the model that ran, and why it was chosen when the user named none
    model_reason: str | None = None

    def as_dict(self) -> dict:
        return {
            "input": str(self.source),
            "output": None if self.target is None else str(self.target),
            "status": self.status,
            "message": self.message or None,
            "size": self.size,
            "output_size": self.out_size,
            "mode": self.mode or None,
            "frames": self.frames,
            "seconds": round(self.seconds, 4),
            "model": self.model,
            "model_reason": self.model_reason,
        }


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def return_code(self) -> int:
        return EXIT_FAILED if self.count("failed") else EXIT_OK

    def stopped(self, total: int) -> str:
        """What a run stopped by Ctrl-C after these results says: how far it got, and that the
        same command continues (what is done is skipped)."""
        failed = f", {self.count('failed')} failed" if self.count("failed") else ""
        return (f"{self.count('ok') + self.count('skipped')} of {total} file(s) done{failed}; "
                "run the same command again to continue (done ones are skipped)")


@dataclass
class OutputPlan:
    """Where outputs go: ``-o``, ``--suffix``, ``--format``."""

    output: Path | None = None
    suffix: str = "_x4"
    fmt: str | None = None  # png | jpg | webp | tiff; None: from -o FILE's suffix, else png


def expand_inputs(inputs: Iterable[str], recursive: bool, suffix: str) -> Iterator[tuple[Path, Path | None]]:
    """Yield ``(file, root)`` for every input: files as given, folders' images (``root`` is the
    folder, for mirroring), and glob matches. Files that already carry ``suffix`` inside a folder
    or glob are our own outputs and are left out, so a re-run does not upscale them again."""

    def ours(p: Path) -> bool:
        return bool(suffix) and p.stem.endswith(suffix)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and is_image_name(p))
            yield from ((p, path) for p in found if not ours(p))
        elif not path.exists() and _GLOB_CHARS & set(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=recursive))
            yield from ((p, None) for p in matches if p.is_file() and not ours(p))
        else:
            yield path, None


def plan_jobs(inputs: list[str], plan: OutputPlan, recursive: bool = False) -> list[Job]:
    """Pair every input file with its output path and create the output folders (``-o DIR`` and
    the sub-folders it mirrors). Raises :class:`UsageError` when nothing matches or ``-o FILE`` is
    given for several inputs, :class:`OutputError` when a folder cannot be created or written in."""
    jobs = _pair(inputs, plan, recursive)
    folders = {job.target.parent for job in jobs}
    if plan.output is not None and not (len(jobs) == 1 and jobs[0].target == plan.output):
        folders.add(plan.output)
    for folder in sorted(folders):
        make_folder(folder)
        check_folder_writable(folder)
    return jobs


def _pair(inputs: list[str], plan: OutputPlan, recursive: bool) -> list[Job]:
    found = list(expand_inputs(inputs, recursive, plan.suffix))
    if not found:
        raise UsageError(f"no images found in {', '.join(inputs)}")
    out = plan.output
    to_file = out is not None and not out.is_dir() and is_image_name(out)
    if to_file and (len(found) > 1 or found[0][1] is not None):
        raise UsageError(f"-o {out}: one output file for several inputs; give a folder instead")
    if to_file:
        _check_file_format(out, plan.fmt)
        return [Job(found[0][0], out)]
    ext = "jpg" if plan.fmt == "jpeg" else (plan.fmt or "png")
    jobs = []
    for source, root in found:
        name = f"{source.stem}{plan.suffix}.{ext}"
        if out is None:
            target = source.with_name(name)
        elif root is not None:
            target = out / source.parent.relative_to(root) / name  # mirror sub-folders
        else:
            target = out / name
        jobs.append(Job(source, target))
    return jobs


def _check_file_format(out: Path, fmt: str | None) -> None:
    """``-o FILE``: its suffix names a format this writes, and ``--format``, if given, agrees."""
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"-o {out}: cannot write .{suffix} pictures; name the file .png, .jpg, .webp, .tiff or .bmp")
    if fmt is not None and FORMATS[fmt] != FORMATS[suffix]:
        raise UsageError(f"-o {out} names a {FORMATS[suffix]} file but --format {fmt} asks for {FORMATS[fmt]}; "
                         "drop --format, or give a matching name")


@dataclass
class _Loaded:
    job: Job
    picture: Picture
    started: float


class _OutOfMemory(Exception):
    """Out of memory with the smallest tiles retried for a file: the allocator's ``error`` and
    the last ``tile`` side tried, from which the hint suggests a smaller one."""

    def __init__(self, error: BaseException, tile: int) -> None:
        super().__init__(str(error))
        self.error, self.tile = error, tile


def describe_failure(exc: BaseException, source: Path, tile: int) -> str:
    """One line for a file's failure: the project's own message, an out-of-memory hint, or
    ``internal error: Type: message`` for a bug (the traceback is kept for ``--debug``)."""
    if isinstance(exc, SubpixelError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"{source}: {out_of_memory_message(tile)}"
    return f"{source}: internal error: {named(exc)}"


class Runner:
    """Runs jobs through an upscaler, reporting each file through ``on_result``."""

    def __init__(
        self,
        upscaler: Upscaler,
        force: bool = False,
        fmt: str | None = None,
        quality: int = 95,
        on_result: Callable[[Result], None] | None = None,
        on_tiles: Progress | None = None,
    ) -> None:
        self.upscaler, self.force, self.fmt, self.quality = upscaler, force, fmt, quality
        self.on_result = on_result or (lambda r: None)
        self.on_tiles = on_tiles
        self._report = Report()
        self._claimed: set[Path] = set()
        self._run_started = time.time()

    def run(self, jobs: list[Job], report: Report | None = None) -> Report:
        """Upscale ``jobs``; the :class:`Report` of this call alone. Results are added to ``report``
        (a new one by default) as they come, so that a caller whose run an error stopped still
        has what was done."""
        self._report = report if report is not None else Report()
        self._claimed = set()
        self._run_started = time.time()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="subpixel-write") as writer:
            pending: list[Future] = []
            batch: list[_Loaded] = []
            for job in jobs:
                loaded = self._load(job)
                if loaded is None:
                    continue
                if batch and not self._batchable(batch[0].picture, loaded.picture):
                    pending += self._flush(batch, writer)
                    batch = []
                batch.append(loaded)
                if len(batch) >= self.upscaler.batch_size or not self._batchable(loaded.picture, loaded.picture):
                    pending += self._flush(batch, writer)
                    batch = []
                # A batch's writes may run while the next batch is upscaled, not before it starts.
                pending = self._collect(pending, keep=max(2, self.upscaler.batch_size))
            pending += self._flush(batch, writer)
            self._collect(pending, keep=0)
        return self._report

    def _record(self, result: Result) -> None:
        self._report.results.append(result)
        self.on_result(result)

    def _load(self, job: Job) -> _Loaded | None:
        started = time.perf_counter()
        resolved = job.target.resolve()
        if resolved in self._claimed:
            self._record(Result(job.source, job.target, "failed", f"{job.source}: another input also writes {job.target}"))
            return None
        self._claimed.add(resolved)
        remove_stale_temporaries(job.target, self._run_started)  # left by a run that was killed
        if job.target.exists() and not self.force:
            self._record(Result(job.source, job.target, "skipped", "output exists (use --force to overwrite)"))
            return None
        if job.target.resolve() == job.source.resolve():
            self._record(Result(job.source, job.target, "failed", f"{job.source}: the output would overwrite the input"))
            return None
        try:
            fmt = output_format(job.target, self.fmt)
            picture = read_image(job.source)
            r = self.upscaler.scale
            channels = picture.pixels.shape[2] + (picture.alpha is not None)
            check_output_size(job.target, fmt, picture.width * r, picture.height * r, channels, picture.bit_depth // 8)
        except Exception as exc:  # any failure is this file's, never the batch's
            self._fail(job, started, exc)
            return None
        return _Loaded(job, picture, started)

    def _batchable(self, a: Picture, b: Picture) -> bool:
        """Same size and layout, no alpha, small enough to go through the network in one piece."""
        return (
            a.pixels.shape == b.pixels.shape
            and a.pixels.dtype == b.pixels.dtype
            and a.alpha is None
            and b.alpha is None
            and self.upscaler.tiles_for(a.height, a.width) == 1
        )

    def _flush(self, batch: list[_Loaded], writer: ThreadPoolExecutor) -> list[Future]:
        if not batch:
            return []
        if len(batch) == 1:
            return self._single(batch[0], writer)
        try:
            frames = np.stack([b.picture.pixels for b in batch])
            outputs = self._retrying(lambda plan: self.upscaler.upscale_batch(frames, plan))
        except Exception as exc:
            for item in batch:
                self._fail(item.job, item.started, exc)
            return []
        return [writer.submit(self._write, b, Picture(out, None, b.picture.icc_profile, b.picture.exif)) for b, out in zip(batch, outputs)]

    def _single(self, item: _Loaded, writer: ThreadPoolExecutor) -> list[Future]:
        """One image, possibly tiled; PNG outputs are streamed strip by strip."""
        picture = item.picture
        try:
            fmt = output_format(item.job.target, self.fmt)
            streamed = fmt == "PNG" and self.upscaler.tiles_for(picture.height, picture.width) > 1
            if streamed:
                out_size = self._retrying(lambda plan: self._stream_png(item, plan))
            else:
                pixels, alpha = self._retrying(
                    lambda plan: self.upscaler.upscale(picture.pixels, picture.alpha, self.on_tiles, plan))
        except Exception as exc:
            self._fail(item.job, item.started, exc)
            return []
        if streamed:
            self._done(item, out_size)
            return []
        out = Picture(pixels, alpha, picture.icc_profile, picture.exif)
        return [writer.submit(self._write, item, out)]

    def _retrying(self, call: Callable[[TilePlan], _T]) -> _T:
        """``call(plan)`` with the upscaler's own tile plan, again with smaller tiles after each
        out-of-memory error while there are smaller ones (a GPU that is shared, or a budget that
        was too generous). Smaller tiles are for this call only: the next file starts from the
        upscaler's plan again. When none are left the error is raised as
        :class:`_OutOfMemory`, with the last tile side tried for the hint."""
        plan = self.upscaler.plan
        while True:
            try:
                return call(plan)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                smaller = self.upscaler.smaller_plan(plan)
                if smaller is None:
                    raise _OutOfMemory(exc, plan.tile) from exc
                plan = smaller

    def _stream_png(self, item: _Loaded, plan: TilePlan) -> tuple[int, int]:
        picture, r = item.picture, self.upscaler.scale
        like = Picture(picture.pixels[:1, :1], None if picture.alpha is None else picture.alpha[:1, :1], picture.icc_profile, picture.exif)
        with atomic_write(item.job.target, self.force) as f:
            png = PngWriter(f, picture.width * r, picture.height * r, like, compress_level=1)
            for rows, alpha_rows in self.upscaler.iter_rows(picture.pixels, picture.alpha, self.on_tiles, plan):
                png.write_rows(rows, alpha_rows)
            png.close()
        return picture.width * r, picture.height * r

    def _write(self, item: _Loaded, out: Picture) -> None:
        try:
            write_image(item.job.target, out, self.fmt, self.quality, force=self.force)
        except Exception as exc:
            self._fail(item.job, item.started, exc)
            return
        self._done(item, (out.width, out.height))

    def _done(self, item: _Loaded, out_size: tuple[int, int]) -> None:
        p = item.picture
        note = f"animated image: only the first of its {p.frames} frames was upscaled" if p.frames > 1 else ""
        self._record(Result(item.job.source, item.job.target, "ok", note, (p.width, p.height), out_size, p.mode,
                            time.perf_counter() - item.started, frames=p.frames))

    def _fail(self, job: Job, started: float, exc: BaseException) -> None:
        """Record ``exc`` as this file's failure (an output that appeared meanwhile: skipped); the
        batch goes on."""
        if isinstance(exc, OutputExists):  # another run wrote it meanwhile: as good as done
            self._record(Result(job.source, job.target, "skipped", "output appeared while this run made it "
                                "(another run wrote it?); left as it is", seconds=time.perf_counter() - started))
            return
        tile = self.upscaler.plan.tile
        if isinstance(exc, _OutOfMemory):
            exc, tile = exc.error, exc.tile
        trace = None if isinstance(exc, SubpixelError) else "".join(traceback.format_exception(exc))
        message = describe_failure(exc, job.source, tile)
        self._record(Result(job.source, job.target, "failed", message, seconds=time.perf_counter() - started,
                            traceback=trace))

    @staticmethod
    def _collect(pending: list[Future], keep: int) -> list[Future]:
        """Wait until at most ``keep`` writes are in flight (bounding memory); re-raise their errors."""
        while len(pending) > keep:
            pending.pop(0).result()
        return pending
