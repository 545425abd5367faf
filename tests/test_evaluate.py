"""Benchmark runs: the protocol's plumbing (datasets, grey images, Y vs RGB models), the API the
training code uses, the ``subpixel eval`` command, and the published bicubic baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from subpixel_cli.cli import main
from subpixel_cli.errors import DataError, ModelError
from subpixel_cli.data import DATA_ENV, mod_crop
from subpixel_cli.degradations import downscale
from subpixel_cli.evaluate import (
    EvalResult,
    bicubic_upscale,
    evaluate_model,
    format_metrics,
    protocol_upscaler,
    read_hr,
    resolve_dataset,
    super_resolve,
)
from subpixel_cli.hub import LoadedModel, ModelInfo, save_model
from subpixel_cli.metrics import y_channel
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.upscale import border

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def _picture(h: int, w: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 70 * np.sin(xx / 3.0 + seed)[..., None] * np.cos(yy / 4.0)[..., None]
    img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A little HR dataset: two colour images (one of odd size) and a grey one."""
    folder = tmp_path / "Tiny"
    folder.mkdir()
    Image.fromarray(_picture(40, 48, 1)).save(folder / "a.png")
    Image.fromarray(_picture(37, 45, 2)).save(folder / "b.png")
    Image.fromarray(_picture(36, 36, 3, grey=True)).save(folder / "grey.png")
    return folder


def _model(scale: int, channels: int, seed: int = 0) -> ESPCN:
    torch.manual_seed(seed)
    return ESPCN(ESPCNConfig(scale=scale, channels=channels)).eval()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = _model(2, 1)
    return save_model(tmp_path / "model-x2", model, ModelInfo("tiny-x2", model.config, description="random init"))


class _Oracle(nn.Module):
    """Stands in for an ESPCN and returns a fixed image: shows what the scoring does with it."""

    def __init__(self, scale: int, channels: int, output: np.ndarray) -> None:
        super().__init__()
        self.config = ESPCNConfig(scale=scale, channels=channels)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.output = torch.from_numpy(output).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The scoring mirrors the input by the Upscaler's border and cuts the result back.
        margin = border(self.config) * self.config.scale
        return torch.nn.functional.pad(self.output[None], (margin,) * 4)


# --- the protocol's pieces ----------------------------------------------------------------------------

def test_mod_crop_degrade_and_bicubic_sizes() -> None:
    hr = mod_crop(_picture(37, 45), 4)
    assert hr.shape == (36, 44, 3)
    lr = downscale(hr, 4)
    assert lr.shape == (9, 11, 3) and lr.dtype == np.uint8
    assert bicubic_upscale(lr, 4).shape == hr.shape


def test_read_hr_modes(tmp_path: Path) -> None:
    grey = _picture(20, 20, grey=True)
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert read_hr(tmp_path / "l.png").shape == (20, 20)
    rgba = np.dstack([_picture(20, 20), np.full((20, 20), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_hr(tmp_path / "rgba.png"), rgba[..., :3])
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_hr(tmp_path / "g16.png"), grey)


def test_y_model_scores_its_own_rounded_y() -> None:
    # An oracle whose Y output is the HR's Y: only the 8-bit rounding of Y is left, so the error
    # is at most half a level (PSNR above 20·log10(255/0.5) ≈ 54 dB).
    hr = mod_crop(_picture(40, 40), 2)
    lr = downscale(hr, 2)
    y_hr = y_channel(hr)
    sr, y_sr = super_resolve(protocol_upscaler(_Oracle(2, 1, (y_hr / 255)[None])), lr, bicubic_upscale(lr, 2))
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    np.testing.assert_array_equal(y_sr, np.floor(y_hr + 0.5))
    assert np.abs(y_sr - y_hr).max() <= 0.5


def test_grey_images_round_trip_through_studio_swing_y() -> None:
    # A grey image enters a Y model as 16/255 + g·219/255 and must come back as g.
    hr = _picture(32, 32, grey=True)
    y_in = (16 + hr.astype(np.float64) * 219 / 255) / 255
    lr = downscale(hr, 2)
    sr, y_sr = super_resolve(protocol_upscaler(_Oracle(2, 1, y_in[None])), lr, bicubic_upscale(lr, 2))
    assert sr.ndim == 2
    np.testing.assert_array_equal(sr, hr)
    np.testing.assert_array_equal(y_sr, hr)
    # An RGB model's grey output (R = G = B = g) also comes back as g.
    rgb = np.repeat(hr[None] / 255.0, 3, axis=0)
    sr_rgb, _ = super_resolve(protocol_upscaler(_Oracle(2, 3, rgb)), lr, bicubic_upscale(lr, 2))
    np.testing.assert_array_equal(sr_rgb, hr)


def test_rgb_model_output_is_clipped_rounded_then_scored_on_y() -> None:
    hr = _picture(24, 24)
    out = hr.transpose(2, 0, 1) / 255.0
    out[:, 0, 0] = [1.7, -0.3, 0.5]  # out of range: clipped
    lr = downscale(hr, 2)
    sr, y_sr = super_resolve(protocol_upscaler(_Oracle(2, 3, out)), lr, bicubic_upscale(lr, 2))
    assert sr[0, 0].tolist() == [255, 0, 128]
    np.testing.assert_array_equal(sr[1:, 1:], hr[1:, 1:])
    np.testing.assert_allclose(y_sr, y_channel(sr))


# --- datasets -----------------------------------------------------------------------------------------

def test_resolve_dataset_by_path_name_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: Path) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_dataset(str(dataset)) == dataset
    assert resolve_dataset("Tiny", data_dir=tmp_path) == dataset
    nested = tmp_path / "root" / "benchmarks" / "Other"
    nested.mkdir(parents=True)
    assert resolve_dataset("Other", data_dir=tmp_path / "root") == nested
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_dataset("Tiny") == dataset


