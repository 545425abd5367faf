"""Training: a few-step CPU run, the run folder as a model folder, checkpoints, resume, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

from conftest import SAMPLE, random_image
from subpixel_cli.cli import main
from subpixel_cli.errors import UsageError
from subpixel_cli.registry import load_model
from subpixel_cli.checkpoints import CHECKPOINT_NAME, STATE_NAME
from subpixel_cli.train import learning_rate, train
from subpixel_cli.trainset import TrainConfig


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Six small training pictures (and a validation folder beside them)."""
    root = tmp_path_factory.mktemp("data")
    for i in range(6):
        (root / "train").mkdir(exist_ok=True)
        Image.fromarray(random_image(48, 56, seed=i)).save(root / "train" / f"img{i}.png")
    (root / "val").mkdir()
    for i in range(2):
        Image.fromarray(random_image(40, 44, seed=10 + i)).save(root / "val" / f"v{i}.png")
    return root


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Twelve synthetic 178×218 'aligned faces' in torchvision's CelebA layout."""
    root = tmp_path_factory.mktemp("celeba")
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(random_image(218, 178, seed=i)).save(folder / f"{i + 1:06d}.jpg")
    return root


def _config(image_folder: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset=str(image_folder / "train"), scale=2, out=str(out), steps=8, batch_size=4, patch_size=12,
                patches_per_image=2, seed=7, checkpoint_every=3, val=str(image_folder / "val"), device="cpu")
    return TrainConfig(**{**base, **kw})


