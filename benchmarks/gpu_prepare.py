"""Pack what the GPU scripts need into folders that travel to a device machine (issue 9, 11).

The device machine sees the repository but not ``../shared``, and takes at most 64 MiB per
call, so this copies (never into git: the folders are listed in ``.git/info/exclude``)

- ``.gpu-data/``: for ``benchmarks/train_gpu.sh``: T91 and BSD200 as lossless WebP (the same
  pixels, two thirds of the PNGs' size; ``subpixel train`` reads them as lossless, as it reads the
  PNGs), the ImageNet sample photos that ``--val-holdout 20`` holds back from the whole set and
  then as many others as fit (as they are), Set5 and Set14: so the GPU recipe validates on the
  same 20 pictures as the CPU recipe (``subpixel_cli.data.split_by_name``);
- ``.gpu-check/``: for ``benchmarks/gpu_check.sh``: Set5, the car clip, and PyAV's wheel for the
  device's Python 3.12 (its image has torch, but not PyAV).

    python benchmarks/gpu_prepare.py train   # then: run(command="bash benchmarks/train_gpu.sh", carry=[".gpu-data"])
    python benchmarks/gpu_prepare.py check   # then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-check"])
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BUDGET = 54 << 20  # bytes of data per call: with the repository (~3 MiB), under the 64 MiB that travels
HOLDOUT = 20  # train_gpu.sh's and train_cpu.sh's --val-holdout


def _exclude(name: str) -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if f"/{name}/" not in lines:
        exclude.write_text("\n".join([*lines, f"/{name}/"]) + "\n")


def _webp(source: Path, target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(source.iterdir()):
        out = target / (path.stem + ".webp")
        with Image.open(path) as img:
            img.convert("RGB").save(out, "WEBP", lossless=True, method=4)
        total += out.stat().st_size
    return total


def _copy(source: Path, target: Path, budget: int | None = None, first: frozenset[str] = frozenset()) -> int:
    """Copy ``source``'s files (those whose stems are in ``first`` before the others) while they
    fit in ``budget`` bytes."""
    target.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(source.iterdir(), key=lambda p: (p.stem not in first, p.name)):
        if budget is not None and total + path.stat().st_size > budget:
            break
        shutil.copy2(path, target / path.name)
        total += path.stat().st_size
    return total


def prepare_train(out: Path) -> None:
    from subpixel_cli.data import find_images, split_by_name

    held = frozenset(p.stem for p in split_by_name(find_images(SHARED / "train"), HOLDOUT)[1])
    used = _webp(SHARED / "train" / "T91", out / "train" / "T91")
    used += _webp(SHARED / "train" / "BSD200", out / "train" / "BSD200")
    used += _copy(SHARED / "benchmarks" / "Set5", out / "benchmarks" / "Set5")
    used += _copy(SHARED / "benchmarks" / "Set14", out / "benchmarks" / "Set14")
    used += _copy(SHARED / "train" / "ImageNet_sample", out / "train" / "ImageNet_sample", BUDGET - used, held)
    packed = split_by_name(find_images(out / "train"), HOLDOUT)[1]
    assert {p.stem for p in packed} == held, "the GPU set must hold back the CPU set's validation pictures"
    print(f"{out}: {used / 2**20:.1f} MiB")


def prepare_check(out: Path) -> None:
    _copy(SHARED / "benchmarks" / "Set5", out / "Set5")
    shutil.copy2(SHARED / "video" / "car_traffic_small.mp4", out / "car_traffic_small.mp4")
    import av

    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(out / "wheels"), f"av=={av.__version__}"], check=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["train", "check"])
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: not found; this script packs the shared data for the device machine")
    name = ".gpu-data" if args.what == "train" else ".gpu-check"
    _exclude(name)
    out = ROOT / name
    shutil.rmtree(out, ignore_errors=True)
    (prepare_train if args.what == "train" else prepare_check)(out)


if __name__ == "__main__":
    main()
