"""Untrusted and broken model files: every one is refused with a one-line message and exit code 2,
nothing is ever unpickled, and no input is touched."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from subpixel_cli.errors import ModelError
from subpixel_cli.hub import load_folder, load_from_files
from subpixel_cli.registry import load_model

from robustness_util import assert_clean_failure, cli, save

MARKER_NAME = "pickle-was-loaded"


class _Payload:
    """Unpickling this creates a marker file: proof that someone ran code from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"conv1.weight": _Payload(marker)}))
    return path


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def upscale_with(tmp_path: Path, model: object):
    picture = tmp_path / "pic.png"
    if not picture.exists():
        save(picture)
    result = cli("upscale", picture, "--model", model, "--force")
    assert_clean_failure(result.stderr)
    assert not (tmp_path / "pic_x2.png").exists() or result.exit_code == 0
    return result


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.bin", "model.ckpt", "weights.pkl"])
def test_a_pickle_is_refused_and_never_loaded(tmp_path, name):
    marker = tmp_path / MARKER_NAME
    checkpoint = evil_pickle(tmp_path / name, marker)
    result = upscale_with(tmp_path, checkpoint)
    assert result.exit_code == 2 and "pickled checkpoints can run code" in error_line(result)
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(checkpoint, folder / name)
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and f"found {name}: pickled checkpoints are not loaded" in error_line(result)
    assert not marker.exists()


def test_a_pickle_disguised_as_safetensors_is_not_unpickled(tmp_path, model_folder):
    marker = tmp_path / MARKER_NAME
    folder = copy_model(model_folder(2, 1), tmp_path / "disguised")
    evil_pickle(folder / "model.safetensors", marker)
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and "cannot read weights" in error_line(result)
    zipped = tmp_path / "zipped.safetensors"  # torch.save's zip format, named like safetensors
    torch.save({"conv1.weight": torch.zeros(1)}, zipped)
    result = upscale_with(tmp_path, zipped)
    assert result.exit_code == 2 and "cannot read weights" in error_line(result)
    assert not marker.exists()


def _rewrite_tensors(folder: Path, change) -> None:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")  # no metadata: the config.json rules


@pytest.mark.parametrize("case,expected", [
    ("missing", "missing ['conv3.bias']"),
    ("extra", "unexpected ['conv4.weight']"),
    ("shape", "conv2.weight (16, 64, 3, 3) != (32, 64, 3, 3)"),
    ("transposed", "tensor shapes do not match"),
])
def test_weights_that_do_not_match_their_config(tmp_path, model_folder, case, expected):
    folder = copy_model(model_folder(2, 1), tmp_path / "model")

    def change(t: dict) -> None:
        if case == "missing":
            del t["conv3.bias"]
        elif case == "extra":
            t["conv4.weight"] = torch.zeros(3, 3)
        elif case == "shape":
            t["conv2.weight"] = torch.zeros(16, 64, 3, 3)
        else:
            t["conv1.weight"] = t["conv1.weight"].transpose(0, 1).contiguous()

    _rewrite_tensors(folder, change)
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and expected in error_line(result)


@pytest.mark.parametrize("change,expected", [
    ({"scale": 3}, "tensor shapes do not match"),
    ({"channels": 3, "color_space": "rgb"}, "tensor shapes do not match"),
    ({"features": [32, 16]}, "tensor shapes do not match"),
    ({"scale": 100_000}, "tensor shapes do not match"),  # would be 1.2 TB of weights if built
    ({"features": [10**12, 32]}, "tensor shapes do not match"),
    ({"scale": "two"}, "scale must be an integer"),
    ({"channels": 2}, "channels must be 1 (Y) or 3 (RGB)"),
    ({"kernel_sizes": [4, 3, 3]}, "kernel sizes must be odd"),
    ({"features": [1, 2, 3]}, "bad config"),
    ({"architecture": "srgan"}, "not supported"),
    ({"color_space": "rgb"}, "does not match channels"),
])
def test_a_config_that_does_not_match_its_tensors(tmp_path, model_folder, change, expected):
    folder = copy_model(model_folder(2, 1), tmp_path / "model")
    config = json.loads((folder / "config.json").read_text()) | change
    (folder / "config.json").write_text(json.dumps(config))
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and expected in error_line(result)


@pytest.mark.parametrize("text", ["", "{", "[]", '"espcn"', "null", "\xff\xfe"])
def test_a_config_that_is_not_a_json_object(tmp_path, model_folder, text):
    folder = copy_model(model_folder(2, 1), tmp_path / "model")
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and str(folder) in error_line(result)


