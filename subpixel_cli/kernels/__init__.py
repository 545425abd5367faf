"""Small C kernels for the CPU paths, built on first use by the machine's C compiler.

torch cannot fuse a convolution, its tanh and a per-channel quantizer into one pass, and that
pass over the network's largest tensor is what the int8 path waits on. ``int8.c`` holds the int8
path's kernels, :func:`conv1_u8` and :func:`tanh_bf16`: portable C with vector extensions,
compiled with ``-O3 -march=native`` into a cache folder (``$SUBPIXEL_CACHE`` or
``~/.cache/subpixel``, ``kernels/``) keyed by the source, the compiler and the CPU, and loaded
with ctypes. Where there is no compiler or the build fails, they are ``None`` and callers keep
their torch path; ``SUBPIXEL_KERNELS=0`` turns them off. :func:`unavailable` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

_HERE = Path(__file__).parent
_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
# With OpenMP the kernels share torch's thread pool (its libgomp, which has the same soname);
# without it (a compiler that has none) they run on one thread.
_OPENMP = ("-fopenmp",)
_BUILD_SECONDS = 120
_why: dict[str, str] = {}

Conv1 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cache_folder() -> Path:
    """Where built kernels are kept."""
    root = os.environ.get("SUBPIXEL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "subpixel")
    return Path(root).expanduser() / "kernels"


def unavailable(name: str = "int8") -> str | None:
    """Why the kernels of ``name``.c could not be built or loaded (``None`` if they were, or
    were not tried)."""
    return _why.get(name)


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _build(name: str) -> ctypes.CDLL | None:
    """``name``.c compiled and loaded (from the cache when it was built before), else ``None``."""
    if os.environ.get("SUBPIXEL_KERNELS", "1") == "0":
        _why[name] = "turned off (SUBPIXEL_KERNELS=0)"
        return None
    cc = _compiler()
    if cc is None:
        _why[name] = "no C compiler (cc, gcc or clang; or $CC)"
        return None
    source = (_HERE / f"{name}.c").read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        _why[name] = f"{cc} does not run ({exc})"
        return None
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS + _OPENMP).encode(), version.encode(),
                                     _cpu_identity().encode()])).hexdigest()[:16]
    folder = cache_folder()
    built = folder / f"{name}-{key}.so"
    if not built.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:  # built aside, then renamed: never half a file
                part = Path(tmp) / built.name
                for extra in (_OPENMP, ()):
                    run = subprocess.run([cc, *_FLAGS, *extra, "-o", str(part), str(_HERE / f"{name}.c")],
                                         capture_output=True, text=True, timeout=_BUILD_SECONDS)
                    if run.returncode == 0:
                        break
                else:
                    first = (run.stderr.strip().splitlines() or ["no message"])[0]
                    _why[name] = f"{cc} failed: {first}"
                    return None
                os.replace(part, built)
        except (OSError, subprocess.SubprocessError) as exc:
            _why[name] = f"cannot build in {folder} ({exc})"
            return None
    try:
        return ctypes.CDLL(str(built))
    except OSError as exc:
        _why[name] = f"cannot load {built} ({exc})"
        return None


@functools.lru_cache(maxsize=1)
def _int8() -> ctypes.CDLL | None:
    lib = _build("int8")
    if lib is None:
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.conv1_u8.restype = lib.tanh_bf16.restype = None
    lib.conv1_u8.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr]
    lib.tanh_bf16.argtypes = [ptr, i64]
    return lib


@functools.lru_cache(maxsize=None)
def conv1_u8() -> Conv1 | None:
    """``f(planes, weight, bias, gain, shift)``: for ``N×H×W`` float32 planes, ``weight`` 64×1×5×5
    and ``bias``, ``gain``, ``shift`` of 64, the ``N×(H−4)×(W−4)×64`` uint8 levels
    ``round(gain·tanh(conv(planes)) + shift)`` clamped to 0…255 (an unpadded convolution), the
    rows shared among torch's threads; ``None`` where the kernel cannot be built. Its ``bf16``
    says whether it rounds the weights to bf16 (CPUs with AVX-512 BF16: twice the speed) or keeps
    them in fp32."""
    lib = _int8()
    if lib is None:
        return None
    kernel = lib.conv1_u8

    def run(planes: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: torch.Tensor,
            shift: torch.Tensor) -> torch.Tensor:
        n, h, w = planes.shape
        if weight.shape != (64, 1, 5, 5) or h < 5 or w < 5:
            raise ValueError(f"conv1_u8 takes 64×1×5×5 weights on planes of at least 5×5, not {tuple(weight.shape)} "
                             f"on {h}×{w}")
        planes = planes.float().contiguous()
        taps = weight.float().reshape(64, 25).t().contiguous()  # tap-major
        params = [t.float().contiguous().reshape(64) for t in (bias, gain, shift)]
        out = torch.empty((n, h - 4, w - 4, 64), dtype=torch.uint8)
        kernel(planes.data_ptr(), n, h, w, taps.data_ptr(), *(p.data_ptr() for p in params), out.data_ptr())
        return out

    run.bf16 = bool(lib.conv1_u8_bf16())  # type: ignore[attr-defined]  # weights rounded to bf16
    return run


@functools.lru_cache(maxsize=None)
def tanh_bf16() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``f(x)``: tanh in place on a contiguous (in any memory format) bf16 tensor, returned;
    ``None`` where the kernel cannot be built."""
    lib = _int8()
    if lib is None:
        return None

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16 or not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            raise ValueError("tanh_bf16 takes a dense bf16 tensor")
        lib.tanh_bf16(x.data_ptr(), x.numel())
        return x

    return run
