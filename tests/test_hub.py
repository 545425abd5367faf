"""Model folders, the registry, and loading from huggingface_hub's real cache (offline)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from subpixel_cli.errors import ModelError
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.hub import ModelInfo, load_folder, save_model
from subpixel_cli.registry import load_model, packaged_models, weights_root
from subpixel_cli.runtime import int8_kernels

from conftest import SAMPLE, make_model


def test_save_and_load_round_trip(tmp_path):
    model = make_model(scale=3, channels=3)
    info = ModelInfo("mine", model.config, metrics={"Set5": {"psnr": 30.0}}, license="MIT")
    save_model(tmp_path, model, info, card="# card\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["scale"] == 3 and config["channels"] == 3 and config["color_space"] == "rgb"
    loaded = load_model(str(tmp_path))
    assert loaded.info.psnr("Set5") == 30.0
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_bare_safetensors_file_rebuilds_its_config_from_shapes(tmp_path):
    model = make_model(scale=4, channels=1)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(str(path))
    assert loaded.info.scale == 4 and loaded.info.config.channels == 1


def test_a_deeper_bare_file_rebuilds_all_its_layers(tmp_path):
    model = ESPCN(ESPCNConfig(3, 1, (64, 32, 32, 16), (5, 3, 3, 3, 1))).eval()
    path = tmp_path / "deep.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(str(path))
    assert loaded.info.config == model.config
    x = torch.rand(1, 1, 12, 9)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_model_safetensors_inside_a_folder_uses_its_config(model_folder):
    loaded = load_model(str(model_folder(3, 1) / "model.safetensors"))
    assert loaded.info.name == "test-x3-c1"


def test_shapes_that_do_not_match_the_config_are_refused(tmp_path, model_folder):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.safetensors", "README.md"):
        (folder / name).write_bytes((model_folder(2, 1) / name).read_bytes())
    config = json.loads((model_folder(2, 1) / "config.json").read_text())
    config["scale"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="shapes do not match"):
        load_folder(folder)


def test_missing_keys_are_refused(tmp_path):
    state = make_model(2).state_dict()
    del state["conv2.bias"]
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelError, match="missing"):
        load_model(str(path))


def test_pickle_checkpoints_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "model.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ModelError, match="pickled"):
        load_model(str(path))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="pickled checkpoints are not loaded"):
        load_model(str(folder))
    assert not marker.exists()


def test_a_non_safetensors_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model(str(path))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ModelError) as info:
        load_model("espcn-x99")
    message = str(info.value)
    assert "unknown model 'espcn-x99'" in message
    for name in packaged_models():
        assert name in message


def test_a_scale_the_model_cannot_do(model_folder):
    with pytest.raises(ModelError, match="upscales ×2, not ×3"):
        load_model(str(model_folder(2, 1)), scale=3)


def test_packaged_models_are_trained_espcn_folders():
    models = packaged_models()
    if not models:
        pytest.skip("no packaged weights in this checkout")
    for name, info in models.items():
        assert name == info.name
        loaded = load_model(name)
        assert loaded.info.training, f"{name}: its card must say how it was trained"
        # Trained weights are not what a fresh random init gives.
        fresh = make_model(info.scale, info.config.channels)
        assert not torch.equal(loaded.model.conv1.weight, fresh.conv1.weight)


def fill_hf_cache(hf_home: Path, repo_id: str, folder: Path, refs: dict[str, str]) -> str:
    """Lay ``folder``'s files out in huggingface_hub's cache format: blobs, a snapshot of symlinks
    to them, and refs naming the snapshot's commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return commit


def run_hub_cli(args: list[str], hf_home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "subpixel_cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_hub_models_load_from_the_real_cache_offline(tmp_path, model_folder):
    hf_home = tmp_path / "hf"
    commit = fill_hf_cache(hf_home, "someone/espcn-test", model_folder(2, 1), refs={"main": "", "v1": ""})
    for spec in ("hf://someone/espcn-test", "hf://someone/espcn-test@v1", f"hf://someone/espcn-test@{commit}"):
        out = tmp_path / f"out_{len(spec)}.png"
        result = run_hub_cli(["upscale", str(SAMPLE), "--model", spec, "-o", str(out), "--quiet", "--json"], hf_home, tmp_path)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout.splitlines()[0])
        assert record["status"] == "ok" and record["output_size"] == [512, 512]


def test_hub_model_not_in_the_cache_offline_says_what_to_do(tmp_path, model_folder):
    hf_home = tmp_path / "hf"
    fill_hf_cache(hf_home, "someone/espcn-test", model_folder(2, 1), refs={"main": ""})
    for spec in ("hf://someone/not-there", "hf://someone/espcn-test@nope"):
        result = run_hub_cli(["upscale", str(SAMPLE), "--model", spec, "-o", str(tmp_path / "o.png")], hf_home, tmp_path)
        assert result.returncode == 2
        assert "offline mode is on" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_bad_hub_spec_is_a_usage_error():
    with pytest.raises(ModelError, match="hf://owner/repo"):
        load_model("hf://just-a-name")


@pytest.mark.skipif(not int8_kernels(), reason="this torch build has no oneDNN quantized convolution")
def test_a_hub_model_brings_its_int8_calibration(tmp_path):
    """``subpixel quantize``'s file travels with a hub model: int8 runs without a fallback notice."""
    folder = tmp_path / "repo"
    shutil.copytree(weights_root() / "espcn-x2", folder)
    assert (folder / "quantization.safetensors").is_file()
    hf_home = tmp_path / "hf"
    fill_hf_cache(hf_home, "someone/espcn-int8", folder, refs={"main": ""})
    args = ["bench", "--model", "hf://someone/espcn-int8", "--precision", "int8", "--size", "24x16", "--seconds", "0.1", "--json"]
    result = run_hub_cli(args, hf_home, tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["precision"] == "int8" and record["notice"] is None
