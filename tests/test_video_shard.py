"""``subpixel video`` under torchrun: the segments spread over the processes, one file, one report.

Clips as in test_video_resume.py: 64×48, 10 fps, a keyframe every 20 frames (2 s segments), AAC.
The torchrun runs are two CPU processes over gloo, started in a subprocess as in test_shard.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from click.testing import CliRunner

from subpixel_cli.cli import main
from subpixel_cli.errors import SubpixelError
from subpixel_cli.registry import load_model
from subpixel_cli.shard import Group
from subpixel_cli.upscale import Upscaler
from subpixel_cli.video import upscale_video
from subpixel_cli.video.sharded import split_segments

from test_video_resume import leave_work, make_clip, rgb_frames, run_json, timing

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "subpixel_cli", "video", *map(str, args), "--json", "-q"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)


def _result(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, run.stdout  # one report, from rank 0
    return json.loads(lines[0])


def test_split_is_contiguous_and_balanced_by_frames():
    assert split_segments([20, 20, 20, 20], [0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert split_segments([60, 20, 20, 20], [0, 1, 2, 3], 2) == [[0], [1, 2, 3]]
    assert split_segments([20, 20, 20, 20], [1, 3], 2) == [[1], [3]]  # a resume splits only what is left
    assert split_segments([20, 0], [0, 1], 2) == [[0], [1]]  # a last segment of unknown length counts as 1
    assert split_segments([20, 20, 20], [0, 1, 2], 2) == [[0, 1], [2]]  # a middle on the cut: the lower share
    assert split_segments([20], [0], 2) == [[0], []]
    assert split_segments([20, 20], [], 2) == [[], []]


def test_two_processes_write_one_file_equal_to_one_pass(tmp_path: Path, video_model_dir: str) -> None:
    clip = make_clip(tmp_path / "a.mp4", 80)
    one = run_json(str(clip), "--model", video_model_dir, "-o", str(tmp_path / "one.mkv"), "--lossless",
                   "--end", "1000")  # a window: the single pass
    result = _result(_torchrun(clip, "--model", video_model_dir, "-o", tmp_path / "two.mkv", "--lossless"))
    assert (result["segments"], result["segments_per_process"]) == (4, [2, 2])  # both processes did half
    assert result["frames"] == result["frames_upscaled"] == one["frames"] == 80
    assert result["codec"] == "ffv1" and result["audio_streams_copied"] == 1
    assert timing(tmp_path / "two.mkv") == timing(tmp_path / "one.mkv")
    assert all(np.array_equal(a, b) for a, b in zip(rgb_frames(tmp_path / "two.mkv"), rgb_frames(tmp_path / "one.mkv")))
    assert not (tmp_path / ".two.mkv.work").exists() and not list(tmp_path.glob(".*.partial"))


def test_torchrun_resumes_whichever_process_gets_the_segments(tmp_path: Path, video_model_dir: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path / "a.mp4", 80)
    target, work = tmp_path / "out.mp4", tmp_path / ".out.mp4.work"
    args = (str(clip), "--model", video_model_dir, "-o", str(target))
    leave_work(monkeypatch, *args)  # one process made all 4 segments, and stopped before the join
    for k in (0, 2):
        next(work.glob(f"segment_{k:05d}_*.mp4")).unlink()
    result = _result(_torchrun(*args))
    assert (result["segments_resumed"], result["frames_upscaled"], result["frames"]) == (2, 40, 80)
    assert result["segments_per_process"] == [1, 1] and "resuming: 2 of 4 segments done" in result["notes"]
    pts, duration, audio = timing(target)
    assert pts == sorted(pts) and len(pts) == 80 and abs(duration - 8) < 0.2 and audio > 0
    assert not work.exists()

    target.unlink()
    leave_work(monkeypatch, *args)
    changed = _result(_torchrun(*args, "--crf", "30"))  # a changed option: not resumed
    assert (changed["segments_resumed"], changed["frames_upscaled"], changed["segments_per_process"]) == (0, 80, [2, 2])
    assert any(note.startswith("not resuming") for note in changed["notes"])


@pytest.fixture
def group_of_one(tmp_path: Path):
    """torch.distributed with one process, as torchrun would set it up, for the group code paths."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class _Fails:
    """An upscaler that raises on its ``fail_at``-th batch."""

    def __init__(self, upscaler: Upscaler, fail_at: int) -> None:
        self.upscaler, self.fail_at, self.batches = upscaler, fail_at, 0
        self.scale, self.precision = upscaler.scale, upscaler.precision  # the same manifest as ``upscaler``
        self.batch_size = upscaler.batch_size

    @property
    def takes_i420(self) -> bool:
        return self.upscaler.takes_i420

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        self._count()
        return self.upscaler.upscale_batch(frames)

    def upscale_i420(self, frames: np.ndarray) -> np.ndarray:
        self._count()
        return self.upscaler.upscale_i420(frames)

    def _count(self) -> None:
        self.batches += 1
        if self.batches == self.fail_at:
            raise RuntimeError("the device went away")

    def weights_sha256(self) -> str:
        return self.upscaler.weights_sha256()


def test_a_failed_process_keeps_the_finished_segments(tmp_path: Path, video_model_dir: str, group_of_one: None) -> None:
    clip = make_clip(tmp_path / "a.mp4", 80)
    target, work = tmp_path / "out.mp4", tmp_path / ".out.mp4.work"
    upscaler = Upscaler(load_model(video_model_dir), device="cpu")
    group = Group(0, 1)
    with pytest.raises(SubpixelError, match=r"process 0: RuntimeError: the device went away; [12] of 4 segments are "
                                            r"finished and kept in .*\.out\.mp4\.work: run the same command again"):
        # batch 11 is in segment 2: segment 0 is written by then, segment 1 perhaps
        upscale_video(_Fails(upscaler, 11), clip, target, group=group)
    kept = len(list(work.glob("segment_*_*.mp4")))
    assert kept in (1, 2) and not target.exists()
    result = upscale_video(upscaler, clip, target, group=group)
    assert (result.segments_resumed, result.frames_upscaled) == (kept, 80 - 20 * kept)
    assert result.segments_per_process == [4 - kept]
    assert not work.exists()


def test_an_output_not_in_segments_is_made_by_rank_0_alone(tmp_path: Path, video_model_dir: str,
                                                           group_of_one: None) -> None:
    clip = make_clip(tmp_path / "a.mp4", 20)
    upscaler = Upscaler(load_model(video_model_dir), device="cpu")
    assert upscale_video(upscaler, clip, tmp_path / "frames", frames_dir=True, group=Group(1, 2)) is None
    assert not (tmp_path / "frames").exists()  # another rank: past the barrier, nothing written
    result = upscale_video(upscaler, clip, tmp_path / "frames", frames_dir=True, group=Group(0, 2))
    assert result.frames == 20 and result.segments_per_process is None
    assert any("process 0 did it alone" in note for note in result.notes)


def test_one_process_reports_no_processes(tmp_path: Path, video_model_dir: str) -> None:
    clip = make_clip(tmp_path / "a.mp4", 20)
    out = CliRunner().invoke(main, ["video", str(clip), "--model", video_model_dir, "-o", str(tmp_path / "o.mp4"),
                                    "--json", "-q"], catch_exceptions=False)
    assert out.exit_code == 0 and json.loads(out.stdout)["segments_per_process"] is None
