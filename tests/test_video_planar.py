"""Video that stays in YCbCr: Upscaler.upscale_i420 (the Y plane through the network, chroma
resized for MPEG-2/H.264 siting), when `subpixel video` takes that path, and `bench --frames i420`."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import subpixel_cli.video as video_module
from subpixel_cli.cli import main
from subpixel_cli.errors import UsageError
from subpixel_cli.hub import LoadedModel, ModelInfo
from subpixel_cli.images import read_rgb8
from subpixel_cli.registry import load_model
from subpixel_cli.runtime import int8_kernels, native_bf16
from subpixel_cli.upscale import TilePlan, Upscaler, upscale_chroma
from subpixel_cli.video import VideoOptions, upscale_video
from tests.conftest import make_model
from tests.test_video import make_video

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"


def to_i420(rgb: np.ndarray, matrix: str = "ITU601") -> np.ndarray:
    """RGB -> stacked limited-range I420 planes, as a decoder hands them over."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace=matrix, dst_color_range="MPEG").to_ndarray()


def planes(i420: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat, c = i420.reshape(-1), (h // 2) * (w // 2)
    return (flat[: h * w].reshape(h, w), flat[h * w : h * w + c].reshape(h // 2, w // 2),
            flat[h * w + c :].reshape(h // 2, w // 2))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    rgb = read_rgb8(ASTRONAUT)
    return np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])


PRECISIONS = ["fp32", *(["bf16"] if native_bf16() else []), *(["int8"] if int8_kernels() else [])]


def _deeper_x3() -> LoadedModel:
    """espcn-x3 with one more hidden layer (a near-identity: tanh(x/8), the last layer ×8, so that a
    path that skipped or mis-folded it would be far off), calibrated for int8."""
    from subpixel_cli.model import ESPCN, ESPCNConfig
    from subpixel_cli.quantize import calibrate
    from subpixel_cli.train import transplant
    from tests.conftest import SAMPLE

    deep = ESPCN(ESPCNConfig(3, 1, (64, 32, 32), (5, 3, 3, 3)))
    transplant(load_model("espcn-x3").model, deep, "test")
    loaded = LoadedModel(deep.eval(), ModelInfo("deep-x3", deep.config))
    loaded.calibration = calibrate(deep, [SAMPLE])
    return loaded


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("deeper", [False, True])
def test_i420_matches_the_rgb_path_on_a_photo(astronaut: np.ndarray, precision: str, deeper: bool) -> None:
    # The packaged ×3 model (or one with a hidden layer more) on a real photo: the Y plane the
    # network makes from the decoded Y is the Y of what the RGB path makes (up to the rounding of
    # an RGB round trip), and the chroma is the bicubic chroma.
    up = Upscaler(_deeper_x3() if deeper else load_model("espcn-x3"), device="cpu", precision=precision)
    h, w = astronaut.shape[:2]
    got = up.upscale_i420(to_i420(astronaut)[None])[0]
    expected = to_i420(up.upscale_batch(astronaut[None])[0])
    assert got.shape == expected.shape == (h * 3 * 3 // 2, w * 3)
    for name, a, b in zip("YUV", planes(got, 3 * h, 3 * w), planes(expected, 3 * h, 3 * w)):
        diff = np.abs(a.astype(int) - b)
        assert diff.mean() < 0.6, name
        assert np.percentile(diff, 99) <= (2 if name == "Y" else 4), name  # chroma: sited, not via RGB
    bicubic = cv2.resize(planes(to_i420(astronaut), h, w)[0], (3 * w, 3 * h), interpolation=cv2.INTER_CUBIC)
    assert np.abs(planes(got, 3 * h, 3 * w)[0].astype(int) - bicubic).mean() > 0.5  # the network made Y


@pytest.mark.parametrize("r", [2, 3, 4])
def test_chroma_keeps_mpeg2_siting(r: int) -> None:
    # A horizontal ramp (8 levels per chroma pixel): output chroma sample m belongs at input
    # chroma position m/r + ¼/r − ¼ (H.264's left siting), rows centred. A centred resize is off
    # by (¼ − ¼/r)·8 = 1–1.5 levels; the sited one only by bicubic's own ripple.
    slope = 8.0
    ramp = np.tile((np.arange(28) * slope).astype(np.uint8), (6, 1))
    out = np.empty((6 * r, 28 * r), np.uint8)
    upscale_chroma(ramp, r, out)
    m = np.arange(28 * r)
    ideal = slope * (m / r + 0.25 / r - 0.25)
    inside = slice(2 * r, 25 * r)
    sited = np.abs(out[:, inside] - ideal[inside]).mean()
    centred = cv2.resize(ramp, (28 * r, 6 * r), interpolation=cv2.INTER_CUBIC)
    assert sited <= 0.5
    assert np.abs(centred[:, inside] - ideal[inside]).mean() >= 1.0
    assert (out == out[0]).all()  # a constant down the rows stays constant


def test_i420_tiles_equal_one_piece(astronaut: np.ndarray) -> None:
    up = Upscaler(load_model("espcn-x2"), device="cpu", precision="fp32")
    frame = to_i420(astronaut[:96, :128])[None]
    whole = up.upscale_i420(frame)
    plan = TilePlan(40, up.plan.max_pixels, forced=True)
    assert up.tiles_for(96, 128, plan) == 12
    assert np.array_equal(up.upscale_i420(frame, plan=plan), whole)


def test_i420_needs_a_y_model_and_even_sides() -> None:
    rgb_model = make_model(2, channels=3)
    up = Upscaler(LoadedModel(rgb_model, ModelInfo("rgb-x2", rgb_model.config)), device="cpu")
    assert not up.takes_i420
    with pytest.raises(UsageError, match="RGB model"):
        up.upscale_i420(np.zeros((1, 24, 16), np.uint8))
    y_model = make_model(2)
    up = Upscaler(LoadedModel(y_model, ModelInfo("y-x2", y_model.config)), device="cpu")
    assert up.takes_i420
    with pytest.raises(ValueError, match="I420"):
        up.upscale_i420(np.zeros((1, 25, 16), np.uint8))


# --- subpixel video -------------------------------------------------------------------------


def decoded_planes(path: Path) -> tuple[list[np.ndarray], av.VideoFrame]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [f.to_ndarray() for f in frames], frames[0]


def test_video_stays_in_ycbcr_and_tags_the_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An untagged 64×48 clip is decoded as BT.601; the RGB path re-encodes its 128×96 result in
    # the matrix it tags (BT.601 below 720 lines too); the planar path keeps the source's YCbCr
    # and tags it. With a trained model both give the same picture within a level or two.
    clip = make_video(tmp_path / "in.mp4", n_frames=12, audio_seconds=1.0)
    upscaler = Upscaler(load_model("espcn-x2"), device="cpu", precision="fp32")
    calls = {"i420": 0}
    real = Upscaler.upscale_i420

    def counted(self: Upscaler, frames: np.ndarray, *args, **kwargs) -> np.ndarray:
        calls["i420"] += len(frames)
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale_i420", counted)
    planar = upscale_video(upscaler, clip, tmp_path / "planar.mp4", resume=False)
    assert calls["i420"] == 12 and planar.frames == 12 and planar.audio_streams_copied == 1
    monkeypatch.setattr(video_module, "wants_planar", lambda *a: False)
    rgb = upscale_video(upscaler, clip, tmp_path / "rgb.mp4", resume=False)
    assert calls["i420"] == 12 and rgb.frames == 12
    got, first = decoded_planes(tmp_path / "planar.mp4")
    expected, _ = decoded_planes(tmp_path / "rgb.mp4")
    assert first.colorspace == 6 and first.color_range == 1  # SMPTE 170M (BT.601), limited
    diff = np.abs(np.stack(got).astype(int) - np.stack(expected))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8  # the clip's saturated edges clip in RGB


def test_what_keeps_rgb(tmp_path: Path, video_model_dir: str) -> None:
    upscaler = Upscaler(load_model(video_model_dir), device="cpu")
    limited = make_video(tmp_path / "limited.mp4", n_frames=4, audio_seconds=None)
    full = make_video(tmp_path / "full.mp4", n_frames=4, audio_seconds=None, full_range=True)
    rgb_model = make_model(2, channels=3)
    rgb_upscaler = Upscaler(LoadedModel(rgb_model, ModelInfo("rgb-x2", rgb_model.config)), device="cpu")

    def stays(up: Upscaler, source: Path, options: VideoOptions | None = None, frames_dir: bool = False) -> bool:
        options = options or VideoOptions()
        with video_module.open_reader(source, options, video_module.wants_planar(up, options, frames_dir)) as reader:
            return reader.planar

    assert stays(upscaler, limited)
    assert not stays(upscaler, full)  # full range: RGB, as before
    assert not stays(rgb_upscaler, limited)  # an RGB model needs RGB
    assert not stays(upscaler, limited, VideoOptions(lossless=True))  # lossless promises the model's RGB
    assert not stays(upscaler, limited, VideoOptions(pix_fmt="yuv444p"))
    assert not stays(upscaler, limited, frames_dir=True)  # PNG frames are RGB


# --- subpixel bench --------------------------------------------------------------------------


def test_bench_times_i420_frames(model_folder) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--model", str(model_folder(2)), "--size", "32x24", "--frames", "i420",
                                  "--seconds", "0", "--batch-size", "2", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["layout"] == "i420" and record["frames"] >= 4 and record["output_size"] == [64, 48]
    result = runner.invoke(main, ["bench", "--model", str(model_folder(2)), "--size", "32x18", "--frames", "i420",
                                  "--seconds", "0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output  # 9-row chroma planes (480×270 at ×4 has such)
    odd = runner.invoke(main, ["bench", "--model", str(model_folder(2)), "--size", "33x24", "--frames", "i420",
                               "--seconds", "0"], catch_exceptions=False)
    assert odd.exit_code == 2 and "odd" in odd.stderr
    rgb = runner.invoke(main, ["bench", "--model", str(model_folder(2, 3)), "--size", "32x24", "--frames", "i420",
                               "--seconds", "0"], catch_exceptions=False)
    assert rgb.exit_code == 2 and "RGB model" in rgb.stderr
