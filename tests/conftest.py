"""Shared fixtures: random-init models saved as model folders, and images the tests make."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from subpixel_cli.hub import ModelInfo, save_model
from subpixel_cli.model import ESPCN, ESPCNConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE = Path(__file__).resolve().parent / "data" / "astronaut.jpg"

# Keep test runs small on a 2-core machine and offline.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_model(scale: int = 2, channels: int = 1, seed: int = 0) -> ESPCN:
    torch.manual_seed(seed)
    return ESPCN(ESPCNConfig(scale=scale, channels=channels)).eval()


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """``model_folder(scale, channels)`` -> a saved random-init model folder (cached per session)."""
    made: dict[tuple[int, int], Path] = {}

    def build(scale: int = 2, channels: int = 1) -> Path:
        if (scale, channels) not in made:
            folder = tmp_path_factory.mktemp(f"model_x{scale}_c{channels}")
            model = make_model(scale, channels)
            info = ModelInfo(f"test-x{scale}-c{channels}", model.config, description="random init, for tests")
            save_model(folder, model, info, card="# test model\n")
            made[(scale, channels)] = folder
        return made[(scale, channels)]

    return build


@pytest.fixture(scope="session")
def video_model_dir(tmp_path_factory) -> str:
    """A small random-init ×2 Y model folder (features 16, 8): fast enough for video tests."""
    torch.manual_seed(0)
    config = ESPCNConfig(scale=2, features=(16, 8))
    folder = tmp_path_factory.mktemp("model") / "espcn-test-x2"
    save_model(folder, ESPCN(config), ModelInfo(name="espcn-test-x2", config=config))
    return str(folder)


def random_image(height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth-plus-noise test picture, so upscaling has structure to work on."""
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 5.0)[..., None] + np.cos(yy / 7.0)[..., None] + 2) / 4
    noise = rng.random((height, width, channels)) * 0.2
    return np.clip((base + noise) / 1.2 * peak, 0, peak).astype(dtype)
