"""File safety: nothing the user had is overwritten or left half-written.

Every output (pictures, videos, folders of frames, model folders, checkpoints, sample sheets) is
written under a temporary name beside its target, ``.NAME.XXXXXXXX.partial``, flushed to disk and
renamed over the target only when complete, so the target is the old file or the new one, never a
part. A run killed with ``kill -9`` can leave a temporary behind; :func:`remove_stale_temporaries`
removes those of an earlier run. Temporaries are created with mode ``0666`` and the umask applied
by the kernel, so a renamed output has the permissions of any new file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from subpixel_cli.errors import OutputError, one_line

PARTIAL_SUFFIX = ".partial"
# The random part: 8 characters. New names use hex; [a-z0-9_] also matches the mkstemp names of
# earlier versions, so their leftovers are cleaned up too.
_RANDOM_PART = "[a-z0-9_]" * 8


def _reason(exc: OSError) -> str:
    return exc.strerror or one_line(exc)


def temporary_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (the same folder, so the final rename is atomic)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def make_folder(folder: Path) -> Path:
    """Create ``folder`` and its parents; an :class:`OutputError` that says why when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot create the folder (a file of that name exists)") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({_reason(exc)})") from None
    return folder


def check_writable(target: Path, force: bool) -> None:
    """Refuse an existing ``target`` unless ``force``."""
    if not force and (target.exists() or target.is_symlink()):
        raise OutputError(f"{target}: exists (use --force to overwrite)")


def move_into_place(tmp: Path, target: Path) -> None:
    """The final, atomic rename, then a sync of the folder so that the rename survives a power cut.
    Its failure (the temporary removed meanwhile, a target that became a folder) is an
    :class:`OutputError`."""
    try:
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot move the finished output into place ({_reason(exc)})") from None
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def remove(path: Path) -> None:
    """Remove a temporary file or folder, quietly."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: Path, force: bool = True, file: bool = False) -> Iterator[Path]:
    """A temporary path that becomes ``target`` when the block ends without error, for writers
    that take a name (safetensors, FFmpeg, a folder of frames); removed on any error or Ctrl-C.
    ``file``: the result gets the permissions a new file gets under the umask, for writers that
    make their files owner-only (safetensors writes 0600)."""
    target = Path(target)
    check_writable(target, force)
    tmp = temporary_path(target)
    try:
        mode = None
        if file:  # the kernel applies the umask to a file made with 0666: read it off one
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
            mode = os.stat(tmp).st_mode & 0o777
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        _sync_file(tmp)
        move_into_place(tmp, target)
    except OSError as exc:
        remove(tmp)
        raise OutputError(f"{target}: cannot write ({_reason(exc)})") from None
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(target: Path, force: bool = True) -> Iterator[BinaryIO]:
    """A binary file that becomes ``target`` when the block ends without error (see
    :func:`atomic_path`)."""
    with atomic_path(target, force) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f


def write_bytes(target: Path, data: bytes, force: bool = True) -> None:
    """``data`` as ``target``, atomically."""
    with atomic_write(target, force) as f:
        f.write(data)


def write_text(target: Path, text: str, force: bool = True) -> None:
    """``text`` (UTF-8) as ``target``, atomically."""
    write_bytes(target, text.encode("utf-8"), force)


def remove_stale_temporaries(target: Path, before: float) -> int:
    """Remove what a killed run (kill -9, power cut) left for ``target``: files and folders named
    like :func:`temporary_path`'s and last changed before ``before`` (a ``time.time()``), so a
    run still writing is left alone. Returns how many were removed; never raises."""
    removed = 0
    try:
        candidates = list(target.parent.glob(f".{glob.escape(target.name)}.{_RANDOM_PART}{PARTIAL_SUFFIX}"))
    except OSError:
        return 0
    for stale in candidates:
        try:
            if stale.stat().st_mtime >= before:
                continue
        except OSError:
            continue  # gone already
        remove(stale)
        removed += not stale.exists()
    return removed
