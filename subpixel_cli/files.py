"""File safety: nothing the user had is overwritten or left half-written.

Every output (pictures, videos, folders of frames, model folders, checkpoints, sample sheets) is
written under a temporary name beside its target, ``.NAME.XXXXXXXX.partial``, flushed to disk and
renamed over the target only when complete, so the target is the old file or the new one, never a
part. Without ``force`` the rename never replaces a file that appeared meanwhile (another run wrote
it): :class:`~subpixel_cli.errors.OutputExists`, and the other run's file stays. A run killed with
``kill -9`` can leave a temporary behind; :func:`remove_stale_temporaries` removes those of an
earlier run, never one that a live run holds locked while it writes. Temporaries are created with
mode ``0666`` and the umask applied by the kernel, so a renamed output has the permissions of any
new file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; stale temporaries are told by their age alone
    fcntl = None  # type: ignore[assignment]

from subpixel_cli.errors import OutputError, OutputExists, one_line

PARTIAL_SUFFIX = ".partial"
# The random part: 8 characters. New names use hex; [a-z0-9_] also matches the mkstemp names of
# earlier versions, so their leftovers are cleaned up too.
_RANDOM_PART = "[a-z0-9_]" * 8


def _reason(exc: OSError) -> str:
    return exc.strerror or one_line(exc)


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from (``from None`` included), is a full disk
    or quota (``ENOSPC``, ``EDQUOT``)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def hidden_sibling(target: Path, tail: str) -> Path:
    """``.NAME.TAIL`` beside ``target``: the hidden names this tool keeps its work under."""
    return target.with_name(f".{target.name}.{tail}")


def temporary_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (the same folder, so the final rename is atomic)."""
    return hidden_sibling(target, f"{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def make_folder(folder: Path) -> Path:
    """Create ``folder`` and its parents; an :class:`OutputError` that says why when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot create the folder (a file of that name exists)") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({_reason(exc)})") from None
    return folder


def check_folder_writable(folder: Path) -> None:
    """Raise :class:`OutputError` when no file can be made in ``folder`` (permissions, a read-only
    file system), so that a run fails before its work instead of after each file's."""
    probe = temporary_path(folder / ".subpixel-write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({_reason(exc)}); choose another output with -o") from None
    remove(probe)


def check_writable(target: Path, force: bool) -> None:
    """Refuse an existing ``target`` unless ``force``."""
    if not force and (target.exists() or target.is_symlink()):
        raise OutputExists(f"{target}: exists (use --force to overwrite)")


def move_into_place(tmp: Path, target: Path, replace: bool = True) -> None:
    """The final, atomic rename, then a sync of the folder so that the rename survives a power cut.
    Without ``replace`` a ``target`` that appeared meanwhile is left as it is:
    :class:`OutputExists`. Any other failure (the temporary removed meanwhile, a target that became
    a folder) is an :class:`OutputError`."""
    try:
        if replace:
            os.replace(tmp, target)
        else:
            _rename_without_replacing(tmp, target)
    except FileExistsError:
        raise OutputExists(f"{target}: appeared while this output was made (another run wrote it?); "
                           "left as it is") from None
    except OSError as exc:
        raise OutputError(f"{target}: cannot move the finished output into place ({_reason(exc)})") from None
    _sync_folder(target.parent)


def _rename_without_replacing(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` atomically unless ``target`` exists (``FileExistsError``):
    ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it, else a hard link
    and an unlink; on file systems with neither (FAT, some network shares) a check, then a rename."""
    if rename_noreplace(tmp, target):
        return
    try:
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EACCES):
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc ≥ 2.28), or ``None``."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def rename_noreplace(tmp: Path, target: Path) -> bool:
    """``renameat2(tmp, target, RENAME_NOREPLACE)``: ``True`` when done, ``False`` where the
    kernel or the file system lacks it; ``FileExistsError`` when ``target`` exists."""
    function = _renameat2()
    if function is None:
        return False
    at_fdcwd, noreplace = -100, 1
    if function(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(target), noreplace) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _lock(fd: int) -> None:
    """Mark a temporary as being written: :func:`remove_stale_temporaries` leaves it alone while
    the lock is held, and the kernel drops the lock when the process dies (kill -9 too)."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _in_use(path: Path) -> bool:
    """Whether a live process holds ``path`` locked (see :func:`_lock`)."""
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


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
    Without ``force`` an existing ``target``, or one that appears meanwhile, is not replaced
    (:class:`OutputExists`). ``file``: the temporary is a file, made here and locked until it is
    in place (so that no other run takes it for a killed run's), and the result gets the
    permissions a new file gets under the umask, for writers that make their files owner-only
    (safetensors writes 0600)."""
    target = Path(target)
    check_writable(target, force)
    tmp = temporary_path(target)
    held = None
    try:
        mode = None
        if file:  # the kernel applies the umask to a file made with 0666: read it off one
            held = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            _lock(held)
            mode = os.stat(tmp).st_mode & 0o777
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        _sync_file(tmp)
        move_into_place(tmp, target, replace=force)
    except OSError as exc:
        remove(tmp)
        raise OutputError(f"{target}: cannot write ({_reason(exc)})") from None
    except BaseException:
        remove(tmp)
        raise
    finally:
        if held is not None:
            os.close(held)


@contextlib.contextmanager
def atomic_write(target: Path, force: bool = True) -> Iterator[BinaryIO]:
    """A binary file that becomes ``target`` when the block ends without error (see
    :func:`atomic_path`)."""
    with atomic_path(target, force, file=True) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0))
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
    like :func:`temporary_path`'s, last changed before ``before`` (a ``time.time()``) and not
    locked by a live run (:func:`atomic_path`), so a run still writing is left alone. Returns how
    many were removed; never raises."""
    removed = 0
    try:
        candidates = list(target.parent.glob(f".{glob.escape(target.name)}.{_RANDOM_PART}{PARTIAL_SUFFIX}"))
    except OSError:
        return 0
    for stale in candidates:
        try:
            if stale.stat().st_mtime >= before or _in_use(stale):
                continue
        except OSError:
            continue  # gone already
        remove(stale)
        removed += not stale.exists()
    return removed
