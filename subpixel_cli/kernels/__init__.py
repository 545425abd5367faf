"""Small C kernels for the CPU paths, built on first use by the machine's C compiler.

torch cannot fuse a convolution, its tanh and a per-channel quantizer into one pass, and that
pass over the network's largest tensor is what the int8 path waits on. ``int8.c`` holds the int8
path's kernels, :func:`conv1_u8` and :func:`tanh_bf16`; ``head.c`` the last steps of Y models in
every precision: :func:`write_rgb` (RGB pixels from the phases and the chroma in one pass),
:func:`chroma_planes`, :func:`write_y` (a Y plane alone) and :func:`conv3_bf16` (a last layer
with few outputs). Portable C (vector extensions, and AVX-512 intrinsics where the compiler
targets them), compiled with ``-O3 -march=native`` into a cache folder (``$SUBPIXEL_CACHE`` or
``~/.cache/subpixel``, ``kernels/``) keyed by the source, the compiler and the CPU, and loaded
with ctypes. Where there is no compiler or the build fails, or a kernel would not be faster on
this CPU, they are ``None`` and callers keep their torch/OpenCV path; ``SUBPIXEL_KERNELS=0``
turns them off. :func:`unavailable` says why a library did not build.
``SUBPIXEL_KERNELS_MARCH`` (e.g. ``x86-64-v3``) builds them for another ``-march`` than the CPU's
own: to run the AVX2 paths on an AVX-512 CPU, for tests and benchmarks.
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
_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")
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


def missing_note() -> str | None:
    """One line for the user where kernels that were tried could not be built or loaded (not
    where ``SUBPIXEL_KERNELS=0`` turned them off), with how to get them."""
    why = unavailable("int8") or unavailable("head")
    if why is None or "SUBPIXEL_KERNELS=0" in why:
        return None
    return (f"subpixel's C kernels are not built here ({why}): the CPU paths run without them, slower, and "
            "--precision auto does not take int8; install a working C compiler (e.g. `apt install gcc`) and run again "
            "(SUBPIXEL_KERNELS=0 turns them off, and this note)")


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
    flags = (*_FLAGS, f"-march={os.environ.get('SUBPIXEL_KERNELS_MARCH') or 'native'}")
    key = hashlib.sha256(b"\0".join([source, " ".join(flags + _OPENMP).encode(), version.encode(),
                                     _cpu_identity().encode()])).hexdigest()[:16]
    folder = cache_folder()
    built = folder / f"{name}-{key}.so"
    if not built.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:  # built aside, then renamed: never half a file
                part = Path(tmp) / built.name
                for extra in (_OPENMP, ()):
                    run = subprocess.run([cc, *flags, *extra, "-o", str(part), str(_HERE / f"{name}.c")],
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
    lib.conv1_u8.restype = lib.tanh_bf16.restype = lib.tanh_f32.restype = None
    lib.conv1_u8.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr]
    lib.tanh_bf16.argtypes = lib.tanh_f32.argtypes = [ptr, i64]
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


@functools.lru_cache(maxsize=1)
def _head() -> ctypes.CDLL | None:
    lib = _build("head")
    if lib is None:
        return None
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.conv3_bf16_built.restype = lib.conv3_f32_built.restype = lib.vector_lanes.restype = i32
    for name in ("conv3_bf16", "conv3_f32"):
        if getattr(lib, f"{name}_built")():
            getattr(lib, name).restype = i32
            getattr(lib, name).argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, i64, ptr]
    lib.write_y.restype = lib.write_rgb.restype = i32
    lib.chroma_planes.restype = None
    lib.chroma_planes.argtypes = [ptr, i64, i64, i64, ptr, ptr]
    lib.write_y.argtypes = [ptr, i32, i64, i64, i64, i64, i64, ctypes.c_float, ptr, i64, i64, i64, i32]
    lib.write_rgb.argtypes = [ptr, i32, i64, i64, i64, i64, ptr, i64, i64, i64, ptr, i64, ctypes.c_float, ptr,
                              i64, i64, i32]
    return lib


def _vector_head() -> ctypes.CDLL | None:
    """head.c where it was built with a vector path (AVX-512 or AVX2): its pixel passes' plain
    loops alone are slower than OpenCV's and torch's (benchmarks/README.md), so without one they
    are not used."""
    lib = _head()
    return lib if lib is not None and lib.vector_lanes() else None


def vector_lanes() -> int:
    """Pixels :func:`write_rgb`'s vector path takes at a time: 16 (AVX-512), 8 (AVX2), 0 (none
    built: the pixel passes are ``None``). :func:`write_y` is used with 16 only."""
    lib = _head()
    return lib.vector_lanes() if lib is not None else 0


WriteRGB = Callable[..., None]
Conv3 = Callable[[torch.Tensor], torch.Tensor]


# Output channels conv3_bf16 is used for: with 4 (×2 Y models) it ran in half oneDNN's time, with
# 8 and 16 (where oneDNN fills its 16-channel blocks) in 1.2× and 3.3× it (benchmarks/README.md).
CONV3_OUTPUTS = (1, 2, 4)


def conv3_bf16(weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...] = CONV3_OUTPUTS) -> Conv3 | None:
    """For ``O×C×3×3`` weights (``C`` a multiple of 32, ``O`` in ``outputs``: the kernel takes
    1, 2, 4, 8 or 16) and bias, ``f(x)``:
    the unpadded convolution of bf16 ``N×C×H×W`` features (channels last) as ``N×O×(H−2)×(W−2)``
    fp32 (channels last), the weights rounded to bf16 and the sums in fp32, as oneDNN's bf16
    convolution; ``None`` where the kernel is not built (CPUs without AVX-512 BF16) or does not
    take the shape."""
    return _conv3(weight, bias, outputs, torch.bfloat16)


def conv3_f32(weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...] = CONV3_OUTPUTS) -> Conv3 | None:
    """:func:`conv3_bf16` for float32 features and weights (``C`` a multiple of 16), on CPUs with
    AVX-512 (with or without bf16 arithmetic) or AVX2 (``O`` up to 8): the last layer of the fp32
    path, and of int8's where the CPU has no bf16 arithmetic."""
    return _conv3(weight, bias, outputs, torch.float32)


