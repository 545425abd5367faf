"""What ``subpixel bench`` measures: the Upscaler's throughput on synthetic same-size frames (RGB
pictures, or the I420 planes that ``subpixel video`` keeps 8-bit 4:2:0 video in), the share of its
steps (``--profile``), and the machine's matrix-multiply peak in the same precision to compare it
with."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from subpixel_cli.errors import UsageError
from subpixel_cli.fused import Laps
from subpixel_cli.runtime import exact_fp32
from subpixel_cli.upscale import Upscaler

_PEAK_SIDES = (1024, 2048)  # square matrices; the larger is nearer the peak on most CPUs


@dataclass
class Throughput:
    """What :func:`measure_throughput` found: ``frames`` of ``size`` (input W×H) in ``seconds``."""

    frames: int
    seconds: float
    size: tuple[int, int]
    scale: int
    device: str
    precision: str
    batch: int
    threads: int
    macs_per_frame: int
    peak_gflops: float | None = None  # the machine's matmul peak in this precision (GOP/s for int8)
    layout: str = "rgb"  # of the frames: "rgb" or "i420"
    math: str = ""  # the arithmetic that ran (Upscaler.math), e.g. "fp16, last layer and chroma in fp32"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s, counting the network's multiply-accumulates as two operations."""
        return 2 * self.macs_per_frame * self.fps / 1e9

    @property
    def peak_share(self) -> float | None:
        return None if not self.peak_gflops else self.gflops / self.peak_gflops

    def as_dict(self) -> dict[str, Any]:
        w, h = self.size
        share = self.peak_share
        return {"frames": self.frames, "seconds": round(self.seconds, 4), "fps": round(self.fps, 3),
                "ms_per_frame": round(1000 / self.fps, 2), "gflops": round(self.gflops, 2),
                "input_size": [w, h], "output_size": [w * self.scale, h * self.scale], "scale": self.scale,
                "layout": self.layout, "device": self.device, "precision": self.precision, "math": self.math, "batch": self.batch,
                "threads": self.threads,
                "matmul_peak_gflops": None if self.peak_gflops is None else round(self.peak_gflops, 1),
                "peak_share": None if share is None else round(share, 3)}


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 1.0) -> float | None:
    """The best GFLOP/s (GOP/s for int8: ``torch._int_mm``) of square matrix products in ``dtype``
    on ``device``, over about ``seconds``; ``None`` where there is no such product."""
    best = 0.0
    for side in _PEAK_SIDES:
        try:
            if dtype == torch.int8:
                a = torch.randint(-64, 64, (side, side), dtype=torch.int8, device=device)
                product = functools.partial(torch._int_mm, a, a)
            else:
                a = torch.randn(side, side, device=device).to(dtype)
                product = functools.partial(torch.mm, a, a)
            product()
        except (RuntimeError, AttributeError, NotImplementedError):
            return None
        deadline = time.perf_counter() + seconds / len(_PEAK_SIDES)
        while True:
            started = time.perf_counter()
            product()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            best = max(best, 2 * side**3 / (now - started) / 1e9)
            if now > deadline:
                break
    return best or None


def _frames(upscaler: Upscaler, width: int, height: int, layout: str) -> tuple[np.ndarray, Callable[..., np.ndarray]]:
    """A batch of synthetic uint8 frames in ``layout`` and the upscaler's call for them."""
    if width < 1 or height < 1:
        raise UsageError(f"frame size {width}×{height}: both sides must be at least 1 pixel")
    yy, xx = np.mgrid[0:height, 0:width]
    frame = ((np.sin(xx / 9.0) + np.cos(yy / 7.0) + 2) * 60).astype(np.uint8)
    if layout == "rgb":
        return np.repeat(frame[None, ..., None], upscaler.batch_size, axis=0).repeat(3, axis=3), upscaler.upscale_batch
    if not upscaler.takes_i420:
        raise UsageError(f"--frames i420: {upscaler.info.name} is an RGB model; I420 frames need a Y model")
    if width % 2 or height % 2:
        raise UsageError(f"--frames i420: frame size {width}×{height} is odd; 4:2:0 needs even sides")
    chroma = frame[::2, ::2].ravel()  # U and V: quarter planes, flat after Y, as PyAV stacks them
    i420 = np.concatenate([frame.ravel(), chroma, chroma]).reshape(-1, width)
    return np.repeat(i420[None], upscaler.batch_size, axis=0), upscaler.upscale_i420


def measure_throughput(upscaler: Upscaler, width: int, height: int, seconds: float = 5.0,
                       peak: bool = False, layout: str = "rgb") -> Throughput:
    """Time the upscaler on synthetic ``height×width`` uint8 frames (``layout`` ``"rgb"``:
    :meth:`Upscaler.upscale_batch` on RGB; ``"i420"``: :meth:`Upscaler.upscale_i420`), one batch of
    ``batch_size`` after another, for about ``seconds`` (at least two batches) after one untimed
    warm-up batch. ``peak``: also measure :func:`matmul_peak` in the precision used."""
    frames, run = _frames(upscaler, width, height, layout)
    run(frames)
    done, started = 0, time.perf_counter()
    while done < 2 * len(frames) or time.perf_counter() - started < seconds:
        run(frames)
        done += len(frames)
    elapsed = time.perf_counter() - started
    threads = torch.get_num_threads() if upscaler.device.type == "cpu" else 0
    with exact_fp32(upscaler.device):  # the peak of the arithmetic the frames ran in
        peak_gflops = matmul_peak(upscaler.precision.fused, upscaler.device) if peak else None
    return Throughput(done, elapsed, (width, height), upscaler.scale, upscaler.device.type, upscaler.precision.name,
                      len(frames), threads, upscaler.info.config.macs_per_pixel() * width * height, peak_gflops, layout,
                      upscaler.math)


def profile_steps(upscaler: Upscaler, width: int, height: int, rounds: int = 5, layout: str = "rgb") -> dict[str, float]:
    """Milliseconds per frame in each step of the fused path (pad, input, colour to Y, conv1 + act,
    …, write), the best of ``rounds`` batches for each step after one warm-up batch. CPU only:
    on GPUs the steps run asynchronously and would be timed as queued, not as run."""
    if upscaler.device.type != "cpu":
        raise UsageError("--profile times the steps on the CPU only (GPU work is asynchronous)")
    frames, run = _frames(upscaler, width, height, layout)
    run(frames)
    best: dict[str, float] = {}
    for _ in range(rounds):
        laps = Laps()
        run(frames, lap=laps)
        for step, seconds in laps.seconds.items():
            best[step] = min(best.get(step, float("inf")), 1000 * seconds / len(frames))
    return best
