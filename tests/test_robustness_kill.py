"""kill -9 at random moments never leaves a partial file at a target path, never loses a finished
output, and a re-run completes what is missing (``--force`` replaces outputs atomically).

The default suite kills a few times; ``pytest -m slow tests/test_robustness_kill.py`` kills many.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustness_util import check_outputs, cli, cli_process, decoded, run_and_kill, save


def make_inputs(folder: Path) -> Path:
    """Four same-size pictures (batched, written on the writer thread), two big ones (tiled and
    streamed strip by strip in the main thread), one with alpha, one grey: every write path."""
    folder.mkdir(parents=True)
    for i in range(4):
        save(folder / f"same{i}.png", 80, 80, seed=i)
    save(folder / "wide0.jpg", 240, 260, seed=5)
    save(folder / "wide1.png", 200, 300, seed=6)
    save(folder / "alpha.png", 60, 80, mode="RGBA", seed=7)
    save(folder / "grey.webp", 70, 50, mode="L", seed=8)
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


class Campaign:
    """One folder of inputs, its reference outputs, and a tally of what the kills did."""

    def __init__(self, root: Path, model: Path) -> None:
        self.inputs = make_inputs(root / "in")
        self.input_digests = digests(self.inputs)
        self.args = ["--model", model, "--max-memory", "64", "--quiet"]
        reference = root / "reference"
        started = time.monotonic()  # in-process: the same code, without a second start-up
        assert cli("upscale", self.inputs, "-o", reference, *self.args).exit_code == 0
        self.work_seconds = time.monotonic() - started
        assert len(list(reference.iterdir())) == 8
        self.reference = {p.name: decoded(p) for p in reference.iterdir()}
        self.kills = self.lost = self.broken = 0

    def kill_once(self, out: Path, rng: random.Random, force: bool = False, old: dict | None = None,
                  ignore: list[Path] = ()) -> None:
        """One run killed at a random moment of its work, then every invariant checked."""
        before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else {}
        delay = rng.uniform(0, self.work_seconds)
        killed, _ = run_and_kill(["upscale", self.inputs, "-o", out, *self.args, *(["--force"] if force else [])], out, delay)
        self.kills += killed
        check = check_outputs(out, self.reference, ignore=[p.name for p in ignore])
        if old is not None:  # with --force a target is the old complete file or the new complete one
            still_old = [n for n in check.broken if np.array_equal(decoded(out / n), old[n])]
            check.broken = [n for n in check.broken if n not in still_old]
        self.broken += len(check.broken)
        self.lost += sum(1 for name in before if not (out / name).exists())
        if not force:
            self.lost += sum(1 for name, data in before.items() if (out / name).exists() and (out / name).read_bytes() != data)
        assert not check.broken, f"partial or wrong files at target paths: {check.broken}"
        assert not check.stray, f"unexpected files: {check.stray}"
        assert digests(self.inputs) == self.input_digests, "an input changed"

    def finish(self, out: Path, force: bool = False, ignore: list[Path] = ()) -> None:
        """A plain re-run completes the rest, exit 0, and clears the killed runs' temporary files."""
        proc = cli_process("upscale", self.inputs, "-o", out, *self.args, *(["--force"] if force else []))
        assert proc.returncode == 0, proc.stderr.decode()
        check = check_outputs(out, self.reference, ignore=[p.name for p in ignore])
        assert sorted(check.complete) == sorted(self.reference) and not check.broken
        assert check.temporary == [] and check.stray == []


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, model_folder) -> Campaign:
    return Campaign(tmp_path_factory.mktemp("kill"), model_folder(2, 1))


def old_versions(out: Path, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Complete but different outputs already at every target (as from an earlier model)."""
    out.mkdir(parents=True, exist_ok=True)
    old = {}
    for name, pixels in reference.items():
        old[name] = 255 - pixels
        Image.fromarray(old[name]).save(out / name)
    return old


def test_kill_9_then_rerun_completes(tmp_path, campaign):
    """Two kills, then a re-run: it skips what is done, does the rest, and removes the killed runs'
    temporary files (only those: other hidden files are not its business)."""
    rng = random.Random(1)
    out = tmp_path / "out"
    out.mkdir()
    unrelated = [out / ".notes.txt", out / ".other.png.abcd1234.partial"]
    for path in unrelated:
        path.write_bytes(b"not ours")
    stale = out / ".same0_x2.png.abcd_123.partial"
    stale.write_bytes(b"half a png, from a run killed earlier")
    for _ in range(2):
        campaign.kill_once(out, rng, ignore=unrelated)
    campaign.finish(out, ignore=unrelated)
    assert not stale.exists() and all(path.exists() for path in unrelated)
    assert campaign.lost == 0 and campaign.broken == 0


def test_kill_9_during_force_leaves_old_or_new_never_partial(tmp_path, campaign):
    rng = random.Random(2)
    out = tmp_path / "out"
    old = old_versions(out, campaign.reference)
    campaign.kill_once(out, rng, force=True, old=old)
    assert campaign.lost == 0 and campaign.broken == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_many_kills(tmp_path, campaign, seed):
    """Kill after kill in the same folder until a run gets through, then the --force variant."""
    rng = random.Random(100 + seed)
    out = tmp_path / "out"
    for _ in range(6):
        campaign.kill_once(out, rng)
    campaign.finish(out)
    forced = tmp_path / "forced"
    old = old_versions(forced, campaign.reference)
    for _ in range(3):
        campaign.kill_once(forced, rng, force=True, old=old)
    campaign.finish(forced, force=True)
    print(f"\nkills so far: {campaign.kills}, lost: {campaign.lost}, half-written: {campaign.broken}")
    assert campaign.lost == 0 and campaign.broken == 0