def _conv3(weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...], dtype: torch.dtype) -> Conv3 | None:
    o, c, kh, kw = weight.shape
    lib = _head()
    name, chunk = ("conv3_bf16", 32) if dtype == torch.bfloat16 else ("conv3_f32", 16)
    if (lib is None or not getattr(lib, f"{name}_built")() or (kh, kw) != (3, 3) or c % chunk
            or o not in set(outputs) & {1, 2, 4, 8, 16} or (name == "conv3_f32" and o > lib.vector_lanes())):
        return None
    kernel = getattr(lib, name)
    taps = weight.permute(0, 2, 3, 1).to(dtype).contiguous()  # O×3×3×C
    b = bias.float().contiguous()

    def run(x: torch.Tensor) -> torch.Tensor:
        n, cx, h, w = x.shape
        if x.dtype != dtype or cx != c or h < 3 or w < 3:
            raise ValueError(f"{name} takes {'bf16' if dtype == torch.bfloat16 else 'float32'} N×{c}×H×W features "
                             f"of at least 3×3, not {tuple(x.shape)} {x.dtype}")
        nhwc = x.permute(0, 2, 3, 1).contiguous()
        out = torch.empty((n, h - 2, w - 2, o), dtype=torch.float32)
        if kernel(nhwc.data_ptr(), n, h, w, c, taps.data_ptr(), b.data_ptr(), o, out.data_ptr()) != 0:
            raise ValueError(f"{name} does not take {o} outputs from {c} channels")
        return out.permute(0, 3, 1, 2)

    run.dtype = dtype  # type: ignore[attr-defined]  # what it takes
    return run


@functools.lru_cache(maxsize=None)
def write_rgb() -> WriteRGB | None:
    """``f(phases, crop, planes, crop_planes, taps, centre, out, generic=False)``: a Y model's
    pixels, in one pass. ``phases``: the last layer's ``N×r²×H×W`` output (bf16 or fp32, channels
    last), read from row and column ``crop`` on, plus ``centre``; ``planes``: ``N×3×H'×W'`` float32,
    the chroma's contribution to R, G, B at low resolution, bicubically ×r by ``taps`` (``r×5``: tap
    ``o`` weighs pixel ``y + o − 2`` in output row ``y·r + i``) from row and column ``crop_planes``
    (two pixels of margin); ``out``: ``N×h·r×w·r×3`` uint8, whose size sets h and w. The sums are
    rounded to nearest even and clamped to 0…255. ``generic``: the plain loop (which does the
    last pixels of rows) for every pixel, for tests. ``None`` where the kernel cannot be built or
    has no vector path (AVX-512 or AVX2): the plain loop alone took 2.3× OpenCV's time
    (benchmarks/README.md)."""
    lib = _vector_head()
    if lib is None:
        return None

    def run(phases: torch.Tensor, crop: int, planes: torch.Tensor, crop_planes: int, taps: torch.Tensor,
            centre: float, out: torch.Tensor, generic: bool = False) -> None:
        n, r2, th, tw = phases.shape
        r = round(r2**0.5)
        _, hr, wr, c = out.shape
        h, w = hr // r, wr // r
        fits = (r * r == r2 and c == 3 and out.dtype == torch.uint8 and out.is_contiguous() and hr == h * r
                and wr == w * r and phases.dtype in (torch.bfloat16, torch.float32) and planes.shape[:2] == (n, 3)
                and planes.dtype == torch.float32 and taps.shape == (r, 5) and out.shape[0] == n
                and crop + h <= th and crop + w <= tw and crop_planes + h + 4 <= planes.shape[2]
                and crop_planes + w + 4 <= planes.shape[3] and min(crop, crop_planes) >= 0)
        if not fits:
            raise ValueError(f"write_rgb cannot write {tuple(out.shape)} {out.dtype} pixels from "
                             f"{tuple(phases.shape)} {phases.dtype} phases and {tuple(planes.shape)} planes")
        nhwc = phases.permute(0, 2, 3, 1).contiguous()  # no copy for channels-last phases
        planes, taps = planes.contiguous(), taps.float().contiguous()
        status = lib.write_rgb(nhwc.data_ptr(), int(phases.dtype == torch.bfloat16), n, th, tw, crop,
                               planes.data_ptr(), planes.shape[2], planes.shape[3], crop_planes, taps.data_ptr(),
                               r, centre, out.data_ptr(), h, w, int(generic))
        if status != 0:
            raise MemoryError("write_rgb ran out of memory")

    return run