@pytest.mark.parametrize("damage", ["empty", "truncated", "header", "metadata"])
def test_damaged_safetensors(tmp_path, model_folder, damage):
    folder = copy_model(model_folder(2, 1), tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        weights.write_bytes(b"\xff" * 8 + data[8:])
    else:  # a bare file whose embedded config is not JSON
        (folder / "config.json").unlink()
        save_file(load_file(weights), weights, metadata={"subpixel_config": "{not json"})
    result = upscale_with(tmp_path, folder / "model.safetensors" if damage == "metadata" else folder)
    assert result.exit_code == 2 and str(folder) in error_line(result)


@pytest.mark.parametrize("fill", [b"\xff", b"\x00\x00\x80\x7f"], ids=["nan", "inf"])
def test_weights_that_are_not_finite_are_refused(tmp_path, model_folder, fill):
    """A valid header over NaN or infinite data upscaled to a black picture, exit 0 (issue 22.2)."""
    folder = copy_model(model_folder(2, 1), tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    body = 8 + int.from_bytes(data[:8], "little")
    weights.write_bytes(data[:body] + (fill * len(data))[: len(data) - body])
    result = upscale_with(tmp_path, folder)
    assert result.exit_code == 2 and "not finite" in error_line(result) and str(folder) in error_line(result)
    assert not (tmp_path / "pic_x2.png").exists()
    with pytest.raises(ModelError, match="conv1.weight"):
        load_from_files(weights, None, "bare")


def test_bare_safetensors_with_odd_tensors(tmp_path):
    for name, tensors in {
        "one_d.safetensors": {"conv1.weight": torch.zeros(5), "conv2.weight": torch.zeros(5), "conv3.weight": torch.zeros(5)},
        "zero_channels.safetensors": {f"conv{i}.weight": torch.zeros(4, 0, 3, 3) for i in (1, 2, 3)},
        "not_square.safetensors": {f"conv{i}.weight": torch.zeros(6, 1, 3, 3) for i in (1, 2, 3)},
        "no_conv.safetensors": {"other": torch.zeros(1)},
        "even_kernel.safetensors": {f"conv{i}.weight": torch.zeros(4, 1, 2, 2) for i in (1, 2, 3)},
    }.items():
        save_file(tensors, tmp_path / name)
        result = upscale_with(tmp_path, tmp_path / name)
        assert result.exit_code == 2 and name in error_line(result), name


def test_a_hub_id_that_does_not_exist_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for spec in ("hf://nobody/no-such-model", "hf://nobody/no-such-model@v9"):
        result = upscale_with(tmp_path, spec)
        assert result.exit_code == 2 and spec in error_line(result) and "cache" in error_line(result)
    for spec in ("hf://", "hf://only-a-name", "hf://a/b/c"):
        result = upscale_with(tmp_path, spec)
        assert result.exit_code == 2 and "hf://owner/repo" in error_line(result)


@pytest.mark.slow  # a second process (huggingface_hub reads its settings at import)
def test_a_hub_that_cannot_be_reached(tmp_path, model_folder):
    """Online mode, but the endpoint refuses connections: a one-line message, exit 2, quickly."""
    save(tmp_path / "pic.png")
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    proc = subprocess.run([sys.executable, "-m", "subpixel_cli", "upscale", str(tmp_path / "pic.png"), "--model",
                           "hf://nobody/no-such-model"], capture_output=True, timeout=120, env=env)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert_clean_failure(err)
    assert "hf://nobody/no-such-model" in err and not (tmp_path / "pic_x2.png").exists()


CONFIG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(-3, 70), max_size=4), st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
CONFIG_KEYS = ["architecture", "name", "scale", "channels", "features", "kernel_sizes", "activation", "color_space",
               "training", "metrics", "license", "description"]


@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUES, min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(CONFIG_KEYS), max_size=2))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_fuzzed_configs_load_or_fail_with_model_error(model_folder, tmp_path_factory, changes, drop):
    folder = tmp_path_factory.mktemp("fuzzed_config")
    shutil.copy(model_folder(2, 1) / "model.safetensors", folder / "model.safetensors")
    config = json.loads((model_folder(2, 1) / "config.json").read_text()) | changes
    for key in drop:
        config.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config))
    try:
        loaded = load_folder(folder)
    except ModelError as exc:
        assert "\n" not in str(exc) and str(folder) in str(exc)
    else:
        assert loaded.info.scale == 2 and loaded.model(torch.zeros(1, 1, 4, 4)).shape == (1, 1, 8, 8)


def test_loading_never_touches_pickle(monkeypatch, tmp_path, model_folder):
    """Belt and braces: loading every kind of spec with pickle and torch.load made to explode."""

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_model(str(model_folder(2, 1)))
    load_from_files(model_folder(2, 1) / "model.safetensors", None, "bare")
    evil_pickle(tmp_path / "x.pt", tmp_path / MARKER_NAME)
    with pytest.raises(ModelError):
        load_model(str(tmp_path / "x.pt"))
