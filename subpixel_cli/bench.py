"""What ``subpixel bench`` measures: the Upscaler's throughput on synthetic same-size frames."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from subpixel_cli.errors import UsageError
from subpixel_cli.upscale import Upscaler


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

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s, counting the network's multiply-accumulates as two operations."""
        return 2 * self.macs_per_frame * self.fps / 1e9

    def as_dict(self) -> dict[str, Any]:
        w, h = self.size
        return {"frames": self.frames, "seconds": round(self.seconds, 4), "fps": round(self.fps, 3),
                "ms_per_frame": round(1000 / self.fps, 2), "gflops": round(self.gflops, 2),
                "input_size": [w, h], "output_size": [w * self.scale, h * self.scale], "scale": self.scale,
                "device": self.device, "precision": self.precision, "batch": self.batch, "threads": self.threads}


def measure_throughput(upscaler: Upscaler, width: int, height: int, seconds: float = 5.0) -> Throughput:
    """Time :meth:`Upscaler.upscale_batch` on synthetic ``height×width`` uint8 RGB frames, one
    batch of ``batch_size`` after another, for about ``seconds`` (at least two batches) after
    one untimed warm-up batch."""
    if width < 1 or height < 1:
        raise UsageError(f"frame size {width}×{height}: both sides must be at least 1 pixel")
    yy, xx = np.mgrid[0:height, 0:width]
    frame = ((np.sin(xx / 9.0) + np.cos(yy / 7.0) + 2) * 60).astype(np.uint8)
    frames = np.repeat(frame[None, ..., None], upscaler.batch_size, axis=0).repeat(3, axis=3)
    upscaler.upscale_batch(frames)
    done, started = 0, time.perf_counter()
    while done < 2 * len(frames) or time.perf_counter() - started < seconds:
        upscaler.upscale_batch(frames)
        done += len(frames)
    elapsed = time.perf_counter() - started
    threads = torch.get_num_threads() if upscaler.device.type == "cpu" else 0
    return Throughput(done, elapsed, (width, height), upscaler.scale, upscaler.device.type, upscaler.precision.name,
                      len(frames), threads, upscaler.info.config.macs_per_pixel() * width * height)
