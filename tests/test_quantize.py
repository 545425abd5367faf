"""The int8 path: its accuracy on real images, its integer math, when ``auto`` takes it, the
fallback for models without a calibration, and ``subpixel quantize``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE, SHARED_DATA, make_model, random_image
from PIL import Image
from robustness_util import cli

from subpixel_cli import runtime
from subpixel_cli.data import mod_crop
from subpixel_cli.degradations import downscale
from subpixel_cli.calibration import CALIBRATION_NAME, Calibration, Check, load_calibration, save_calibration
from subpixel_cli.fused import Int8Layer
from subpixel_cli.images import read_rgb8
from subpixel_cli.metrics import psnr, shave, y_channel
from subpixel_cli.kernels import default_kernels
from subpixel_cli.quantize import calibrate, round_weights
from subpixel_cli.registry import load_model
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.train import transplant
from subpixel_cli.runtime import inference_precision, int8_kernels
from subpixel_cli.upscale import Upscaler

needs_int8 = pytest.mark.skipif(not int8_kernels(), reason="this torch build has no oneDNN quantized convolution")


def _y_psnr(upscaler: Upscaler, hr: np.ndarray, scale: int) -> float:
    hr = mod_crop(hr, scale)
    sr = upscaler.upscale(downscale(hr, scale))[0]
    return psnr(shave(y_channel(sr), scale), shave(y_channel(hr), scale), peak=255.0)


def _real_images() -> list[np.ndarray]:
    """The sample photo, and Set5 where ../shared is there."""
    images = [read_rgb8(SAMPLE)]
    set5 = SHARED_DATA / "benchmarks" / "Set5"
    if set5.is_dir():
        images += [read_rgb8(p) for p in sorted(set5.glob("*.png"))]
    return images


@needs_int8
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_int8_stays_within_its_bound_on_real_images(scale):
    """The packaged models ship a calibration; int8 loses at most 0.05 dB of Y-PSNR against fp32
    on real photos (and is not fp32 under another name: its pixels differ)."""
    loaded = load_model(f"espcn-x{scale}")
    assert loaded.calibration is not None and loaded.calibration.accurate()
    fp32 = Upscaler(loaded, device="cpu", precision="fp32")
    int8 = Upscaler(loaded, device="cpu", precision="int8")
    assert int8.precision.name == "int8" and int8.notice is None
    images = _real_images()
    losses = [_y_psnr(fp32, hr, scale) - _y_psnr(int8, hr, scale) for hr in images]
    assert np.mean(losses) <= 0.05, losses
    lr = downscale(mod_crop(images[0], scale), scale)
    assert not np.array_equal(fp32.upscale(lr)[0], int8.upscale(lr)[0])


@needs_int8
def test_int8_runs_the_further_hidden_layers_of_a_deeper_model():
    """A model deeper than the paper's (espcn-x2 with one more 3×3 layer, started as a
    near-identity and nudged off it) takes the int8 path: conv2 in int8, the layers after it in
    float, and it loses no more against fp32 than the three-layer model does."""
    donor = load_model("espcn-x2").model
    deep = ESPCN(ESPCNConfig(2, 1, (64, 32, 32), (5, 3, 3, 3)))
    transplant(donor, deep, "test")
    torch.manual_seed(0)
    with torch.no_grad():
        deep.conv3.weight.add_(torch.randn_like(deep.conv3.weight) * 0.01)
    loaded = LoadedModel(deep.eval(), ModelInfo("deep", deep.config))
    loaded.calibration = calibrate(deep, [SAMPLE])
    fp32 = Upscaler(loaded, device="cpu", precision="fp32")
    int8 = Upscaler(loaded, device="cpu", precision="int8")
    assert int8.precision.name == "int8"
    hr = read_rgb8(SAMPLE)
    assert abs(_y_psnr(fp32, hr, 2) - _y_psnr(int8, hr, 2)) <= 0.05
    lr = downscale(mod_crop(hr, 2), 2)
    assert not np.array_equal(fp32.upscale(lr)[0], int8.upscale(lr)[0])


def _onednn_int8_is_exact() -> bool:
    """Whether oneDNN's u8×s8 convolution sums in 32 bits here: with VNNI or AMX. Without them
    (AVX2, or oneDNN held below AVX512_CORE_VNNI) it adds products in pairs into 16 bits with
    saturation (vpmaddubsw), which is not the integer math the test states."""
    held = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in {"SSE41", "AVX", "AVX2", "AVX512_CORE"}
    return runtime.cpu_has("_is_vnni_supported", "_is_amx_tile_supported") and not held


@needs_int8
def test_int8_layer_is_the_integer_math_it_stands_for():
    """conv2 on oneDNN's kernels equals, to float rounding, the convolution of the quantized levels
    with the calibration's int8 weights and the folded bias."""
    if not _onednn_int8_is_exact():
        pytest.skip("oneDNN's int8 convolution saturates pairwise 16-bit sums without VNNI/AMX")
    torch.manual_seed(0)
    w, b = torch.randn(8, 6, 3, 3, dtype=torch.float64) * 0.2, torch.randn(8, dtype=torch.float64)
    lo, hi = -torch.rand(6) * 0.9, torch.rand(6) * 0.9
    step = ((hi - lo).double() / 255).view(1, -1, 1, 1)
    w_int, w_scale = round_weights(w * step, torch.eye(54, dtype=torch.float64))
    layer = Int8Layer((w, b), Calibration(lo, hi, w_int, w_scale, 1, 1, ""), 1.0, 0.0, 1.0, torch.float32)
    s = (torch.rand(2, 6, 9, 11) * (hi - lo).view(1, -1, 1, 1) + lo.view(1, -1, 1, 1)).contiguous(memory_format=torch.channels_last)
    levels = ((s.double() - lo.double().view(1, -1, 1, 1)) / step).round().clamp(0, 255)
    expected = F.conv2d(levels, w_int.double() * w_scale.double().view(-1, 1, 1, 1), b + (w * lo.double().view(1, -1, 1, 1)).sum(dim=(1, 2, 3)))
    got = layer(s, lambda step: None).double()
    assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()


