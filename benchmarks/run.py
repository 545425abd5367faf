#!/usr/bin/env python
"""Speed of subpixel side by side with OpenCV's dnn_superres and plain PyTorch, in one run.

    python benchmarks/run.py             # everything (~8 min on 2 idle cores)
    python benchmarks/run.py --quick     # fewer rounds and frames: a smoke test

Writes ``benchmarks/README.md`` (tables between the BEGIN/END markers) and
``benchmarks/results.json`` (every timing). Sections:

a. throughput on 480×270 ×4, 640×360 ×3 and 960×540 ×2 (1080p out): subpixel's Upscaler (the
   uint8 RGB→RGB path, colour conversion included, and its Y-only path), the Upscaler without its
   fused path, a plain eager PyTorch ESPCN (NCHW fp32), OpenCV dnn_superres ESPCN (its full
   ``upsample`` and its network alone) and ``cv2.resize`` bicubic;
b. end to end: ``subpixel upscale`` on a folder of 100 640×480 JPEGs and ``subpixel video`` on the
   shared clip: wall time and peak RSS;
c. this machine's matmul peak (fp32 and bf16), so that GFLOP/s read as a fraction of it;
d. PSNR of the reduced-precision (and the fused) paths against the fp32 path on Set5/Set14.

Every contender runs in a worker process of its own (OpenCV in a separate virtual environment,
as opencv-contrib-python 4.x conflicts with the project's opencv-python; it is created on first
use). The parent asks the workers for one batch each in turn, round after round, so that a
background load falls on all of them alike; the tables give medians over the rounds. Only the
standard library and numpy are imported at the top: the OpenCV worker runs this file too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
PEER_VENV = HERE / ".venv-opencv"
PEER_REQUIREMENT = "opencv-contrib-python>=4.8,<5"  # 5.x cannot load the ESPCN graphs (DepthToSpace)
SIZES = [(4, 480, 270), (3, 640, 360), (2, 960, 540)]  # scale, LR width, LR height: 1080p out
BATCH = 4  # frames per timed call (the Upscaler's default batch size)
ONE_FRAME: set[str] = set()  # contenders timed a frame at a time (none at present)
GEMMS = {"gemm-fp32": ("float32", 2048), "gemm-bf16": ("bfloat16", 2048)}  # 512² where bf16 is emulated
MARK_BEGIN, MARK_END = "<!-- BEGIN RESULTS -->", "<!-- END RESULTS -->"

# Rows of the throughput table, in order. PEER_KINDS run in the OpenCV environment.
# "{auto}" is filled in with what --precision auto chose on this machine.
CONTENDERS = {
    "subpixel": "subpixel Upscaler, uint8 RGB→RGB (colour included), default precision ({auto})",
    "subpixel-y": "subpixel Upscaler, Y only (grey uint8 in and out), default precision ({auto})",
    "subpixel-fp32": "subpixel Upscaler, uint8 RGB→RGB, fp32",
    "subpixel-y-fp32": "subpixel Upscaler, Y only, fp32",
    "subpixel-unfused": "subpixel Upscaler, unfused path (RGB→RGB, fp32)",
    "eager": "eager PyTorch ESPCN, Y only (NCHW fp32, model only)",
    "opencv": "OpenCV dnn_superres ESPCN `upsample` (BGR→BGR)",
    "opencv-y": "OpenCV dnn ESPCN network, Y only (model only)",
    "resize": "`cv2.resize` bicubic (BGR, the floor)",
}
PEER_KINDS = {"opencv", "opencv-y", "resize"}
RATIOS = [  # numerator, denominator, label, the target
    ("subpixel", "opencv", "RGB→RGB: subpixel / OpenCV `upsample`", "≥ 1.5×"),
    ("subpixel-y", "opencv-y", "Y only: subpixel / OpenCV network", ""),
    ("subpixel-y", "eager", "Y only: subpixel / eager PyTorch", "≥ 3×"),
    ("subpixel", "eager", "subpixel RGB→RGB / eager PyTorch Y only", ""),
    ("subpixel-fp32", "opencv", "fp32 RGB→RGB: subpixel / OpenCV `upsample`", ""),
    ("subpixel-y-fp32", "eager", "fp32 Y only: subpixel / eager PyTorch", ""),
    ("subpixel-fp32", "subpixel-unfused", "subpixel fp32 fused / unfused (RGB→RGB)", ""),
]


# --- workers: one contender each, timed one batch per request -----------------------------------


def synthetic_frames(batch: int, height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: content does not change the speed of these networks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 9.0) + np.cos(yy / 7.0) + 2) * 50
    noise = rng.integers(0, 50, (batch, height, width, channels))
    return np.clip(base[None, ..., None] + noise, 0, 255).astype(np.uint8)


def _torch_worker(kind: str, scale: int, width: int, height: int, batch: int) -> tuple[Any, dict]:
    import torch

    from subpixel_cli.registry import load_model, packaged_models
    from subpixel_cli.upscale import Upscaler

    if kind.startswith("gemm"):
        name, n = GEMMS[kind]
        dtype = getattr(torch, name)
        from subpixel_cli.runtime import fast_bf16

        if dtype == torch.bfloat16 and not fast_bf16():
            n = 512  # emulated bf16 runs at ~0.5 GFLOP/s: a 2048² product would take half a minute
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        return (lambda: torch.mm(a, b)), {"n": n, "threads": torch.get_num_threads()}
    name = f"espcn-x{scale}"
    if name in packaged_models():
        loaded, weights = load_model(name), name
    else:  # speed does not depend on the values
        from subpixel_cli.hub import LoadedModel, ModelInfo
        from subpixel_cli.model import ESPCN, ESPCNConfig

        torch.manual_seed(0)
        model = ESPCN(ESPCNConfig(scale=scale)).eval()
        loaded, weights = LoadedModel(model, ModelInfo(name, model.config)), "random init"
    info = {"weights": weights, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if kind == "eager":
        model = loaded.model.eval()
        x = torch.from_numpy(synthetic_frames(batch, height, width, 1)).permute(0, 3, 1, 2).float().div(255).contiguous()

        def eager() -> None:
            with torch.no_grad():
                model(x)

        return eager, info
    precision = "auto" if kind in ("subpixel", "subpixel-y") else "fp32"
    # Unfused: what every uint8 picture went through before the fused path.
    up = Upscaler(loaded, device="cpu", precision=precision, batch_size=batch, fused=kind != "subpixel-unfused")
    info["precision"] = up.precision.name
    frames = synthetic_frames(batch, height, width, 1 if kind.startswith("subpixel-y") else 3)
    return (lambda: up.upscale_batch(frames)), info


def _peer_worker(kind: str, scale: int, width: int, height: int, batch: int, data: Path) -> tuple[Any, dict]:
    import cv2

    frames = synthetic_frames(batch, height, width, 3)
    info = {"opencv": cv2.__version__, "threads": cv2.getNumThreads()}
    if kind == "resize":
        return (lambda: [cv2.resize(f, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC) for f in frames]), info
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(data / "peer_models" / f"ESPCN_x{scale}.pb"))  # also registers DepthToSpace
    sr.setModel("espcn", scale)
    if kind == "opencv":
        return (lambda: [sr.upsample(f) for f in frames]), info
    net = cv2.dnn.readNetFromTensorflow(str(data / "peer_models" / f"ESPCN_x{scale}.pb"))
    blob = frames[..., :1].transpose(0, 3, 1, 2).astype(np.float32) / 255  # N×1×H×W, as upsample feeds Y

    def forward() -> None:
        net.setInput(blob)
        net.forward()

    return forward, info


def worker_main(args: argparse.Namespace) -> None:
    """Serve one contender: ``run`` times one call, ``quit`` ends."""
    scale, width, height = args.scale, args.width, args.height
    if args.worker in PEER_KINDS:
        call, info = _peer_worker(args.worker, scale, width, height, args.batch, Path(args.data))
    else:
        call, info = _torch_worker(args.worker, scale, width, height, args.batch)
    for _ in range(3):  # warm-up: primitive creation, weight packing, allocator (bf16 takes a few calls)
        call()
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        started = time.perf_counter()
        call()
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)


class Worker:
    """A contender's process, driven line by line."""

    def __init__(self, kind: str, scale: int, width: int, height: int, batch: int, data: Path) -> None:
        python = str(PEER_VENV / "bin" / "python") if kind in PEER_KINDS else sys.executable
        cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--scale", str(scale),
               "--width", str(width), "--height", str(height), "--batch", str(batch), "--data", str(data)]
        self.kind = kind
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.kind} died (exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def ensure_peer_venv() -> bool:
    """Create the OpenCV 4.x environment on first use; ``False`` if that is impossible here."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import cv2.dnn_superres"], capture_output=True).returncode == 0:
        return True
    log(f"creating {PEER_VENV.relative_to(ROOT)} with {PEER_REQUIREMENT} (once)")
    base = shutil.which("python3") or sys.executable
    steps = [[base, "-m", "venv", str(PEER_VENV)],
             [str(python), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT, "numpy"]]
    for step in steps:
        if subprocess.run(step).returncode != 0:
            log("could not create the OpenCV environment: OpenCV rows are skipped")
            return False
    return True


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- a + c: throughput --------------------------------------------------------------------------


def race(kinds: list[str], scale: int, width: int, height: int, batch: int, rounds: int, data: Path,
         slow_rounds: int) -> dict[str, dict]:
    """Round-robin timing of one batch per contender per round; slow contenders (over 20 s a
    batch) stop after ``slow_rounds``."""
    workers = []
    try:
        for kind in kinds:
            workers.append(Worker(kind, scale, width, height, 1 if kind in ONE_FRAME else batch, data))
        times: dict[str, list[float]] = {w.kind: [] for w in workers}
        for i in range(rounds):
            for w in workers:
                if i >= slow_rounds and times[w.kind] and min(times[w.kind]) > 20:
                    continue
                time.sleep(0.2)  # let the previous worker's threads go idle
                times[w.kind].append(w.run())
            log(f"×{scale} round {i + 1}/{rounds}: " + ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in times.items()))
        return {w.kind: {"seconds": times[w.kind], "info": w.info} for w in workers}
    finally:
        for w in workers:
            w.close()


def macs_per_frame(scale: int, width: int, height: int) -> int:
    from subpixel_cli.model import ESPCNConfig

    return ESPCNConfig(scale=scale).macs_per_pixel() * width * height


def throughput(args: argparse.Namespace, peers: bool) -> dict:
    kinds = ["subpixel", "subpixel-y", "eager", "subpixel-fp32", "subpixel-y-fp32", "subpixel-unfused"]
    if peers:
        kinds[2:2] = ["opencv", "opencv-y", "resize"]
    results = {}
    gemm = race(["gemm-fp32", "gemm-bf16"], 0, 0, 0, 1, args.rounds, args.data, args.rounds)
    # A peak is the best a machine does: the fastest round, not the median.
    results["gemm"] = {k: {"gflops": 2 * v["info"]["n"] ** 3 / min(v["seconds"]) / 1e9, **v} for k, v in gemm.items()}
    for scale, width, height in SIZES:
        log(f"throughput ×{scale}: {width}×{height} -> {width * scale}×{height * scale}")
        raw = race(kinds, scale, width, height, args.batch, args.rounds, args.data, max(1, args.rounds // 3))
        macs = macs_per_frame(scale, width, height)
        rows = {}
        for kind, r in raw.items():
            fps = (1 if kind in ONE_FRAME else args.batch) / statistics.median(r["seconds"])
            rows[kind] = {"fps": fps, "gflops": None if kind == "resize" else 2 * macs * fps / 1e9, **r}
        results[f"x{scale}"] = {"scale": scale, "size": [width, height], "batch": args.batch, "macs_per_frame": macs, "rows": rows}
    return results


# --- b: end to end ------------------------------------------------------------------------------


def timed(cmd: list[str]) -> dict:
    """Wall time and peak RSS of one command (its own, via wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")[-2000:]
    proc.stderr.close()
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status),
            "command": " ".join(cmd), "stderr": err if status else ""}


