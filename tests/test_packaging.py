"""What `pip install .` installs: every sub-package of subpixel_cli and the packaged weights."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_sub_package_is_listed_for_installation():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "subpixel_cli").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    weights = {p.parent.name for p in (ROOT / "weights").glob("*/model.safetensors")}
    assert weights and "subpixel_cli.weights" in listed
