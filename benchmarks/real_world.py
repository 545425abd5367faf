#!/usr/bin/env python
"""Real-world inputs: bicubic, the clean models, their real-world twins and OpenCV's ESPCN on
damaged LR pictures and on H.264 video (issue 21).

    python benchmarks/real_world.py                      # every scale, images and video
    python benchmarks/real_world.py --scales 4 --no-video
    python benchmarks/real_world.py --real '~/.cache/subpixel-runs/real-x{scale}'   # a run folder
    python benchmarks/real_world.py --picture docs/real_world_jpeg75.png           # the README picture
    python benchmarks/real_world.py --sweep        # --denoise 0…1 on JPEG 75, and clean vs real by JPEG quality

Images: Set14 and BSD100 (``../shared/data/benchmarks``), the protocol of ``subpixel eval``, the
LR damaged after the downscale by a fixed spec (``subpixel eval --degrade SPEC`` gives the same
figures); each cell is the mean of the two sets' mean Y-PSNR. Video: the frames of
car_traffic_small.mp4 are the ground truth; each is mod-cropped and MATLAB-bicubic downscaled ×2,
and the LR clip is encoded by x264 (preset medium) at each CRF; the decoded LR frames go through
each method (the Upscaler ``subpixel video`` runs, default precision). Y-PSNR over all frames
(2 pixels shaved), and *flicker*: the mean absolute difference between the frame-to-frame changes
of the output's Y and of the ground truth's (lower is steadier). OpenCV's ESPCN (the TF-ESPCN
graphs in ``peer_models/``) runs in its own venv (benchmarks/run.py makes it), RGB in and out.
Prints a markdown table and writes JSON with ``--json FILE``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data"
IMAGE_CASES = ("clean", "jpeg:90", "jpeg:75", "jpeg:50", "noise:5")
VIDEO_CRFS = (23, 30)
METHODS = ("bicubic", "clean", "real", "opencv")

PEER_SCRIPT = r"""
import sys, cv2
scale, model, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
sr = cv2.dnn_superres.DnnSuperResImpl_create()
sr.readModel(model)
sr.setModel("espcn", scale)
for f in files:
    cv2.imwrite(f + ".sr.png", sr.upsample(cv2.imread(f, cv2.IMREAD_COLOR)))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peer_python() -> Path | None:
    """OpenCV 4.x with dnn_superres, in benchmarks/.venv-opencv (made by run.py), or None."""
    from run import PEER_VENV, ensure_peer_venv

    return PEER_VENV / "bin" / "python" if ensure_peer_venv() else None


def opencv_upscale(lrs: list[np.ndarray], scale: int, python: Path | None, work: Path) -> list[np.ndarray] | None:
    """OpenCV's ESPCN on ``uint8`` RGB pictures (one process for all), or None without it."""
    model = DATA / "peer_models" / f"ESPCN_x{scale}.pb"
    if python is None or not model.is_file():
        return None
    files = []
    for k, lr in enumerate(lrs):
        path = work / f"lr{k:05d}.png"
        Image.fromarray(lr).save(path)
        files.append(str(path))
    for start in range(0, len(files), 200):  # keep the command line short
        subprocess.run([str(python), "-c", PEER_SCRIPT, str(scale), str(model), *files[start : start + 200]], check=True)
    return [np.asarray(Image.open(f + ".sr.png").convert("RGB")) for f in files]


def upscalers(scale: int, real_spec: str) -> dict:
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler

    clean = load_model(f"espcn-x{scale}")
    real = load_model(str(Path(real_spec.format(scale=scale)).expanduser()) if "/" in real_spec
                      else real_spec.format(scale=scale))
    return {"clean": Upscaler(clean, device="cpu"), "real": Upscaler(real, device="cpu")}


