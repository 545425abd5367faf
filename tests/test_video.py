"""``subpixel video``: frames, timing, audio, colour, folders, errors and interruption.

Every video here is made by the tests themselves with PyAV: small (64×48), short (2 s), with a
sine-wave AAC track. The model is a random-init ESPCN written to a temporary folder; tests that
check colour or timing exactly use a nearest-neighbour stand-in upscaler instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from subpixel_cli.cli import main
from subpixel_cli.errors import InputError, UsageError
from subpixel_cli.video import FileReader, VideoOptions, parse_rate, parse_time, upscale_video

W, H, FPS, SECONDS, RATE = 64, 48, 30, 2, 44100


# --- making test videos --------------------------------------------------------------------


def make_video(
    path: Path,
    n_frames: int = FPS * SECONDS,
    size: tuple[int, int] = (W, H),
    fps: int = FPS,
    audio_seconds: float | None = SECONDS,
    codec: str = "libx264",
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    colour: tuple[int, int, int] | None = None,
    matrix: str | None = None,
    full_range: bool | None = None,
    subtitles: bool = False,
    rotation: int = 0,
) -> Path:
    """A test video: moving gradient frames (or one flat ``colour``), optional sine audio.

    ``pts``/``time_base`` give each frame's own timestamp (variable frame rate); ``matrix``
    ("ITU709"/"ITU601") and ``full_range`` tag and convert the YUV.
    """
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        if time_base is not None:
            v.codec_context.time_base = time_base
        if matrix is not None:
            v.codec_context.colorspace = {"ITU709": 1, "ITU601": 6}[matrix]
        if full_range is not None:
            v.codec_context.color_range = 2 if full_range else 1
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio_seconds:
            a = out.add_stream("aac", rate=RATE)
            a.layout = "mono"
        s = out.add_mux_stream("subrip") if subtitles else None
        yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
        for i in range(n_frames):
            if colour is not None:
                rgb = np.empty((size[1], size[0], 3), np.uint8)
                rgb[:] = colour
            else:
                rgb = np.stack([(xx * 4 + i * 3) % 256, (yy * 5) % 256, np.full_like(xx, (i * 7) % 256)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if matrix is not None or full_range is not None:
                frame = frame.reformat(format="yuv420p", dst_colorspace=matrix or "ITU601",
                                       dst_color_range="JPEG" if full_range else "MPEG")
            frame.pts = pts[i] if pts is not None else i
            if time_base is not None:
                frame.time_base = time_base
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            total = int(audio_seconds * RATE)
            for start in range(0, total, 1024):
                n = min(1024, total - start)
                t = np.arange(start, start + n) / RATE
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate, af.pts = RATE, start
                out.mux(a.encode(af))
            out.mux(a.encode(None))
        if s is not None:
            for k in range(2):
                packet = av.Packet(f"line {k}".encode())
                packet.pts = packet.dts = k * 1000
                packet.duration, packet.time_base, packet.stream = 500, Fraction(1, 1000), s
                out.mux(packet)
    return path


def probe(path: Path) -> dict:
    """Frame count, rate, size, frame times, colour tags and the other streams of a video."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        audio = [s for s in c.streams if s.type == "audio"]
        info = {
            "frames": len(times), "times": times, "rate": v.average_rate, "size": (ctx.width, ctx.height),
            "pix_fmt": ctx.pix_fmt, "codec": ctx.name, "matrix": ctx.colorspace, "range": ctx.color_range,
            "audio": [(s.codec_context.name, _seconds(c, s)) for s in audio],
            "subtitles": [s.codec_context.name for s in c.streams if s.type == "subtitle"],
        }
    return info


def _seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """A stream's duration from its packets (Matroska keeps no per-stream duration)."""
    spans = [(p.pts, p.pts + p.duration) for p in container.demux(stream) if p.size and p.pts is not None]
    container.seek(0)
    return float((max(e for _, e in spans) - min(s for s, _ in spans)) * stream.time_base)


def audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(audio=0) if p.size]


class NearestUpscaler:
    """A stand-in upscaler: each pixel repeated r×r times, so colours and timing pass unchanged."""

    def __init__(self, scale: int = 2, fail_on_call: int | None = None, error: BaseException | None = None,
                 batch_size: int = 4) -> None:
        self.scale, self.calls, self.fail_on_call, self.error = scale, 0, fail_on_call, error
        self.batch_size = batch_size

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise self.error or KeyboardInterrupt
        return frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


