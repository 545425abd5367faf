"""The Upscaler: colour handling, tiles, batches and precision."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from subpixel_cli.color import rgb_to_ycbcr, ycbcr_to_rgb
from subpixel_cli.errors import UsageError
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.upscale import Upscaler

from conftest import make_model, random_image


def upscaler(scale=2, channels=1, **kwargs) -> Upscaler:
    model = make_model(scale, channels)
    kwargs.setdefault("device", "cpu")
    return Upscaler(LoadedModel(model, ModelInfo("t", model.config)), **kwargs)


@pytest.mark.parametrize("scale,channels", [(2, 1), (3, 3), (4, 1)])
def test_tiled_output_equals_untiled(scale, channels):
    image = random_image(45, 38, 3)
    whole, _ = upscaler(scale, channels).upscale(image)
    tiled_up = upscaler(scale, channels, tile=16)
    assert tiled_up.tiles_for(45, 38) == 9
    tiled, _ = tiled_up.upscale(image)
    assert whole.shape == (45 * scale, 38 * scale, 3)
    assert np.abs(whole.astype(int) - tiled).max() <= 1


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("name", ["espcn-x2", "espcn-x4"])
def test_tiles_change_no_pixel_of_the_packaged_models(name, precision):
    """With int8 (the default on VNNI CPUs) ~2,000 pixels of a 1500×1000 ×4 picture differed by a
    level between --tile 64 and one piece (issue 22.8): the RGB → Y before the first layer's C
    kernel was a matrix product, whose rounding depends on the picture's size."""
    from subpixel_cli import kernels
    from subpixel_cli.registry import load_model
    from subpixel_cli.runtime import int8_kernels, native_bf16

    if precision == "int8" and not int8_kernels():
        pytest.skip("this torch build has no oneDNN quantized convolution")
    if precision == "bf16" and not native_bf16():
        pytest.skip("bf16 without oneDNN's AVX-512 kernels is emulated, and its sums depend on the size (README)")
    if precision == "int8" and getattr(kernels.default_kernels().conv1_u8, "bf16", False):
        pytest.skip("the first layer's bf16 dot products leave the last pixels of a row to fp32 (README)")
    image = random_image(90, 130, 3, seed=3)
    whole_up = Upscaler(load_model(name), device="cpu", precision=precision)
    assert whole_up.precision.name == precision
    whole, _ = whole_up.upscale(image)
    for tile in (32, 47):
        tiled_up = Upscaler(load_model(name), device="cpu", precision=precision, tile=tile)
        assert tiled_up.tiles_for(90, 130) > 1
        tiled, _ = tiled_up.upscale(image)
        assert (tiled == whole).all(), (tile, int((tiled != whole).sum()))
        grey, _ = tiled_up.upscale(image[..., :1])
        assert (grey == whole_up.upscale(image[..., :1])[0]).all(), tile


def test_memory_budget_tiles_automatically_with_the_same_result():
    image = random_image(70, 64, 3)
    small = upscaler(2, 1, memory_budget=2_000_000)
    assert small.tiles_for(70, 64) > 1
    assert np.abs(small.upscale(image)[0].astype(int) - upscaler(2, 1).upscale(image)[0]).max() <= 1