def test_missing_dataset_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError) as info:
        resolve_dataset("Set5", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "Set5") in message and str(tmp_path / "benchmarks" / "Set5") in message
    with pytest.raises(DataError, match="--data-dir"):
        resolve_dataset("Set5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        evaluate_model(None, 2, [tmp_path / "empty"])


# --- the API ------------------------------------------------------------------------------------------

def test_bicubic_evaluation(dataset: Path) -> None:
    result = evaluate_model(None, 2, [dataset])
    assert isinstance(result, EvalResult) and result.method == "bicubic" and result.failed == 0
    (d,) = result.datasets
    assert d.name == "Tiny" and [i.name for i in d.images] == ["a", "b", "grey"]
    for i in d.images:
        assert i.psnr == i.bicubic_psnr and i.ssim == i.bicubic_ssim
        assert 15 < i.psnr < 60 and 0 < i.ssim <= 1
    assert d.psnr == pytest.approx(np.mean([i.psnr for i in d.images]))


def test_model_evaluation_and_metrics_for_model_cards(dataset: Path) -> None:
    for channels in (1, 3):
        net = _model(2, channels).train()
        result = evaluate_model(LoadedModel(net, ModelInfo("m", net.config)), 2, [dataset, dataset])
        assert net.training  # evaluation leaves the caller's mode alone
        assert result.method == "m" and [d.name for d in result.datasets] == ["Tiny", "Tiny-2"]
        d = result.datasets[0]
        assert all(math.isfinite(i.psnr) and i.psnr != i.bicubic_psnr for i in d.images)
        metrics = format_metrics(result)
        assert metrics["Tiny"] == {"scale": 2, "psnr": round(d.psnr, 2), "ssim": round(d.ssim, 4),
                                   "bicubic_psnr": round(d.bicubic_psnr, 2),
                                   "bicubic_ssim": round(d.bicubic_ssim, 4), "images": 3}
        json.dumps(result.to_dict(), allow_nan=False)


def test_scale_mismatch_is_a_model_error(dataset: Path) -> None:
    with pytest.raises(ModelError):
        evaluate_model(_model(3, 1), 2, [dataset])


def test_bad_images_are_reported_and_the_rest_scored(dataset: Path) -> None:
    (dataset / "broken.png").write_bytes(b"not a png")
    Image.fromarray(_picture(12, 30)).save(dataset / "small.png")
    result = evaluate_model(None, 2, [dataset])
    d = result.datasets[0]
    assert len(d.images) == 3 and result.failed == 2
    assert sorted(n for n, _ in d.failures) == ["broken.png", "small.png"]
    assert "too small" in dict(d.failures)["small.png"]


def test_save_dir_gets_outputs_and_a_comparison_sheet(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = evaluate_model(_model(2, 1), 2, [dataset], save_dir=out)
    assert sorted(p.name for p in (out / "Tiny").iterdir()) == ["a.png", "b.png", "grey.png"]
    assert Image.open(out / "Tiny" / "b.png").size == (44, 36)  # mod-cropped 45×37
    assert Image.open(out / "Tiny" / "grey.png").mode == "L"
    sheet = Image.open(result.datasets[0].sheet)
    bicubic_sheet = Image.open(evaluate_model(None, 2, [dataset], save_dir=tmp_path / "bic").datasets[0].sheet)
    assert sheet.width > bicubic_sheet.width  # a model column more
    assert sheet.height == bicubic_sheet.height > 3 * 36


# --- the command --------------------------------------------------------------------------------------

def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_bicubic_table(dataset: Path) -> None:
    code, out, _ = _run("eval", "--bicubic", "-x", "2", str(dataset))
    assert code == 0
    assert "Tiny" in out and "grey" in out and "mean of 3" in out


def test_cli_model_json(dataset: Path, model_dir: Path) -> None:
    code, out, _ = _run("eval", "--model", str(model_dir), str(dataset), "--json")
    assert code == 0
    record = json.loads(out)
    assert record["method"] == "tiny-x2" and record["scale"] == 2
    (d,) = record["datasets"]
    assert [i["name"] for i in d["images"]] == ["a", "b", "grey"]
    assert set(d["mean"]) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}


def test_cli_names_resolve_under_data_dir_and_save_images(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    code, out, err = _run("eval", "--model", str(model_dir), "-x", "2", "Tiny", "--data-dir", str(dataset.parent),
                          "--save-images", str(tmp_path / "sr"))
    assert code == 0 and "tiny-x2 PSNR" in out
    assert (tmp_path / "sr" / "Tiny_comparison.png").is_file() and (tmp_path / "sr" / "Tiny" / "a.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bicubic", "NoSuchSet"], "needs a scale"),
        (["--bicubic", "-x", "2", "NoSuchSet"], "not found"),
        (["--bicubic", "--model", "x", "-x", "2", "NoSuchSet"], "exclude"),
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, out, err = _run("eval", *args)
    assert code == 2 and message in err and out == ""


def test_cli_eval_runs_on_the_device_and_in_the_precision_asked(dataset: Path, model_dir: Path) -> None:
    code, out, _ = _run("eval", "--model", str(model_dir), str(dataset), "--device", "cpu", "--json")
    assert code == 0
    fp32 = json.loads(out)
    assert fp32["device"] == "cpu" and fp32["precision"] == "fp32"
    code, out, _ = _run("eval", "--model", str(model_dir), str(dataset), "--device", "cpu", "--precision", "bf16", "--json")
    assert code == 0
    bf16 = json.loads(out)
    assert bf16["precision"] == "bf16"
    assert abs(bf16["datasets"][0]["mean"]["psnr"] - fp32["datasets"][0]["mean"]["psnr"]) < 0.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_eval_on_cuda_without_a_gpu_is_a_one_line_usage_error(dataset: Path, model_dir: Path) -> None:
    code, out, err = _run("eval", "--model", str(model_dir), str(dataset), "--device", "cuda")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "--device cuda" in err and "--device cpu" in err


def test_evaluate_model_runs_a_copy_and_leaves_the_model_where_it_was(dataset: Path, model_dir: Path) -> None:
    from subpixel_cli.registry import load_model

    loaded = load_model(str(model_dir))
    result = evaluate_model(loaded, 2, [dataset], device="cpu", precision="bf16")
    assert (result.device, result.precision) == ("cpu", "bf16")
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert evaluate_model(loaded, 2, [dataset]).device is None  # by default: where it is, as it is


def test_cli_wrong_scale_for_model_exits_2(dataset: Path, model_dir: Path) -> None:
    code, _, err = _run("eval", "--model", str(model_dir), "-x", "3", str(dataset))
    assert code == 2 and "×2" in err


def test_cli_failed_images_exit_1_and_keep_going(dataset: Path) -> None:
    (dataset / "broken.png").write_bytes(b"oops")
    code, out, err = _run("eval", "--bicubic", "-x", "2", str(dataset), "--json")
    assert code == 1
    d = json.loads(out)["datasets"][0]
    assert len(d["images"]) == 3 and d["failures"][0]["name"] == "broken.png"
    assert "broken.png" in err


# --- the published baselines --------------------------------------------------------------------------

@pytest.mark.skipif(not (BENCHMARKS / "Set5").is_dir(), reason="shared benchmark data not present")
def test_bicubic_reproduces_published_set5_baselines() -> None:
    # Bicubic Set5 PSNR as published (SRCNN/VDSR tables): ×2 33.66, ×3 30.39, ×4 28.42 dB.
    for scale, published in ((2, 33.66), (3, 30.39), (4, 28.42)):
        measured = evaluate_model(None, scale, [BENCHMARKS / "Set5"]).datasets[0].psnr
        assert measured == pytest.approx(published, abs=0.05), f"×{scale}"


@pytest.mark.skipif(not (BENCHMARKS / "Set5").is_dir(), reason="shared benchmark data not present")
def test_packaged_model_cards_state_what_eval_measures() -> None:
    """Each packaged Y model's card gives the Set5 PSNR that `subpixel eval` measures for it, and
    beats bicubic: the weights and their cards were shipped together."""
    from subpixel_cli.registry import load_model, packaged_models

    for name, info in packaged_models().items():
        if info.config.channels != 1 or info.psnr("Set5") is None:
            continue
        score = evaluate_model(load_model(name), info.scale, [BENCHMARKS / "Set5"]).datasets[0]
        assert round(score.psnr, 2) == pytest.approx(info.psnr("Set5"), abs=0.011), name
        assert score.psnr > score.bicubic_psnr + 1.0, name
