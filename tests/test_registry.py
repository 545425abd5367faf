"""The packaged models and the one look-up of a model spec."""

from __future__ import annotations

import json

import pytest

from subpixel_cli.errors import ModelError
from subpixel_cli.hub import save_model
from subpixel_cli.registry import default_model_name, load_model, packaged_models


def test_every_packaged_model_loads_and_states_its_scores():
    models = packaged_models()
    assert {"espcn-x2", "espcn-x3", "espcn-x4", "espcn-celeba-x4"} <= set(models)
    for name, info in models.items():
        loaded = load_model(name)
        assert loaded.info.name == name and loaded.model.config == info.config
        assert info.psnr("Set5") is not None or "celeba" in name


def test_a_scale_picks_its_default_and_a_mismatch_is_refused():
    assert load_model(scale=3).info.name == default_model_name(3) == "espcn-x3"
    with pytest.raises(ModelError, match="×2, not ×3"):
        load_model("espcn-x2", scale=3)
    with pytest.raises(ModelError, match="no packaged model for ×7"):
        load_model(scale=7)


def test_an_unknown_name_lists_what_exists(tmp_path):
    with pytest.raises(ModelError, match="espcn-x4") as info:
        load_model("espcn-x5")
    assert "hf://owner/repo" in str(info.value)


def test_folders_and_files_are_models_too(tmp_path):
    packaged = load_model("espcn-x2")
    folder = save_model(tmp_path / "mine", packaged.model, packaged.info)
    assert load_model(str(folder)).info.scale == 2
    assert load_model(str(folder / "model.safetensors")).info.scale == 2


def test_the_packaged_cards_hold_no_paths_of_the_machine_that_trained_them():
    """Their training records held /root/.cache/... and /work/shared/data/... (issue 22)."""
    import re

    from safetensors import safe_open

    from subpixel_cli.registry import weights_root

    absolute = re.compile(r"(?<![\w.~$])/(root|home|work|tmp|Users|mnt|data|scratch)/|\.\./shared/")
    for folder in sorted(p for p in weights_root().iterdir() if p.is_dir()):
        texts = {}
        for name in ("model.safetensors", "quantization.safetensors"):
            with safe_open(str(folder / name), framework="pt") as f:
                texts[name] = json.dumps(f.metadata())
        texts |= {name: (folder / name).read_text() for name in ("config.json", "README.md")}
        for name, text in texts.items():
            assert not absolute.search(text), (folder.name, name, absolute.search(text).group(0))
