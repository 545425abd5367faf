"""One segmented video shared by the processes of a ``torchrun`` job (see :mod:`subpixel_cli.shard`
for the process group, and :mod:`~subpixel_cli.video.segments` for the segments).

Rank 0 finds the cut points, makes the work folder ready (a matching manifest is kept, a killed
run's half-written segments are removed) and only then sends every process the plan: the cut
points and which unfinished segments each one upscales. That broadcast is the barrier: no process
writes into the folder before it is ready. Each process writes only its own segment files, each
under a temporary name renamed into place, so a process that fails loses at most the segment it
was in; every process then hands rank 0 a :class:`Part` (what it did, or the error that stopped
it), and rank 0 joins the segments, or, if any process failed, reports every failure and keeps
the work folder for the next run.

Each process decodes the source from its start and skips the frames of other processes'
segments (as a resumed run skips finished ones), stopping after its own last segment; seeking to
a keyframe is not used, as it is not guaranteed to give the timestamps a single pass gives.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from subpixel_cli.errors import SubpixelError, named, one_line

if TYPE_CHECKING:
    from subpixel_cli.shard import Group


@dataclass(frozen=True)
class Plan:
    """What rank 0 sends: the cut points, which segments were finished before this run, and
    each process's segments (indices into ``starts``)."""

    starts: list[int]
    done: list[bool]
    parts: list[list[int]]


@dataclass
class Part:
    """What one process did: the segments it finished and their frames, its reader's notes,
    whether it saw the source end early, or the error that stopped it."""

    rank: int
    segments: list[int] = field(default_factory=list)
    frames: int = 0
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    error: str | None = None
    traceback: str | None = None


def split_segments(lengths: Sequence[int], todo: Sequence[int], count: int) -> list[list[int]]:
    """The segments ``todo`` (indices into ``lengths``, in order) in ``count`` contiguous runs
    balanced by frames: laid end to end, the frames of ``todo`` are cut into ``count`` equal
    shares and each segment goes to the share its middle frame falls in. Contiguous runs let each
    process stop decoding after its last segment. A pure function, like
    :func:`subpixel_cli.shard.split`: every process and every re-run computes the same parts."""
    weights = [max(1, lengths[k]) for k in todo]  # a last segment of unknown length counts as 1
    total = sum(weights)
    parts: list[list[int]] = [[] for _ in range(count)]
    before = 0
    for k, weight in zip(todo, weights):
        parts[min(count - 1, ((2 * before + weight) * count - 1) // (2 * total))].append(k)  # a middle on a cut: the lower share
        before += weight
    return parts


def failed_part(rank: int, exc: BaseException) -> Part:
    """The :class:`Part` of a process that an error stopped."""
    reason = one_line(exc) if isinstance(exc, SubpixelError) else named(exc)
    return Part(rank, error=reason, traceback="".join(traceback.format_exception(exc)))


def gather_parts(group: Group, part: Part) -> list[Part] | None:
    """Every process's :class:`Part`, in rank order, at rank 0; ``None`` on the others."""
    import torch.distributed as dist

    parts: list[Any] | None = [None] * group.world if group.main else None
    dist.gather_object(part, parts, dst=0, group=group.handle)
    return parts


class ProcessTracebacks(Exception):
    """The tracebacks of failed processes, as text: the cause that ``--debug`` shows."""


def check_parts(parts: list[Part], work_path: Any, finished: int, total: int) -> None:
    """Raise one :class:`SubpixelError` naming every process that failed (their tracebacks in
    its cause, shown with ``--debug``); the finished segments stay for the next run."""
    failures = [p for p in parts if p.error is not None]
    if not failures:
        return
    reasons = "; ".join(f"process {p.rank}: {p.error}" for p in failures)
    traces = "\n".join(f"process {p.rank}:\n{p.traceback}" for p in failures if p.traceback)
    raise SubpixelError(f"{reasons}; {finished} of {total} segments are finished and kept in {work_path}: "
                        "run the same command again to continue") from ProcessTracebacks(traces)
