"""Out of memory (simulated: no GPU needed): a file is retried with smaller tiles, for that file
alone, and when even the smallest fail the file fails in one line that says which ``--tile`` to try.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from subpixel_cli.fused import FusedPath
from subpixel_cli.images import read_image
from subpixel_cli.registry import load_model

from robustness_util import assert_clean_failure, cli, partials, records, save


def _oom(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> BaseException:
    oom = getattr(torch, "OutOfMemoryError", RuntimeError)
    return oom(message)


def test_out_of_memory_retries_with_smaller_tiles(tmp_path, model_folder, monkeypatch):
    """A GPU that runs out of memory (simulated: no GPU needed) gets the same image in smaller tiles."""
    source = save(tmp_path / "big.png", 90, 120)
    assert cli("upscale", source, "-o", tmp_path / "reference.png", "--model", model_folder(2, 1)).exit_code == 0
    attempts: list[int] = []
    monkeypatch.setattr(FusedPath, "__call__", _small_memory(attempts))
    result = cli("upscale", source, "-o", tmp_path / "retried.png", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0 and records(result.stdout)[0]["status"] == "ok"
    assert max(attempts) > 60 * 60 and len(attempts) > 2
    a = read_image(tmp_path / "reference.png").pixels.astype(int)
    b = read_image(tmp_path / "retried.png").pixels.astype(int)
    assert np.abs(a - b).max() <= 1


def _small_memory(attempts: list[int], limit: int = 60 * 60):
    """The fused path's forward pass, out of memory beyond ``limit`` padded input pixels; each
    pass's padded pixels are appended to ``attempts``."""
    real = FusedPath.__call__

    def forward(self, x, lap=None):
        attempts.append(x.shape[-2] * x.shape[-1])
        if x.shape[-2] * x.shape[-1] > limit:
            raise _oom()
        return real(self, x, lap)

    return forward


def test_smaller_tiles_after_out_of_memory_are_for_that_file_only(tmp_path, model_folder, monkeypatch):
    """The next file starts again from the default tiles: b.png fits them in one piece (and
    would be cut by the tiles a.png was retried with)."""
    save(tmp_path / "a.png", 90, 120)
    save(tmp_path / "b.png", 50, 40)
    pad = load_model(str(model_folder(2, 1))).info.config.receptive_radius + 2
    attempts: list[int] = []
    monkeypatch.setattr(FusedPath, "__call__", _small_memory(attempts))
    result = cli("upscale", tmp_path, "-o", tmp_path / "out", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0 and [r["status"] for r in records(result.stdout)] == ["ok", "ok"]
    whole_b = (50 + 2 * pad) * (40 + 2 * pad)
    assert whole_b < 60 * 60 and attempts[0] == (90 + 2 * pad) * (120 + 2 * pad)  # a whole, then retried
    assert attempts[-1] == whole_b and whole_b not in attempts[:-1]  # b in one piece, at once


@pytest.mark.parametrize("error", [MemoryError(), _oom("DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_that_retries_cannot_fix_suggests_tiles(tmp_path, model_folder, monkeypatch, error):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png", 20, 24)
    (tmp_path / "c.jpg").write_bytes(b"junk")

    def no_memory(self, x, lap=None):
        raise error

    monkeypatch.setattr(FusedPath, "__call__", no_memory)
    result = cli("upscale", tmp_path, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    messages = {Path(r["input"]).name: r["message"] for r in records(result.stdout)}
    assert "out of memory" in messages["a.png"] and "--tile" in messages["a.png"] and "--max-memory" in messages["a.png"]
    assert "--tile 16" in messages["a.png"]  # half the smallest tiles retried
    assert "out of memory" in messages["b.png"] and "not an image" in messages["c.jpg"]
    assert_clean_failure(result.stderr)
    assert not partials(tmp_path) and not list(tmp_path.glob("*_x2.png"))