def image_table(scales: list[int], real_spec: str, python: Path | None) -> dict:
    from subpixel_cli.degradations import Degradation
    from subpixel_cli.evaluate import dataset_files, prepare_image, read_hr
    from subpixel_cli.metrics import y_psnr_ssim

    out: dict = {}
    for scale in scales:
        ups = upscalers(scale, real_spec)
        for case in IMAGE_CASES:
            damage = None if case == "clean" else Degradation.parse(case)
            per_set: dict[str, dict[str, float]] = {}
            for dataset in ("Set14", "BSD100"):
                images = [prepare_image(p.name, read_hr(p), scale, ssim=False, damage=damage)
                          for p in dataset_files(DATA / "benchmarks" / dataset)]
                rgb = [np.repeat(i.lr[..., None], 3, 2) if i.lr.ndim == 2 else i.lr for i in images]
                scores = {"bicubic": [i.bicubic_psnr for i in images]}
                for label, up in ups.items():
                    scores[label] = [y_psnr_ssim(up.upscale(lr)[0], i.hr, scale)[0] for lr, i in zip(rgb, images)]
                with tempfile.TemporaryDirectory() as tmp:
                    peer = opencv_upscale(rgb, scale, python, Path(tmp))
                if peer is not None:
                    scores["opencv"] = [y_psnr_ssim(sr, i.hr, scale)[0] for sr, i in zip(peer, images)]
                per_set[dataset] = {k: float(np.mean(v)) for k, v in scores.items()}
            out[f"x{scale} {case}"] = {m: float(np.mean([s[m] for s in per_set.values()])) for m in per_set["Set14"]}
            out[f"x{scale} {case}"]["sets"] = per_set
            log(f"x{scale} {case}: " + ", ".join(f"{m} {v:.2f}" for m, v in out[f"x{scale} {case}"].items() if m != "sets"))
    return out


# --- video --------------------------------------------------------------------------------------


def clip_frames(clip: Path, limit: int) -> list[np.ndarray]:
    import av

    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == limit:
                break
    return frames


def encode_decode(frames: list[np.ndarray], crf: int, rate: int = 25) -> list[np.ndarray]:
    """``frames`` through x264 (preset medium, yuv420p) at ``crf`` and back."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def flicker(out_y: list[np.ndarray], gt_y: list[np.ndarray]) -> float:
    """Mean |Δ output − Δ ground truth| of consecutive frames' Y (levels)."""
    return float(np.mean([np.abs((o1 - o0) - (g1 - g0)).mean()
                          for o0, o1, g0, g1 in zip(out_y, out_y[1:], gt_y, gt_y[1:])]))


def video_table(real_spec: str, python: Path | None, limit: int) -> dict:
    from subpixel_cli.data import mod_crop
    from subpixel_cli.degradations import downscale
    from subpixel_cli.evaluate import bicubic_upscale
    from subpixel_cli.metrics import psnr, shave, y_channel

    scale = 2
    gt = [mod_crop(f, scale) for f in clip_frames(DATA / "video" / "car_traffic_small.mp4", limit)]
    lr = [downscale(f, scale) for f in gt]
    gt_y = [shave(y_channel(f), scale) for f in gt]
    ups = upscalers(scale, real_spec)
    out: dict = {}
    for crf in (None, *VIDEO_CRFS):
        frames = lr if crf is None else encode_decode(lr, crf)
        results = {"bicubic": [bicubic_upscale(f, scale) for f in frames]}
        for label, up in ups.items():
            results[label] = [up.upscale(f)[0] for f in frames]
        with tempfile.TemporaryDirectory() as tmp:
            peer = opencv_upscale(frames, scale, python, Path(tmp))
        if peer is not None:
            results["opencv"] = peer
        row = {}
        for label, srs in results.items():
            ys = [shave(y_channel(s), scale) for s in srs]
            row[label] = {"psnr": float(np.mean([psnr(y, g, peak=255.0) for y, g in zip(ys, gt_y)])),
                          "flicker": flicker(ys, gt_y)}
        key = "video x2 " + ("lossless" if crf is None else f"crf {crf}")
        out[key] = row
        log(f"{key}: " + ", ".join(f"{m} {v['psnr']:.2f} dB / {v['flicker']:.3f}" for m, v in row.items()))
    return out


# --- sweeps: --denoise, and the JPEG quality where the real-world model starts to win -----------


SWEEP_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
SWEEP_QUALITIES = (80, 85, 90, 95)


def _mean_psnr(loaded, scale: int, spec: str) -> float:
    from subpixel_cli.degradations import Degradation
    from subpixel_cli.evaluate import evaluate_model

    result = evaluate_model(loaded, scale, ["Set14", "BSD100"], data_dir=DATA / "benchmarks",
                            damage=Degradation.parse(spec))
    return float(np.mean([d.psnr for d in result.datasets]))


