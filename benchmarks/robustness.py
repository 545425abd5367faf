"""The long robustness campaign: fuzzed files through the real CLI, and kill -9 loops for
``upscale``, ``video`` and ``train``. Prints the figures for the release note.

    python benchmarks/robustness.py                 # 2000 fuzzed files, 30/10/10 kills
    python benchmarks/robustness.py --fuzz 200 --kills 5 --video-kills 2 --train-kills 2   # quick
    python benchmarks/robustness.py --fuzz 0 --kills 0 --video-kills 0     # one part only (0 skips)

Everything is made here (random-init models, pictures, videos) in a temporary folder; nothing
is downloaded. Exit code 0 when every invariant held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from conftest import make_model  # noqa: E402
from robustness_util import (  # noqa: E402
    PARTIAL,
    check_picture_file,
    cli_process,
    encoded,
    mutate,
)

from subpixel_cli.hub import ModelInfo, save_model  # noqa: E402

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tiff", "BMP": ".bmp"}
MODES = {"PNG": ["L", "RGB", "RGBA", "LA", "P", "1"], "JPEG": ["L", "RGB", "CMYK"], "WEBP": ["RGB", "RGBA"],
         "GIF": ["P", "L"], "TIFF": ["L", "RGB", "RGBA", "CMYK"], "BMP": ["L", "RGB", "P", "1"]}
ALLOWED_STDERR = ("failed:", "note:", "error:")


def model_folder(root: Path, scale: int = 2, channels: int = 1) -> Path:
    model = make_model(scale, channels)
    return save_model(root / f"model_x{scale}", model, ModelInfo(f"campaign-x{scale}", model.config))


def fuzz_case(rng: random.Random) -> tuple[bytes, str]:
    fmt = rng.choice(sorted(FORMATS))
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(2000)), FORMATS[fmt]
    data = encoded(fmt, rng.randint(1, 40), rng.randint(1, 40), rng.choice(MODES[fmt]), rng.randrange(2**16))
    return (mutate(data, rng) if rng.random() < 0.8 else data), FORMATS[fmt]


def fuzz(root: Path, model: Path, count: int, chunk: int, seed: int) -> dict[str, int]:
    """``count`` damaged files through ``subpixel upscale DIR --json``, ``chunk`` per process."""
    rng = random.Random(seed)
    tally = {"tried": 0, "ok": 0, "failed": 0, "crashes": 0, "bad_messages": 0, "bad_outputs": 0, "partials": 0}
    for start in range(0, count, chunk):
        folder, out = root / f"fuzz{start}" / "in", root / f"fuzz{start}" / "out"
        folder.mkdir(parents=True)
        for i in range(start, min(count, start + chunk)):
            data, suffix = fuzz_case(rng)
            (folder / f"f{i:05d}{suffix}").write_bytes(data)
        proc = cli_process("upscale", folder, "-o", out, "--model", model, "--json", "--tile", "16", timeout=1800)
        err = proc.stderr.decode(errors="replace")
        lines = err.splitlines()[1:]  # the first line names the model
        odd = [ln for ln in lines if ln.strip() and not ln.startswith(ALLOWED_STDERR) and "upscaled" not in ln]
        if proc.returncode not in (0, 1) or "Traceback" in err or odd:
            tally["crashes"] += 1
            print(f"  chunk {start}: exit {proc.returncode}\n{err[-2000:]}", file=sys.stderr)
        for record in map(json.loads, proc.stdout.decode().splitlines()):
            tally["tried"] += 1
            tally[record["status"]] = tally.get(record["status"], 0) + 1
            if record["status"] == "failed":
                tally["bad_messages"] += "\n" in (record["message"] or "\n")
            else:
                try:
                    w, h = record["size"]
                    check_picture_file(Path(record["output"]), (2 * w, 2 * h))
                except Exception:  # noqa: BLE001 - counted
                    tally["bad_outputs"] += 1
        tally["partials"] += sum(1 for p in out.iterdir() if PARTIAL.match(p.name)) if out.exists() else 0
    return tally


def image_kills(root: Path, model: Path, kills: int, seed: int) -> dict[str, int]:
    from test_robustness_kill import Campaign, old_versions

    campaign = Campaign(root / "kill", model)
    rng = random.Random(seed)
    out, forced = root / "kill_out", root / "kill_forced"
    old: dict = {}
    for i in range(kills):
        if i % 3 == 2:  # every third kill: a --force run over complete old outputs
            if not forced.exists():
                old = old_versions(forced, campaign.reference)
            campaign.kill_once(forced, rng, force=True, old=old)
        else:
            campaign.kill_once(out, rng)
            if len([p for p in out.iterdir() if not p.name.startswith(".")]) == len(campaign.reference):
                campaign.finish(out)  # all done: start the next kills from an empty folder
                for p in out.iterdir():
                    p.unlink()
    campaign.finish(out)
    if forced.exists():
        campaign.finish(forced, force=True)
    return {"runs": kills, "kills": campaign.kills, "lost": campaign.lost, "half_written": campaign.broken}


def video_kills(root: Path, model: Path, kills: int, seed: int) -> dict[str, int]:
    from test_robustness_video import kill_video_runs

    folder = root / "video"
    folder.mkdir()
    tally = kill_video_runs(folder, str(model), [seed + i for i in range(kills)])
    return {"runs": kills, "kills": tally["kills"], "half_written": tally["partial_targets"]}


def train_kills(root: Path, kills: int, seed: int) -> dict[str, int]:
    from PIL import Image
    from test_robustness_train import kill_and_resume

    from conftest import random_image

    data = root / "train_data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(random_image(40, 48, seed=i)).save(data / f"img{i}.png")
    tally = kill_and_resume(data, root / "train", [seed + i for i in range(kills)], steps=400)
    return {"runs": kills, "kills": tally["kills"], "resumes": tally["resumes"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed files through the CLI")
    parser.add_argument("--chunk", type=int, default=400, help="fuzzed files per process")
    parser.add_argument("--kills", type=int, default=30, help="kill -9 of upscale")
    parser.add_argument("--video-kills", type=int, default=10)
    parser.add_argument("--train-kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results: dict[str, dict[str, int]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="subpixel-robustness-") as tmp:
        root = Path(tmp)
        model = model_folder(root)
        steps = [("fuzz", args.fuzz, lambda: fuzz(root, model, args.fuzz, args.chunk, args.seed)),
                 ("upscale kills", args.kills, lambda: image_kills(root, model, args.kills, args.seed)),
                 ("video kills", args.video_kills, lambda: video_kills(root, model, args.video_kills, args.seed)),
                 ("train kills", args.train_kills, lambda: train_kills(root, args.train_kills, args.seed))]
        for name, count, step in steps:
            if not count:
                continue
            started = time.monotonic()
            try:
                results[name] = step()
            except AssertionError as exc:
                failed = True
                results[name] = {"invariant_broken": 1}
                print(f"{name}: INVARIANT BROKEN: {exc}", file=sys.stderr)
            results[name]["seconds"] = round(time.monotonic() - started)
            print(f"{name}: {results[name]}", flush=True)
    fz = results.get("fuzz", {})
    failed |= any(fz.get(k, 0) for k in ("crashes", "bad_messages", "bad_outputs", "partials"))
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