def _weights(out: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(out / CHECKPOINT_NAME), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


class Killed(Exception):
    """Stands in for a kill: the run ends without writing anything more."""


def _kill_at(step: int):
    def stop(s: int) -> bool:
        if s == step:
            raise Killed
        return False

    return stop


def test_cli_few_step_run_writes_a_model_folder(image_folder, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", str(image_folder / "train"), "-x", "2", "--steps", "6",
                                       "--batch-size", "4", "--patch-size", "12", "--patches-per-image", "2",
                                       "--val", str(image_folder / "val"), "--out", str(out), "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {"config.json", "model.safetensors", "README.md", CHECKPOINT_NAME, STATE_NAME} <= {p.name for p in out.iterdir()}
    assert list((out / "samples").glob("step_*.png"))
    loaded = load_model(str(out))  # --model RUN_DIR
    assert loaded.info.scale == 2 and loaded.info.config.channels == 1
    assert loaded.info.training["steps"] == 6 and loaded.info.training["command"].startswith("subpixel train")
    assert "psnr" in loaded.info.metrics["val"]
    state = json.loads((out / STATE_NAME).read_text())
    assert state["state"]["step"] == 6 and state["state"]["history"][-1]["val_psnr"] > 0
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "subpixel train" in card


def test_cli_trains_a_deeper_model_and_refuses_a_bad_features_list(image_folder, tmp_path):
    args = ["train", "--dataset", str(image_folder / "train"), "-x", "2", "--steps", "2", "--batch-size", "4",
            "--patch-size", "12", "--patches-per-image", "2", "--device", "cpu", "--quiet"]
    out = tmp_path / "deep"
    result = CliRunner().invoke(main, [*args, "--features", "64,32,32", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = load_model(str(out)).info.config
    assert config.features == (64, 32, 32) and config.kernel_sizes == (5, 3, 3, 3)
    for bad in ("64", "64,x", "64,0", ""):
        refused = CliRunner().invoke(main, [*args, "--features", bad, "--out", str(tmp_path / "no")])
        assert refused.exit_code == 2 and "--features" in refused.output, bad
    assert not (tmp_path / "no").exists()


def test_killed_run_resumes_to_the_same_weights(image_folder, tmp_path):
    straight = train(_config(image_folder, tmp_path / "a"))
    with pytest.raises(Killed):
        train(_config(image_folder, tmp_path / "b"), stop=_kill_at(5))  # last checkpoint: step 3
    assert json.loads((tmp_path / "b" / STATE_NAME).read_text())["state"]["step"] == 3
    resumed = train(_config(image_folder, tmp_path / "b", resume=True))
    assert straight.state.step == resumed.state.step == 8
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stopped_run_checkpoints_where_it_stopped_and_continues(image_folder, tmp_path):
    first = train(_config(image_folder, tmp_path / "c", steps=4), stop=lambda s: s == 2)
    assert first.state.step == 2
    again = train(_config(image_folder, tmp_path / "c", steps=4, resume=True))
    assert again.state.step == 4
    steps = [h["step"] for h in again.state.history]
    assert steps == sorted(steps) and steps[-1] == 4


def test_resume_checks_the_model_and_new_runs_do_not_overwrite(image_folder, tmp_path):
    train(_config(image_folder, tmp_path / "d", steps=2))
    with pytest.raises(UsageError, match="--resume"):
        train(_config(image_folder, tmp_path / "d", steps=2))
    with pytest.raises(UsageError, match="differs"):
        train(_config(image_folder, tmp_path / "d", steps=4, scale=3, resume=True))
    with pytest.raises(UsageError, match="no checkpoint"):
        train(_config(image_folder, tmp_path / "nothing", resume=True))


def test_checkpoints_are_safetensors_with_json_state_not_pickles(image_folder, tmp_path):
    train(_config(image_folder, tmp_path / "e", steps=3))
    out = tmp_path / "e"
    with open(out / CHECKPOINT_NAME, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    trainer = json.loads(header["__metadata__"]["trainer"])
    assert trainer["state"]["step"] == 3 and trainer["config"]["scale"] == 2
    assert not [p for p in out.rglob("*") if p.suffix in {".pt", ".pth", ".pkl", ".bin"}]


def test_learning_rate_schedules():
    c = TrainConfig(dataset="x", scale=2, lr=1e-3, min_lr=1e-5)
    assert learning_rate(c, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(c, 100, 100) == pytest.approx(1e-5)
    step = TrainConfig(dataset="x", scale=2, lr=1e-3, schedule="step")
    assert [learning_rate(step, s, 100) for s in (0, 50, 80)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="not both"):
        TrainConfig(dataset="x", scale=2, steps=3, epochs=3)
    with pytest.raises(UsageError, match="--loss"):
        TrainConfig(dataset="x", scale=2, loss="huber")


def test_celeba_recipe_end_to_end_with_held_out_faces(faces, tmp_path):
    out = tmp_path / "faces"
    result = CliRunner().invoke(main, ["train", "--dataset", "celebA", "--data-dir", str(faces), "--steps", "3",
                                       "--batch-size", "4", "--out", str(out), "--device", "cpu", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = load_model(str(out)).info
    assert info.scale == 4 and info.config.channels == 3 and "CelebA" in info.license
    assert info.training["train_images"] == 11 and info.training["held_out_images"] == 1
    assert info.metrics["val"]["psnr"] > 0


def test_missing_celeba_is_a_usage_error_that_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBPIXEL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", "--dataset", "celebA", "--data-dir", str(tmp_path / "none"),
                                       "--steps", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "img_align_celeba" in result.output and str(tmp_path / "none") in result.output
    assert not (tmp_path / "r").exists()  # a run that failed before its first step leaves no folder


def test_a_run_that_fails_before_its_first_step_removes_only_the_folder_it_made(tmp_path):
    """An empty run folder was left behind (issue 22.9); a folder that was there stays."""
    args = ["train", "--dataset", str(tmp_path / "missing"), "-x", "2", "--steps", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "new" / "run")])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "mine")])
    assert result.exit_code == 2 and (tmp_path / "mine").is_dir()


def test_piped_output_says_what_loads_and_shows_no_bar_before_an_error(faces, tmp_path):
    failed = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "missing"), "-x", "2", "--steps", "1",
                                       "--out", str(tmp_path / "r")])
    assert failed.exit_code == 2 and failed.stderr.splitlines()[0].startswith("error:"), failed.stderr
    result = CliRunner().invoke(main, ["train", "--dataset", "celebA", "--data-dir", str(faces), "--steps", "1",
                                       "--batch-size", "4", "--out", str(tmp_path / "faces"), "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "reading 12 faces" in result.stderr and "0/1" not in result.stderr, result.stderr


def test_a_runs_record_names_its_data_relative_to_the_data_root(image_folder, tmp_path, monkeypatch):
    """Cards held the absolute paths of the machine that trained them (issue 22, rough edges)."""
    monkeypatch.setenv("SUBPIXEL_DATA", str(image_folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "home" / "runs" / "x2"
    result = CliRunner().invoke(main, ["train", "--dataset", str(image_folder / "train"), "-x", "2", "--steps", "2",
                                       "--batch-size", "4", "--patch-size", "12", "--patches-per-image", "2",
                                       "--val", str(image_folder / "val"), "--out", str(out), "--device", "cpu", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    training = load_model(str(out)).info.training
    assert training["dataset"] == "train" and training["val"] == "val"
    assert '--dataset "$SUBPIXEL_DATA"/train' in training["command"] and "--out ~/runs/x2" in training["command"]
    for name in ("config.json", "README.md"):
        text = (out / name).read_text()
        assert str(image_folder) not in text and str(tmp_path) not in text, name


def test_a_runs_card_names_what_loads_and_what_validation_used(faces, tmp_path):
    """The card suggested --model celeba-x4, which does not load, and said 480 held-out faces
    where validation used 200 (issue 22.9)."""
    out = tmp_path / "faces-x4"
    train(TrainConfig(dataset="celebA", data_dir=str(faces), scale=4, steps=2, batch_size=4, out=str(out),
                      device="cpu", holdout=0.5, val_max_images=2))
    info = load_model(str(out)).info
    assert (info.training["held_out_images"], info.training["val_images"], info.metrics["val"]["images"]) == (6, 2, 2)
    assert info.metrics["val"]["dataset"] == info.training["val"] == "2 of the 6 held-out faces"
    card = (out / "README.md").read_text()
    use = next(line for line in card.splitlines() if line.startswith("subpixel upscale"))
    spec = use.split("--model ", 1)[1].split()[0]
    assert spec == str(out) and load_model(spec).info.name == "faces-x4"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "subpixel_cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_sigkilled_process_resumes(image_folder, tmp_path):
    out = tmp_path / "killed"
    args = ["train", "--dataset", str(image_folder / "train"), "-x", "2", "--batch-size", "4", "--patch-size", "12",
            "--patches-per-image", "2", "--out", str(out), "--device", "cpu", "--checkpoint-every", "2", "-q"]
    proc = subprocess.Popen(_cli(*args, "--steps", "100000"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / STATE_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = json.loads((out / STATE_NAME).read_text())["state"]["step"]
    assert done >= 2
    total = done + 3
    result = CliRunner().invoke(main, [*args, "--steps", str(total), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / STATE_NAME).read_text())["state"]["step"] == total
    assert all(np.isfinite(v.numpy()).all() for v in _weights(out).values())


def test_torchrun_two_cpu_processes(image_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "subpixel_cli",
           "train", "--dataset", str(image_folder / "train"), "-x", "2", "--steps", "4", "--batch-size", "2",
           "--patch-size", "12", "--patches-per-image", "2", "--out", str(out), "--device", "cpu", "-q"]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    info = load_model(str(out)).info
    assert info.training["processes"] == 2 and info.training["steps"] == 4


def test_ctrl_c_checkpoints_the_step_it_reached(image_folder, tmp_path):
    def interrupt(step: int) -> bool:
        if step == 5:
            raise KeyboardInterrupt
        return False

    straight = train(_config(image_folder, tmp_path / "f", checkpoint_every=100))
    with pytest.raises(KeyboardInterrupt):
        train(_config(image_folder, tmp_path / "g", checkpoint_every=100), stop=interrupt)
    assert json.loads((tmp_path / "g" / STATE_NAME).read_text())["state"]["step"] == 5
    train(_config(image_folder, tmp_path / "g", checkpoint_every=100, resume=True))
    a, b = _weights(tmp_path / "f"), _weights(tmp_path / "g")
    assert all(torch.equal(a[k], b[k]) for k in a) and straight.state.step == 8


@pytest.mark.parametrize("donor_scale", [2, 3])
def test_init_from_takes_every_layer_that_fits(tmp_path, model_folder, donor_scale):
    """Another scale lends conv1/conv2 (FSRCNN-style transfer); the same scale and channels lend
    conv3 too (fine-tuning a shipped model)."""
    from subpixel_cli.train import build_model

    donor = load_model(str(model_folder(donor_scale, 1))).model.state_dict()
    model = build_model(_config(tmp_path, tmp_path / "run", scale=2, init_from=str(model_folder(donor_scale, 1)))).state_dict()
    for key in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
        assert torch.equal(model[key], donor[key])
    if donor_scale == 2:
        assert torch.equal(model["conv3.weight"], donor["conv3.weight"]) and torch.equal(model["conv3.bias"], donor["conv3.bias"])
    else:
        assert model["conv3.weight"].shape != donor["conv3.weight"].shape


def test_a_deeper_model_starts_from_what_its_donor_computes(tmp_path):
    """--features with more layers than the donor: the donor's layers are copied, the new ones
    start as near-identities, so on a photo the deeper model's first output is the donor's to a
    fraction of a level; a donor deeper than the model, or a new layer of another width, is a
    usage error."""
    from subpixel_cli.train import build_model

    donor = load_model("espcn-x3").model
    deep = build_model(_config(tmp_path, tmp_path / "run", scale=3, init_from="espcn-x3", features=(64, 32, 32, 32)))
    assert deep.config.depth == 5 and torch.equal(deep.conv2.weight, donor.conv2.weight)
    photo = np.asarray(Image.open(SAMPLE).convert("L"), dtype=np.float32)[::3, ::3] / 255
    x = torch.from_numpy(photo)[None, None]
    with torch.no_grad():
        gap = (deep(x) - donor(x)).abs() * 255
    assert gap.mean() < 0.25 and gap.max() < 4, (gap.mean(), gap.max())
    with pytest.raises(UsageError, match="layers"):
        build_model(_config(tmp_path, tmp_path / "r2", scale=3, init_from=str(_saved(deep, tmp_path / "deep"))))
    with pytest.raises(UsageError, match="width"):
        build_model(_config(tmp_path, tmp_path / "r3", scale=3, init_from="espcn-x3", features=(64, 32, 16)))


def _saved(model, folder):
    from subpixel_cli.hub import ModelInfo, save_model

    save_model(folder, model, ModelInfo("deep", model.config))
    return folder


def test_ema_is_what_is_validated_saved_and_resumed(image_folder, tmp_path):
    out = tmp_path / "ema"
    train(_config(image_folder, out, ema=0.9, steps=6, val=None, val_holdout=2))
    tensors = _weights(out)
    saved = load_model(str(out)).model.state_dict()
    # The model folder holds the average, the checkpoint both; after 6 steps they differ.
    assert torch.equal(saved["conv1.weight"], tensors["ema.conv1.weight"])
    assert not torch.equal(tensors["ema.conv1.weight"], tensors["model.conv1.weight"])
    state = json.loads((out / STATE_NAME).read_text())
    assert state["state"]["history"][-1]["val_psnr"] > 0  # validated on the 2 held-back images
    # A stopped run with an average resumes to what an unbroken one gives.
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(_config(image_folder, whole, ema=0.9, steps=6))
    train(_config(image_folder, parts, ema=0.9, steps=6), stop=lambda s: s == 3)
    train(_config(image_folder, parts, ema=0.9, steps=6, resume=True))
    a, b = _weights(whole), _weights(parts)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k.startswith(("ema.", "model.")))


def test_precision_choice_and_bf16_training_on_cpu(image_folder, tmp_path):
    from subpixel_cli.train import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype(_config(image_folder, tmp_path, precision="fp32"), cpu) is None
    assert autocast_dtype(_config(image_folder, tmp_path, precision="bf16"), cpu) == torch.bfloat16
    result = train(_config(image_folder, tmp_path / "bf16", precision="bf16", steps=4))
    assert result.info.training["precision"] == "bfloat16"
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "bf16").values() if v.is_floating_point())


def test_validation_is_the_evaluation_protocol(image_folder, tmp_path):
    """Training's validation PSNR is what `subpixel eval` measures for the saved model."""
    from subpixel_cli.evaluate import evaluate_model

    out = tmp_path / "run"
    train(_config(image_folder, out, steps=4, precision="fp32"))
    logged = json.loads((out / STATE_NAME).read_text())["state"]["history"][-1]["val_psnr"]
    scored = evaluate_model(load_model(str(out)), 2, [image_folder / "val"])
    assert logged == pytest.approx(scored.datasets[0].psnr, abs=1e-3)
    assert (out / "samples").is_dir() and len(list((out / "samples").glob("step_*.png"))) >= 1


def test_patches_cut_on_the_device_train_as_the_dataloader_does(image_folder, tmp_path):
    """--device-data (the GPU recipe's data path, here on the CPU) gives the same run."""
    a, b = tmp_path / "loader", tmp_path / "device"
    train(_config(image_folder, a, steps=5, precision="fp32", device_data=False))
    train(_config(image_folder, b, steps=5, precision="fp32", device_data=True))
    wa, wb = _weights(a), _weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa if k.startswith("model."))


def test_an_rgb_run_can_start_from_a_y_model():
    """The converted model's output has the Y model's Y (grey where the Y model has no colour)."""
    from subpixel_cli.color import rgb_to_y
    from subpixel_cli.model import ESPCN, ESPCNConfig
    from subpixel_cli.train import y_model_as_rgb

    torch.manual_seed(0)
    y_model = ESPCN(ESPCNConfig(scale=3, channels=1))
    rgb = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        want = y_model(rgb_to_y(rgb, dim=1))
        got = y_model_as_rgb(y_model)(rgb)
    assert got.shape == (1, 3, 60, 72)
    inner = (..., slice(12, -12), slice(12, -12))  # past the receptive radius (4 × 3): no zero padding
    assert torch.allclose(rgb_to_y(got, dim=1)[inner], want[inner], atol=1e-5)
    assert torch.allclose(got[:, 0], got[:, 1], atol=1e-6) and torch.allclose(got[:, 1], got[:, 2], atol=1e-6)


def test_time_limit_stops_cleanly_and_leaves_a_usable_model_folder(image_folder, tmp_path):
    out = tmp_path / "limited"
    args = ["train", "--dataset", str(image_folder / "train"), "-x", "2", "--steps", "1000000", "--batch-size", "4",
            "--patch-size", "12", "--patches-per-image", "2", "--val", str(image_folder / "val"), "--out", str(out),
            "--device", "cpu", "--time-limit", "4", "-q"]
    started = time.monotonic()
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert 4 <= took < 4 + 10, took  # the last step, a validation and the saving after the limit
    assert "--time-limit 4 s" in result.output and "--resume continues" in result.output
    state = json.loads((out / STATE_NAME).read_text())["state"]
    assert 0 < state["step"] < 1_000_000 and state["history"][-1]["step"] == state["step"]  # validated where it stopped
    loaded = load_model(str(out))
    assert loaded.info.training["steps"] == state["step"] and "psnr" in loaded.info.metrics["val"]
    again = CliRunner().invoke(main, [*args[:6], str(state["step"] + 2), *args[7:-3], "--resume", "-q"],
                               catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads((out / STATE_NAME).read_text())["state"]["step"] == state["step"] + 2


def test_validation_every_few_epochs_where_epochs_are_short(image_folder, tmp_path):
    from subpixel_cli.train import validation_interval

    assert validation_interval(542) == 542 and validation_interval(100) == 100
    assert validation_interval(42) == 126 and validation_interval(3) == 102  # whole epochs, at least 100 steps
    result = train(_config(image_folder, tmp_path / "every", steps=7, val_every=2, checkpoint_every=100))
    assert [h["step"] for h in result.state.history] == [2, 4, 6, 7]
    default = train(_config(image_folder, tmp_path / "default", steps=7))  # 3 steps an epoch: only at the end
    assert [h["step"] for h in default.state.history] == [7]


def test_more_training_processes_than_gpus_is_refused_in_one_line():
    from subpixel_cli.train import process_group_backend

    assert process_group_backend("cpu", 4, 0) == "gloo"
    assert process_group_backend("cuda", 2, 2) == "nccl" and process_group_backend("cuda", 1, 8) == "nccl"
    with pytest.raises(UsageError, match="2 training processes .* 1 GPU") as info:
        process_group_backend("cuda", 2, 1)
    assert "\n" not in str(info.value) and "--nproc_per_node 1" in str(info.value)


def test_each_rank_trains_on_the_gpu_of_its_local_rank(monkeypatch):
    """The wiring, with torch.cuda and the process group stood in for: rank 1 of 2 sets its own
    GPU before NCCL starts."""
    from subpixel_cli import train as training

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(training.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(training.dist, "init_process_group", lambda backend: calls.append(("group", backend)))
    monkeypatch.setattr(training.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(training.dist, "get_world_size", lambda: 2)
    ddp = training.init_distributed(torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("group", "nccl")]
    assert (ddp.rank, ddp.world, ddp.local_rank) == (1, 2, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match="--nproc_per_node 1"):
        training.init_distributed(torch.device("cuda", 0))


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_a_resumed_run_keeps_adams_step_counters_on_the_cpu(image_folder, tmp_path):
    """Resuming onto a model on another device ('meta' stands in for a GPU): Adam's moments go
    to the device with their parameters, its step counters stay on the CPU."""
    from subpixel_cli.train import build_model, resume

    config = _config(image_folder, tmp_path / "run", steps=3, ema=0.9)
    train(config)
    model = build_model(config).to("meta")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    state = resume(tmp_path / "run", model, optimizer, build_model(config).to("meta"))
    assert state["step"] == 3
    placed = {(k, v.device.type) for s in optimizer.state.values() for k, v in s.items()}
    assert placed == {("step", "cpu"), ("exp_avg", "meta"), ("exp_avg_sq", "meta")}