def run_cli(*args: str) -> "CliRunner.Result":
    return CliRunner().invoke(main, ["video", *args], catch_exceptions=False)


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary outputs that should never survive a run."""
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# --- the happy path -------------------------------------------------------------------------


def test_same_frames_rate_r_times_size_and_audio_copied(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    out = tmp_path / "out.mp4"
    result = run_cli(str(clip), "-o", str(out), "--model", video_model_dir, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["frames"] == FPS * SECONDS and record["size"] == [2 * W, 2 * H]
    assert record["audio_streams_copied"] == 1 and record["codec"] == "libx264" and record["pix_fmt"] == "yuv420p"
    got, src = probe(out), probe(clip)
    assert got["frames"] == src["frames"] == FPS * SECONDS
    assert got["rate"] == FPS
    assert got["size"] == (2 * W, 2 * H) and got["pix_fmt"] == "yuv420p" and got["codec"] == "h264"
    assert got["times"] == pytest.approx(src["times"], abs=1e-3)
    assert len(got["audio"]) == 1 and got["audio"][0][0] == "aac"
    assert got["audio"][0][1] == pytest.approx(src["audio"][0][1], abs=0.03)
    assert audio_payloads(out) == audio_payloads(clip)  # copied, not re-encoded
    assert leftovers(tmp_path) == []


def test_default_output_goes_beside_the_input(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    src = tmp_path / "holiday.mp4"
    src.write_bytes(clip.read_bytes())
    result = run_cli(str(src), "--model", video_model_dir, "--quiet")
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "holiday_x2.mp4")["frames"] == FPS * SECONDS


@pytest.mark.parametrize("batch_size", [1, 7])
def test_any_batch_size_keeps_every_frame(tmp_path: Path, clip: Path, batch_size: int) -> None:
    result = upscale_video(NearestUpscaler(batch_size=batch_size), clip, tmp_path / "o.mp4")
    assert result.frames == probe(tmp_path / "o.mp4")["frames"] == FPS * SECONDS


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    pts = [0, 40, 70, 150, 160, 300, 333, 500, 510, 700]
    src = make_video(tmp_path / "vfr.mkv", n_frames=len(pts), pts=pts, time_base=Fraction(1, 1000), audio_seconds=None)
    upscale_video(NearestUpscaler(), src, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4")["times"] == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_raw_stream_without_timestamps_gets_nominal_ones(tmp_path: Path) -> None:
    src = make_video(tmp_path / "raw.h264", n_frames=20, audio_seconds=None)  # an elementary stream: no pts
    result = upscale_video(NearestUpscaler(), src, tmp_path / "out.mp4")
    got = probe(tmp_path / "out.mp4")
    assert result.frames == got["frames"] == 20
    assert got["times"] == pytest.approx([i / 25 for i in range(20)], abs=1e-3)  # FFmpeg's raw H.264 rate


def test_display_rotation_is_kept(tmp_path: Path) -> None:
    src = make_video(tmp_path / "phone.mp4", n_frames=5, audio_seconds=None, rotation=90)
    upscale_video(NearestUpscaler(), src, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as c:
        frame = next(c.decode(video=0))
    assert frame.rotation == 90 and (frame.width, frame.height) == (2 * W, 2 * H)


def test_start_and_end_trim_video_and_audio(tmp_path: Path, clip: Path) -> None:
    out = tmp_path / "cut.mp4"
    result = upscale_video(NearestUpscaler(), clip, out, VideoOptions(start=0.5, end=1.5))
    got = probe(out)
    assert result.frames == got["frames"] == FPS
    assert got["times"][0] == pytest.approx(0, abs=1e-3)
    assert got["audio"][0][1] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("matrix, full_range", [("ITU709", False), ("ITU601", True), (None, None)])
def test_colour_range_and_matrix_round_trip(tmp_path: Path, matrix: str | None, full_range: bool | None) -> None:
    colour = (200, 60, 30)
    src = make_video(tmp_path / "flat.mp4", n_frames=3, colour=colour, matrix=matrix, full_range=full_range,
                     audio_seconds=None)
    reader = FileReader(src, VideoOptions())
    with reader:
        first = next(iter(reader.items(threading.Event()))).pixels
    assert np.abs(first.reshape(-1, 3).mean(0) - colour).max() < 3  # decoded with the file's own tags

    out = tmp_path / "out.mp4"
    upscale_video(NearestUpscaler(), src, out)
    got = probe(out)
    if matrix is not None:
        assert got["matrix"] == {"ITU709": 1, "ITU601": 6}[matrix]  # tags carried over
        assert got["range"] == (2 if full_range else 1)
    with av.open(str(out)) as c:  # decoded independently, with the output's tags
        frame = next(c.decode(video=0))
        names = {1: "ITU709", 5: "ITU601", 6: "ITU601"}
        rgb = frame.to_ndarray(format="rgb24", src_colorspace=names[got["matrix"]],
                               src_color_range="JPEG" if got["range"] == 2 else "MPEG", dst_color_range="JPEG")
    assert np.abs(rgb.reshape(-1, 3).mean(0) - colour).max() < 3


# --- frame folders --------------------------------------------------------------------------


def test_frames_dir_writes_numbered_pngs(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    frames = tmp_path / "frames"
    result = run_cli(str(clip), "--frames-dir", str(frames), "--model", video_model_dir, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["codec"], record["pix_fmt"], record["frames"]) == ("png", "rgb24", FPS * SECONDS)
    names = sorted(p.name for p in frames.iterdir())
    assert len(names) == FPS * SECONDS and names[0] == "frame_000001.png"
    assert cv2.imread(str(frames / names[-1])).shape == (2 * H, 2 * W, 3)
    assert leftovers(tmp_path) == []


def test_folder_of_frames_becomes_a_video(tmp_path: Path, video_model_dir: str) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(1, 12):  # frame_2 sorts before frame_10
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.full((H, W, 3), i * 20, np.uint8))
    assert run_cli(str(folder), "--model", video_model_dir, "--quiet").exit_code == 2  # --fps is required
    result = run_cli(str(folder), "--fps", "25", "-o", str(tmp_path / "shots.mp4"), "--model", video_model_dir, "--quiet")
    assert result.exit_code == 0, result.output
    got = probe(tmp_path / "shots.mp4")
    assert got["frames"] == 11 and got["rate"] == 25 and got["size"] == (2 * W, 2 * H)

    upscale_video(NearestUpscaler(), folder, tmp_path / "order.mp4", VideoOptions(fps=Fraction(25)))
    with av.open(str(tmp_path / "order.mp4")) as c:
        greys = [int(f.to_ndarray(format="rgb24").mean()) for f in c.decode(video=0)]
    assert greys == sorted(greys)


def test_folder_frames_of_any_kind_are_read_as_8bit_rgb(tmp_path: Path) -> None:
    """Frames are read as images are (subpixel_cli.images): grey, 16-bit, alpha and any suffix
    ``subpixel upscale`` takes all become 8-bit RGB."""
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    colour = np.array([200, 60, 30], np.uint8)
    Image.fromarray(np.full((H, W, 3), colour)).save(folder / "f1.png")
    Image.fromarray(np.full((H, W), 90, np.uint8)).save(folder / "f2.png")  # grey
    cv2.imwrite(str(folder / "f3.png"), np.full((H, W, 3), colour[::-1].astype(np.uint16) * 257))  # 16-bit (BGR)
    Image.fromarray(np.dstack([np.full((H, W, 3), colour), np.zeros((H, W), np.uint8)])).save(folder / "f4.png")  # RGBA
    Image.fromarray(np.full((H, W, 3), colour)).save(folder / "f5.ppm")
    frames = tmp_path / "out"
    result = upscale_video(NearestUpscaler(), folder, frames, VideoOptions(fps=Fraction(25)), frames_dir=True)
    assert result.frames == 5
    got = [cv2.cvtColor(cv2.imread(str(frames / f"frame_{i:06d}.png")), cv2.COLOR_BGR2RGB) for i in range(1, 6)]
    assert all(g.shape == (2 * H, 2 * W, 3) for g in got)
    expected = [colour, [90, 90, 90], colour, colour, colour]
    assert [g[0, 0].tolist() for g in got] == [list(map(int, e)) for e in expected]


# --- streams the container cannot hold ------------------------------------------------------


def test_subtitles_copied_to_mkv_and_dropped_with_a_note_for_mp4(tmp_path: Path) -> None:
    src = make_video(tmp_path / "subs.mkv", n_frames=30, audio_seconds=1, subtitles=True)
    mkv = upscale_video(NearestUpscaler(), src, tmp_path / "out.mkv")
    assert mkv.subtitle_streams_copied == 1 and len(probe(tmp_path / "out.mkv")["subtitles"]) == 1
    with av.open(str(tmp_path / "out.mkv")) as c:
        texts = [bytes(p) for p in c.demux(subtitles=0) if p.size]
    assert texts == [b"line 0", b"line 1"]
    mp4 = upscale_video(NearestUpscaler(), src, tmp_path / "out.mp4")
    assert mp4.streams_dropped == 1 and any("subtitle" in n and ".mkv" in n for n in mp4.notes)
    assert mp4.audio_streams_copied == 1


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path: Path, clip: Path) -> None:
    result = upscale_video(NearestUpscaler(), clip, tmp_path / "out.webm")  # WebM takes Opus/Vorbis, not AAC
    got = probe(tmp_path / "out.webm")
    assert result.codec == "libvpx-vp9" and got["frames"] == FPS * SECONDS
    assert result.audio_streams_reencoded == 1 and got["audio"][0][0] == "opus"
    assert got["audio"][0][1] == pytest.approx(SECONDS, abs=0.05)
    assert any("not H.264" in n for n in result.notes) and any("re-encoded to opus" in n for n in result.notes)


# --- errors ---------------------------------------------------------------------------------


def test_existing_output_needs_force(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = run_cli(str(clip), "-o", str(out), "--model", video_model_dir)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert run_cli(str(clip), "-o", str(out), "--model", video_model_dir, "--force", "--quiet").exit_code == 0
    assert probe(out)["frames"] == FPS * SECONDS


def test_unreadable_file(tmp_path: Path, video_model_dir: str) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    result = run_cli(str(bad), "--model", video_model_dir)
    assert result.exit_code == 1 and "cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "notes_x2.mp4").exists()


def test_missing_file_and_still_image(tmp_path: Path, video_model_dir: str) -> None:
    assert run_cli(str(tmp_path / "nope.mp4"), "--model", video_model_dir).exit_code == 1
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((H, W, 3), np.uint8))
    result = run_cli(str(image), "--model", video_model_dir)
    assert result.exit_code == 1 and "subpixel upscale" in result.stderr


def test_audio_only_file_has_no_video_stream(tmp_path: Path, video_model_dir: str) -> None:
    src = tmp_path / "song.m4a"
    with av.open(str(src), "w") as out:
        a = out.add_stream("aac", rate=8000)
        a.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(a.encode(frame))
        out.mux(a.encode(None))
    result = run_cli(str(src), "--model", video_model_dir)
    assert result.exit_code == 1 and "no video stream" in result.stderr


def test_zero_frames(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    src = make_video(tmp_path / "empty.mkv", n_frames=0, audio_seconds=0.5)  # a video track with no frames
    result = run_cli(str(src), "--model", video_model_dir)
    assert result.exit_code == 1 and "no video frames" in result.stderr
    assert not (tmp_path / "empty_x2.mp4").exists() and leftovers(tmp_path) == []
    result = run_cli(str(clip), "--start", "10", "-o", str(tmp_path / "late.mp4"), "--model", video_model_dir)
    assert result.exit_code == 1 and "between --start and --end" in result.stderr
    assert not (tmp_path / "late.mp4").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--codec", "nope"], "no such encoder"),
    (["--codec", "mpeg4", "--crf", "20"], "--crf does not apply"),
    (["-o", "{tmp}/out.xyz"], "unknown video suffix"),
    (["--codec", "h264", "-o", "{tmp}/out.webm"], "cannot hold"),
    (["--start", "1:99"], "bad time"),
    (["--start", "1.5", "--end", "1"], "must be after"),
    (["--fps", "25"], "folder of frames"),
    (["-o", "{tmp}/a.mp4", "--frames-dir", "{tmp}/f"], "not both"),
])
def test_usage_errors_exit_2(tmp_path: Path, clip: Path, video_model_dir: str, args: list[str], message: str) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.mp4")]
    result = run_cli(str(clip), "--model", video_model_dir, *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []


def test_parse_time_and_rate() -> None:
    assert parse_time("90") == 90 and parse_time("1:30") == 90 and parse_time("01:01:30.5") == 3690.5
    assert parse_rate("30000/1001") == Fraction(30000, 1001) and parse_rate("29.97") == Fraction(2997, 100)
    for bad in ("", "a", "1:60", "-3", "1::2"):
        with pytest.raises(UsageError):
            parse_time(bad)
    with pytest.raises(UsageError):
        parse_rate("0")


def test_tile_and_max_memory_give_the_same_frames(tmp_path: Path, video_model_dir: str) -> None:
    """``--tile``/``--max-memory`` mean what they mean for ``subpixel upscale``; tiling is exact."""
    src = make_video(tmp_path / "short.mp4", n_frames=6, audio_seconds=None)
    runs = {"whole": [], "tiled": ["--tile", "16"], "budget": ["--max-memory", "64"], "both": ["--tile", "24", "--max-memory", "64"]}
    for name, extra in runs.items():
        result = run_cli(str(src), "--frames-dir", str(tmp_path / name), "--model", video_model_dir, "--quiet", *extra)
        assert result.exit_code == 0, result.output
    whole = [cv2.imread(str(p)) for p in sorted((tmp_path / "whole").iterdir())]
    assert len(whole) == 6 and whole[0].shape == (2 * H, 2 * W, 3)
    for name in ("tiled", "budget", "both"):
        other = [cv2.imread(str(p)) for p in sorted((tmp_path / name).iterdir())]
        assert len(other) == 6 and all(np.array_equal(a, b) for a, b in zip(whole, other)), name
    assert run_cli(str(src), "--tile", "4", "--model", video_model_dir).exit_code == 2  # as for upscale: at least 8


def _out_of_memory(kind: str) -> BaseException:
    if kind == "cuda":
        return getattr(torch, "OutOfMemoryError", RuntimeError)("CUDA out of memory. Tried to allocate 2.00 GiB")
    return RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB: out of memory")


def before_each_batch(monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> None:
    """Call ``hook`` before the Upscaler takes each batch of frames, RGB or I420 planes."""
    from subpixel_cli.upscale import Upscaler

    for name in ("upscale_batch", "upscale_i420"):
        def wrapped(self: Upscaler, frames: np.ndarray, *args: Any, _real: Any = getattr(Upscaler, name),
                    **kwargs: Any) -> np.ndarray:
            hook()
            return _real(self, frames, *args, **kwargs)

        monkeypatch.setattr(Upscaler, name, wrapped)


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
@pytest.mark.parametrize("frames_dir", [False, True])
def test_out_of_memory_says_which_tile_to_try(tmp_path: Path, clip: Path, video_model_dir: str,
                                              monkeypatch: pytest.MonkeyPatch, kind: str, frames_dir: bool) -> None:
    from subpixel_cli.runtime import out_of_memory_message

    calls = {"n": 0}

    def short_of_memory() -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # mid-stream: frames have been written already
            raise _out_of_memory(kind)

    before_each_batch(monkeypatch, short_of_memory)
    out = tmp_path / ("frames" if frames_dir else "out.mp4")
    where = ["--frames-dir", str(out)] if frames_dir else ["-o", str(out)]
    result = run_cli(str(clip), *where, "--model", video_model_dir, "--tile", "32", "--quiet")
    assert result.exit_code == 1 and calls["n"] == 3
    assert result.stderr.strip() == f"error: {out_of_memory_message(32)}"  # one line, the same as `upscale`'s
    assert "--tile 16" in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


# --- interruption ---------------------------------------------------------------------------


def test_ctrl_c_mid_stream_leaves_no_output(tmp_path: Path, clip: Path, video_model_dir: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def interrupted() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    before_each_batch(monkeypatch, interrupted)
    out = tmp_path / "out.mp4"
    result = run_cli(str(clip), "-o", str(out), "--model", video_model_dir, "--quiet")
    assert result.exit_code == 130 and calls["n"] == 3
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("frames_dir", [False, True])
def test_errors_in_any_thread_leave_no_output(tmp_path: Path, clip: Path, frames_dir: bool) -> None:
    out = tmp_path / ("frames" if frames_dir else "out.mp4")
    with pytest.raises(RuntimeError, match="model broke"):  # the main thread
        upscale_video(NearestUpscaler(fail_on_call=4, error=RuntimeError("model broke")), clip, out, frames_dir=frames_dir)
    assert not out.exists() and leftovers(tmp_path) == []

    folder = tmp_path / "shots"  # the reader thread: frame 5 has another size
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((H if i != 5 else H + 2, W, 3), np.uint8))
    with pytest.raises(InputError, match="one size"):
        upscale_video(NearestUpscaler(batch_size=2), folder, out, VideoOptions(fps=Fraction(25)), frames_dir=frames_dir)
    assert not out.exists() and leftovers(tmp_path) == []


def test_sigint_to_the_process_leaves_no_output(tmp_path: Path, video_model_dir: str) -> None:
    src = make_video(tmp_path / "long.mp4", n_frames=150, size=(320, 240), codec="mpeg4")  # mpeg4: quick to make
    out = tmp_path / "out.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C's default handling, as in a terminal, even where the test run itself was started in
    # the background (where the shell ignores SIGINT, and Python then leaves it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "subpixel_cli", "video", str(src), "-o", str(out),
                             "--model", video_model_dir, "--batch-size", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    work = tmp_path / ".out.mp4.work"  # segments in progress (kept for a resume, see test_video_resume.py)
    while not leftovers(tmp_path) and not work.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the temporary output exists: work has begun
    time.sleep(0.2)  # into the stream
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert not out.exists() and leftovers(tmp_path) == []


def test_preset_sets_the_x264_speed(tmp_path: Path, clip: Path, video_model_dir: str) -> None:
    # x264 writes its settings into the stream: ultrafast turns CABAC off, the default keeps it.
    fast, default = tmp_path / "fast.mp4", tmp_path / "default.mp4"
    assert run_cli(str(clip), "-o", str(fast), "--model", video_model_dir, "--preset", "ultrafast", "--quiet").exit_code == 0
    assert run_cli(str(clip), "-o", str(default), "--model", video_model_dir, "--quiet").exit_code == 0
    assert b"cabac=0" in fast.read_bytes() and b"cabac=1" in default.read_bytes()
    bad = run_cli(str(clip), "-o", str(tmp_path / "bad.mp4"), "--model", video_model_dir, "--preset", "quick")
    assert bad.exit_code == 2 and "ultrafast, superfast" in bad.stderr
    vp9 = run_cli(str(clip), "-o", str(tmp_path / "v.webm"), "--model", video_model_dir, "--codec", "vp9", "--preset", "fast")
    assert vp9.exit_code == 2 and "--preset applies to libx264 and libx265" in vp9.stderr
    ffv1 = run_cli(str(clip), "-o", str(tmp_path / "l.mkv"), "--model", video_model_dir, "--lossless", "--preset", "fast")
    assert ffv1.exit_code == 2 and "not ffv1" in ffv1.stderr
    assert not (tmp_path / "v.webm").exists() and leftovers(tmp_path) == []


def test_default_x264_preset_by_output_size() -> None:
    from types import SimpleNamespace

    from subpixel_cli.video.encoders import quality_options

    def preset(w: int, h: int, asked: str | None = None) -> str:
        return quality_options("libx264", None, SimpleNamespace(width=w, height=h), Fraction(30), asked)["preset"]

    sizes = [(960, 540), (1280, 720), (1920, 1080), (2560, 1440)]
    assert [preset(w, h) for w, h in sizes] == ["veryfast", "superfast", "ultrafast", "ultrafast"]
    assert preset(2560, 1440, "slow") == "slow"


def test_the_docs_the_help_and_the_code_agree_on_the_default_presets() -> None:
    """docs/video.md said veryfast up to 1280×720, superfast up to 1080p; the code, README and
    --help said 960×540 and 720p (issue 22, rough edges)."""
    from subpixel_cli.video import encoders

    root = Path(__file__).resolve().parents[1]
    sizes = {pixels: next(f"{w}×{h}" for w, h in ((960, 540), (1280, 720), (1920, 1080)) if w * h == pixels)
             for pixels in (encoders.LARGE_PIXELS, encoders.HUGE_PIXELS)}
    rule = (f"`{encoders.PRESETS['libx264']}` up to {sizes[encoders.LARGE_PIXELS]}, "
            f"`{encoders.LARGE_PRESETS['libx264']}` up to {sizes[encoders.HUGE_PIXELS]}, "
            f"`{encoders.HUGE_PRESETS['libx264']}` above")
    help_text = " ".join(CliRunner().invoke(main, ["video", "--help"], terminal_width=400).output.split())
    for name, text in (("README.md", (root / "README.md").read_text()), ("docs/video.md", (root / "docs/video.md").read_text()),
                       ("--help", help_text)):
        text = " ".join(text.split())
        assert (rule if name != "--help" else rule.replace("`", "")) in text, name
