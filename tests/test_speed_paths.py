"""The Upscaler's fast paths give what the straightforward ones give.

The fused 8-bit path folds colour conversion, bicubic chroma and rounding into the network's
convolutions; the float path filters the chroma at low resolution. Each is checked against the
plain math written out here with the model's own forward and :mod:`subpixel_cli.color`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from subpixel_cli.bench import measure_throughput
from subpixel_cli.cli import main
from subpixel_cli.color import rgb_to_ycbcr, ycbcr_to_rgb
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.fused import FusedPath
from subpixel_cli.upscale import Upscaler

from conftest import random_image


def model_for(scale: int, channels: int = 1, activation: str = "tanh", features: tuple[int, ...] = (64, 32)) -> ESPCN:
    torch.manual_seed(scale * 10 + channels)
    config = ESPCNConfig(scale, channels, features, (5, *[3] * len(features)), activation)
    return ESPCN(config).eval()


DEEP = (64, 32, 32, 16)  # two hidden layers more than the paper's, one of them narrower


def upscaler_for(model: ESPCN, **kwargs) -> Upscaler:
    """fp32 unless asked: ``auto`` is bf16 on CPUs with native bf16, which rounds differently."""
    kwargs.setdefault("precision", "fp32")
    return Upscaler(LoadedModel(model, ModelInfo("t", model.config)), device="cpu", **kwargs)


def plain_upscale(model: ESPCN, image: np.ndarray, pad: int) -> np.ndarray:
    """Reflect-pad, run the model on Y (or RGB), bicubic chroma, YCbCr -> RGB at full size, round."""
    r = model.config.scale
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.pad(x, (pad,) * 4, mode="reflect")
    with torch.no_grad():
        if model.config.channels == 3:
            out = model(x)
        elif image.shape[2] == 1:  # grey is its studio-swing Y
            out = (model(x * 219 / 255 + 16 / 255) - 16 / 255) / (219 / 255)
        else:
            ycc = rgb_to_ycbcr(x, dim=1)
            cbcr = F.interpolate(ycc[:, 1:], scale_factor=r, mode="bicubic", align_corners=False)
            out = ycbcr_to_rgb(torch.cat([model(ycc[:, :1]), cbcr], dim=1), dim=1)
    out = out[..., pad * r : -pad * r, pad * r : -pad * r].clamp(0, 1)
    return (out * 255).round()[0].permute(1, 2, 0).numpy().astype(np.uint8)


def assert_same_pixels(fast: np.ndarray, plain: np.ndarray) -> None:
    """Equal but for float rounding: nowhere more than one level, almost everywhere exactly."""
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    diff = np.abs(fast.astype(int) - plain)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


@pytest.mark.parametrize(
    "scale,model_channels,image_channels,activation,features",
    [(2, 1, 3, "tanh", (64, 32)), (3, 1, 3, "tanh", (64, 32)), (4, 1, 3, "tanh", (64, 32)), (4, 1, 1, "tanh", (64, 32)),
     (3, 3, 3, "tanh", (64, 32)), (2, 1, 3, "relu", (64, 32)),
     (2, 1, 3, "tanh", DEEP), (3, 1, 1, "tanh", DEEP), (4, 3, 3, "tanh", DEEP), (3, 1, 3, "relu", DEEP)],
)
def test_fused_8bit_path_equals_the_plain_math(scale, model_channels, image_channels, activation, features):
    model = model_for(scale, model_channels, activation, features)
    up = upscaler_for(model)
    image = random_image(37, 29, image_channels)
    assert_same_pixels(up.upscale(image)[0], plain_upscale(model, image, up.pad))


def test_torch_colour_finish_equals_the_plain_math():
    """GPUs finish colour with the chroma phase filter and torch instead of OpenCV."""
    model = model_for(3)
    pad = upscaler_for(model).pad
    fused = FusedPath(model, 3, torch.device("cpu"), torch.float32, opencv=False)
    image = random_image(37, 29, 3)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = torch.empty((1, 37 * 3, 29 * 3, 3), dtype=torch.uint8)
    with torch.inference_mode():
        fused.write(*fused(torch.from_numpy(padded[None]).float().permute(0, 3, 1, 2)), out, pad)
    assert_same_pixels(out[0].numpy(), plain_upscale(model, image, pad))


@pytest.mark.parametrize("model_channels,image_channels", [(1, 3), (1, 1), (3, 3)])
def test_unfused_upscaler_equals_the_plain_math(monkeypatch, model_channels, image_channels):
    """``fused=False``: uint8 pictures take the float path, as 16-bit ones do."""

    def fused_path(*args):
        raise AssertionError("the fused path was switched off")

    monkeypatch.setattr(FusedPath, "__call__", fused_path)
    model = model_for(3, model_channels)
    up = upscaler_for(model, fused=False)
    image = random_image(37, 29, image_channels)
    assert_same_pixels(up.upscale(image)[0], plain_upscale(model, image, up.pad))


@pytest.mark.parametrize("channels,features", [(3, (64, 32)), (1, (64, 32)), (3, DEEP)])
def test_fused_path_batches_and_tiles_agree(channels, features):
    up = upscaler_for(model_for(4, features=features))
    frames = np.stack([random_image(30, 26, channels, seed=s) for s in range(3)])
    batched = up.upscale_batch(frames)
    tiled = upscaler_for(model_for(4, features=features), tile=12)
    assert tiled.tiles_for(30, 26) > 1
    for frame, out in zip(frames, batched):
        assert np.array_equal(out, up.upscale(frame)[0])
        assert np.abs(tiled.upscale(frame)[0].astype(int) - out).max() <= 1


def test_float_path_filters_chroma_at_low_resolution_like_bicubic_at_full():
    """``sr_tensor`` (16-bit pictures, library callers) equals YCbCr -> RGB after bicubic chroma,
    borders included (no padding here: bicubic clamps at the edges)."""
    model = model_for(3)
    up = upscaler_for(model)
    x = torch.rand(2, 3, 19, 23)
    with torch.inference_mode():
        fast = up.sr_tensor(x)
        ycc = rgb_to_ycbcr(x, dim=1)
        cbcr = F.interpolate(ycc[:, 1:], scale_factor=3, mode="bicubic", align_corners=False)
        plain = ycbcr_to_rgb(torch.cat([model(ycc[:, :1]), cbcr], dim=1), dim=1).clamp(0, 1)
    assert (fast - plain).abs().max() < 1e-5


def test_fused_reduced_precision_overflow_is_redone_in_fp32():
    model = model_for(2)
    with torch.no_grad():
        model.conv3.weight.mul_(1e4)  # fine in fp32, past fp16's range in the fused last layer
    image = random_image(12, 14, 3)
    fp32 = upscaler_for(model).upscale(image)[0]
    assert np.array_equal(upscaler_for(model, precision="fp16").upscale(image)[0], fp32)


@pytest.mark.parametrize("scale,model_channels,image_channels,features",
                         [(2, 1, 3, (64, 32)), (4, 1, 1, (64, 32)), (3, 3, 3, (64, 32)), (3, 1, 3, DEEP)])
def test_bf16_fused_path_stays_close_to_fp32(scale, model_channels, image_channels, features):
    """bf16 features keep tanh's form (centred on 0) and fp32 biases and last layer: the result
    is within a few levels of fp32 anywhere and equal almost everywhere (on CPUs without bf16
    arithmetic oneDNN emulates it: slower, same numbers)."""
    model = model_for(scale, model_channels, features=features)
    image = random_image(41, 33, image_channels)
    fp32 = upscaler_for(model).upscale(image)[0].astype(int)
    bf16 = upscaler_for(model, precision="bf16").upscale(image)[0].astype(int)
    diff = np.abs(bf16 - fp32)
    assert diff.max() <= 4
    assert (diff > 1).mean() < 0.01
    mse = (diff.astype(float) ** 2).mean()
    assert mse < 255**2 / 10**4.5  # PSNR above 45 dB (identical pixels included)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16(monkeypatch, fast):
    monkeypatch.setattr("subpixel_cli.runtime.fast_bf16", lambda: fast)
    up = upscaler_for(model_for(2), precision="auto")
    assert up.dtype == (torch.bfloat16 if fast else torch.float32)
    assert up.precision.module == torch.float32  # 16-bit pictures need more than bf16's mantissa
    grey16 = (random_image(20, 18, 1).astype(np.uint16) * 257)
    assert np.array_equal(up.upscale(grey16)[0], upscaler_for(model_for(2)).upscale(grey16)[0])


def test_measure_throughput_times_whole_batches():
    up = upscaler_for(model_for(2), batch_size=2)
    result = measure_throughput(up, 20, 12, seconds=0)
    assert result.frames == 4 and result.fps > 0 and result.precision == "fp32"
    assert result.as_dict()["output_size"] == [40, 24]
    assert result.as_dict()["math"] == up.math == "fp32"  # the arithmetic that ran, in words


def test_bench_command_reports_throughput(model_folder):
    runner = CliRunner()
    args = ["bench", "--model", str(model_folder(2, 1)), "--device", "cpu", "--size", "24x16", "--seconds", "0"]
    result = runner.invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["input_size"] == [24, 16] and record["output_size"] == [48, 32] and record["fps"] > 0
    assert record["math"]  # e.g. "fp32", "bf16", "int8 conv2 between bf16 layers"
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "frames/s" in result.stdout and f"in {record['math']}," in result.stdout


def test_bench_command_rejects_a_bad_size():
    result = CliRunner().invoke(main, ["bench", "-x", "2", "--size", "640"], catch_exceptions=False)
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output
