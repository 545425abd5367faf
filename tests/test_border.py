"""One rule for the network's border (upscale.border and upscale.mirror): `subpixel upscale`,
`subpixel eval` and the ONNX `--rgb` export give the same pictures, borders included."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_model, random_image
from subpixel_cli.evaluate import bicubic_upscale, protocol_upscaler, super_resolve
from subpixel_cli.export import build_onnx
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.registry import load_model
from subpixel_cli.upscale import Upscaler, border, mirror


def _onnx(loaded: LoadedModel, picture: np.ndarray) -> np.ndarray:
    """The exported --rgb graph on a uint8 picture (grey goes in as R = G = B), rounded to uint8."""
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(build_onnx(loaded, rgb=True).SerializeToString(), providers=["CPUExecutionProvider"])
    rgb = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
    out = sess.run(None, {"input": (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
    out = np.clip(np.floor(out * 255 + 0.5), 0, 255).astype(np.uint8)
    return out if picture.ndim == 3 else out[..., 0]


@pytest.mark.parametrize("size", [(29, 37), (7, 9)])  # odd sides; 7: the smallest the export's card promises
def test_eval_upscale_and_onnx_agree_within_one_level(size: tuple[int, int]) -> None:
    pytest.importorskip("onnx")
    h, w = size
    cases = [  # a Y model on a grey picture (Y in, Y out everywhere), an RGB model on RGB
        (load_model("espcn-x3"), random_image(h, w, 1, seed=1)[..., 0]),
        (LoadedModel(net := make_model(2, 3), ModelInfo("rgb-x2", net.config)), random_image(h, w, 3, seed=2)),
    ]
    for loaded, lr in cases:
        r = loaded.info.scale
        upscaled = Upscaler(loaded, device="cpu", precision="fp32").upscale(lr)[0]
        upscaled = upscaled[..., 0] if lr.ndim == 2 else upscaled
        evaluated, _ = super_resolve(protocol_upscaler(loaded), lr, bicubic_upscale(lr, r))
        exported = _onnx(loaded, lr)
        assert upscaled.shape == evaluated.shape == exported.shape == (h * r, w * r, *lr.shape[2:])
        for a, b in [(upscaled, evaluated), (upscaled, exported), (evaluated, exported)]:
            assert np.abs(a.astype(int) - b).max() <= 1, loaded.info.name


def test_the_border_is_the_receptive_radius_and_bicubic_reach_mirrored_without_the_edge() -> None:
    config = make_model(3, 1).config
    assert border(config) == config.receptive_radius + 2
    rows = np.tile(np.arange(10), (10, 1))[..., None]
    assert mirror(rows, 3)[3, :, 0].tolist() == [3, 2, 1, *range(10), 8, 7, 6]  # reflection: the edge once
    short = mirror(np.tile(np.arange(3), (3, 1))[..., None], 3)  # too short to reflect: the edge repeated
    assert short[3, :, 0].tolist() == [2, 1, 0, 0, 1, 2, 2, 1, 0]
