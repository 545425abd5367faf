"""Where and how the network runs: the device, the precision, process-wide tuning and
out-of-memory errors. Shared by inference (:mod:`subpixel_cli.upscale`, video) and training.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from subpixel_cli.calibration import CHECK_DATASETS, MAX_LOSS_DB, Calibration
from subpixel_cli.choices import DEVICES
from subpixel_cli.choices import PRECISIONS as PRECISION_NAMES
from subpixel_cli.errors import UsageError
from subpixel_cli.kernels import Kernels, default_kernels

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass on the CPU


# --- device and precision ---------------------------------------------------------------------


def local_rank() -> int:
    """This process's rank on its machine under torchrun (``LOCAL_RANK``), else 0."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an unavailable device is an error.
    A CUDA device is the GPU of this process's ``LOCAL_RANK`` (one GPU per process under
    torchrun; ranks beyond the GPUs share them round-robin)."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r} (use one of {', '.join(DEVICES)})")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if name == "mps" and not mps:
        raise UsageError("--device mps: Apple's MPS is not available here; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device(name)


def resolve_precision(name: str, device: torch.device, int8_ready: bool = False,
                      kernels: Kernels | None = None) -> torch.dtype:
    """``auto`` is fp16 on GPUs (with an fp32 retry on non-finite output); on CPUs it is int8
    where ``int8_ready`` (a calibration checked within 0.05 dB of fp32) and the CPU has fast int8
    (:func:`fast_int8`), else bf16 where the CPU computes it natively (AVX-512 BF16 or AMX: faster
    than fp32 and close to it in PSNR, benchmarks/README.md), else fp32. On the CPU,
    ``auto`` means int8 or bf16 only for the fused 8-bit path: the Upscaler keeps 16-bit pictures
    in fp32."""
    if name == "auto":
        if device.type in ("cuda", "mps"):
            return torch.float16
        if device.type == "cpu" and int8_ready and fast_int8(kernels):
            return torch.int8
        return torch.bfloat16 if device.type == "cpu" and fast_bf16() else torch.float32
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r} (use {', '.join(PRECISION_NAMES)})")
    if name == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on the CPU (oneDNN); on {device.type} use fp16 or auto")
    return PRECISIONS[name]


@dataclass(frozen=True)
class Precision:
    """What a precision choice means for inference: ``fused``, the dtype of the fused 8-bit path
    (:mod:`subpixel_cli.fused`; ``torch.int8`` for the int8 path); ``module``, the dtype of the
    network as a module (16-bit pictures, RGB models on grey); ``checks_overflow``, whether
    results are checked for non-finite values and redone in fp32; ``notice``, why the precision
    asked for was not the one given, if it was not."""

    fused: torch.dtype
    module: torch.dtype
    checks_overflow: bool
    notice: str | None = None

    @property
    def name(self) -> str:
        """The fused path's precision as ``--precision`` spells it: fp32, fp16, bf16 or int8."""
        return next(name for name, dtype in PRECISIONS.items() if dtype == self.fused)


def inference_precision(name: str, device: torch.device, calibration: Calibration | None = None,
                        kernels: Kernels | None = None) -> Precision:
    """:func:`resolve_precision` for the Upscaler. ``auto`` on the CPU keeps the module in fp32:
    its values in [0, 1] need more than bf16's 8 bits of mantissa. fp16 tops out at 65504; bf16
    has fp32's range, so only fp16 output is checked (a pass over the result that costs a seventh
    of a bf16 batch on the CPU). ``int8`` without a calibration, or where this torch has no
    quantized kernels, falls back to what ``auto`` would choose, with a notice."""
    notice = None
    if name == "int8" and device.type == "cpu" and (calibration is None or not int8_kernels()):
        notice = ("--precision int8: this model has no calibration (run `subpixel quantize`)" if calibration is None
                  else "--precision int8: this torch build has no oneDNN quantized convolution")
        name, calibration = "auto", None
    int8_ready = calibration is not None and int8_kernels() and calibration.accurate()
    dtype = resolve_precision(name, device, int8_ready, kernels)
    module = torch.float32 if name in ("auto", "int8") and device.type == "cpu" else dtype
    precision = Precision(fused=dtype, module=module, checks_overflow=dtype == torch.float16)
    return replace(precision, notice=f"{notice}; using {precision.name}") if notice else precision