def _make_jpegs(folder: Path, count: int, data: Path) -> None:
    """``count`` 640×480 JPEGs from BSD100 pictures (kept in a temporary folder only)."""
    from PIL import Image

    sources = sorted((data / "benchmarks" / "BSD100").glob("*.png"))
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as img:
            img.convert("RGB").resize((640, 480), Image.BICUBIC).save(folder / f"img_{i:03d}.jpg", quality=90)


def end_to_end(args: argparse.Namespace) -> dict:
    subpixel = str(Path(sys.executable).with_name("subpixel"))
    out: dict[str, Any] = {}
    count = 20 if args.quick else 100
    few = 4  # a short run of the same command: its wall time is start-up (imports, model) + 4 images
    with tempfile.TemporaryDirectory(prefix="subpixel-bench-") as tmp:
        folder, target, short = Path(tmp) / "in", Path(tmp) / "out", Path(tmp) / "few"
        folder.mkdir()
        short.mkdir()
        _make_jpegs(folder, count, args.data)
        for jpeg in sorted(folder.iterdir())[:few]:
            shutil.copy(jpeg, short / jpeg.name)
        w = Worker("subpixel", 4, 640, 480, args.batch, args.data)  # the Upscaler alone, same frames size
        try:
            alone = [w.run() for _ in range(2)]
            for fmt in ("png", "jpg"):
                log(f"end to end: subpixel upscale, {count} JPEGs 640×480 ×4 -> {fmt}")
                shutil.rmtree(target, ignore_errors=True)
                run = timed([subpixel, "upscale", str(folder), "-o", str(target), "-x", "4", "--format", fmt, "--quiet", "--force"])
                run["images_per_s"] = count / run["seconds"]
                base = timed([subpixel, "upscale", str(short), "-o", str(target / "few"), "-x", "4", "--format", fmt, "--quiet", "--force"])
                run["startup_and_4_seconds"] = base["seconds"]
                # Throughput once running: the images beyond the short run over the time beyond it.
                run["steady_images_per_s"] = (count - few) / (run["seconds"] - base["seconds"])
                out[f"upscale-{fmt}"] = run
                alone.append(w.run())
        finally:
            w.close()
        fps_alone = args.batch / statistics.median(alone)
        out["upscaler_fps_640x480_x4"] = fps_alone
        out["upscaler_seconds"] = alone
        out["images"] = count
        for fmt in ("png", "jpg"):
            run = out[f"upscale-{fmt}"]
            run["fraction_of_upscaler"] = run["images_per_s"] / fps_alone
            run["steady_fraction_of_upscaler"] = run["steady_images_per_s"] / fps_alone
        clip = args.data / "video" / "car_traffic_small.mp4"
        has_video = subprocess.run([subpixel, "video", "--help"], capture_output=True).returncode == 0
        if has_video and clip.exists():
            seconds = 2 if args.quick else 6
            log(f"end to end: subpixel video, first {seconds} s of {clip.name} ×3 -> 1080p")
            run = timed([subpixel, "video", str(clip), "-x", "3", "--end", str(seconds), "-o", str(Path(tmp) / "clip.mp4"),
                          "--force", "--quiet"])
            run["frames"] = _count_frames(Path(tmp) / "clip.mp4")
            run["fps"] = run["frames"] / run["seconds"] if run["frames"] else None
            out["video"] = run
        else:
            out["video"] = {"pending": "`subpixel video` is not available in this checkout" if not has_video else f"{clip} missing"}
    return out


