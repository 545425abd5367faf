#!/usr/bin/env python
"""ONNX exports checked against the model cards, and their speed next to `subpixel upscale`.

    python benchmarks/onnx_check.py                    # Set5/Set14 from ../shared/data/benchmarks
    python benchmarks/onnx_check.py --data DIR --rounds 20 --json onnx.json

1. Quality: every packaged Y model is exported as its bare fp32 network (``build_onnx``, what
   ``subpixel export`` writes) and scored on Set5 and Set14 by ``evaluate_model`` itself, the
   code behind ``subpixel eval``, with only the network's forward pass handed to onnxruntime
   (:class:`OnnxNetwork`): LR creation, mod-crop, the Upscaler's border, 8-bit rounding, Y-PSNR and
   the shave are evaluate.py's. Next to it the same run through PyTorch, and the model card's
   figure; they must agree to 0.01 dB (the card's rounding, as tests/test_evaluate.py checks).
2. Speed: 640×360 → 1920×1080 at ×3 (espcn-x3), one frame per call, the contenders in turn,
   round after round, so that background load falls on all alike; medians. onnxruntime runs the
   bare network on Y (float) and the ``--rgb`` graph (float RGB); OpenCV's dnn (the project's
   opencv-python) runs both; the Upscaler runs ``upscale_batch`` on the same uint8 RGB frame,
   at the default precision and at fp32. Every contender gets the same number of threads
   (``--threads``, default torch's, which honours ``OMP_NUM_THREADS``).

Prints markdown tables (and ``--json``). Exits 0 when every PSNR matches its card, 1 when one
does not, 2 when the data or the export extra is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from run import machine, synthetic_frames as frames  # this folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "benchmarks"
DATASETS = ("Set5", "Set14")
SPEED_SCALE, SPEED_SIZE = 3, (640, 360)  # width, height in; 1920×1080 out


def _onnx_network_class() -> type:
    import torch

    class OnnxNetwork(torch.nn.Module):
        """An exported bare network in onnxruntime, shaped like an ESPCN for ``evaluate_model``
        (``config``, a parameter to read the device and dtype off, ``forward`` on N×C×H×W)."""

        def __init__(self, session: Any, config: Any) -> None:
            super().__init__()
            self.session, self.config = session, config
            self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # float32 on the CPU

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.session.run(None, {"input": x.float().contiguous().numpy()})[0])

        def __deepcopy__(self, memo: dict) -> "OnnxNetwork":
            return self  # the Upscaler snapshots its model's weights; a session's are fixed already

    return OnnxNetwork


def session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def quality(data: Path, threads: int) -> list[dict[str, Any]]:
    """Set5/Set14 Y-PSNR of each packaged Y model through onnxruntime and PyTorch, and its card's."""
    from subpixel_cli.evaluate import evaluate_model
    from subpixel_cli.export import build_onnx
    from subpixel_cli.registry import load_model, packaged_models

    network = _onnx_network_class()
    rows = []
    for name, info in packaged_models().items():
        if info.config.channels != 1:
            continue
        loaded = load_model(name)
        onnx_net = network(session(build_onnx(loaded), threads), info.config)
        via_onnx = evaluate_model(onnx_net, info.scale, list(DATASETS), data_dir=data)
        via_torch = evaluate_model(loaded, info.scale, list(DATASETS), data_dir=data)
        for d_onnx, d_torch in zip(via_onnx.datasets, via_torch.datasets):
            card = info.psnr(d_onnx.name)
            rows.append({"model": name, "dataset": d_onnx.name, "scale": info.scale, "onnxruntime": d_onnx.psnr,
                         "pytorch": d_torch.psnr, "card": card,
                         "match": card is not None and abs(round(d_onnx.psnr, 2) - card) <= 0.011})
            log(f"{name} {d_onnx.name}: onnxruntime {d_onnx.psnr:.4f}, pytorch {d_torch.psnr:.4f}, card {card}")
    return rows