@contextlib.contextmanager
def exact_fp32(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Within the block, fp32 convolutions and matrix products on CUDA are IEEE fp32: cuDNN's
    default on Ampere and later GPUs is TF32 (10 bits of mantissa, as fp16), so ``fp32`` would
    not be fp32. The previous settings come back when the block ends (they are process-wide: a
    block is for one thread's work); elsewhere, or when not ``enabled``, nothing changes."""
    if not enabled or device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(cudnn, "conv"):  # torch ≥ 2.9: per-operator settings (mixing in the old flags is an error there)
        saved = cudnn.conv.fp32_precision, matmul.fp32_precision
        cudnn.conv.fp32_precision = matmul.fp32_precision = "ieee"
    else:
        saved = cudnn.allow_tf32, matmul.allow_tf32
        cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        if hasattr(cudnn, "conv"):
            cudnn.conv.fp32_precision, matmul.fp32_precision = saved
        else:
            cudnn.allow_tf32, matmul.allow_tf32 = saved


def default_memory_budget(device: torch.device) -> int:
    """Bytes of activations one forward pass may use: half the free memory of a CUDA device,
    else :data:`DEFAULT_MEMORY_BUDGET`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return DEFAULT_MEMORY_BUDGET


def _fused_conv_op() -> Any:
    """oneDNN's convolution with a fused activation (the op torch.compile's CPU freezing emits),
    or ``None`` where this torch build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


MKLDNN_CONV = _fused_conv_op()


def native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 BF16 or AMX); elsewhere bf16 is
    emulated, far slower than fp32 (benchmarks/README.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic of its own (AVX-512 BF16 or AMX tiles), so that
    oneDNN's bf16 convolutions beat its fp32 ones; plain AVX-512 only converts."""
    return cpu_has("_is_avx512_bf16_supported", "_is_amx_tile_supported") and MKLDNN_CONV is not None and native_bf16()


def cpu_has(*checks: str) -> bool:
    """Whether any of torch.cpu's feature checks (``_is_vnni_supported``…) says yes."""
    cpu = getattr(torch, "cpu", None)
    try:
        return any(check() for check in (getattr(cpu, name, None) for name in checks) if check is not None)
    except (AttributeError, RuntimeError):
        return False


def int8_kernels() -> bool:
    """Whether this torch build has what the int8 path runs on: oneDNN's quantized convolution
    and the per-tensor quantizer."""
    try:
        return (MKLDNN_CONV is not None and hasattr(torch, "quantize_per_tensor")
                and hasattr(torch.ops.onednn, "qconv2d_pointwise") and hasattr(torch.ops.onednn, "qconv_prepack"))
    except (AttributeError, RuntimeError):
        return False


def fast_int8(kernels: Kernels | None = None) -> bool:
    """Whether the int8 path beats the float ones on this CPU: int8 dot products (VNNI or AMX
    tiles), and the C kernel that makes conv1's output the int8 layer's input in one pass
    (:attr:`~subpixel_cli.kernels.Kernels.conv1_u8`, in ``kernels``, by default
    :func:`~subpixel_cli.kernels.default_kernels`), built with OpenMP. Without it, or on one
    thread, torch's quantizer (a memory-bound pass over the network's largest tensor) takes back
    what conv2 gains. Where the CPU has VNNI but no bf16 arithmetic the layers around conv2 run in
    fp32 and int8 is compared with fp32. The figures are in benchmarks/README.md."""
    kernels = kernels if kernels is not None else default_kernels()
    return (cpu_has("_is_vnni_supported", "_is_amx_tile_supported") and int8_kernels()
            and kernels.why_not("int8") is None)


def cpu_paths(calibration: Calibration | None, kernels: Kernels | None = None) -> dict[str, Any]:
    """What the CPU runs a model in here, and why not the faster paths: ``auto``, the precision
    ``--precision auto`` takes for 8-bit pictures; ``int8`` and ``bf16``, ``None`` where that path
    is fast here and why not otherwise; ``kernels``, each C library's status
    (:meth:`~subpixel_cli.kernels.Kernels.status`). For ``subpixel bench`` and ``subpixel models
    --json``."""
    kernels = kernels if kernels is not None else default_kernels()
    device = torch.device("cpu")
    if calibration is None:
        int8 = "no calibration in the model folder (subpixel quantize)"
    elif not calibration.accurate():
        int8 = f"its calibration is not checked within {MAX_LOSS_DB} dB of fp32 on {' and '.join(CHECK_DATASETS)}"
    elif not int8_kernels():
        int8 = "this torch build has no oneDNN quantized convolution"
    elif not cpu_has("_is_vnni_supported", "_is_amx_tile_supported"):
        int8 = "this CPU has no int8 dot products (AVX-512 VNNI or AMX)"
    else:
        int8 = None if fast_int8(kernels) else f"the int8 kernel: {kernels.why_not('int8')}"
    bf16 = None if fast_bf16() else "this CPU has no bf16 arithmetic (AVX-512 BF16 or AMX): bf16 would be emulated"
    auto = inference_precision("auto", device, calibration, kernels).name
    return {"auto": auto, "int8": int8, "bf16": bf16, "kernels": kernels.status()}


# --- process-wide tuning ----------------------------------------------------------------------


def keep_freed_memory() -> None:
    """Have glibc serve large blocks from its heap and keep them when freed.

    By default every block over 32 MB is a fresh ``mmap`` whose pages fault in on first touch and
    go back to the system on ``free``, so each frame's activations would pay page faults again,
    a cost on the order of a layer's (benchmarks/README.md). A process-wide setting, for the
    command to make (:func:`tune_for`); a no-op where the C library has no ``mallopt``.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)  # still hand back free memory beyond 1 GiB


def cpu_quota() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a
    container limited to 2 CPUs on a 64-core host still reports 64 cores)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def local_world_size() -> int:
    """How many processes torchrun started on this machine (``LOCAL_WORLD_SIZE``), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def limit_threads() -> None:
    """Fewer torch threads when the process may use fewer CPUs than torch assumes (its default is
    the machine's physical cores): oversubscribed threads stall each other at every layer. The
    processes torchrun starts on one machine share its CPUs: each gets ``cpu_quota() //
    LOCAL_WORLD_SIZE``, at least 1. Only ever lowers the count, and never when ``OMP_NUM_THREADS``
    is set (torchrun sets it to 1 for several processes unless it is set already)."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    quota = max(1, cpu_quota() // local_world_size())
    if torch.get_num_threads() > quota:
        torch.set_num_threads(quota)


def tune_for(device: torch.device) -> None:
    """The process-wide settings an inference device wants: cuDNN's autotuner on CUDA; on the CPU
    a heap that keeps freed blocks and no more threads than the CPUs this process may use; and no
    warning for the quantized tensor type the int8 path makes (torch marks it deprecated; the path
    only views its bytes). For the command that runs, once: constructing an
    :class:`~subpixel_cli.upscale.Upscaler` leaves a library user's process as it is."""
    warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu":
        keep_freed_memory()
        limit_threads()


# --- out of memory ----------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_message(tile: int | None = None) -> str:
    """The one hint for an out-of-memory error: which ``--tile`` to try next."""
    smaller = f"--tile {max(8, tile // 2)}" if tile else "--tile"
    return f"out of memory; try smaller tiles ({smaller}) or a lower --max-memory or --batch-size"