def _count_frames(path: Path) -> int:
    try:
        import av

        with av.open(str(path)) as c:
            return sum(1 for _ in c.decode(video=0))
    except Exception:  # noqa: BLE001 - a missing output is reported as 0 frames
        return 0


# --- d: quality of the reduced-precision paths --------------------------------------------------


def quality(args: argparse.Namespace) -> dict:
    from subpixel_cli.data import mod_crop
    from subpixel_cli.degradations import downscale
    from subpixel_cli.evaluate import dataset_files, read_hr
    from subpixel_cli.metrics import psnr, y_channel, y_psnr_ssim
    from subpixel_cli.registry import load_model, packaged_models
    from subpixel_cli.upscale import Upscaler

    paths = {"fp32 unfused": ("fp32", False), "bf16": ("bf16", True), "fp16": ("fp16", True)}
    out: dict[str, Any] = {}
    for scale in (2, 3, 4):
        name = f"espcn-x{scale}"
        if name not in packaged_models():
            out[f"x{scale}"] = {"pending": f"no trained {name} in weights/"}
            continue
        loaded = load_model(name)
        ref = Upscaler(loaded, device="cpu", precision="fp32")
        ups = {label: Upscaler(loaded, device="cpu", precision=p, fused=f) for label, (p, f) in paths.items()}
        for dataset in ("Set5", "Set14"):
            scores: dict[str, list[tuple[float, float]]] = {k: [] for k in ["fp32", *paths]}
            for path in dataset_files(args.data / "benchmarks" / dataset):
                hr = mod_crop(read_hr(path), scale)
                lr = downscale(hr, scale)
                base = ref.upscale(lr)[0]
                scores["fp32"].append((y_psnr_ssim(base, hr, scale)[0], float("inf")))
                for label, up in ups.items():
                    try:
                        sr = up.upscale(lr)[0]
                    except (RuntimeError, NotImplementedError) as exc:  # e.g. no fp16 kernels on this CPU
                        scores[label].append((float("nan"), float("nan")))
                        out.setdefault("errors", {})[label] = str(exc).splitlines()[0]
                        continue
                    y_sr, y_base = y_channel(sr)[scale:-scale, scale:-scale], y_channel(base)[scale:-scale, scale:-scale]
                    scores[label].append((y_psnr_ssim(sr, hr, scale)[0], psnr(y_sr, y_base, peak=255.0)))
            out[f"x{scale}-{dataset}"] = {k: {"psnr_vs_hr": float(np.mean([s[0] for s in v])),
                                              "psnr_vs_fp32": float(np.mean([s[1] for s in v]))} for k, v in scores.items()}
    return out


