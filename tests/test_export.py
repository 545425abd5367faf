"""`subpixel export`: ONNX files that onnxruntime and OpenCV's dnn run as subpixel does."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from subpixel_cli.cli import main
from subpixel_cli.registry import load_model, packaged_models
from subpixel_cli.upscale import Upscaler

from conftest import SAMPLE, random_image
from test_hub import fill_hf_cache, run_hub_cli

PACKAGED = sorted(packaged_models())
# Random sizes, odd ones among them; batches > 1 exercise the dynamic batch axis.
SIZES = [(1, 17, 23), (2, 32, 45), (3, 9, 64), (1, 41, 7)]


@pytest.fixture
def ort():
    """onnxruntime (and onnx, which export needs): the tests that run a graph skip without them."""
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def run(*args):
    return CliRunner().invoke(main, ["export", *[str(a) for a in args]], catch_exceptions=False)


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_upscale(sess, rgb: np.ndarray) -> np.ndarray:
    """The rgb graph on one uint8 ``H×W×3`` picture, rounded to uint8 like an 8-bit output."""
    x = (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    y = sess.run(None, {"input": x})[0][0].transpose(1, 2, 0)
    return np.clip(np.floor(y * 255 + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", PACKAGED)
def test_network_equals_pytorch_fp32(name, ort, tmp_path):
    path = tmp_path / f"{name}.onnx"
    assert run(name, "-o", path).exit_code == 0
    loaded, sess = load_model(name), session(ort, path)
    rng = np.random.default_rng(0)
    for n, h, w in SIZES:
        x = rng.random((n, loaded.info.config.channels, h, w), dtype=np.float32)
        with torch.inference_mode():
            expected = loaded.model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"input": x})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", PACKAGED)
def test_rgb_graph_equals_subpixel_upscale_on_the_sample(name, ort, tmp_path):
    path, out = tmp_path / f"{name}.onnx", tmp_path / "astronaut_sr.png"
    assert run(name, "--rgb", "-o", path).exit_code == 0
    result = CliRunner().invoke(main, ["upscale", str(SAMPLE), "--model", name, "--precision", "fp32", "--device", "cpu",
                                       "-o", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = np.asarray(Image.open(out).convert("RGB"))
    got = onnx_upscale(session(ort, path), np.asarray(Image.open(SAMPLE).convert("RGB")))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name", PACKAGED)
def test_rgb_graph_equals_the_upscaler_on_made_images(name, ort, tmp_path):
    path = tmp_path / f"{name}.onnx"
    assert run(name, "--rgb", "-o", path).exit_code == 0
    upscaler, sess = Upscaler(load_model(name), device="cpu", precision="fp32"), session(ort, path)
    for seed, (h, w) in enumerate([(37, 53), (8, 31), (64, 9), (7, 7)]):  # 7: the smallest side the card promises
        picture = random_image(h, w, seed=seed)
        picture[: h // 2, : w // 3] = [250, 10, 30]  # saturated colour: chroma that clips
        expected, _ = upscaler.upscale(picture)
        assert np.abs(onnx_upscale(sess, picture).astype(int) - expected).max() <= 1


def test_opencv_dnn_runs_both_forms(ort, tmp_path):
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(1).random((1, 3, 21, 34), dtype=np.float32)
    for name, args in [("espcn-x3", []), ("espcn-x3", ["--rgb"]), ("espcn-celeba-x4", [])]:
        path = tmp_path / f"{name}{'-'.join(args)}.onnx"
        assert run(name, *args, "-o", path, "--force").exit_code == 0
        inp = x if args or name.startswith("espcn-celeba") else x[:, :1]
        net = cv2.dnn.readNetFromONNX(str(path))
        net.setInput(inp)
        got = net.forward()
        np.testing.assert_allclose(got, session(ort, path).run(None, {"input": inp})[0], atol=1e-4, rtol=0)


def test_fp16_runs_close_to_fp32(ort, tmp_path):
    path = tmp_path / "x2.onnx"
    assert run("espcn-x2", "-o", path, "--precision", "fp16").exit_code == 0
    sess = session(ort, path)
    assert sess.get_inputs()[0].type == "tensor(float16)"
    x = np.random.default_rng(2).random((2, 1, 19, 30), dtype=np.float32)
    with torch.inference_mode():
        expected = load_model("espcn-x2").model(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"input": x.astype(np.float16)})[0].astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-2, rtol=0)


def test_dynamic_batch_height_and_width(ort, tmp_path):
    path = tmp_path / "x4.onnx"
    assert run("espcn-x4", "--rgb", "-o", path).exit_code == 0
    shape = session(ort, path).get_inputs()[0].shape
    assert shape[1] == 3 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))


def test_metadata_and_card_round_trip(ort, tmp_path):
    from subpixel_cli.export import read_metadata

    path = tmp_path / "models" / "x3.onnx"
    result = run("espcn-x3", "--rgb", "-o", path, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    info = packaged_models()["espcn-x3"]
    meta = read_metadata(path)
    assert record["metadata"] == {k: json.dumps(v) if k == "psnr" else str(v) for k, v in meta.items()}
    assert (meta["name"], meta["scale"], meta["channels"], meta["color_space"]) == ("espcn-x3", 3, 1, "y")
    assert meta["license"] == info.license and (meta["form"], meta["precision"]) == ("rgb", "fp32")
    assert meta["psnr"] == {name: info.psnr(name) for name in info.metrics}
    assert meta["psnr"]["Set5"] == info.psnr("Set5")
    assert meta["description"] == info.description and meta["training_data"] == str(info.training["dataset"])
    card = (path.parent / "x3.md").read_text()
    assert "espcn-x3" in card and f"{info.psnr('Set5'):.2f}" in card and "reflect" in card
    assert sorted(p.name for p in path.parent.iterdir()) == ["x3.md", "x3.onnx"]


def test_each_export_has_its_own_card_and_a_readme_is_never_touched(ort, tmp_path):
    """The card went to README.md beside the .onnx: the --help example failed in any project
    folder, --force replaced the user's README, two models shared one card (issue 22.6)."""
    (tmp_path / "README.md").write_text("the user's own")
    for name in ("espcn-x2", "espcn-x3"):
        result = run(name, "-o", tmp_path / f"{name}.onnx")
        assert result.exit_code == 0, result.output
        assert name in (tmp_path / f"{name}.md").read_text()
    assert run("espcn-x4", "-o", tmp_path / "espcn-x2.onnx", "--force").exit_code == 0
    assert "espcn-x4" in (tmp_path / "espcn-x2.md").read_text() and "espcn-x3" in (tmp_path / "espcn-x3.md").read_text()
    assert (tmp_path / "README.md").read_text() == "the user's own"