def test_a_smaller_plan_is_for_one_call_and_keeps_the_result():
    up = upscaler(2, 1)
    default = up.plan
    plans = [default]
    while (smaller := up.smaller_plan(plans[-1])) is not None:
        plans.append(smaller)
    assert [p.tile for p in plans[1:]] == [max(32, p.tile // 2) for p in plans[:-1]] and plans[-1].tile == 32
    image = random_image(45, 38, 3)
    assert up.tiles_for(45, 38) == 1 and up.tiles_for(45, 38, plans[-1]) == 4
    tiled, _ = up.upscale(image, plan=plans[-1])
    assert up.plan == default and up.tiles_for(45, 38) == 1  # nothing kept from the call
    assert np.abs(up.upscale(image)[0].astype(int) - tiled).max() <= 1


def test_y_model_changes_luma_and_upscales_chroma_bicubically():
    model = make_model(2, 1)
    with torch.no_grad():  # a model that answers mid-grey luma everywhere
        model.conv3.weight.zero_()
        model.conv3.bias.fill_(0.5)
    up = Upscaler(LoadedModel(model, ModelInfo("t", model.config)), device="cpu")
    image = random_image(20, 24, 3)
    out, _ = up.upscale(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ycc = rgb_to_ycbcr(x, dim=1)
    cbcr = torch.nn.functional.interpolate(ycc[:, 1:], scale_factor=2, mode="bicubic", align_corners=False)
    out_ycc = rgb_to_ycbcr(torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255, dim=1)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # borders: reflect vs clamp padding
    assert (out_ycc[:, 0] - 0.5).abs().max() < 2 / 255
    assert (out_ycc[:, 1:] - cbcr)[inner].abs().max() < 2 / 255


def test_y_model_output_matches_running_the_network_by_hand():
    model = make_model(3, 1)
    up = Upscaler(LoadedModel(model, ModelInfo("t", model.config)), device="cpu")
    image = random_image(16, 16, 3)
    out, _ = up.upscale(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ycc = rgb_to_ycbcr(x, dim=1)
    padded = torch.nn.functional.pad(ycc[:, :1], (up.pad,) * 4, mode="reflect")
    with torch.no_grad():
        y = model(padded)[..., up.pad * 3 : -up.pad * 3, up.pad * 3 : -up.pad * 3]
    cbcr = torch.nn.functional.interpolate(
        torch.nn.functional.pad(ycc[:, 1:], (up.pad,) * 4, mode="reflect"), scale_factor=3, mode="bicubic", align_corners=False
    )[..., up.pad * 3 : -up.pad * 3, up.pad * 3 : -up.pad * 3]
    expected = (ycbcr_to_rgb(torch.cat([y, cbcr], 1), dim=1).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_images_stay_grey(channels):
    out, _ = upscaler(2, channels).upscale(random_image(12, 10, 1))
    assert out.shape == (24, 20, 1)


def test_rgb_model_on_grey_matches_the_model_on_grey_rgb():
    up = upscaler(2, 3)
    grey = random_image(12, 10, 1)
    out, _ = up.upscale(grey)
    rgb_out, _ = up.upscale(np.repeat(grey, 3, axis=2))
    assert np.abs(out[..., 0].astype(int) - rgb_out.mean(axis=2)).max() <= 1


def test_alpha_is_upscaled_separately_and_kept():
    alpha = np.zeros((12, 12), np.uint8)
    alpha[:, 6:] = 255
    out, out_alpha = upscaler(2, 1).upscale(random_image(12, 12, 3), alpha)
    assert out_alpha.shape == (24, 24) and out_alpha.dtype == np.uint8
    assert (out_alpha[:, :10] == 0).all() and (out_alpha[:, 14:] == 255).all()


@pytest.mark.parametrize("precision,levels", [("fp32", 1), ("auto", 1.5)])
def test_16bit_stays_16bit_and_agrees_with_8bit(precision, levels):
    """16-bit pictures take the fp32 module; 8-bit ones the fused path, in bf16 under ``auto`` on
    CPUs with native bf16 (all three layers in bf16: within half a level more)."""
    image8 = random_image(14, 14, 3)
    out16, _ = upscaler(2, 1, precision=precision).upscale(image8.astype(np.uint16) * 257)
    out8, _ = upscaler(2, 1, precision=precision).upscale(image8)
    assert out16.dtype == np.uint16
    assert np.abs(out16 / 257.0 - out8).max() <= levels


def test_batches_equal_single_images():
    up = upscaler(2, 1, batch_size=3)
    frames = np.stack([random_image(10, 12, 3, seed=s) for s in range(5)])
    batched = up.upscale_batch(frames)
    for frame, out in zip(frames, batched):
        assert np.abs(up.upscale(frame)[0].astype(int) - out).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3)])
def test_tiny_images(shape):
    out, _ = upscaler(3, 1).upscale(random_image(*shape, 3))
    assert out.shape == (shape[0] * 3, shape[1] * 3, 3)


def test_non_finite_reduced_precision_output_is_retried_in_fp32():
    """The float path (16-bit pictures, library callers): NaN survives the final clamp, so a
    finite result equal to fp32's is one that was redone."""
    model = make_model(2, 1)
    with torch.no_grad():  # past fp16's 65504: ±inf weights whose sum is NaN in fp16, fine in fp32
        model.conv1.weight[:, 0, 2, 1] = 7e4
        model.conv1.weight[:, 0, 2, 3] = -7e4
    loaded = LoadedModel(model, ModelInfo("t", model.config))
    up = Upscaler(loaded, device="cpu", precision="fp16")
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        fp32 = Upscaler(loaded, device="cpu", precision="fp32").sr_tensor(x)
        retried = up.sr_tensor(x)
        direct = copy.deepcopy(model).half()((x * 219 / 255 + 16 / 255).half()).float()
    assert not torch.isfinite(direct).all()
    assert torch.isfinite(retried).all() and torch.equal(retried, fp32)


def test_unavailable_device_is_a_usage_error():
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda"):
            upscaler(device="cuda")
    with pytest.raises(UsageError):
        upscaler(precision="fp8")


def test_torch_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    """A container's CPU quota (or affinity mask) below torch's default thread count lowers it,
    when the command tunes the process for its device; an explicit OMP_NUM_THREADS is left alone."""
    import subpixel_cli.runtime as runtime

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(3)
        monkeypatch.setattr(runtime, "cpu_quota", lambda: 1)
        runtime.tune_for(upscaler().device)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        runtime.tune_for(upscaler().device)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_library_user_s_process_is_left_alone():
    """Importing the package and making (and running) an Upscaler in any precision changes no
    process-wide setting: threads, the allocator, warning filters, cuDNN. The commands make those
    (runtime.tune_for), once."""
    code = """
import sys, warnings, ctypes
import torch
threads, filters, cudnn = torch.get_num_threads(), list(warnings.filters), torch.backends.cudnn.benchmark
import subpixel_cli.runtime as runtime
runtime.keep_freed_memory = runtime.limit_threads = runtime.tune_for = lambda *a: sys.exit("tuned the process")
import numpy as np
from subpixel_cli import cli, export, fused, quantize, upscale, video
from subpixel_cli.registry import load_model
torch.set_num_threads(threads + 1)
for precision in ("fp32", "bf16", "int8", "auto"):
    up = upscale.Upscaler(load_model("espcn-x2"), device="cpu", precision=precision)
    up.upscale(np.zeros((9, 11, 3), np.uint8))
assert torch.get_num_threads() == threads + 1, "threads"
assert warnings.filters == filters, "warning filters"
assert torch.backends.cudnn.benchmark == cudnn, "cuDNN"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_exact_fp32_turns_tf32_off_on_cuda_only_and_puts_it_back():
    from subpixel_cli.runtime import exact_fp32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with exact_fp32(torch.device("cpu")):
        assert (conv.fp32_precision, matmul.fp32_precision) == before
    with exact_fp32(torch.device("cuda"), enabled=False):
        assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(RuntimeError, match="part-way"):
        with exact_fp32(torch.device("cuda")):  # the flags only: no GPU needed
            assert conv.fp32_precision == matmul.fp32_precision == "ieee"
            with exact_fp32(torch.device("cuda")):
                pass
            assert conv.fp32_precision == "ieee"  # an inner block keeps the outer one's setting
            raise RuntimeError("an error part-way")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    assert torch.backends.cudnn.allow_tf32 in (True, False)  # the old flag is still readable afterwards


def test_the_fused_path_off_the_cpu_runs_plain_tanh_and_an_fp32_last_layer():
    """On a GPU ('meta' stands in for one) fp16 runs tanh itself, not oneDNN's 2σ(2z) − 1, and
    the last layer and the chroma in fp32."""
    from subpixel_cli.fused import FusedPath

    model = make_model(3, 1)
    half = FusedPath(model, 3, torch.device("meta"), torch.float16)
    assert half.post_op == "tanh" and half.head_dtype == half.chroma_dtype == torch.float32
    assert [w.dtype for w, _ in half.layers] == [torch.float16, torch.float16, torch.float32]
    assert half.chroma.dtype == torch.float32 and half.math == "fp16, last layer and chroma in fp32"
    assert FusedPath(model, 1, torch.device("meta"), torch.float32).post_op == "tanh"
    cpu = FusedPath(model, 3, torch.device("cpu"), torch.float32)  # oneDNN's cheaper sigmoid stays on the CPU
    assert cpu.post_op == "sigmoid" and cpu.math == "fp32"


def test_an_error_part_way_waits_for_the_copies_already_queued(monkeypatch):
    """Batches 1 and 2 leave their copies back in flight; batch 3 fails: both copies are waited
    for before the error leaves (a retry would reuse their pinned pages)."""
    from subpixel_cli.upscale import Pending

    up = upscaler(2, 1, batch_size=1)
    waited, calls = [], []

    class Copy:
        def __init__(self, n: int) -> None:
            self.n = n

        def synchronize(self) -> None:
            waited.append(self.n)

    def fused_pass(padded, out, lap=None, key=None):
        calls.append(len(calls) + 1)
        if len(calls) == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return Pending(Copy(len(calls)), None, padded, out, key)

    monkeypatch.setattr(up, "fused_pass", fused_pass)
    frames = np.stack([random_image(16, 16, seed=s) for s in range(4)])
    with pytest.raises(RuntimeError, match="illegal memory access"):
        up.upscale_batch(frames)
    assert calls == [1, 2, 3] and sorted(waited) == [1, 2]