def test_error_feedback_rounding_beats_rounding_to_nearest():
    """Weights rounded against correlated inputs: ‖(W − Ŵ)X‖ is smaller than rounding each weight
    to its nearest level gives, with the same per-row scales and every value in int8's range."""
    torch.manual_seed(1)
    mix = torch.randn(16, 16, dtype=torch.float64)
    x = mix @ torch.randn(16, 4000, dtype=torch.float64)  # inputs that co-vary
    w = torch.randn(5, 16, 1, 1, dtype=torch.float64) * torch.logspace(-2, 0, 16, dtype=torch.float64).view(1, -1, 1, 1)
    q, scale = round_weights(w, x @ x.T)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (5,)
    nearest = (w.reshape(5, 16) / scale.double()[:, None]).round()
    err = lambda ints: ((w.reshape(5, 16) - ints.double().reshape(5, 16) * scale.double()[:, None]) @ x).norm()
    assert err(q) < 0.8 * err(nearest)


def _calibration(loss: float | None) -> Calibration:
    checks = () if loss is None else (Check("Set5", 30.0, 30.0 - loss), Check("Set14", 27.0, 27.0 - loss))
    return Calibration(torch.zeros(64), torch.ones(64), torch.zeros(32, 64, 3, 3, dtype=torch.int8),
                       torch.ones(32), 1, 1, "", checks)


@pytest.mark.parametrize("fast,loss,expected", [(True, 0.02, torch.int8), (False, 0.02, None),
                                                (True, 0.2, None), (True, None, None)])
def test_auto_takes_int8_only_with_fast_int8_and_a_checked_calibration(monkeypatch, fast, loss, expected):
    monkeypatch.setattr(runtime, "fast_int8", lambda kernels=None: fast)
    monkeypatch.setattr(runtime, "int8_kernels", lambda: True)
    chosen = inference_precision("auto", torch.device("cpu"), _calibration(loss))
    if expected is None:
        assert chosen.fused != torch.int8
    else:
        assert chosen.fused == expected and chosen.module == torch.float32  # 16-bit pictures stay fp32


def test_int8_is_for_the_cpu():
    with pytest.raises(Exception, match="CPU"):
        runtime.resolve_precision("int8", torch.device("cuda"))


def test_a_model_without_calibration_falls_back_with_one_notice(tmp_path, model_folder):
    source = tmp_path / "in.png"
    Image.fromarray(random_image(20, 24, 3)).save(source)
    result = cli("upscale", source, "-o", tmp_path / "out.png", "--model", model_folder(2, 1), "--precision", "int8")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "calibration" in line]
    assert len(notes) == 1 and "subpixel quantize" in notes[0] and notes[0].startswith("note:")
    assert (tmp_path / "out.png").is_file()


def _training_folder(tmp_path):
    folder = tmp_path / "train" / "sub"
    folder.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(random_image(60, 70, 3, seed=k)).save(folder / f"{k}.png")
    return folder.parent


