"""The long robustness campaign: fuzzed files through the real CLI (short PNGs among them),
model folders whose weights are not finite, two runs at once on one output folder, videos on a
disk that fills up (then freed, for the re-run), and kill -9 loops for ``upscale``, ``video`` and
``train``. Prints the figures for the release note: files tried, crashes, wrong successes (a bad
input reported as done), partial or replaced files.

    python benchmarks/robustness.py                 # 2000 fuzzed files, 30/10/10 kills, 40/10/10 faults
    python benchmarks/robustness.py --fuzz 200 --kills 5 --video-kills 2 --train-kills 2   # quick
    python benchmarks/robustness.py --fuzz 0 --kills 0 --video-kills 0     # one part only (0 skips)

Everything is made here (random-init models, pictures, videos) in a temporary folder; nothing
is downloaded. Exit code 0 when every invariant held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from conftest import make_model  # noqa: E402
from robustness_util import (  # noqa: E402
    PARTIAL,
    check_outputs,
    check_picture_file,
    cli,
    cli_process,
    command,
    decoded,
    encoded,
    mutate,
    noisy_video,
    on_small_disk,
    process_env,
    records,
    save,
    short_png,
)

from subpixel_cli.hub import ModelInfo, save_model  # noqa: E402

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tiff", "BMP": ".bmp"}
MODES = {"PNG": ["L", "RGB", "RGBA", "LA", "P", "1"], "JPEG": ["L", "RGB", "CMYK"], "WEBP": ["RGB", "RGBA"],
         "GIF": ["P", "L"], "TIFF": ["L", "RGB", "RGBA", "CMYK"], "BMP": ["L", "RGB", "P", "1"]}
ALLOWED_STDERR = ("failed:", "note:", "error:")


def model_folder(root: Path, scale: int = 2, channels: int = 1) -> Path:
    model = make_model(scale, channels)
    return save_model(root / f"model_x{scale}", model, ModelInfo(f"campaign-x{scale}", model.config))


def fuzz_case(rng: random.Random, folder: Path, name: str) -> bool:
    """Write one fuzzed file into ``folder``; whether it is known to be corrupt (a PNG whose data
    ends early: reported done, it is a wrong success)."""
    if rng.random() < 0.05:
        short_png(folder / f"{name}.png", side=rng.randint(20, 3000), rows=rng.randint(0, 15))
        return True
    data, suffix = _fuzz_bytes(rng)
    (folder / f"{name}{suffix}").write_bytes(data)
    return False


def _fuzz_bytes(rng: random.Random) -> tuple[bytes, str]:
    fmt = rng.choice(sorted(FORMATS))
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(2000)), FORMATS[fmt]
    data = encoded(fmt, rng.randint(1, 40), rng.randint(1, 40), rng.choice(MODES[fmt]), rng.randrange(2**16))
    return (mutate(data, rng) if rng.random() < 0.8 else data), FORMATS[fmt]


def fuzz(root: Path, model: Path, count: int, chunk: int, seed: int) -> dict[str, int]:
    """``count`` damaged files through ``subpixel upscale DIR --json``, ``chunk`` per process."""
    rng = random.Random(seed)
    tally = {"tried": 0, "ok": 0, "failed": 0, "crashes": 0, "bad_messages": 0, "bad_outputs": 0, "partials": 0,
             "short_pngs": 0, "wrong_successes": 0}
    for start in range(0, count, chunk):
        folder, out = root / f"fuzz{start}" / "in", root / f"fuzz{start}" / "out"
        folder.mkdir(parents=True)
        corrupt = {f"f{i:05d}" for i in range(start, min(count, start + chunk)) if fuzz_case(rng, folder, f"f{i:05d}")}
        tally["short_pngs"] += len(corrupt)
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
            elif Path(record["input"]).stem in corrupt:
                tally["wrong_successes"] += 1
            else:
                try:
                    w, h = record["size"]
                    check_picture_file(Path(record["output"]), (2 * w, 2 * h))
                except Exception:  # noqa: BLE001 - counted
                    tally["bad_outputs"] += 1
        tally["partials"] += sum(1 for p in out.iterdir() if PARTIAL.match(p.name)) if out.exists() else 0
    return tally


def bad_weights(root: Path, model: Path, count: int, seed: int) -> dict[str, int]:
    """Model folders with a valid header over data that is not finite (NaN or infinity in one
    tensor, some of its values or all of the file), each through ``subpixel upscale``: every one
    must be refused at load, in one line, exit 2, with no output."""
    rng = random.Random(seed)
    picture = save(root / "weights_pic.png")
    tally = {"tried": 0, "refused": 0, "crashes": 0, "wrong_successes": 0, "outputs": 0}
    for k in range(count):
        folder = root / f"bad_weights{k}"
        shutil.copytree(model, folder)
        weights = folder / "model.safetensors"
        data = bytearray(weights.read_bytes())
        body = 8 + int.from_bytes(data[:8], "little")
        fill = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff", b"\x00\x00\xc0\x7f"])
        if rng.random() < 0.3:
            data[body:] = (fill * len(data))[: len(data) - body]  # every value
        else:  # some values, 4-byte aligned, anywhere in the data
            for _ in range(rng.randint(1, 50)):
                at = body + 4 * rng.randrange((len(data) - body) // 4)
                data[at : at + 4] = fill
        weights.write_bytes(bytes(data))
        target = root / f"bad_weights{k}.png"
        result = cli("upscale", picture, "--model", folder, "-o", target)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        tally["tried"] += 1
        tally["outputs"] += target.exists()
        if result.exit_code == 0:
            tally["wrong_successes"] += 1
        elif result.exit_code == 2 and len(errors) == 1 and "not finite" in errors[0] and "Traceback" not in result.stderr:
            tally["refused"] += 1
        else:
            tally["crashes"] += 1
            print(f"  weights {k}: exit {result.exit_code}\n{result.stderr[-1000:]}", file=sys.stderr)
    return tally


def concurrent_runs(root: Path, model: Path, rounds: int, files: int, seed: int) -> dict[str, int]:
    """Two ``subpixel upscale`` processes at once on one output folder, ``rounds`` times: every
    file published exactly once (never replaced), the other run counting it skipped, both exit 0,
    every output complete and equal to a single run's."""
    rng = random.Random(seed)
    inputs = root / "concurrent_in"
    inputs.mkdir()
    for i in range(files):
        save(inputs / f"c{i:03d}.png", rng.randint(40, 140), rng.randint(40, 140), seed=i)
    reference_dir = root / "concurrent_reference"
    assert cli("upscale", inputs, "-o", reference_dir, "--model", model, "-q").exit_code == 0
    reference = {p.name: decoded(p) for p in reference_dir.iterdir()}
    tally = {"runs": 0, "files": 0, "nonzero_exits": 0, "replaced": 0, "failed": 0, "lost": 0, "partial": 0}
    for k in range(rounds):
        out = root / f"concurrent_out{k}"
        args = command("upscale", inputs, "-o", out, "--model", model, "--json")
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env()) for _ in range(2)]
        done = [p.communicate(timeout=1800) for p in procs]
        published: Counter[str] = Counter()
        for proc, (stdout, stderr) in zip(procs, done):
            tally["runs"] += 1
            tally["nonzero_exits"] += proc.returncode != 0
            for record in records(stdout):
                tally["failed"] += record["status"] == "failed"
                if record["status"] == "ok":
                    published[Path(record["output"]).name] += 1
        tally["files"] += files
        tally["replaced"] += sum(n - 1 for n in published.values() if n > 1)
        check = check_outputs(out, reference, tolerance=0)
        tally["lost"] += files - len(check.complete)
        tally["partial"] += len(check.broken) + len(check.temporary) + len(check.stray)
    return tally


