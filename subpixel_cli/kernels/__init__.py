"""Small C kernels for the CPU paths, built on first use by the machine's C compiler.

torch cannot fuse a convolution, its tanh and a per-channel quantizer into one pass, and that
pass over the network's largest tensor is what the int8 path waits on. ``int8.c`` holds the int8
path's kernels, :attr:`Kernels.conv1_u8` and :attr:`Kernels.tanh_bf16`; ``head.c`` the last steps
of Y models in every precision: :attr:`Kernels.write_rgb` (RGB pixels from the phases and the
chroma in one pass), :attr:`Kernels.chroma_planes`, :attr:`Kernels.write_y` (a Y plane alone) and
:meth:`Kernels.conv3_bf16` (a last layer with few outputs). Portable C (vector extensions, and
AVX-512 intrinsics where the compiler targets them), compiled with ``-O3 -march=native`` into a
cache folder (``$SUBPIXEL_CACHE`` or ``~/.cache/subpixel``, ``kernels/``) keyed by the source,
the compiler and the CPU, and loaded with ctypes.

One :class:`Kernels` object holds one configuration's libraries (built or found in the cache on
first need) and why any is missing; the fused path is given one (:func:`default_kernels`, the
environment's, unless the caller makes its own). Where there is no compiler or the build fails,
or a kernel would not be faster on this CPU, a kernel is ``None`` and callers keep their
torch/OpenCV path. A failed build is remembered in the cache folder (``NAME-KEY.failed``, with the
compiler's message), so that later processes do not compile again; a new compiler, source or CPU
has another key and is tried. ``head.c`` has vector paths for x86 only and is not compiled
elsewhere. ``SUBPIXEL_KERNELS=0`` turns the kernels off; ``SUBPIXEL_KERNELS_MARCH`` (e.g.
``x86-64-v3``) builds them for another ``-march`` than the CPU's own: to run the AVX2 paths on an
AVX-512 CPU, for tests and benchmarks.
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
from collections.abc import Callable, Collection
from functools import cached_property
from pathlib import Path

import torch

_HERE = Path(__file__).parent
LIBRARIES = ("int8", "head")
_HEADERS = ("build.h",)  # included by the libraries: part of what a build is keyed by
_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")
# With OpenMP the kernels share torch's thread pool (its libgomp, which has the same soname);
# without it (a compiler that has none) they run on one thread.
_OPENMP = ("-fopenmp",)
_BUILD_SECONDS = 120
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
# features() bits (build.h): int8.c's, and head.c's above its vector lanes.
_INT8_OPENMP, _INT8_BF16 = 1, 2
_HEAD_LANES, _HEAD_OPENMP, _HEAD_BF16 = 0xFF, 256, 512
# Output channels conv3_bf16 and conv3_f32 are used for: where oneDNN fills its 16-channel
# blocks (8 and 16 outputs) its convolution is the faster one (benchmarks/README.md).
CONV3_OUTPUTS = (1, 2, 4)

Conv1 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
WriteRGB = Callable[..., None]
Conv3 = Callable[[torch.Tensor], torch.Tensor]
Tanh = Callable[[torch.Tensor], torch.Tensor]


def cache_folder() -> Path:
    """Where built kernels are kept, by default."""
    root = os.environ.get("SUBPIXEL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "subpixel")
    return Path(root).expanduser() / "kernels"


def find_compiler() -> str | None:
    """``$CC``, else ``cc``, ``gcc`` or ``clang`` on the ``PATH``; ``None`` where there is none."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def default_kernels() -> Kernels:
    """The kernels the environment asks for (``SUBPIXEL_KERNELS``, ``SUBPIXEL_KERNELS_MARCH``,
    ``SUBPIXEL_CACHE``, ``CC``): one object for each such environment, so that a process builds
    and loads its libraries once however many upscalers it makes."""
    off = os.environ.get("SUBPIXEL_KERNELS", "1") == "0"
    return _kernels_for(() if off else LIBRARIES, os.environ.get("SUBPIXEL_KERNELS_MARCH") or "native",
                        cache_folder(), find_compiler())


@functools.lru_cache(maxsize=8)
def _kernels_for(libraries: tuple[str, ...], march: str, cache: Path, compiler: str | None) -> Kernels:
    return Kernels(libraries, march, cache, compiler)