def test_any_model_spec_exports(ort, tmp_path, model_folder):
    folder = model_folder(2, 3)
    for spec in (folder, folder / "model.safetensors"):
        path = tmp_path / f"{len(str(spec))}" / "m.onnx"
        assert run(spec, "-o", path).exit_code == 0
        assert session(ort, path).run(None, {"input": np.zeros((1, 3, 5, 6), np.float32)})[0].shape == (1, 3, 10, 12)


def test_a_deeper_model_exports_in_both_forms(ort, tmp_path):
    """A model with more hidden layers than the paper's: its graph computes what it computes, and
    the --rgb graph what the Upscaler makes of a picture."""
    from subpixel_cli.hub import ModelInfo, save_model
    from subpixel_cli.model import ESPCN, ESPCNConfig

    torch.manual_seed(3)
    model = ESPCN(ESPCNConfig(3, 1, (64, 32, 32), (5, 3, 3, 3))).eval()
    folder = save_model(tmp_path / "deep", model, ModelInfo("deep", model.config))
    assert run(folder, "-o", tmp_path / "y.onnx").exit_code == 0
    x = np.random.default_rng(0).random((2, 1, 13, 17), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session(ort, tmp_path / "y.onnx").run(None, {"input": x})[0], expected, atol=1e-4, rtol=0)
    assert run(folder, "--rgb", "-o", tmp_path / "rgb.onnx").exit_code == 0
    picture = random_image(19, 23, seed=4)
    upscaled, _ = Upscaler(load_model(str(folder)), device="cpu", precision="fp32").upscale(picture)
    assert np.abs(onnx_upscale(session(ort, tmp_path / "rgb.onnx"), picture).astype(int) - upscaled).max() <= 1


def test_hub_models_export_from_the_cache(ort, tmp_path, model_folder):
    hf_home = tmp_path / "hf"
    fill_hf_cache(hf_home, "someone/espcn-test", model_folder(2, 1), refs={"main": ""})
    result = run_hub_cli(["export", "hf://someone/espcn-test", "-o", str(tmp_path / "hub.onnx")], hf_home, tmp_path)
    assert result.returncode == 0, result.stderr
    from subpixel_cli.export import read_metadata

    assert read_metadata(tmp_path / "hub.onnx")["name"] == "test-x2-c1"


def test_bad_model_is_a_one_line_usage_error(ort, tmp_path):
    result = run("no-such-model", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "unknown model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_existing_output_is_kept_without_force(ort, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"keep me")
    result = run("espcn-x2", "-o", path)
    assert result.exit_code == 1 and "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == b"keep me" and not (tmp_path / "m.md").exists()
    (tmp_path / "m.md").write_text("mine")
    path.unlink()
    assert run("espcn-x2", "-o", path).exit_code == 1 and not path.exists()  # the card would be overwritten
    assert run("espcn-x2", "-o", path, "--force").exit_code == 0 and path.stat().st_size > 1000


def test_a_failed_write_leaves_nothing_behind(ort, tmp_path):
    (tmp_path / "m.md").mkdir()  # the card cannot be renamed over a folder
    result = run("espcn-x2", "-o", tmp_path / "m.onnx", "--force")
    assert result.exit_code == 1 and "cannot move the finished output into place" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.md"]


def test_output_must_be_an_onnx_file(ort, tmp_path):
    result = run("espcn-x2", "-o", tmp_path / "m.png")
    assert result.exit_code == 2 and ".onnx" in result.stderr


def test_missing_extra_is_a_one_line_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what `import onnx` meets when it is not installed
    result = run("espcn-x2", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "pip install 'subpixel[export]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
