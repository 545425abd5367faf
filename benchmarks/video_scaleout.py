#!/usr/bin/env python
"""`subpixel video` in one pass, in segments, and in segments spread over torchrun processes.

    python benchmarks/video_scaleout.py                      # the whole of car_traffic_small.mp4, ×2
    python benchmarks/video_scaleout.py --seconds 3 --json   # a smoke run on the first 3 s

Same clip, same options, each run a process of its own (wall time from start to exit, so
Python, torch and the model's start-up are in it; the result's own fps, from ``--json``, leaves
them out):

(a) one pass (``--end`` past the end: a window is never made in segments) against segments
    (``--no-resume``, so that no earlier work folder is reused);
(b) segments under ``torchrun --nproc_per_node 1`` against ``N`` processes (``--processes``). On
    a CPU the cores are divided: each process gets ``OMP_NUM_THREADS = cores // N``.

``--seconds S`` first cuts the clip to its first S seconds, re-encoded (H.264, a keyframe every
second) so that even a short cut has several segments. Needs a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "video" / "car_traffic_small.mp4"


def cut(clip: Path, seconds: float, target: Path) -> Path:
    """The first ``seconds`` of ``clip``'s video, H.264 with a keyframe every second."""
    with av.open(str(clip)) as src, av.open(str(target), "w") as out:
        rate = src.streams.video[0].average_rate
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = src.streams.video[0].width, src.streams.video[0].height, "yuv420p"
        gop = str(max(1, round(rate)))
        video.options = {"g": gop, "keyint_min": gop, "sc_threshold": "0", "preset": "veryfast"}
        for i, frame in enumerate(src.decode(video=0)):
            if i >= seconds * rate:
                break
            fresh = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            fresh.pts = i  # in frames: the stream's time base is 1/rate
            out.mux(video.encode(fresh))
        out.mux(video.encode(None))
    return target


def run(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Wall time and the ``--json`` result of one run."""
    started = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"command": " ".join(command), "env": env or {}, "wall_s": round(seconds, 2),
            "wall_fps": round(result["frames"] / seconds, 2), "result_fps": result["speed_fps"],
            "frames": result["frames"], "segments": result["segments"],
            "segments_per_process": result.get("segments_per_process")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, help="cut the clip to its first SECONDS first (see above)")
    parser.add_argument("-x", "--scale", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes for (b)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    if not args.clip.exists():
        print(f"skipped: {args.clip} is not there (../shared/data/video/)", file=sys.stderr)
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="subpixel-scaleout-") as tmp:
        clip = args.clip if args.seconds is None else cut(args.clip, args.seconds, Path(tmp) / "cut.mp4")

        def video(name: str, *extra: str) -> list[str]:
            return ["video", str(clip), "-x", str(args.scale), "-o", str(Path(tmp) / f"{name}.mp4"), "--force",
                    "--quiet", "--json", *extra]

        one = [sys.executable, "-m", "subpixel_cli"]
        rows.append(("one pass", run(one + video("single", "--end", "1000000"), {"OMP_NUM_THREADS": str(cores)})))
        rows.append(("segments", run(one + video("segments", "--no-resume"), {"OMP_NUM_THREADS": str(cores)})))
        for n in sorted({1, args.processes}):
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                        "-m", "subpixel_cli"]
            threads = str(max(1, cores // n))
            rows.append((f"segments, torchrun × {n} (OMP_NUM_THREADS={threads})",
                         run(torchrun + video(f"torchrun{n}", "--no-resume"), {"OMP_NUM_THREADS": threads})))
    print(f"`{args.clip.name}`{'' if args.seconds is None else f', first {args.seconds:g} s'}, ×{args.scale}, "
          f"{rows[0][1]['frames']} frames, {cores} cores\n")
    print("| run | segments (per process) | wall s | fps, wall | fps, result |")
    print("|---|---|---:|---:|---:|")
    for name, r in rows:
        per = f" ({', '.join(map(str, r['segments_per_process']))})" if r["segments_per_process"] else ""
        print(f"| {name} | {r['segments']}{per} | {r['wall_s']:.1f} | {r['wall_fps']:.2f} | {r['result_fps']:.2f} |")
    if args.json:
        print(json.dumps({"clip": str(args.clip), "seconds": args.seconds, "scale": args.scale, "cores": cores,
                          "runs": dict(rows)}, indent=1))


if __name__ == "__main__":
    main()