class Kernels:
    """The C kernels of one configuration: which ``libraries`` to use (of :data:`LIBRARIES`;
    none: the torch/OpenCV paths alone), the ``march`` to build for, the ``cache`` folder and the
    ``compiler`` (by default :func:`find_compiler`'s). Each library is built (or loaded from the cache) on the
    first need of one of its kernels and kept for the object's life; :meth:`why_not` says why one
    is missing or not all it could be."""

    def __init__(self, libraries: Collection[str] = LIBRARIES, march: str = "native", cache: Path | None = None,
                 compiler: str | None = None) -> None:
        unknown = set(libraries) - set(LIBRARIES)
        if unknown:
            raise ValueError(f"unknown kernel libraries {sorted(unknown)} (there are {', '.join(LIBRARIES)})")
        self.libraries, self.march = tuple(libraries), march
        self.cache = cache if cache is not None else cache_folder()
        self.compiler = compiler
        self._loaded: dict[str, ctypes.CDLL | None] = {}
        self._why: dict[str, str] = {}

    def only(self, *names: str) -> Kernels:
        """This configuration with only the libraries ``names`` (none: the torch/OpenCV paths
        alone), as a new object: to compare a path with and without some of its kernels."""
        return Kernels(names, self.march, self.cache, self.compiler)

    def library(self, name: str) -> ctypes.CDLL | None:
        """``name``.c built and loaded (once), or ``None``, with the reason in :meth:`why_not`."""
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def why_not(self, name: str = "int8") -> str | None:
        """Why the kernels of ``name``.c are not in use here, or run on one thread (a build
        without OpenMP); ``None`` where they are built as they should be."""
        lib = self.library(name)
        if lib is None:
            return self._why[name]
        threaded = lib.features() & (_INT8_OPENMP if name == "int8" else _HEAD_OPENMP)
        return None if threaded else f"{name}.c was built without OpenMP: its kernels run on one thread"

    def missing(self) -> str | None:
        """Why a library that was tried (a kernel was asked for) is missing, where a C compiler
        would bring it: not where it was turned off or is not for this CPU. Builds nothing."""
        tried = (self._why[n] for n, lib in self._loaded.items() if lib is None and n in self._why)
        return next((why for why in tried if not why.startswith(("turned off", "not asked for", "head.c's"))), None)

    def status(self) -> dict[str, str]:
        """Each library: ``"built"``, or why it is not in use (see :meth:`why_not`)."""
        return {name: self.why_not(name) or "built" for name in LIBRARIES}

    def _load(self, name: str) -> ctypes.CDLL | None:
        if name not in self.libraries:
            self._why[name] = "turned off (SUBPIXEL_KERNELS=0)" if not self.libraries else "not asked for"
            return None
        if name == "head" and platform.machine().lower() not in _X86:
            self._why[name] = f"head.c's vector paths are for x86 CPUs (AVX-512, AVX2), not {platform.machine()}"
            return None
        lib = self._build(name)
        if lib is not None:
            lib.features.restype = ctypes.c_int
            (_declare_int8 if name == "int8" else _declare_head)(lib)
        return lib

    def _build(self, name: str) -> ctypes.CDLL | None:
        """``name``.c compiled and loaded (from the cache when it was built before), else ``None``."""
        cc = self.compiler or find_compiler()
        if cc is None:
            self._why[name] = "no C compiler (cc, gcc or clang; or $CC)"
            return None
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            self._why[name] = f"{cc} does not run ({exc})"
            return None
        flags = (*_FLAGS, f"-march={self.march}")
        sources = [(_HERE / f"{name}.c").read_bytes(), *((_HERE / h).read_bytes() for h in _HEADERS)]
        key = hashlib.sha256(b"\0".join([*sources, " ".join(flags + _OPENMP).encode(), version.encode(),
                                         _cpu_identity().encode()])).hexdigest()[:16]
        built, failed = self.cache / f"{name}-{key}.so", self.cache / f"{name}-{key}.failed"
        if failed.is_file():
            self._why[name] = f"{_read(failed)} (an earlier build; remove {failed} to try again)"
            return None
        if not built.is_file() and not self._compile(name, cc, flags, built, failed):
            return None
        try:
            return ctypes.CDLL(str(built))
        except OSError as exc:
            self._why[name] = f"cannot load {built} ({exc})"
            return None

    def _compile(self, name: str, cc: str, flags: tuple[str, ...], built: Path, failed: Path) -> bool:
        """Build ``built`` aside and rename it into place (never half a file); with OpenMP, else
        without. A compiler that refuses the source leaves ``failed`` with its first message."""
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
                part = Path(tmp) / built.name
                for extra in (_OPENMP, ()):
                    run = subprocess.run([cc, *flags, *extra, "-o", str(part), str(_HERE / f"{name}.c")],
                                         capture_output=True, text=True, timeout=_BUILD_SECONDS)
                    if run.returncode == 0:
                        os.replace(part, built)
                        return True
                self._why[name] = f"{cc} failed: {(run.stderr.strip().splitlines() or ['no message'])[0]}"
                (Path(tmp) / failed.name).write_text(self._why[name], encoding="utf-8")
                os.replace(Path(tmp) / failed.name, failed)
                return False
        except (OSError, subprocess.SubprocessError) as exc:  # a full disk or a timeout: not remembered
            self._why[name] = f"cannot build in {self.cache} ({exc})"
            return False

    # --- int8.c --------------------------------------------------------------------------------

    @cached_property
    def conv1_u8(self) -> Conv1 | None:
        """``f(planes, weight, bias, gain, shift)``: for ``N×H×W`` float32 planes, ``weight``
        64×1×5×5 and ``bias``, ``gain``, ``shift`` of 64, the ``N×(H−4)×(W−4)×64`` uint8 levels
        ``round(gain·tanh(conv(planes)) + shift)`` clamped to 0…255 (an unpadded convolution),
        the rows shared among torch's threads; ``None`` where the kernel cannot be built. Its
        ``bf16`` says whether it rounds the weights to bf16 (CPUs with AVX-512 BF16: twice the
        speed) or keeps them in fp32."""
        lib = self.library("int8")
        if lib is None:
            return None
        kernel = lib.conv1_u8

        def run(planes: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: torch.Tensor,
                shift: torch.Tensor) -> torch.Tensor:
            n, h, w = planes.shape
            if weight.shape != (64, 1, 5, 5) or h < 5 or w < 5:
                raise ValueError(f"conv1_u8 takes 64×1×5×5 weights on planes of at least 5×5, not "
                                 f"{tuple(weight.shape)} on {h}×{w}")
            planes = planes.float().contiguous()
            taps = weight.float().reshape(64, 25).t().contiguous()  # tap-major
            params = [t.float().contiguous().reshape(64) for t in (bias, gain, shift)]
            out = torch.empty((n, h - 4, w - 4, 64), dtype=torch.uint8)
            kernel(planes.data_ptr(), n, h, w, taps.data_ptr(), *(p.data_ptr() for p in params), out.data_ptr())
            return out

        run.bf16 = bool(lib.features() & _INT8_BF16)  # type: ignore[attr-defined]  # weights rounded to bf16
        return run

    @cached_property
    def tanh_bf16(self) -> Tanh | None:
        """``f(x)``: tanh in place on a contiguous (in any memory format) bf16 tensor, returned;
        ``None`` where the kernel cannot be built."""
        return self._tanh(torch.bfloat16)

    @cached_property
    def tanh_f32(self) -> Tanh | None:
        """:attr:`tanh_bf16` for float32 tensors (within 2.2e-6 of tanh, 1e-4 beyond ±4.97)."""
        return self._tanh(torch.float32)

    def _tanh(self, dtype: torch.dtype) -> Tanh | None:
        lib = self.library("int8")
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

    # --- head.c --------------------------------------------------------------------------------

    @property
    def vector_lanes(self) -> int:
        """Pixels :attr:`write_rgb`'s vector path takes at a time: 16 (AVX-512), 8 (AVX2), 0 (none
        built: the pixel passes are ``None``). :attr:`write_y` is used with 16 only."""
        lib = self.library("head")
        return lib.features() & _HEAD_LANES if lib is not None else 0

    def _vector_head(self) -> ctypes.CDLL | None:
        """head.c where it was built with a vector path (AVX-512 or AVX2): its pixel passes'
        plain loops alone are slower than OpenCV's and torch's (benchmarks/README.md), so
        without one they are not used."""
        return self.library("head") if self.vector_lanes else None

    def conv3_bf16(self, weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...] = CONV3_OUTPUTS) -> Conv3 | None:
        """For ``O×C×3×3`` weights (``C`` a multiple of 32, ``O`` in ``outputs``: the kernel takes
        1, 2, 4, 8 or 16) and bias, ``f(x)``: the unpadded convolution of bf16 ``N×C×H×W``
        features (channels last) as ``N×O×(H−2)×(W−2)`` fp32 (channels last), the weights rounded
        to bf16 and the sums in fp32, as oneDNN's bf16 convolution; ``None`` where the kernel is
        not built (CPUs without AVX-512 BF16) or does not take the shape."""
        return self._conv3(weight, bias, outputs, torch.bfloat16)

    def conv3_f32(self, weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...] = CONV3_OUTPUTS) -> Conv3 | None:
        """:meth:`conv3_bf16` for float32 features and weights (``C`` a multiple of 16), on CPUs
        with AVX-512 (with or without bf16 arithmetic) or AVX2 (``O`` up to 8): the last layer of
        the fp32 path, and of int8's where the CPU has no bf16 arithmetic."""
        return self._conv3(weight, bias, outputs, torch.float32)

    def _conv3(self, weight: torch.Tensor, bias: torch.Tensor, outputs: tuple[int, ...], dtype: torch.dtype) -> Conv3 | None:
        o, c, kh, kw = weight.shape
        lib = self._vector_head()
        bf16 = dtype == torch.bfloat16
        name, chunk = ("conv3_bf16", 32) if bf16 else ("conv3_f32", 16)
        built = lib is not None and (not bf16 or lib.features() & _HEAD_BF16)
        if (not built or (kh, kw) != (3, 3) or c % chunk or o not in set(outputs) & {1, 2, 4, 8, 16}
                or (not bf16 and o > self.vector_lanes)):
            return None
        kernel = getattr(lib, name)
        taps = weight.permute(0, 2, 3, 1).to(dtype).contiguous()  # O×3×3×C
        b = bias.float().contiguous()

        def run(x: torch.Tensor) -> torch.Tensor:
            n, cx, h, w = x.shape
            if x.dtype != dtype or cx != c or h < 3 or w < 3:
                raise ValueError(f"{name} takes {'bf16' if bf16 else 'float32'} N×{c}×H×W features "
                                 f"of at least 3×3, not {tuple(x.shape)} {x.dtype}")
            nhwc = x.permute(0, 2, 3, 1).contiguous()
            out = torch.empty((n, h - 2, w - 2, o), dtype=torch.float32)
            if kernel(nhwc.data_ptr(), n, h, w, c, taps.data_ptr(), b.data_ptr(), o, out.data_ptr()) != 0:
                raise ValueError(f"{name} does not take {o} outputs from {c} channels")
            return out.permute(0, 3, 1, 2)

        run.dtype = dtype  # type: ignore[attr-defined]  # what it takes
        return run

    @cached_property
    def write_rgb(self) -> WriteRGB | None:
        """``f(phases, crop, planes, crop_planes, taps, centre, out, generic=False)``: a Y model's
        pixels, in one pass. ``phases``: the last layer's ``N×r²×H×W`` output (bf16 or fp32,
        channels last), read from row and column ``crop`` on, plus ``centre``; ``planes``:
        ``N×3×H'×W'`` float32, the chroma's contribution to R, G, B at low resolution,
        bicubically ×r by ``taps`` (``r×5``: tap ``o`` weighs pixel ``y + o − 2`` in output row
        ``y·r + i``) from row and column ``crop_planes`` (two pixels of margin); ``out``:
        ``N×h·r×w·r×3`` uint8, whose size sets h and w. The sums are rounded to nearest even and
        clamped to 0…255. ``generic``: the plain loop (which does the last pixels of rows) for
        every pixel, for tests. ``None`` where the kernel cannot be built or has no vector path
        (AVX-512 or AVX2): the plain loop alone is slower than OpenCV (benchmarks/README.md)."""
        lib = self._vector_head()
        if lib is None:
            return None

        def run(phases: torch.Tensor, crop: int, planes: torch.Tensor, crop_planes: int, taps: torch.Tensor,
                centre: float, out: torch.Tensor, generic: bool = False) -> None:
            n, r2, th, tw = phases.shape
            r = round(r2**0.5)
            _, hr, wr, c = out.shape
            h, w = hr // r, wr // r
            fits = (r * r == r2 and c == 3 and out.dtype == torch.uint8 and out.is_contiguous() and hr == h * r
                    and wr == w * r and phases.dtype in (torch.bfloat16, torch.float32)
                    and planes.shape[:2] == (n, 3) and planes.dtype == torch.float32 and taps.shape == (r, 5)
                    and out.shape[0] == n and crop + h <= th and crop + w <= tw
                    and crop_planes + h + 4 <= planes.shape[2] and crop_planes + w + 4 <= planes.shape[3]
                    and min(crop, crop_planes) >= 0)
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

    @cached_property
    def chroma_planes(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """``f(x, m)``: ``m @ rgb`` for every pixel of ``x`` (``N×3×H×W`` float32, channels last:
        the network's input) as ``N×3×H×W`` float32 planes, the ones :attr:`write_rgb` reads;
        ``None`` where it is not built (see :attr:`write_rgb`: it comes with it)."""
        lib = self._vector_head()
        if lib is None:
            return None

        def run(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            if c != 3 or x.dtype != torch.float32 or m.shape != (3, 3):
                raise ValueError(f"chroma_planes takes float32 N×3×H×W pictures and a 3×3 matrix, not "
                                 f"{tuple(x.shape)} {x.dtype}")
            nhwc, m = x.permute(0, 2, 3, 1).contiguous(), m.float().contiguous()
            out = torch.empty((n, 3, h, w), dtype=torch.float32)
            lib.chroma_planes(nhwc.data_ptr(), n, h, w, m.data_ptr(), out.data_ptr())
            return out

        return run

    @cached_property
    def write_y(self) -> Callable[..., None] | None:
        """``f(phases, crop, centre, out, generic=False)``: the Y plane of a Y model on one
        channel (a grey picture, or the Y of video that stays in YCbCr) in one pass: the phase
        shift of ``phases`` (``N×r²×H×W``, bf16 or fp32, channels last; from row and column
        ``crop``) plus ``centre``, clamped to 0…255 and truncated (the last layer's bias holds the
        ½ that rounds), as torch's copy to uint8 does. ``out``: ``N×h·r×w·r(×1)`` uint8 whose
        planes are each contiguous (frames may lie apart: the Y planes of I420 frames). ``None``
        where the kernel cannot be built or has no AVX-512 path: with AVX2 its gathers were no
        faster than torch's four passes."""
        lib = self._vector_head()
        if lib is None or self.vector_lanes < 16:
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
                raise ValueError(f"write_y cannot write {tuple(out.shape)} {out.dtype} planes (strides "
                                 f"{out.stride()}) from {tuple(phases.shape)} {phases.dtype} phases")
            nhwc = phases.permute(0, 2, 3, 1).contiguous()
            if lib.write_y(nhwc.data_ptr(), int(phases.dtype == torch.bfloat16), n, th, tw, crop, r, centre,
                           out.data_ptr(), h, w, out.stride(0), int(generic)) != 0:
                raise MemoryError("write_y ran out of memory")

        return run


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "the build failed"
    except (OSError, UnicodeDecodeError):
        return "the build failed"


def _declare_int8(lib: ctypes.CDLL) -> None:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.conv1_u8.restype = lib.tanh_bf16.restype = lib.tanh_f32.restype = None
    lib.conv1_u8.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr]
    lib.tanh_bf16.argtypes = lib.tanh_f32.argtypes = [ptr, i64]


def _declare_head(lib: ctypes.CDLL) -> None:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.write_y.restype = lib.write_rgb.restype = i32
    lib.chroma_planes.restype = None
    lib.chroma_planes.argtypes = [ptr, i64, i64, i64, ptr, ptr]
    lib.write_y.argtypes = [ptr, i32, i64, i64, i64, i64, i64, ctypes.c_float, ptr, i64, i64, i64, i32]
    lib.write_rgb.argtypes = [ptr, i32, i64, i64, i64, i64, ptr, i64, i64, i64, ptr, i64, ctypes.c_float, ptr,
                              i64, i64, i32]
    features = lib.features()
    for name, built in (("conv3_bf16", features & _HEAD_BF16), ("conv3_f32", features & _HEAD_LANES)):
        if built:  # (the symbol is only there where it is built)
            getattr(lib, name).restype = i32
            getattr(lib, name).argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, i64, ptr]
