"""Picking a model by what the input went through: a JPEG's quality from its tables, the pick
for images and video, ``--denoise``'s blend of twins, and what upscale says it ran."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import random_image
from subpixel_cli import choice
from subpixel_cli.cli import main
from subpixel_cli.errors import UsageError
from subpixel_cli.hub import ModelInfo, save_model
from subpixel_cli.model import ESPCN, ESPCNConfig, blend
from subpixel_cli.registry import REAL_SUFFIX, load_denoise, packaged_models


def _jpeg_bytes(quality: int, encoder: str = "pillow", grey: bool = False) -> bytes:
    picture = random_image(48, 64)
    if encoder == "opencv":
        ok, data = cv2.imencode(".jpg", picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return data.tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(picture)
    (image.convert("L") if grey else image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("encoder", ["pillow", "opencv"])
def test_the_quality_of_a_jpeg_is_read_off_its_tables_within_five(encoder: str, tmp_path: Path) -> None:
    for quality in range(30, 96, 5):
        path = tmp_path / f"q{quality}.jpg"
        path.write_bytes(_jpeg_bytes(quality, encoder))
        estimate = choice.jpeg_quality(path)
        assert estimate is not None and abs(estimate - quality) <= 5, (quality, estimate)


def test_grey_jpegs_and_other_tables_get_a_nearby_quality(tmp_path: Path) -> None:
    grey = tmp_path / "grey.jpg"
    grey.write_bytes(_jpeg_bytes(60, grey=True))  # one (luma) table
    assert abs(choice.jpeg_quality(grey) - 60) <= 5
    # Tables that are not libjpeg's scaled ones (a camera's): the quality that compresses alike
    tables = {0: list(np.clip(choice.scaled_table(choice.LUMA_TABLE, 70) * 1.1, 1, 255).astype(int)),
              1: list(choice.scaled_table(choice.CHROMA_TABLE, 70).astype(int))}
    assert 60 <= choice.quality_from_tables(tables) <= 70


def test_files_that_are_not_jpegs_have_no_quality(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.fromarray(random_image(16, 16)).save(png)
    renamed = tmp_path / "b.jpg"  # a PNG under a JPEG's name
    renamed.write_bytes(png.read_bytes())
    broken = tmp_path / "c.jpg"
    broken.write_bytes(b"not a picture")
    assert choice.jpeg_quality(png) is None and choice.jpeg_quality(renamed) is None and choice.jpeg_quality(broken) is None
    assert not choice.pick_for_image(png).real


def test_the_pick_follows_the_measured_threshold(tmp_path: Path) -> None:
    low, high = tmp_path / "low.jpg", tmp_path / "high.jpg"
    low.write_bytes(_jpeg_bytes(choice.JPEG_REAL_AT_OR_BELOW - 10))
    high.write_bytes(_jpeg_bytes(min(100, choice.JPEG_REAL_AT_OR_BELOW + 5)))
    assert choice.pick_for_image(low).real and "JPEG quality" in choice.pick_for_image(low).reason
    assert not choice.pick_for_image(high).real
    rule = choice.VIDEO_REAL_BELOW_BPP
    assert choice.pick_for_video("h264", rule / 2).real and not choice.pick_for_video("h264", rule * 2).real
    assert not choice.pick_for_video("h264", None).real and not choice.pick_for_video("ffv1", rule / 2).real


# --- the blend of twins -------------------------------------------------------------------------


def _twins(tmp_path: Path, scale: int = 2) -> tuple[Path, Path]:
    cfg = ESPCNConfig(scale=scale, channels=1)
    torch.manual_seed(0)
    clean, real = ESPCN(cfg), ESPCN(cfg)
    paths = tmp_path / "clean", tmp_path / f"clean{REAL_SUFFIX}"
    save_model(paths[0], clean, ModelInfo("clean", cfg, twin=str(paths[1])))
    save_model(paths[1], real, ModelInfo(f"clean{REAL_SUFFIX}", cfg, twin=str(paths[0]),
                                         training={"damage": "jpeg:30-95"}))
    return paths


def test_blend_moves_every_weight_in_a_straight_line() -> None:
    cfg = ESPCNConfig(scale=3, channels=1)
    torch.manual_seed(1)
    a, b = ESPCN(cfg), ESPCN(cfg)
    for t in (0.0, 0.3, 1.0):
        mixed = blend(a, b, t).state_dict()
        for key, value in a.state_dict().items():
            assert torch.allclose(mixed[key], (1 - t) * value + t * b.state_dict()[key], atol=1e-6)
    with pytest.raises(ValueError):
        blend(a, ESPCN(ESPCNConfig(scale=2, channels=1)), 0.5)


def test_denoise_blends_a_model_with_its_twin_from_either_side(tmp_path: Path) -> None:
    clean, real = _twins(tmp_path)
    half_from_clean = load_denoise(str(clean), None, 0.25)
    half_from_real = load_denoise(str(real), None, 0.25)  # the strength is towards the real model either way
    for a, b in zip(half_from_clean.model.parameters(), half_from_real.model.parameters()):
        assert torch.equal(a, b)
    assert load_denoise(str(clean), None, 0.0).info.name == "clean"
    assert load_denoise(str(clean), None, 1.0).info.name == f"clean{REAL_SUFFIX}"
    assert "0.25" in half_from_clean.info.name
    with pytest.raises(UsageError):
        load_denoise(str(clean), None, 1.5)


def test_denoise_without_a_twin_or_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    loner = tmp_path / "loner"
    save_model(loner, ESPCN(ESPCNConfig(scale=2, channels=1)), ModelInfo("loner", ESPCNConfig(scale=2, channels=1)))
    picture = tmp_path / "a.png"
    Image.fromarray(random_image(24, 24)).save(picture)
    runner = CliRunner()
    no_twin = runner.invoke(main, ["upscale", str(picture), "--model", str(loner), "--denoise", "0.5",
                                   "-o", str(tmp_path / "out.png")])
    assert no_twin.exit_code == 2 and "no real-world twin" in no_twin.output
    for bad in ("-0.1", "1.01", "x"):
        result = runner.invoke(main, ["upscale", str(picture), "--denoise", bad, "-o", str(tmp_path / "o2.png")])
        assert result.exit_code == 2
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "o2.png").exists()


def test_upscale_with_denoise_runs_the_blend_and_says_so(tmp_path: Path) -> None:
    clean, _ = _twins(tmp_path)
    picture = tmp_path / "a.png"
    Image.fromarray(random_image(24, 24)).save(picture)
    result = CliRunner().invoke(main, ["upscale", str(picture), "--model", str(clean), "--denoise", "0.5",
                                       "-o", str(tmp_path / "out.png"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    record = json.loads(result.stdout.splitlines()[0])
    assert record["status"] == "ok" and "@0.5" in record["model"]


@pytest.mark.skipif("espcn-x2-real" not in packaged_models(), reason="no packaged real-world model")
def test_without_a_model_each_input_gets_the_model_that_fits_it(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "web.jpg").write_bytes(_jpeg_bytes(50))
    Image.fromarray(random_image(48, 64)).save(folder / "clean.png")
    result = CliRunner().invoke(main, ["upscale", str(folder), "-x", "2", "-o", str(tmp_path / "out"), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["web.jpg"]["model"] == "espcn-x2-real" and "quality ~50" in records["web.jpg"]["model_reason"]
    assert records["clean.png"]["model"] == "espcn-x2" and records["clean.png"]["model_reason"] == "not a JPEG"
    named = CliRunner().invoke(main, ["upscale", str(folder / "web.jpg"), "--model", "espcn-x2", "-o",
                                      str(tmp_path / "named.png"), "--json"], catch_exceptions=False)
    assert json.loads(named.stdout)["model"] == "espcn-x2" and json.loads(named.stdout)["model_reason"] is None


def _clip(path: Path, crf: int, frames: int = 25) -> Path:
    """A one-second H.264 clip of a smooth picture panning by a pixel a frame, at ``crf``."""
    import av

    picture = cv2.GaussianBlur(random_image(128, 160 + frames), (0, 0), 3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        stream.options = {"crf": str(crf)}
        for k in range(frames):
            frame = np.ascontiguousarray(picture[:, k : k + 160])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_video_takes_the_real_world_model_below_the_measured_bit_rate(tmp_path: Path) -> None:
    starved, rich = choice.pick_for_video_source(_clip(tmp_path / "a.mp4", 51)), choice.pick_for_video_source(
        _clip(tmp_path / "b.mp4", 5))
    assert starved.real and "bits/pixel" in starved.reason
    assert not rich.real and "bits/pixel" in rich.reason
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(random_image(16, 16)).save(frames / "0001.png")
    assert not choice.pick_for_video_source(frames).real
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert choice.pick_for_video_source(tmp_path / "junk.mp4") == choice.Pick(False, "unreadable")


@pytest.mark.skipif("espcn-x2-real" not in packaged_models(), reason="no packaged real-world model")
@pytest.mark.parametrize("precision", ["auto", "fp32", "int8"])
def test_video_coded_with_few_bits_takes_the_real_world_model(tmp_path: Path, precision: str) -> None:
    clip = _clip(tmp_path / "clip.mp4", 51)
    out = tmp_path / "big.mp4"
    result = CliRunner().invoke(main, ["video", str(clip), "-x", "2", "-o", str(out), "--precision", precision,
                                       "--tile", "24", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["model"] == "espcn-x2-real" and record["model_reason"].startswith("h264 at ")
    assert record["frames"] == 25 and out.is_file()
    if precision == "int8":  # the real-world model ships its own calibration
        assert "calibration" not in result.output
    named = CliRunner().invoke(main, ["video", str(clip), "--model", "espcn-x2", "-o", str(tmp_path / "named.mp4"),
                                      "--json"], catch_exceptions=False)
    assert json.loads(named.stdout)["model"] == "espcn-x2"