def sweeps(scales: list[int]) -> dict:
    """Mean Y-PSNR (Set14, BSD100) on JPEG 75 for each ``--denoise`` strength, and of the clean
    and real-world models at each JPEG quality of :data:`SWEEP_QUALITIES` (choice.py's rule)."""
    from subpixel_cli.registry import load_denoise, load_model

    out: dict = {}
    for scale in scales:
        out[f"x{scale} denoise on jpeg:75"] = row = {}
        for strength in SWEEP_STRENGTHS:
            row[f"{strength:g}"] = _mean_psnr(load_denoise(None, scale, strength), scale, "jpeg:75")
        log(f"x{scale} --denoise on jpeg:75: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        clean, real = load_model(f"espcn-x{scale}"), load_model(f"espcn-x{scale}-real")
        out[f"x{scale} by quality"] = row = {}
        for q in SWEEP_QUALITIES:
            row[str(q)] = {"clean": _mean_psnr(clean, scale, f"jpeg:{q}"), "real": _mean_psnr(real, scale, f"jpeg:{q}")}
            log(f"x{scale} jpeg:{q}: clean {row[str(q)]['clean']:.3f}, real {row[str(q)]['real']:.3f}")
    return out


# --- the README picture -------------------------------------------------------------------------


def comparison_picture(target: Path, real_spec: str, scale: int = 2, quality: int = 75) -> None:
    """Crops of the repository's sample photo, ×``scale`` down and saved as JPEG ``quality``,
    then: the input (pixels repeated), bicubic, the clean model, the real-world model."""
    from PIL import ImageDraw

    from subpixel_cli.data import mod_crop
    from subpixel_cli.degradations import Degradation, downscale
    from subpixel_cli.evaluate import bicubic_upscale

    hr = mod_crop(np.asarray(Image.open(ROOT / "tests" / "data" / "astronaut.jpg").convert("RGB")), scale)
    lr = Degradation.parse(f"jpeg:{quality}").apply(downscale(hr, scale), np.random.default_rng(0))
    ups = upscalers(scale, real_spec)
    tiles = {"input (JPEG %d)" % quality: np.repeat(np.repeat(lr, scale, 0), scale, 1),
             "bicubic": bicubic_upscale(lr, scale), "clean model": ups["clean"].upscale(lr)[0],
             "real-world model": ups["real"].upscale(lr)[0]}
    y, x, side = 30, 70, 120  # the face and the flag patch
    zoom = 2
    crops = [Image.fromarray(t[y : y + side, x : x + side]).resize((side * zoom, side * zoom), Image.NEAREST)
             for t in tiles.values()]
    sheet = Image.new("RGB", (len(crops) * (side * zoom + 6), side * zoom + 22), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, crop) in enumerate(zip(tiles, crops)):
        sheet.paste(crop, (k * (side * zoom + 6), 22))
        draw.text((k * (side * zoom + 6) + 4, 5), label, fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, optimize=True)
    log(f"wrote {target}")


def render(results: dict) -> str:
    lines = ["| LR | " + " | ".join(METHODS) + " | real − clean | real − bicubic |", "|---" * (len(METHODS) + 3) + "|"]
    for key, row in results.items():
        if key.startswith("video"):
            cells = [f"{row[m]['psnr']:.2f} / {row[m]['flicker']:.2f}" if m in row else "–" for m in METHODS]
            gain = (f"{row['real']['psnr'] - row['clean']['psnr']:+.2f}",
                    f"{row['real']['psnr'] - row['bicubic']['psnr']:+.2f}")
        else:
            cells = [f"{row[m]:.2f}" if m in row else "–" for m in METHODS]
            gain = (f"{row['real'] - row['clean']:+.2f}", f"{row['real'] - row['bicubic']:+.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {gain[0]} | {gain[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--real", default="espcn-x{scale}-real", help="the real-world model ({scale} is filled in)")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--no-opencv", action="store_true")
    parser.add_argument("--frames", type=int, default=120, help="video frames used (from the start of the clip)")
    parser.add_argument("--picture", type=Path, help="write the README comparison picture here and stop")
    parser.add_argument("--picture-scale", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="the --denoise and JPEG-quality sweeps, then stop")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    import torch

    from subpixel_cli.runtime import tune_for

    tune_for(torch.device("cpu"))  # what the command line does once: threads and the heap
    if args.picture:
        comparison_picture(args.picture, args.real, args.picture_scale)
        return
    if args.sweep:
        results = sweeps(args.scales)
        print(json.dumps(results, indent=1))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    python = None if args.no_opencv else peer_python()
    results = image_table(args.scales, args.real, python)
    if not args.no_video and 2 in args.scales:
        results.update(video_table(args.real, python, args.frames))
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
