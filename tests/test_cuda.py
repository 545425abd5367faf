"""The CUDA paths, run where a GPU is (benchmarks/gpu_check.sh on a device machine; CI has none):
the GPU's pixels against the CPU's fp32 reference, tiles, 16-bit pictures and training steps
(the device-resident patches are tested in test_data.py, on the GPU where there is one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_model, random_image
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.runtime import resolve_device
from subpixel_cli.upscale import Upscaler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _upscaler(model, device: str, **kw) -> Upscaler:
    return Upscaler(LoadedModel(model, ModelInfo("t", model.config)), device=device, **kw)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.mark.parametrize("scale,channels", [(2, 1), (3, 1), (4, 1), (4, 3)])
def test_gpu_pixels_match_the_cpu_reference(scale, channels):
    model = make_model(scale, channels, seed=scale)
    image = random_image(45, 61, seed=scale)
    cpu = _upscaler(model, "cpu", precision="fp32").upscale(image)[0]
    fp32 = _upscaler(model, "cuda", precision="fp32").upscale(image)[0]
    half = _upscaler(model, "cuda", precision="auto").upscale(image)[0]
    assert np.abs(fp32.astype(int) - cpu).max() <= 1
    assert _psnr(half, cpu) > 45


def test_gpu_i420_frames_match_the_cpu():
    # What `subpixel video` runs for 8-bit 4:2:0 video: the Y plane on the GPU (copied back into
    # the planes through a dense pinned buffer), the chroma on the CPU.
    model = make_model(3, 1, seed=3)
    frames = np.stack([random_image(48, 64, channels=1, seed=s)[..., 0] for s in range(3)])
    i420 = np.concatenate([frames.reshape(3, -1), frames[:, ::2, ::2].reshape(3, -1), frames[:, 1::2, ::2].reshape(3, -1)],
                          axis=1).reshape(3, 72, 64)
    cpu = _upscaler(model, "cpu", precision="fp32").upscale_i420(i420)
    for precision in ("fp32", "auto"):
        gpu = _upscaler(model, "cuda", precision=precision, batch_size=2).upscale_i420(i420)
        assert gpu.shape == cpu.shape and np.abs(gpu.astype(int) - cpu).max() <= (1 if precision == "fp32" else 3)


def test_gpu_tiles_and_batches_equal_one_piece():
    # Within one level, as on the CPU: cudnn.benchmark picks kernels per shape, and kernels sum
    # in different orders, so a value at a rounding boundary may land either side of it.
    model = make_model(3, 1, seed=1)
    image = random_image(70, 90, seed=2)
    whole = _upscaler(model, "cuda", precision="fp32").upscale(image)[0]
    tiled = _upscaler(model, "cuda", precision="fp32", tile=24).upscale(image)[0]
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    frames = np.stack([random_image(32, 40, seed=s) for s in range(5)])
    up = _upscaler(model, "cuda", precision="fp32", batch_size=5)
    batch = up.upscale_batch(frames)
    assert all(np.abs(batch[i].astype(int) - up.upscale(frames[i])[0]).max() <= 1 for i in range(5))


def test_fp32_on_the_gpu_is_fp32_not_tf32():
    """TF32 keeps 10 bits of mantissa (errors of ~1e-3); IEEE fp32 is ~1e-6 from fp64."""
    from subpixel_cli.color import Y_OFFSET, Y_RANGE

    model = make_model(3, 1, seed=5)
    x = torch.rand(2, 1, 40, 48, dtype=torch.float64)
    with torch.no_grad():  # a grey picture as the Upscaler takes it: its Y levels in and out
        want = ((model.double()(x * Y_RANGE + Y_OFFSET) - Y_OFFSET) / Y_RANGE).clamp(0, 1).float()
    up = _upscaler(model.float(), "cuda", precision="fp32")
    got = up.sr_tensor(x.float().cuda()).cpu()
    assert (got - want).abs().max() < 1e-4
    assert "not TF32" in up.math


def test_gpu_fp16_runs_plain_tanh_and_an_fp32_last_layer():
    up = _upscaler(make_model(2, 1, seed=6), "cuda", precision="fp16")
    path = up.fused_paths[3]
    assert path.post_op == "tanh" and path.head_dtype == torch.float32 and path.layers[2][0].dtype == torch.float32
    assert up.math.startswith("fp16, last layer and chroma in fp32")


def test_gpu_sixteen_bit_pictures_stay_sixteen_bit():
    model = make_model(2, 1, seed=3)
    image = (random_image(30, 34, seed=4).astype(np.uint16) * 257)
    gpu = _upscaler(model, "cuda", precision="auto").upscale(image)[0]
    cpu = _upscaler(model, "cpu", precision="fp32").upscale(image)[0]
    assert gpu.dtype == np.uint16 and _psnr(gpu, cpu, 65535.0) > 60


def test_the_gpu_of_each_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))  # one past the last: wraps round
    assert resolve_device("cuda") == torch.device("cuda", 0)


def test_a_few_training_steps_on_the_gpu(tmp_path):
    from PIL import Image

    from subpixel_cli.train import train
    from subpixel_cli.trainset import TrainConfig

    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(random_image(64, 72, seed=i)).save(folder / f"{i}.png")
    config = dict(dataset=str(folder), scale=2, out=str(tmp_path / "run"), steps=6, batch_size=8, patch_size=16,
                  patches_per_image=4, device="cuda", ema=0.9, val_holdout=1)
    result = train(TrainConfig(**config), stop=lambda step: step == 3)
    assert result.state.step == 3 and result.stopped == "asked"
    result = train(TrainConfig(**config, resume=True))  # the fused Adam resumes with its counters on the GPU
    assert result.state.step == 6 and result.info.training["precision"] == "float16"
    assert result.state.history[-1]["val_psnr"] > 0
    fp32 = train(TrainConfig(**{**config, "out": str(tmp_path / "fp32"), "precision": "fp32", "steps": 2}))
    assert fp32.info.training["precision"] == "fp32"


def test_eval_on_the_gpu_scores_as_the_cpu_does(tmp_path, model_folder):
    from click.testing import CliRunner
    from PIL import Image

    from subpixel_cli.cli import main

    for i in range(2):
        Image.fromarray(random_image(48, 52, seed=i)).save(tmp_path / f"{i}.png")
    scores = {}
    for device in ("cpu", "cuda"):
        result = CliRunner().invoke(main, ["eval", str(tmp_path), "--model", str(model_folder(2, 1)), "--device", device,
                                           "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        scores[device] = json.loads(result.stdout)["datasets"][0]["mean"]["psnr"]
    assert abs(scores["cpu"] - scores["cuda"]) < 0.01