def contenders(threads: int) -> dict[str, Callable[[], Any]]:
    """One 640×360 frame through each way of running espcn-x3, as zero-argument calls."""
    import cv2

    from subpixel_cli.color import rgb_to_y
    from subpixel_cli.export import build_onnx
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler

    cv2.setNumThreads(threads)
    loaded = load_model(f"espcn-x{SPEED_SCALE}")
    frame = frames(1, SPEED_SIZE[1], SPEED_SIZE[0], 3)  # 1×H×W×3 uint8
    rgb = (frame[0].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    y = rgb_to_y(rgb, dim=1).astype(np.float32)
    calls: dict[str, Callable[[], Any]] = {}
    for form, x in (("network", y), ("rgb", rgb)):
        model = build_onnx(loaded, rgb=form == "rgb")
        sess = session(model, threads)
        calls[f"onnxruntime {form}"] = lambda s=sess, x=x: s.run(None, {"input": x})
        # From memory, as a uint8 array: OpenCV 5.0.0 crashes (SIGSEGV) on a bytes object.
        net = cv2.dnn.readNetFromONNX(np.frombuffer(model.SerializeToString(), np.uint8))
        calls[f"opencv-dnn {form}"] = lambda n=net, x=x: (n.setInput(x), n.forward())
    for precision in ("auto", "fp32"):
        up = Upscaler(loaded, device="cpu", precision=precision, batch_size=1)
        calls[f"Upscaler {precision}"] = lambda u=up: u.upscale_batch(frame)
    return calls


def speed(threads: int, rounds: int) -> dict[str, float]:
    """Median seconds per frame of each contender, timed in turn round after round."""
    calls = contenders(threads)
    for call in calls.values():  # warm-up: first-call allocations, OpenCV's graph set-up
        call(), call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


WHAT = {
    "onnxruntime network": "onnxruntime, bare network on Y (float 1×1×360×640 in)",
    "onnxruntime rgb": "onnxruntime, `--rgb` graph (float RGB in and out, colour and chroma inside)",
    "opencv-dnn network": "OpenCV dnn, bare network on Y",
    "opencv-dnn rgb": "OpenCV dnn, `--rgb` graph",
    "Upscaler auto": "subpixel Upscaler (`subpixel upscale`'s path), uint8 RGB→RGB, default precision",
    "Upscaler fp32": "subpixel Upscaler, uint8 RGB→RGB, fp32",
}


def render(rows: list[dict[str, Any]], seconds: dict[str, float], threads: int) -> str:
    lines = ["| model | dataset | onnxruntime | PyTorch (`subpixel eval`) | card | same to 0.01 dB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        card = "–" if r["card"] is None else f"{r['card']:.2f}"
        lines.append(f"| {r['model']} | {r['dataset']} ×{r['scale']} | {r['onnxruntime']:.2f} ({r['onnxruntime']:.4f}) "
                     f"| {r['pytorch']:.2f} ({r['pytorch']:.4f}) | {card} | {'yes' if r['match'] else '**no**'} |")
    lines += ["", f"640×360 → 1920×1080 ×{SPEED_SCALE}, one frame per call, {threads} thread(s), median:", "",
              "| contender | ms/frame | frames/s |", "| --- | --- | --- |"]
    for name, s in seconds.items():
        lines.append(f"| {WHAT[name]} | {1000 * s:.1f} | {1 / s:.2f} |")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with Set5/ and Set14/ (HR images)")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per contender")
    parser.add_argument("--threads", type=int, default=None, help="threads for every contender (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    import torch

    from subpixel_cli.runtime import tune_for

    tune_for(torch.device("cpu"))  # what the command line does once: threads, the heap, warnings
    missing = [d for d in DATASETS if not (args.data / d).is_dir()]
    if missing:
        log(f"{args.data}: no {' or '.join(missing)} here; pass --data DIR with the benchmark folders (HR images)")
        return 2
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        log("needs onnx and onnxruntime: pip install 'subpixel[export]'")
        return 2
    import torch

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = quality(args.data, threads)
    seconds = speed(threads, args.rounds)
    print(render(rows, seconds, threads))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": threads, "psnr": rows,
                                         "seconds_per_frame": seconds}, indent=2) + "\n")
    return 0 if all(r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
