"""kill -9 of ``subpixel train`` at random moments, then ``--resume``: every checkpoint on disk is
complete, the run folder stays a loadable model, and the resumed run ends exactly where an
uninterrupted one does (no step lost or repeated beyond the checkpoint interval)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

from subpixel_cli.cli import main
from subpixel_cli.registry import load_model
from subpixel_cli.checkpoints import CHECKPOINT_NAME, STATE_NAME

from conftest import random_image
from robustness_util import cli_process, run_and_kill

EVERY = 5
# atomic writes in train/hub leave these behind when killed mid-write (never at a target name)
TEMPORARY_PREFIXES = (f".{CHECKPOINT_NAME}.", f".{STATE_NAME}.", ".model.safetensors.", ".config.json.", ".README.md.")


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    for i in range(4):
        Image.fromarray(random_image(40, 48, seed=i)).save(root / f"img{i}.png")
    return root


def _args(data: Path, out: Path, steps: int) -> list:
    return ["train", "--dataset", data, "-x", "2", "--steps", steps, "--batch-size", "4", "--patch-size", "12",
            "--patches-per-image", "8", "--checkpoint-every", EVERY, "--out", out, "--device", "cpu", "--seed", "3", "-q"]


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(out / CHECKPOINT_NAME), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _checkpoint_step(out: Path) -> int | None:
    """The step of the checkpoint on disk (read in full, so a half-written one fails here)."""
    if not (out / CHECKPOINT_NAME).exists():
        return None
    with safe_open(str(out / CHECKPOINT_NAME), framework="pt") as f:
        record = json.loads(f.metadata()["trainer"])
        for key in f.keys():
            f.get_tensor(key)
    return record["state"]["step"]


def _check_run_folder(out: Path, steps_per_epoch: int, steps: int) -> int | None:
    step = _checkpoint_step(out)
    if step is not None:
        assert step % EVERY == 0 or step % steps_per_epoch == 0 or step == steps, step
        assert load_model(str(out)).info.scale == 2  # config.json + model.safetensors stay a model
        assert json.loads((out / STATE_NAME).read_text())["state"]["step"] >= step - EVERY
    for path in out.iterdir():
        if path.name.startswith("."):
            ours = path.name.startswith(TEMPORARY_PREFIXES) and path.name.endswith(".partial")
            assert ours or re.fullmatch(r"\.tmp[A-Za-z0-9]{6}", path.name), path.name  # safetensors' own temporary
    return step


def kill_and_resume(data: Path, root: Path, seeds: list[int], steps: int = 48) -> dict[str, int]:
    """An uninterrupted reference run, then a run killed once per seed and resumed each time; the
    kills are spread so that together they cover about the whole run."""
    reference, out = root / "reference", root / "killed"
    killed, work = run_and_kill(_args(data, reference, steps), reference, None)  # from its first file to the end
    assert not killed and _checkpoint_step(reference) == steps
    steps_per_epoch = len(list(data.iterdir())) * 8 // 4
    tally = {"kills": 0, "resumes": 0, "steps_redone": 0}
    for seed in seeds:
        resume = ["--resume"] if _checkpoint_step(out) is not None else []
        before = _checkpoint_step(out) or 0
        delay = random.Random(seed).uniform(0, 2 * work / len(seeds))
        killed, _ = run_and_kill([*_args(data, out, steps), *resume], out, delay)
        tally["kills"] += killed
        tally["resumes"] += bool(resume)
        after = _check_run_folder(out, steps_per_epoch, steps)
        assert after is None or after >= before  # a kill never takes a checkpoint back
    resume = ["--resume"] if _checkpoint_step(out) is not None else []
    proc = cli_process(*_args(data, out, steps), *resume)
    assert proc.returncode == 0, proc.stderr.decode()
    a, b = _tensors(reference), _tensors(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key  # same trajectory: no step lost or repeated
    adam_steps = {float(v) for k, v in b.items() if k.endswith(".step")}
    assert adam_steps == {float(steps)}
    return tally


@pytest.mark.slow  # four training processes; tests/test_train.py has a one-kill version in the default suite
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_does(tmp_path, train_folder):
    tally = kill_and_resume(train_folder, tmp_path, [1, 2])
    assert tally["kills"] >= 1


@pytest.mark.slow
def test_many_kills_then_resume(tmp_path, train_folder):
    tally = kill_and_resume(train_folder, tmp_path, list(range(10, 22)), steps=400)
    print(f"\ntrain kills: {tally['kills']}, resumes: {tally['resumes']}")
    assert tally["kills"] >= 6


def test_resume_without_a_checkpoint_is_a_usage_error(tmp_path, train_folder):
    result = CliRunner().invoke(main, [str(a) for a in [*_args(train_folder, tmp_path / "none", 8), "--resume"]],
                                catch_exceptions=False)
    assert result.exit_code == 2 and "no checkpoint" in result.stderr and "Traceback" not in result.stderr
