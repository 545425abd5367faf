"""safetensors files, the one format tensors are kept in (weights, training checkpoints, int8
calibrations): the one reader and the one writer. Nothing is ever unpickled.

What counts as "not a readable file" is one list, :data:`UNREADABLE`, for every caller: a damaged
or foreign file raises :class:`UnreadableTensors` with a one-line reason, which each caller turns
into its own error (or, for an optional file, into "none").
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from subpixel_cli.errors import one_line
from subpixel_cli.files import atomic_path

# safetensors' own error (a header that is not one: the error checkpoints once missed), the OS's,
# and a header that parses but does not hold together. Not RuntimeError: that is how the CPU
# allocator says it is out of memory, which is not the file's fault.
UNREADABLE = (SafetensorError, OSError, ValueError)


class UnreadableTensors(Exception):
    """A file that is not a readable safetensors file; the message is the reason, in one line."""


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of ``path`` and its metadata (strings; empty where it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except UNREADABLE as exc:
        raise UnreadableTensors(one_line(exc)) from None
    return tensors, metadata


def not_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity, sorted: a file
    that reads but whose values are damaged (or came from a training that diverged)."""
    return sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """``tensors`` (made contiguous on the CPU) and ``metadata`` as ``path``, atomically (see
    :func:`~subpixel_cli.files.atomic_path`), with the permissions of any new file."""
    ready = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path, file=True) as tmp:
        save_file(ready, str(tmp), metadata=metadata)
    return path
