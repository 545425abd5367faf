"""Training throughput on this machine, in LR pixels per second (issue 9).

×3 ESPCN, 48-pixel LR patches, batches of 32 and 64, one optimiser step per batch (forward,
loss, backward, Adam) with the batch coming from the real :class:`~subpixel_cli.data.PatchDataset`
through a DataLoader, as ``subpixel train`` runs it. The paths:

- ``fp32, per-item patches``: the trainer before this change (the baseline): every patch made
  and collated on its own, fp32, channels_last;
- ``fp32, batched patches``: a batch cut in one call (``PatchDataset.__getitems__``);
- ``bf16 autocast``: the forward pass in bf16 where the CPU has bf16 arithmetic (AVX-512 BF16 or
  AMX), fp32 weights, Adam and loss (``subpixel train --precision auto``);
- the same without channels_last, and with ``torch.compile`` (``--compile``; slow to warm up);
- with ``--degrade SPEC``: fp32 batched patches damaged as ``subpixel train --degrade`` damages
  them, cut and damaged in the main process (``workers 0``) and in one DataLoader worker
  (``workers 1``), against the same without damage. The pictures are smooth with fine noise, as
  photos are (JPEG and x264 take longer on pure noise than on pictures).

    python benchmarks/train_speed.py              # ~3 min on 2 cores
    python benchmarks/train_speed.py --seconds 5 --compile --json out.json
    python benchmarks/train_speed.py --degrade 'blur:0.2-1.2@0.2,noise:1-8@0.3,jpeg:30-95@0.75,h264:18-38@0.2'

Run it on a quiet machine: training in the background halves every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from subpixel_cli.data import Pair, PatchDataset, collate_batch, to_channels
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.runtime import fast_bf16

SCALE, PATCH = 3, 48


@dataclass(frozen=True)
class TrainPath:
    name: str
    batched: bool
    bf16: bool
    channels_last: bool = True
    compile: bool = False
    damaged: bool = False
    workers: int = 0


class _PerItem(Dataset):
    """The dataset without its batched cut: what the trainer did before."""

    def __init__(self, inner: PatchDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: int) -> Any:
        return self.inner[key]


def _pool(images: int = 48, seed: int = 0, damage: Any = None) -> PatchDataset:
    """Pairs of the size of the training photos (375×500 HR), LR by the protocol's degradation:
    smooth shapes with fine noise (the network's speed does not depend on the content; JPEG's
    and x264's do, and pictures are not noise)."""
    import cv2

    from subpixel_cli.degradations import downscale

    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(images):
        coarse = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (498, 375), interpolation=cv2.INTER_CUBIC)
        hr = np.clip(coarse + rng.normal(0, 4, coarse.shape), 0, 255).astype(np.uint8)
        lr = downscale(hr, SCALE)
        pairs.append(Pair(str(i), to_channels(lr, 1), to_channels(hr, 1), lr))
    return PatchDataset(pairs, SCALE, PATCH, patches_per_image=64, seed=seed, damage=damage)


def measure(path: TrainPath, batch: int, seconds: float, pool: PatchDataset,
            damaged_pool: PatchDataset | None = None) -> float:
    """LR pixels per second of whole training steps along ``path``."""
    torch.manual_seed(0)
    model = ESPCN(ESPCNConfig(scale=SCALE))
    fmt = torch.channels_last if path.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if path.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = (damaged_pool if path.damaged else pool) if path.batched else _PerItem(pool)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=path.workers,
                        persistent_workers=path.workers > 0, collate_fn=collate_batch if path.batched else None)
    m = model.config.receptive_radius * SCALE

    def steps() -> Any:
        while True:
            yield from loader

    def step(lr: torch.Tensor, hr: torch.Tensor) -> None:
        lr = lr.contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path.bf16):
            out = net(lr)[..., m:-m, m:-m].float()
        loss = torch.nn.functional.l1_loss(out, hr[..., m:-m, m:-m])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    batches = steps()
    for _ in range(3 if not path.compile else 6):  # warm-up (and compilation)
        step(*next(batches))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(*next(batches))
        done += 1
    return done * batch * PATCH * PATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per path and batch size")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (bf16)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--degrade", metavar="SPEC", help="also time patches damaged by this spec (train --degrade)")
    args = parser.parse_args()
    bf16 = fast_bf16()
    paths = [TrainPath("fp32, per-item patches (before)", batched=False, bf16=False),
             TrainPath("fp32, batched patches", batched=True, bf16=False)]
    damaged_pool = None
    if args.degrade:
        from subpixel_cli.degradations import Degradation

        damaged_pool = _pool(damage=Degradation.parse(args.degrade))
        paths += [TrainPath("fp32, batched, workers 1", batched=True, bf16=False, workers=1),
                  TrainPath(f"fp32, batched, damaged ({args.degrade}), workers 0", batched=True, bf16=False, damaged=True),
                  TrainPath("fp32, batched, damaged, workers 1", batched=True, bf16=False, damaged=True, workers=1)]
    if bf16:
        paths += [TrainPath("bf16 autocast, batched patches", batched=True, bf16=True),
                  TrainPath("bf16 autocast, batched, NCHW (no channels_last)", batched=True, bf16=True, channels_last=False)]
        if args.compile:
            paths.append(TrainPath("bf16 autocast, batched, torch.compile", batched=True, bf16=True, compile=True))
    pool = _pool()
    rows: dict[str, dict[int, float]] = {}
    for path in paths:
        rows[path.name] = {}
        for batch in (32, 64):
            rows[path.name][batch] = measure(path, batch, args.seconds, pool, damaged_pool)
            print(f"{path.name:55s} batch {batch:3d}: {rows[path.name][batch] / 1e6:6.3f} M LR px/s", flush=True)
    base = rows[paths[0].name]
    print(f"\nMachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"native bf16: {bf16}, torch {torch.__version__}\n")
    print("| path (×3, 48-px LR patches) | batch 32 | batch 64 | speed-up (32 / 64) |")
    print("|---|---:|---:|---:|")
    for name, by_batch in rows.items():
        print(f"| {name} | {by_batch[32] / 1e6:.3f} M px/s | {by_batch[64] / 1e6:.3f} M px/s | "
              f"{by_batch[32] / base[32]:.2f}× / {by_batch[64] / base[64]:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps({"native_bf16": bf16, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