def video_full_disk(root: Path, model: Path, count: int, seed: int) -> dict[str, int]:
    """``subpixel video`` on a tmpfs too small for its work (sizes drawn at random), then the disk
    grown and the same command run again: one plain line and exit 1, nothing partial at the target,
    the re-run complete (resuming where segments were kept)."""
    rng = random.Random(seed)
    clip = noisy_video(root / "disk_clip.mp4")
    tally = {"runs": 0, "disk_full": 0, "fitted": 0, "crashes": 0, "partial": 0, "resumed": 0, "reruns_failed": 0}
    for k in range(count):
        disk = root / f"disk{k}"
        size = f"{rng.randint(100, 3000)}k"
        runs = on_small_disk(disk, size, "video", clip, "-x", "2", "--model", model, "-o", disk / "out.mp4", "--json",
                             grow_to="64m")
        if runs is None:
            return {"skipped": 1}
        (first, listing), (again, after) = runs
        err = first.stderr.decode(errors="replace")
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        tally["runs"] += 1
        if first.returncode == 0:
            tally["fitted"] += 1
        elif (first.returncode == 1 and len(errors) == 1 and "No space left on device" in errors[0]
              and "internal error" not in err and "Traceback" not in err):
            tally["disk_full"] += 1
            kept = [n for n in listing if "/segment_" in n]
            tally["partial"] += "out.mp4" in listing or any(n.endswith(".partial") for n in listing)
            tally["partial"] += ("resumes from" in errors[0]) != bool(kept)
        else:
            tally["crashes"] += 1
            print(f"  disk {size}: exit {first.returncode}\n{err[-1500:]}", file=sys.stderr)
        if again.returncode != 0 or after != ["out.mp4"]:
            tally["reruns_failed"] += 1
            print(f"  disk {size}, re-run: exit {again.returncode} {after}\n{again.stderr.decode()[-800:]}", file=sys.stderr)
        else:
            tally["resumed"] += json.loads(again.stdout)["segments_resumed"] > 0
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
    parser.add_argument("--weights", type=int, default=40, help="model folders with weights that are not finite")
    parser.add_argument("--concurrent", type=int, default=10, help="rounds of two runs at once on one output folder")
    parser.add_argument("--concurrent-files", type=int, default=40)
    parser.add_argument("--video-disk", type=int, default=10, help="videos on a disk that fills up")
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
                 ("train kills", args.train_kills, lambda: train_kills(root, args.train_kills, args.seed)),
                 ("bad weights", args.weights, lambda: bad_weights(root, model, args.weights, args.seed)),
                 ("concurrent runs", args.concurrent,
                  lambda: concurrent_runs(root, model, args.concurrent, args.concurrent_files, args.seed)),
                 ("video full disk", args.video_disk, lambda: video_full_disk(root, model, args.video_disk, args.seed))]
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
    bad = {"fuzz": ("crashes", "bad_messages", "bad_outputs", "partials", "wrong_successes"),
           "bad weights": ("crashes", "wrong_successes", "outputs"),
           "concurrent runs": ("nonzero_exits", "replaced", "failed", "lost", "partial"),
           "video full disk": ("crashes", "partial", "reruns_failed")}
    failed |= any(results.get(part, {}).get(k, 0) for part, keys in bad.items() for k in keys)
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
