#!/usr/bin/env python
"""Issue 13's table: model-only fps at ×2/×3/×4 (1080p out) in fp32, bf16 and int8 in one run,
with each path's Y-PSNR on Set5/Set14 against fp32, and where a frame's time goes.

    python benchmarks/realtime.py                    # ~4 min on 2 cores; run it on a quiet machine
    python benchmarks/realtime.py --seconds 2 --no-psnr
    python benchmarks/realtime.py --as-vnni-without-bf16   # fp32 and int8 as a Cascade Lake runs them

fps: ``subpixel bench``'s measurement (:func:`subpixel_cli.bench.measure_throughput`, batches of
4 synthetic frames) for 960×540 ×2, 640×360 ×3 and 480×270 ×4, on RGB frames (``subpixel bench``)
and on the I420 planes ``subpixel video`` keeps 8-bit 4:2:0 video in (``--frames i420``).
``SUBPIXEL_KERNELS=0`` in the environment gives the int8 rows without the C kernels. Each
scale and precision is timed in a fresh process (``--one``): in one long process the int8 rows
came out up to 30 % slower after the fp32 and bf16 runs and their PSNR passes. PSNR: the packaged models on
Set5 and Set14 (../shared/data/benchmarks) through the Upscaler, RGB in and RGB out, scored on Y
by the MATLAB protocol (as ``subpixel quantize`` checks). Steps: the best of 5 batches per step
(:func:`subpixel_cli.bench.profile_steps`); ``--steps-only``: those alone.
``--as-vnni-without-bf16`` (on an AVX-512 BF16 CPU) runs fp32 and int8 as a CPU with AVX-512 VNNI
but no bf16 arithmetic (Cascade Lake, Ice Lake) would: oneDNN held to ``AVX512_CORE_VNNI``, the C
kernels built for ``-march=cascadelake`` and the runtime told there is no fast bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from subpixel_cli.registry import load_model
from subpixel_cli.upscale import Upscaler

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"
SIZES = {2: (960, 540), 3: (640, 360), 4: (480, 270)}
PRECISIONS = ("fp32", "bf16", "int8")
_NO_BF16 = "SUBPIXEL_BENCH_NO_BF16"  # set for the child processes of --as-vnni-without-bf16


def _pretend_no_bf16() -> None:
    """What a CPU with VNNI and without bf16 arithmetic would be told (the ISA and -march limits
    are set in the environment before oneDNN and the kernels start)."""
    from subpixel_cli import fused, runtime

    os.environ.update({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "SUBPIXEL_KERNELS_MARCH": "cascadelake", _NO_BF16: "1"})
    runtime.fast_bf16 = fused.fast_bf16 = lambda: False


def _speeds(scale: int, precision: str, seconds: float) -> dict:
    """RGB and I420 fps (the RGB run with the matmul peak) and the steps, in this process."""
    from subpixel_cli.bench import measure_throughput, profile_steps

    w, h = SIZES[scale]
    up = Upscaler(load_model(None, scale), device="cpu", precision=precision, batch_size=4)
    r = measure_throughput(up, w, h, seconds, peak=True)
    planar = measure_throughput(up, w, h, seconds, layout="i420")
    return {**r.as_dict(), "i420_fps": planar.fps, "steps_ms": profile_steps(up, w, h)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--no-psnr", action="store_true")
    parser.add_argument("--steps-only", action="store_true", help="only where the time goes, in this tree's auto precision")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--as-vnni-without-bf16", action="store_true",
                        help="fp32 and int8 as a CPU with VNNI but no bf16 arithmetic runs them")
    parser.add_argument("--one", nargs=2, metavar=("SCALE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from subpixel_cli.runtime import tune_for

    tune_for(torch.device("cpu"))  # what the command line does once: threads, the heap, warnings
    precisions = PRECISIONS
    if args.as_vnni_without_bf16 or os.environ.get(_NO_BF16):
        _pretend_no_bf16()
        precisions = ("fp32", "int8")
    if args.one:
        print(json.dumps(_speeds(int(args.one[0]), args.one[1], args.seconds)))
        return
    results: dict[str, dict] = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.steps_only:
        for scale, (w, h) in SIZES.items():
            up = Upscaler(load_model(None, scale), device="cpu", batch_size=4)
            from subpixel_cli.bench import profile_steps

            steps = profile_steps(up, w, h)
            total = sum(steps.values())
            print(f"×{scale} {up.dtype}: " + ", ".join(f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in steps.items()))
            results[f"x{scale}"] = steps
    else:
        from subpixel_cli.evaluate import upscaler_psnr

        print("| scale | input → output | precision | fps (RGB) | ms/frame | share of matmul peak | fps (I420) | "
              "Set5 Δ dB | Set14 Δ dB |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for scale, (w, h) in SIZES.items():
            loaded = load_model(None, scale)
            base: dict[str, float] = {}
            for precision in precisions:
                run = subprocess.run([sys.executable, __file__, "--one", str(scale), precision, "--seconds", str(args.seconds)],
                                     capture_output=True, text=True, check=True)
                speed = json.loads(run.stdout.strip().splitlines()[-1])
                up = Upscaler(loaded, device="cpu", precision=precision, batch_size=4)
                psnr = {} if args.no_psnr or not BENCHMARKS.is_dir() else {d: upscaler_psnr([up], BENCHMARKS / d)[0] for d in ("Set5", "Set14")}
                if precision == "fp32":
                    base = psnr
                delta = {d: psnr[d] - base[d] for d in psnr}
                results[f"x{scale}-{precision}"] = {**speed, "psnr": psnr, "delta_db": delta}
                cells = [f"{delta[d]:+.3f}" if d in delta else "–" for d in ("Set5", "Set14")]
                print(f"| ×{scale} | {w}×{h} → {w * scale}×{h * scale} | {speed['precision']} | {speed['fps']:.1f} | "
                      f"{speed['ms_per_frame']:.1f} | {speed['peak_share']:.0%} | {speed['i420_fps']:.1f} | {cells[0]} | "
                      f"{cells[1]} |", flush=True)
        print()
        for key, value in results.items():
            total = sum(value["steps_ms"].values())
            print(f"{key}: " + ", ".join(f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in value["steps_ms"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