def test_quantize_writes_a_calibration_the_model_folder_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBPIXEL_DATA", raising=False)
    from subpixel_cli.hub import ModelInfo, save_model

    folder = tmp_path / "model"
    model = make_model(3, 1)
    save_model(folder, model, ModelInfo("m", model.config))
    data = _training_folder(tmp_path)
    result = cli("quantize", folder, "--data", data, "--images", 3, "--data-dir", tmp_path / "none", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["images"] == 3 and record["checks"] == {} and record["auto"] is False
    loaded = load_model(str(folder))
    cal = loaded.calibration
    assert cal is not None and cal.weight_int8.shape == model.conv2.weight.shape
    assert bool((cal.act_min < cal.act_max).all()) and float(cal.act_max.max()) <= 1 and float(cal.act_min.min()) >= -1
    # unchecked: auto leaves it alone, an explicit --precision int8 takes it
    assert Upscaler(loaded, device="cpu").precision.name != "int8"
    if int8_kernels():
        assert Upscaler(loaded, device="cpu", precision="int8").precision.name == "int8"
    before = (folder / CALIBRATION_NAME).read_bytes()
    again = cli("quantize", folder, "--data", data, "--images", 2)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert (folder / CALIBRATION_NAME).read_bytes() == before


def test_quantize_needs_an_output_folder_for_a_packaged_model(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBPIXEL_DATA", raising=False)
    data = _training_folder(tmp_path)
    result = cli("quantize", "espcn-x2", "--data", data, "--images", 2)
    assert result.exit_code == 2 and "-o" in result.stderr
    copy = cli("quantize", "espcn-x2", "--data", data, "--images", 2, "-o", tmp_path / "copy", "--data-dir", tmp_path)
    assert copy.exit_code == 0, copy.output
    assert load_model(str(tmp_path / "copy")).calibration is not None
    assert cli("quantize", "espcn-x2", "--data", tmp_path / "missing", "-o", tmp_path / "c2").exit_code == 2


def test_a_calibration_for_other_weights_or_sizes_is_not_used(tmp_path):
    net = make_model(2, 1)
    files = []
    for k in range(2):
        files.append(tmp_path / f"{k}.png")
        Image.fromarray(random_image(40, 40, 3, seed=k)).save(files[-1])
    from subpixel_cli.model import ESPCN, ESPCNConfig

    save_calibration(tmp_path, calibrate(net, files))
    assert load_calibration(tmp_path, net) is not None
    retrained = make_model(2, 1, seed=1)  # same sizes, other weights: a stale calibration
    assert load_calibration(tmp_path, retrained) is None
    assert load_calibration(tmp_path, ESPCN(ESPCNConfig(scale=2, features=(32, 16)))) is None
    (tmp_path / CALIBRATION_NAME).write_bytes(b"not safetensors")
    assert load_calibration(tmp_path, net) is None


def test_a_calibration_that_is_not_used_is_said_once(tmp_path, model_folder):
    """A stale calibration (made for other weights) was dropped silently (issue 22.2)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_folder(2, 1), folder)
    source = tmp_path / "in.png"
    Image.fromarray(random_image(40, 40, 3)).save(source)
    save_calibration(folder, calibrate(make_model(2, 1, seed=1), [source]))
    assert any("other weights" in note for note in load_model(str(folder)).notes)
    result = cli("upscale", source, "-o", tmp_path / "out.png", "--model", folder)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if CALIBRATION_NAME in line]
    assert len(notes) == 1 and notes[0].startswith("note:") and "other weights" in notes[0]
    assert (tmp_path / "out.png").is_file()


@needs_int8
@pytest.mark.parametrize("name", ["espcn-x2", "espcn-celeba-x4"])
def test_the_accuracy_check_scores_as_eval_does(tmp_path, name):
    """quantize's check printed Set14 32.11 dB for espcn-x2 where `subpixel eval` and the card say
    32.22: it scored the Y of the RGB pictures `upscale` writes. Its fp32 figure is eval's now."""
    from subpixel_cli.evaluate import evaluate_model
    from subpixel_cli.quantize import check_accuracy

    folder = tmp_path / "Set5"
    folder.mkdir()
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    for k, (y, x) in enumerate([(0, 0), (60, 100), (120, 30)]):
        Image.fromarray(sample[y : y + 96, x : x + 120]).save(folder / f"{k}.png")
    Image.fromarray(sample[40:136, 40:140].mean(axis=2).astype(np.uint8)).save(folder / "grey.png")
    loaded = load_model(name)
    check = check_accuracy(loaded, loaded.calibration, str(tmp_path), datasets=("Set5",))[0]
    scored = evaluate_model(loaded, loaded.info.scale, ["Set5"], data_dir=tmp_path).datasets[0]
    assert abs(check.fp32 - scored.psnr) < 0.005, (check.fp32, scored.psnr)
    assert abs(check.int8 - check.fp32) < 0.1


@needs_int8
def test_bench_reports_the_precision_steps_and_peak_share(model_folder, tmp_path):
    result = cli("bench", "--model", model_folder(2, 1), "--size", "40x30", "--seconds", "0.2", "--profile", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["precision"] in ("fp32", "bf16")
    assert {"input", "conv1 + act", "conv3", "write"} <= set(record["steps_ms"])
    assert record["matmul_peak_gflops"] > 0 and 0 < record["peak_share"]


@needs_int8
@pytest.mark.parametrize("with_kernels", [True, False])
def test_int8_without_bf16_arithmetic_runs_its_float_layers_in_fp32(monkeypatch, with_kernels):
    """Where the CPU has no bf16 arithmetic (VNNI without AVX-512 BF16: Cascade Lake, Ice Lake;
    oneDNN would emulate bf16, slower than fp32) the layers around conv2 run in fp32: with the C
    kernels in tanh's form (conv1's tanh and act2 in C), without them in sigmoid's (oneDNN's
    post-ops). The pixels stay within a few levels of the fp32 path's."""
    from subpixel_cli import fused

    kernels = default_kernels()
    if with_kernels and kernels.conv1_u8 is None:
        pytest.skip(f"the int8 kernels are not built here: {kernels.why_not()}")
    loaded = load_model("espcn-x3")
    lr = downscale(mod_crop(read_rgb8(SAMPLE), 3), 3)[:60, :80]
    reference = Upscaler(loaded, device="cpu", precision="fp32").upscale(lr)[0].astype(int)
    monkeypatch.setattr(fused, "fast_bf16", lambda: False)
    up = Upscaler(loaded, device="cpu", precision="int8", kernels=kernels if with_kernels else kernels.only("head"))
    path = up.fused_paths[3]
    assert path.dtype == torch.float32 and path.int8.out_dtype == torch.float32
    if with_kernels:
        assert path.post_op == "tanh" and path.conv1_u8 is not None and path.act2 is kernels.tanh_f32
    else:
        assert path.post_op == "sigmoid" and path.act2 is None
    out = up.upscale(lr)[0].astype(int)  # (on this crop bf16 around int8 is 0.33 levels off on average)
    assert np.abs(out - reference).max() <= 4 and np.abs(out - reference).mean() < 0.5


@needs_int8
@pytest.mark.parametrize("channels,form", [(1, "tanh"), (3, "sigmoid")])
def test_int8_in_fp32_takes_tanhs_form_only_where_the_kernel_takes_conv1(monkeypatch, channels, form):
    # An RGB model's conv1 reads three planes, which conv1_u8 does not take: its fp32 layers keep
    # oneDNN's sigmoid post-ops (cheaper than its tanh on AVX2), as without the kernels.
    from subpixel_cli import fused

    if default_kernels().conv1_u8 is None:
        pytest.skip(f"the int8 kernels are not built here: {default_kernels().why_not()}")
    monkeypatch.setattr(fused, "fast_bf16", lambda: False)
    path = fused.FusedPath(make_model(2, channels), 3, torch.device("cpu"), torch.int8, calibration=_calibration(0.02))
    assert path.dtype == torch.float32 and path.post_op == form
    assert (path.conv1_u8 is not None) == (form == "tanh") and (path.act2 is not None) == (form == "tanh")


def test_fast_int8_needs_int8_dot_products_and_the_kernel_not_bf16(monkeypatch):
    # A CPU with VNNI and no bf16 arithmetic takes int8 (fp32 around it: 2.0–2.2× fp32's speed);
    # one without VNNI or AMX does not, nor one without the kernel (or with it on one thread).
    class Built:  # kernels as far as fast_int8 asks: int8.c is there, or why not
        def __init__(self, why: str | None) -> None:
            self.why = why

        def why_not(self, name: str = "int8") -> str | None:
            return self.why

    features = {"_is_vnni_supported"}
    monkeypatch.setattr(runtime, "cpu_has", lambda *checks: bool(features & set(checks)))
    monkeypatch.setattr(runtime, "int8_kernels", lambda: True)
    assert runtime.fast_int8(Built(None)) and not runtime.fast_bf16()
    features.clear()
    assert not runtime.fast_int8(Built(None))
    features.add("_is_amx_tile_supported")
    assert runtime.fast_int8(Built(None))
    assert not runtime.fast_int8(Built("no C compiler")) and not runtime.fast_int8(Built("built without OpenMP"))
