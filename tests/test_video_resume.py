"""``subpixel video`` in segments: a stopped run resumes, the joined file equals a single pass.

Clips are made here: 64×48, 10 fps, a keyframe every 20 frames (so 2 s segments), sine AAC audio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from subpixel_cli.cli import main
from subpixel_cli.video import segments

ROOT = Path(__file__).resolve().parents[1]
W, H, FPS, GOP, RATE = 64, 48, 10, 20, 44100


def make_clip(path: Path, n_frames: int = 120, gop: int = GOP, fps: int = FPS) -> Path:
    """Moving gradients, H.264 with B-frames and a keyframe every ``gop`` frames, and AAC audio."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        yy, xx = np.mgrid[0:H, 0:W]
        samples = 0
        for i in range(n_frames):
            rgb = np.stack([(xx * 4 + i * 3) % 256, (yy * 5 + i) % 256, (xx + yy + i * 7) % 256], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
            while samples < (i + 1) * RATE // fps:
                tone = (0.3 * np.sin(np.arange(samples, samples + 1024) / 10)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts = RATE, samples
                samples += 1024
                out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


def run_json(*args: str) -> dict:
    result = CliRunner().invoke(main, ["video", *args, "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def timing(path: Path) -> tuple[list[int], float, int]:
    """Video frame pts, container duration and audio packets."""
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
        duration = c.duration / av.time_base
    with av.open(str(path)) as c:
        audio = sum(1 for p in c.demux(audio=0) if p.size)
    return pts, duration, audio


def rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_segments_start_at_keyframes(tmp_path: Path) -> None:
    from subpixel_cli.video import FileReader, VideoOptions

    with FileReader(make_clip(tmp_path / "a.mp4"), VideoOptions()) as reader:
        assert segments.segment_starts(reader) == [0, 20, 40, 60, 80, 100]
    with FileReader(make_clip(tmp_path / "one.mp4", 60, gop=250), VideoOptions()) as reader:
        assert segments.segment_starts(reader) == [0]  # one keyframe: one segment


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_joined_equals_single_pass(tmp_path: Path, video_model_dir: str, suffix: str) -> None:
    # 30 fps, a keyframe every 16 frames: cuts at 64 and 128 frames (2.133 s, 4.267 s), times no
    # container clock of milliseconds holds exactly
    clip = make_clip(tmp_path / "a.mp4", 160, gop=16, fps=30)
    seg = run_json(str(clip), "--model", video_model_dir, "-o", str(tmp_path / f"seg{suffix}"))
    # --end beyond the clip: the single pass (a window is never segmented)
    single = run_json(str(clip), "--model", video_model_dir, "-o", str(tmp_path / f"one{suffix}"), "--end", "1000")
    assert seg["segments"] == 3 and single["segments"] == 1 and seg["frames"] == single["frames"] == 160
    assert seg["audio_streams_copied"] == 1
    assert timing(tmp_path / f"seg{suffix}") == timing(tmp_path / f"one{suffix}")
    assert not (tmp_path / f".seg{suffix}.work").exists()


def test_lossless_segments_equal_png_frames(tmp_path: Path, video_model_dir: str) -> None:
    clip = make_clip(tmp_path / "a.mp4", 60)
    out = run_json(str(clip), "--model", video_model_dir, "-o", str(tmp_path / "seg.mkv"), "--lossless")
    assert out["segments"] == 3 and out["codec"] == "ffv1"
    run_json(str(clip), "--model", video_model_dir, "--frames-dir", str(tmp_path / "frames"))
    import cv2

    pngs = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "frames").iterdir())]
    joined = rgb_frames(tmp_path / "seg.mkv")
    assert len(joined) == len(pngs) == 60
    assert all(np.array_equal(a, b) for a, b in zip(joined, pngs))


def leave_work(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """A run stopped after its segments are done, before the join."""
    import subpixel_cli.video as video

    def stop(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(video, "join_segments", stop)
        result = CliRunner().invoke(main, ["video", *args, "-q"], catch_exceptions=False)
        assert result.exit_code != 0  # interrupted


def test_resume_and_what_stops_it(tmp_path: Path, video_model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path / "a.mp4", 60)
    target = tmp_path / "out.mp4"
    args = (str(clip), "--model", video_model_dir, "-o", str(target))
    leave_work(monkeypatch, *args)
    assert len(list((tmp_path / ".out.mp4.work").glob("segment_*_*.mp4"))) == 3 and not target.exists()
    done = run_json(*args)
    assert (done["segments_resumed"], done["frames_upscaled"], done["frames"]) == (3, 0, 60)
    assert "resuming: 3 of 3 segments done" in done["notes"]
    assert not (tmp_path / ".out.mp4.work").exists()

    for change in ("touch", "--crf", "--no-resume"):
        target.unlink()
        leave_work(monkeypatch, *args)
        extra: tuple[str, ...] = ()
        if change == "touch":
            os.utime(clip, (time.time() + 10, time.time() + 10))
        else:
            extra = ("--crf", "30") if change == "--crf" else ("--no-resume",)
        again = run_json(*args, *extra)
        assert (again["segments_resumed"], again["frames_upscaled"]) == (0, 60), change
        assert again["frames"] == 60


def test_killed_run_resumes(tmp_path: Path, video_model_dir: str) -> None:
    clip = make_clip(tmp_path / "a.mp4", 240)
    target = tmp_path / "out.mp4"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "subpixel_cli", "video", str(clip), "--model", video_model_dir, "-o", str(target),
           "--batch-size", "1", "--json", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = tmp_path / ".out.mp4.work"
    deadline = time.monotonic() + 60
    while not list(work.glob("segment_*_*.mp4")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished = len(list(work.glob("segment_*_*.mp4")))
    assert not target.exists() and 1 <= finished < 12, finished
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["segments"] == 12 and result["segments_resumed"] >= finished
    assert result["frames_upscaled"] < 240 and result["frames"] == 240
    assert f"resuming: {result['segments_resumed']} of 12 segments done" in result["notes"]
    pts, duration, audio = timing(target)
    assert pts == sorted(pts) and len(pts) == 240 and abs(duration - 24) < 0.2 and audio > 0
    assert not work.exists() and not list(tmp_path.glob(".*.partial"))


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_full_disk_is_one_plain_line_and_a_rerun_resumes(tmp_path: Path, video_model_dir: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while the second segment is written said "internal error: OSError: [Errno 28]…"
    (issue 22.5): now the plain line of `subpixel upscale`, exit 1, and the finished segment is
    kept for the re-run, which resumes from it."""
    import errno

    clip = make_clip(tmp_path / "a.mp4", 60)
    target = tmp_path / "out.mp4"
    args = [str(clip), "--model", video_model_dir, "-o", str(target)]
    write = segments.SegmentWriter.write

    def fill_up(self, frames, pts, packets):  # the disk fills once the second segment has begun
        write(self, frames, pts, packets)
        if self.current is not None and self.current[0] >= 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.work.path / ".segment.partial"))

    monkeypatch.setattr(segments.SegmentWriter, "write", fill_up)
    result = CliRunner().invoke(main, ["video", *args, "-q"], catch_exceptions=False)
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and "No space left on device" in lines[0] and "internal error" not in lines[0]
    assert "run the same command again" in lines[0] and "1 finished segment" in lines[0], lines
    assert not target.exists() and len(list(segments.work_folder(target).glob("segment_*"))) == 1
    monkeypatch.setattr(segments.SegmentWriter, "write", write)
    done = run_json(*args)
    assert "resuming: 1 of 3 segments done" in done["notes"] and done["frames"] == 60


def test_a_full_disk_in_one_pass_leaves_nothing(tmp_path: Path, video_model_dir: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With --start/--end there are no segments to keep: the line says so, nothing is left."""
    import errno

    from subpixel_cli.video import writing

    clip = make_clip(tmp_path / "a.mp4", 60)

    def full(self, frames, pts, packets):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))

    monkeypatch.setattr(writing.VideoWriter, "write", full)
    result = CliRunner().invoke(main, ["video", str(clip), "--model", video_model_dir, "-o", str(tmp_path / "o.mp4"),
                                       "--start", "1", "--end", "4", "-q"], catch_exceptions=False)
    lines = _error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1 and "No space left on device" in lines[0]
    assert "nothing was kept" in lines[0] and "internal error" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_ctrl_c_says_what_is_kept_and_a_resumed_summary_counts_its_own_frames(
        tmp_path: Path, video_model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import subpixel_cli.video as video

    clip = make_clip(tmp_path / "a.mp4", 60)
    args = [str(clip), "--model", video_model_dir, "-o", str(tmp_path / "out.mp4")]

    def stop(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(video, "join_segments", stop)
        result = CliRunner().invoke(main, ["video", *args], catch_exceptions=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("interrupted")]
    assert result.exit_code == 130 and len(lines) == 1, result.stderr
    assert "3 finished segments kept" in lines[0] and "run the same command again" in lines[0]
    again = CliRunner().invoke(main, ["video", *args], catch_exceptions=False)
    wrote = [line for line in again.stderr.splitlines() if line.startswith("wrote")]
    assert again.exit_code == 0 and len(wrote) == 1 and "60 frames" in wrote[0], again.stderr
    assert "0 upscaled by this run" in wrote[0] and "(0.0 frames/s)" in wrote[0], wrote


def test_piped_output_is_a_header_and_a_final_line(tmp_path: Path, video_model_dir: str) -> None:
    """stderr not a terminal (a pipe, a log file): no blank line where the bar was, and a header
    that says what runs, as `subpixel upscale` gives."""
    clip = make_clip(tmp_path / "a.mp4", 30)
    result = CliRunner().invoke(main, ["video", str(clip), "--model", video_model_dir, "-o", str(tmp_path / "o.mp4")],
                                catch_exceptions=False)
    lines = result.stderr.splitlines()
    assert result.exit_code == 0 and len(lines) == 2 and all(line.strip() for line in lines), result.stderr
    assert lines[0].startswith("espcn-test-x2: ×2") and "a.mp4" in lines[0] and lines[1].startswith("wrote ")


@pytest.mark.parametrize("extra", [[], ["--start", "0.5"]])
def test_progress_ends_at_the_real_frame_count(tmp_path: Path, video_model_dir: str, monkeypatch: pytest.MonkeyPatch,
                                              extra: list[str]) -> None:
    """The total is estimated from the duration before decoding: it showed 922 for 917 frames."""
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler
    from subpixel_cli.video import VideoOptions, reading, upscale_video

    clip = make_clip(tmp_path / "a.mp4", 40)
    opened = reading.FileReader.__init__

    def estimated_too_high(self, *args, **kwargs):  # the total is estimated 5 frames too high
        opened(self, *args, **kwargs)
        self.total = 45

    monkeypatch.setattr(reading.FileReader, "__init__", estimated_too_high)
    calls: list[tuple[int, int | None]] = []
    options = VideoOptions(start=0.5 if extra else None)
    result = upscale_video(Upscaler(load_model(video_model_dir), device="cpu"), clip, tmp_path / "o.mp4", options,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (result.frames, result.frames) and result.frames == (35 if extra else 40)
