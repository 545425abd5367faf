#!/usr/bin/env python
"""`subpixel video` end to end next to the Upscaler alone, and its peak memory on a long clip.

    python benchmarks/video_fps.py                 # ×2/×3/×4 on car_traffic_small.mp4, 2-minute RSS
    python benchmarks/video_fps.py --seconds 5     # a shorter window of the clip per scale

For each scale: model-only fps on decoded frames, batches of 4, after warm-up batches, both as RGB
(``Upscaler.upscale_batch``, what ``subpixel bench`` times) and as the I420 planes that ``subpixel
video`` keeps such a clip in (``Upscaler.upscale_i420``), and end-to-end fps of ``subpixel video`` as a separate process (decode,
upscale, H.264 encode and mux: the rate it reports, which leaves out its start-up; peak RSS from
``wait4``). Then the peak RSS of ×2 on
a 2-minute 640×360 clip made here (the shared clip four times over, with a stereo AAC track), to
show that memory does not grow with the length of the video. Prints a markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "video" / "car_traffic_small.mp4"


def decoded_frames(clip: Path, count: int, fmt: str) -> np.ndarray:
    """The first ``count`` frames as ``rgb24`` pixels or ``yuv420p`` planes."""
    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format=fmt))
            if len(frames) == count:
                break
    return np.stack(frames)


def model_fps(frames: np.ndarray, scale: int, batch: int = 4) -> tuple[float, str]:
    """Median fps of the packaged model on ``frames``: RGB (4-D) or I420 planes (3-D)."""
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler

    up = Upscaler(load_model(None, scale), device="cpu", batch_size=batch)
    run = up.upscale_batch if frames.ndim == 4 else up.upscale_i420
    for _ in range(3):  # warm-up: primitives, weight packing, allocator (bf16 takes a few calls)
        run(frames[:batch])
    times = []
    for i in range(batch, len(frames) - batch + 1, batch):
        started = time.perf_counter()
        run(frames[i : i + batch])
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times), up.precision.name


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None


def timed(cmd: list[str]) -> dict:
    """Wall time and peak RSS (``wait4``) of ``cmd``, and its RSS sampled every half second, so
    that a run can show whether memory grows with the length of the video."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while proc.poll() is None:
            rss = _rss_mib(proc.pid)
            if rss is not None:
                samples.append((round(time.perf_counter() - started, 1), round(rss)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.join()
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode(errors="replace")
    result = {"seconds": time.perf_counter() - started, "peak_rss_mib": usage.ru_maxrss / 1024,
              "exit": os.waitstatus_to_exitcode(status), "command": " ".join(cmd),
              "rss_by_quarter_mib": _quarters(samples)}
    if result["exit"] != 0:
        result["stderr"] = err[-2000:]
    try:
        result["json"] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    return result


def _quarters(samples: list[tuple[float, float]]) -> list[float]:
    """The highest RSS sampled in each quarter of the run (flat memory: four similar numbers)."""
    if not samples:
        return []
    end = samples[-1][0] or 1.0
    return [max((r for t, r in samples if q * end / 4 <= t <= (q + 1) * end / 4), default=0) for q in range(4)]


def make_long_clip(clip: Path, target: Path, repeats: int = 4) -> int:
    """``clip``'s frames ``repeats`` times over, H.264 (ultrafast) with a stereo AAC tone."""
    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    count = 0
    with av.open(str(target), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for _ in range(repeats):
            for pixels in frames:
                for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    out.mux(packet)
                count += 1
        seconds = count / float(rate)
        samples, chunk = int(seconds * 48000), 1024
        t = np.arange(samples) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, samples - chunk + 1, chunk):
            block = np.stack([tone[i : i + chunk]] * 2)  # planar stereo
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = 48000
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, default=10.0, help="window of the clip per scale (--end)")
    parser.add_argument("--model-frames", type=int, default=40)
    parser.add_argument("--no-long", action="store_true", help="skip the 2-minute RSS run")
    parser.add_argument("--only-long", action="store_true", help="only the 2-minute RSS run")
    parser.add_argument("--preset", help="x264 preset for the end-to-end runs (default: subpixel's own choice)")
    args = parser.parse_args()
    import torch

    from subpixel_cli.runtime import tune_for

    tune_for(torch.device("cpu"))  # what the command line does once: threads, the heap, warnings
    subpixel = str(Path(sys.executable).with_name("subpixel"))
    frames = decoded_frames(args.clip, args.model_frames + 4, "rgb24")
    planes = decoded_frames(args.clip, args.model_frames + 4, "yuv420p")
    results: dict = {"clip": str(args.clip), "window_s": args.seconds, "scales": {}}
    with tempfile.TemporaryDirectory(prefix="subpixel-video-bench-") as tmp:
        for scale in () if args.only_long else (2, 3, 4):
            fps, precision = model_fps(frames, scale)
            i420_fps, _ = model_fps(planes, scale)
            preset = ["--preset", args.preset] if args.preset else []
            run = timed([subpixel, "video", str(args.clip), "-x", str(scale), "--end", str(args.seconds), *preset,
                         "-o", str(Path(tmp) / f"x{scale}.mp4"), "--force", "--quiet", "--json"])
            done = run.get("json", {}).get("frames")
            # subpixel's own rate (frames over the seconds from opening the input to the finished
            # file): the process's start-up (imports, loading the model) is not video throughput.
            run["fps"] = run.get("json", {}).get("speed_fps")
            results["scales"][scale] = {"model_fps": fps, "model_i420_fps": i420_fps, "precision": precision,
                                        "end_to_end": run}
            print(f"×{scale}: model {fps:.2f} fps on RGB, {i420_fps:.2f} on I420 ({precision}), end to end {run['fps'] or 0:.2f} fps "
                  f"({done} frames in {run['seconds']:.1f} s, peak RSS {run['peak_rss_mib']:.0f} MiB)", file=sys.stderr)
        if not args.no_long:
            long_clip = Path(tmp) / "long.mp4"
            count = make_long_clip(args.clip, long_clip)
            run = timed([subpixel, "video", str(long_clip), "-x", "2", "-o", str(Path(tmp) / "long_x2.mp4"),
                         "--force", "--quiet", "--json"])
            run["frames_in"] = count
            results["long"] = run
            print(f"2-minute clip ({count} frames) ×2: {run['seconds']:.1f} s, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                  f"highest RSS per quarter of the run {run['rss_by_quarter_mib']} MiB", file=sys.stderr)
    print("| scale | output | end-to-end fps | model-only fps, RGB | e2e / RGB model | model-only fps, I420 | "
          "e2e / I420 model | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    h, w = frames.shape[1:3]
    for scale, r in results["scales"].items():
        e2e = r["end_to_end"]
        ratio, ratio_i420 = ((f"{100 * e2e['fps'] / r[k]:.0f}%" if e2e["fps"] else "–") for k in ("model_fps", "model_i420_fps"))
        print(f"| ×{scale} | {w * scale}×{h * scale} | {e2e['fps'] or 0:.2f} | {r['model_fps']:.2f} ({r['precision']}) | "
              f"{ratio} | {r['model_i420_fps']:.2f} | {ratio_i420} | {e2e['peak_rss_mib']:.0f} MiB |")
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