# --- the report ---------------------------------------------------------------------------------


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = []
    import torch

    return {
        "cpu": cpu, "cores": os.cpu_count(), "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags],
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "platform": platform.platform(), "load_average": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(results: dict) -> str:
    m, tp = results["machine"], results.get("throughput", {})
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), {m['memory_gib']} GiB, "
             f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, Python {m['python']}. Run {m['date']}, "
             f"load average {', '.join(f'{x:.1f}' for x in m['load_average'])} at the start and "
             f"{', '.join(f'{x:.1f}' for x in results['load_average_end'])} at the end.", ""]
    gemm = tp.get("gemm", {})
    if gemm:
        peak = gemm["gemm-fp32"]["gflops"]
        native = {"avx512_bf16", "amx_tile"} & set(m["isa"])
        note = f"native bf16: {', '.join(sorted(native))}" if native else "no native bf16 on this CPU: emulated"
        lines += [f"**(c) Matmul peak** (`torch.mm` of {gemm['gemm-fp32']['info']['n']}² fp32 / {gemm['gemm-bf16']['info']['n']}² bf16 matrices, fastest round): "
                  f"fp32 {peak:.1f} GFLOP/s, bf16 {gemm['gemm-bf16']['gflops']:.1f} GFLOP/s ({note}).", ""]
        lines += ["**(a) Throughput**, frames/s (median of rounds, batches of "
                  f"{tp['x4']['batch']} frames; GFLOP/s counted from the ESPCN's conv MACs, % of the fp32 matmul peak):", ""]
        head = "| path | " + " | ".join(f"×{tp[k]['scale']} {tp[k]['size'][0]}×{tp[k]['size'][1]}" for k in ("x4", "x3", "x2")) + " |"
        lines += [head, "|---|" + "---:|" * 3]
        auto = tp["x4"]["rows"].get("subpixel", {}).get("info", {}).get("precision", "?")
        for kind, label in CONTENDERS.items():
            label = label.format(auto=auto)
            cells = []
            for key in ("x4", "x3", "x2"):
                row = tp[key]["rows"].get(kind)
                if row is None:
                    cells.append("–")
                    continue
                g = row["gflops"]
                cells.append(f"{row['fps']:.2f} fps" + ("" if g is None else f" · {g:.1f} GFLOP/s · {100 * g / peak:.0f}%"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "Ratios (same run): ", ""]
        lines += ["| ratio | ×4 | ×3 | ×2 | target |", "|---|---:|---:|---:|---|"]
        for num, den, label, target in RATIOS:
            cells = []
            for key in ("x4", "x3", "x2"):
                rows = tp[key]["rows"]
                cells.append(f"{rows[num]['fps'] / rows[den]['fps']:.2f}×" if num in rows and den in rows else "–")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
        lines.append("")
    e2e = results.get("end_to_end")
    if e2e:
        lines += ["**(b) End to end** (wall time of the command, peak RSS of its process; *steady*: the images "
                  "beyond a 4-image run of the same command over the time beyond it, i.e. without the start-up "
                  "of ~2 s for imports and the model):", "",
                  "| command | wall | rate | steady rate | peak RSS | vs Upscaler alone (wall / steady) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for fmt in ("png", "jpg"):
            r = e2e[f"upscale-{fmt}"]
            steady = (f"{r['steady_images_per_s']:.2f} img/s", f"{100 * r['steady_fraction_of_upscaler']:.0f}%") \
                if "steady_images_per_s" in r else ("–", "–")
            lines.append(f"| `subpixel upscale` {e2e['images']} JPEGs 640×480 ×4 → {fmt} | {r['seconds']:.1f} s | "
                         f"{r['images_per_s']:.2f} img/s | {steady[0]} | {r['peak_rss_mib']:.0f} MiB | "
                         f"{100 * r['fraction_of_upscaler']:.0f}% / {steady[1]} |")
        lines.append(f"| Upscaler alone, 640×480 ×4 (same run) | | {e2e['upscaler_fps_640x480_x4']:.2f} img/s | | | 100% |")
        v = e2e["video"]
        if "pending" in v:
            lines.append(f"| `subpixel video` | pending: {v['pending']} | | | | |")
        else:
            lines.append(f"| `subpixel video` car_traffic_small.mp4 640×360 ×3 → 1080p, {v['frames']} frames | {v['seconds']:.1f} s | "
                         f"{_fmt(v['fps'])} fps | | {v['peak_rss_mib']:.0f} MiB | |")
        lines.append("")
    q = results.get("quality")
    if q:
        lines += ["**(d) Quality** of each path against the fp32 fused path: Y-PSNR vs the HR image (MATLAB protocol, "
                  "border = scale) and, after the slash, Y-PSNR against the fp32 output (∞: identical):", "",
                  "| set | fp32 (fused) | fp32 unfused | bf16 | fp16 |", "|---|---:|---:|---:|---:|"]
        for key, v in q.items():
            if key == "errors":
                continue
            if "pending" in v:
                lines.append(f"| {key} | pending: {v['pending']} | | | |")
                continue
            cells = [f"{v['fp32']['psnr_vs_hr']:.3f} dB"]
            for label in ("fp32 unfused", "bf16", "fp16"):
                s = v[label]
                delta = s["psnr_vs_hr"] - v["fp32"]["psnr_vs_hr"]
                cells.append("n/a" if np.isnan(s["psnr_vs_hr"]) else f"{s['psnr_vs_hr']:.3f} ({delta:+.3f}) / {s['psnr_vs_fp32']:.1f}")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        for label, err in q.get("errors", {}).items():
            lines.append(f"\n{label}: {err}")
        lines.append("")
    return "\n".join(lines)


def write_report(results: dict, readme: Path) -> None:
    text = readme.read_text(encoding="utf-8") if readme.exists() else f"# Benchmarks\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in text:
        text += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = text.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1]
    command = "python benchmarks/run.py" + (" --quick" if results["quick"] else "")
    body = f"Produced by `{command}`.\n\n" + render(results)
    readme.write_text(f"{head}{MARK_BEGIN}\n{body}\n{MARK_END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and images: a smoke test")
    parser.add_argument("--rounds", type=int, help="timed batches per contender (default 7, 2 with --quick)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SUBPIXEL_DATA", DEFAULT_DATA)),
                        help="the shared data folder (peer_models/, benchmarks/, video/)")
    parser.add_argument("--only", choices=["throughput", "end_to_end", "quality"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and results.json go")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    from subpixel_cli.runtime import tune_for

    tune_for(torch.device("cpu"))  # what the command line does once: threads, the heap, warnings
    if args.worker:
        worker_main(args)
        return
    args.rounds = args.rounds or (2 if args.quick else 7)
    sections = args.only or ["throughput", "end_to_end", "quality"]
    results: dict[str, Any] = {"quick": args.quick, "machine": machine(), "rounds": args.rounds}
    log(f"load average {os.getloadavg()}")
    if "throughput" in sections:
        results["throughput"] = throughput(args, ensure_peer_venv())
    if "end_to_end" in sections:
        results["end_to_end"] = end_to_end(args)
    if "quality" in sections:
        log("quality: Set5/Set14")
        results["quality"] = quality(args)
    results["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    write_report(results, args.out / "README.md")
    print(render(results))


if __name__ == "__main__":
    main()
