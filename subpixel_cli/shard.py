"""Splitting an upscale run across processes: which jobs each one does, and one report at the end.

Two ways to run several processes on one job list:

- under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join torch.distributed's process group;
  rank 0 splits the jobs and sends each process its part, every process upscales its part on the
  GPU of its ``LOCAL_RANK`` (or its share of the CPU cores), and rank 0 gathers the results for
  one summary and one exit code. The group is gloo even on GPUs: only small objects travel.
- ``--shard K/N`` makes the same split with no communication at all, for job arrays; each
  process reports its own part. Both together split into ``N × WORLD_SIZE`` parts.

The split (:func:`split`) is a pure function of the job list and the inputs' sizes, read from their
headers: the same on every process and every run, so independent ``--shard`` processes cover every
job exactly once, and a re-run gives every process the same files as before.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from subpixel_cli.errors import UsageError, named
from subpixel_cli.images import image_size
from subpixel_cli.jobs import Job, Report, Result, Runner

# A process that has finished waits at the gather for the slowest one, however long its part
# takes; a process that dies is not waited for: torchrun's agent then ends them all.
_GATHER_TIMEOUT = timedelta(days=7)
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``; written 1-based, as ``--shard`` takes it."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (1 ≤ K ≤ N) as a :class:`Shard`; a :class:`UsageError` that shows the form otherwise."""
    k, _, n = text.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise UsageError(f"--shard {text}: give K/N with 1 ≤ K ≤ N, e.g. --shard 2/4 "
                         "(Slurm: --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)")
    return Shard(int(k) - 1, int(n))


def job_pixels(jobs: Sequence[Job]) -> list[int]:
    """Each input's pixel count from its header; an unreadable file counts as 1 pixel (it fails,
    quickly, in whichever process gets it)."""
    sizes = [image_size(job.source) for job in jobs]
    return [max(1, size[0] * size[1]) if size else 1 for size in sizes]


def split(jobs: Sequence[Job], pixels: Sequence[int], count: int) -> list[list[int]]:
    """The indices into ``jobs`` that each of ``count`` parts does, balanced by pixels: largest
    first, each to the part with the fewest pixels so far (ties: the lower part), so one huge
    image gets a part to itself. Jobs that write the same output stay together (the runner
    reports the clash). Within a part, jobs keep their order in ``jobs``."""
    units: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        units.setdefault(os.path.abspath(job.target), []).append(i)
    weighed = [(sum(pixels[i] for i in unit), str(jobs[unit[0]].source), target, unit) for target, unit in units.items()]
    weighed.sort(key=lambda w: (-w[0], w[1], w[2]))
    loads = [(0, k) for k in range(count)]  # a heap: least-loaded part first, then the lowest index
    parts: list[list[int]] = [[] for _ in range(count)]
    for weight, _, _, unit in weighed:
        load, k = heapq.heappop(loads)
        parts[k] += unit
        heapq.heappush(loads, (load + weight, k))
    return [sorted(part) for part in parts]


def shard_jobs(jobs: Sequence[Job], shard: Shard) -> list[Job]:
    """The jobs of ``--shard``: part ``shard.index`` of :func:`split`."""
    return [jobs[i] for i in split(jobs, job_pixels(jobs), shard.count)[shard.index]]


def select(jobs: list[Job], shard: Shard | None, group: Group | None) -> list[Job] | None:
    """This process's jobs: all of them, its ``--shard``, or its part of a torchrun group's
    (``None`` where rank 0 could not split them: it reports why)."""
    if group is not None:
        return group_jobs(group, jobs, shard)
    return jobs if shard is None else shard_jobs(jobs, shard)


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun job: ``rank`` of ``world``, and the gloo group that
    carries the job lists and the results."""

    rank: int
    world: int
    handle: Any = None  # the gloo process group; None: torch.distributed's default group

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def joined() -> Iterator[Group | None]:
    """The torchrun process group when ``WORLD_SIZE`` > 1 (joined here, left on the way out),
    else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield None
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=_GATHER_TIMEOUT)
        handle = None
    else:  # a caller's group (perhaps nccl): a gloo group of the same processes beside it
        handle = dist.new_group(backend="gloo", timeout=_GATHER_TIMEOUT)
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), handle)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group(handle)  # ours: the default group if we made it, else the gloo one


def rank_0_decides(group: Group | None, decide: Callable[[], T]) -> T | None:
    """What rank 0's ``decide()`` returns, on every process of ``group`` (without one: ``decide()``).
    Rank 0 runs it and sends the result; where it raises, the others get ``None`` (rank 0 reports
    the error, they stop quietly) and rank 0 raises it. Every process waits here for rank 0, so
    this is also the barrier after whatever ``decide`` makes ready."""
    if group is None:
        return decide()
    import torch.distributed as dist

    box: list[Any] = [None]
    try:
        if group.main:
            box[0] = decide()
    finally:  # sent whether decide() returned or raised: no process is left waiting
        dist.broadcast_object_list(box, src=0, group=group.handle)
    return box[0]


def group_jobs(group: Group, jobs: Sequence[Job], shard: Shard | None = None) -> list[Job] | None:
    """This process's jobs: rank 0 splits its job list (reading each header once, not once per
    process) and sends every process the parts, so all follow the same list; ``None`` where
    rank 0 could not."""

    def decide() -> list[list[Job]]:
        count = group.world * (shard.count if shard else 1)
        first = shard.index * group.world if shard else 0
        indices = split(jobs, job_pixels(jobs), count)[first:first + group.world]
        return [[jobs[i] for i in part] for part in indices]

    parts = rank_0_decides(group, decide)
    return None if parts is None else parts[group.rank]


def run_part(runner: Runner, jobs: list[Job], group: Group | None) -> Report:
    """``runner.run(jobs)``; in a group, an error which stops the run (not one file's: those are
    reported as usual) fails the files it had not reached, so that this process still reaches the
    gather and the others are not left waiting for it."""
    if group is None:
        return runner.run(jobs)
    report = Report()
    try:
        return runner.run(jobs, report)
    except Exception as exc:
        reason = named(exc)
        trace = "".join(traceback.format_exception(exc))
        reached = {(r.source, r.target) for r in report.results}
        for job in jobs:
            if (job.source, job.target) not in reached:
                report.results.append(Result(job.source, job.target, "failed",
                                             f"{job.source}: not done: process {group.rank} stopped ({reason})",
                                             traceback=trace))
        return report


def gather(group: Group, jobs: Sequence[Job], report: Report) -> Report | None:
    """Every process's results, at rank 0, in the order of ``jobs``; ``None`` on the others."""
    import torch.distributed as dist

    parts: list[Any] | None = [None] * group.world if group.main else None
    dist.gather_object(report.results, parts, dst=0, group=group.handle)
    if parts is None:
        return None
    order = {(job.source, job.target): i for i, job in enumerate(jobs)}
    results = [r for part in parts for r in part]
    results.sort(key=lambda r: order.get((r.source, r.target), len(order)))
    return Report(results)