@functools.lru_cache(maxsize=None)
def chroma_planes() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``f(x, m)``: ``m @ rgb`` for every pixel of ``x`` (``N×3×H×W`` float32, channels last: the
    network's input) as ``N×3×H×W`` float32 planes, the ones :func:`write_rgb` reads; ``None``
    where it is not built (see :func:`write_rgb`: it comes with it)."""
    lib = _vector_head()
    if lib is None:
        return None

    def run(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != 3 or x.dtype != torch.float32 or m.shape != (3, 3):
            raise ValueError(f"chroma_planes takes float32 N×3×H×W pictures and a 3×3 matrix, not {tuple(x.shape)} {x.dtype}")
        nhwc, m = x.permute(0, 2, 3, 1).contiguous(), m.float().contiguous()
        out = torch.empty((n, 3, h, w), dtype=torch.float32)
        lib.chroma_planes(nhwc.data_ptr(), n, h, w, m.data_ptr(), out.data_ptr())
        return out

    return run


@functools.lru_cache(maxsize=None)
def write_y() -> Callable[..., None] | None:
    """``f(phases, crop, centre, out, generic=False)``: the Y plane of a Y model on one channel (a
    grey picture, or the Y of video that stays in YCbCr) in one pass: the phase shift of
    ``phases`` (``N×r²×H×W``, bf16 or fp32, channels last; from row and column ``crop``) plus
    ``centre``, clamped to 0…255 and truncated (the last layer's bias holds the ½ that rounds), as
    torch's copy to uint8 does. ``out``: ``N×h·r×w·r(×1)`` uint8 whose planes are each contiguous
    (frames may lie apart: the Y planes of I420 frames). ``None`` where the kernel cannot be built
    or has no AVX-512 path: with AVX2 its gathers were no faster than torch's four passes."""
    lib = _vector_head()
    if lib is None or lib.vector_lanes() < 16:
        return None

    def run(phases: torch.Tensor, crop: int, centre: float, out: torch.Tensor, generic: bool = False) -> None:
        n, r2, th, tw = phases.shape
        r = round(r2**0.5)
        hr, wr = out.shape[1:3]
        h, w = hr // r, wr // r
        plane = out.dim() == 3 or (out.dim() == 4 and out.shape[3] == 1)
        fits = (r * r == r2 and plane and out.dtype == torch.uint8 and out.shape[0] == n and hr == h * r
                and wr == w * r and out.stride()[1:3] == (wr, 1) and (n == 1 or out.stride(0) >= hr * wr)
                and phases.dtype in (torch.bfloat16, torch.float32) and 0 <= crop and crop + h <= th
                and crop + w <= tw)
        if not fits:
            raise ValueError(f"write_y cannot write {tuple(out.shape)} {out.dtype} planes (strides {out.stride()}) "
                             f"from {tuple(phases.shape)} {phases.dtype} phases")
        nhwc = phases.permute(0, 2, 3, 1).contiguous()
        if lib.write_y(nhwc.data_ptr(), int(phases.dtype == torch.bfloat16), n, th, tw, crop, r, centre,
                       out.data_ptr(), h, w, out.stride(0), int(generic)) != 0:
            raise MemoryError("write_y ran out of memory")

    return run


@functools.lru_cache(maxsize=None)
def tanh_bf16() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``f(x)``: tanh in place on a contiguous (in any memory format) bf16 tensor, returned;
    ``None`` where the kernel cannot be built."""
    return _tanh(torch.bfloat16)


@functools.lru_cache(maxsize=None)
def tanh_f32() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """:func:`tanh_bf16` for float32 tensors (within 2.2e-6 of tanh, 1e-4 beyond ±4.97)."""
    return _tanh(torch.float32)


def _tanh(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor] | None:
    lib = _int8()
    if lib is None:
        return None
    name, kind = ("tanh_bf16", "bf16") if dtype == torch.bfloat16 else ("tanh_f32", "float32")
    kernel = getattr(lib, name)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != dtype or not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            raise ValueError(f"{name} takes a dense {kind} tensor")
        kernel(x.data_ptr(), x.numel())
        return x

    return run
