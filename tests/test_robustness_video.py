"""Bad videos and interrupted ``subpixel video`` runs: one-line errors, what was decoded of a
truncated file is upscaled and the truncation reported, and kill -9 never leaves a partial file
at the target path."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustness_util import (
    assert_clean_failure,
    cli,
    cli_process,
    count_frames,
    make_video,
    noisy_video,
    on_small_disk,
    records,
    run_and_kill,
)

VIDEO_TEMPORARY = r"^\..+\.[0-9a-f]{8}\.partial(\.\w+)?$"


@pytest.fixture(scope="module")
def model(model_folder) -> str:
    return str(model_folder(2, 1))


def _not_videos(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    made = {}
    for name, data in {"text.mp4": b"this is not a video\n" * 50, "zero.mkv": b"",
                       "noise.mov": np.random.default_rng(0).bytes(20_000)}.items():
        made[name] = folder / name
        made[name].write_bytes(data)
    Image.new("RGB", (32, 24)).save(folder / "still.mp4", format="PNG")
    made["still.mp4"] = folder / "still.mp4"
    made["audio.m4a"] = make_video(folder / "audio.m4a", video=False)
    return made


def test_not_a_video(tmp_path, model):
    for name, path in _not_videos(tmp_path / "in").items():
        target = tmp_path / f"{name}.out.mp4"
        result = cli("video", path, "-o", target, "--model", model)
        assert result.exit_code == 1, (name, result.stderr)
        assert_clean_failure(result.stderr)
        assert [line for line in result.stderr.splitlines() if line.startswith("error:")], name
        assert not target.exists() and not list(tmp_path.glob(".*partial*")), name


@pytest.mark.parametrize("container,options", [("mkv", None), ("mp4", {"movflags": "faststart"})])
def test_truncated_mid_stream_upscales_what_is_there_and_says_so(tmp_path, model, container, options):
    whole = make_video(tmp_path / f"whole.{container}", frames=60, options=options)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = cli("video", cut, "-o", tmp_path / "out.mp4", "--model", model, "--json")
    assert result.exit_code == 1
    (record,) = records(result.stdout)
    assert record["complete"] is False and 0 < record["frames"] < 60
    assert any("truncated" in note for note in record["notes"]) and "truncated" in result.stderr
    assert count_frames(tmp_path / "out.mp4") == record["frames"]  # a complete, playable file
    assert_clean_failure(result.stderr)

    whole_result = cli("video", whole, "-o", tmp_path / "whole_out.mp4", "--model", model, "--json")
    assert whole_result.exit_code == 0 and records(whole_result.stdout)[0]["complete"] is True


def test_truncated_mp4_without_its_index_is_a_clear_error(tmp_path, model):
    data = make_video(tmp_path / "whole.mp4", frames=60).read_bytes()  # moov at the end: lost when cut
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    result = cli("video", cut, "-o", tmp_path / "out.mp4", "--model", model)
    assert result.exit_code == 1 and "cannot read as a video" in result.stderr
    assert_clean_failure(result.stderr)
    assert not (tmp_path / "out.mp4").exists()


def test_no_audio_and_trimmed_to_nothing(tmp_path, model):
    silent = make_video(tmp_path / "silent.mp4", audio=False)
    result = cli("video", silent, "-o", tmp_path / "out.mp4", "--model", model, "--json")
    assert result.exit_code == 0
    (record,) = records(result.stdout)
    assert record["frames"] == 30 and record["audio_streams_copied"] == 0 and record["complete"] is True
    empty = cli("video", silent, "-o", tmp_path / "none.mp4", "--model", model, "--start", "5")
    assert empty.exit_code == 1 and "no video frames" in empty.stderr
    assert_clean_failure(empty.stderr)
    assert not (tmp_path / "none.mp4").exists()


def test_names_that_are_not_utf8(tmp_path, model):
    """Frames in, frames out and video files whose names are not UTF-8 (OpenCV used to crash)."""
    base = os.fsencode(tmp_path)
    frames_in = Path(os.fsdecode(base + b"/frames \xff"))
    try:
        frames_in.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a non-UTF-8 file name here: {exc}")
    for i in range(3):
        Image.new("RGB", (16, 12), (i * 40, 0, 0)).save(frames_in / f"{i}.png")
    video_out = Path(os.fsdecode(base + b"/clip \xfe.mkv"))
    result = cli("video", frames_in, "--fps", "10", "-o", video_out, "--model", model)
    assert result.exit_code == 0, result.stderr
    assert count_frames(video_out) == 3
    frames_out = Path(os.fsdecode(base + b"/out \xfd"))
    result = cli("video", video_out, "--frames-dir", frames_out, "--model", model, "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in frames_out.iterdir()) == [f"frame_{i:06d}.png" for i in (1, 2, 3)]


def _check_video_folder(folder: Path, target: Path, frames: int) -> tuple[int, int]:
    """The target is absent or a complete video; anything else is a temporary. Returns
    (complete targets, temporaries)."""
    complete = temporaries = 0
    for path in folder.iterdir():
        if path == target:
            assert count_frames(path) == frames, "a partial video at the target path"
            complete += 1
        elif path.name == f".{target.name}.work":  # finished segments, kept for a resume
            for part in path.iterdir():
                assert re.match(VIDEO_TEMPORARY, part.name) or re.match(r"^(manifest\.json|segment_\d{5}_\d+\.mp4)$", part.name)
                if part.name.startswith("segment_"):
                    assert count_frames(part) > 0, "a partial segment"
        else:
            assert re.match(VIDEO_TEMPORARY, path.name), f"unexpected file {path.name}"
            temporaries += 1
    return complete, temporaries


def kill_video_runs(tmp_path: Path, model: str, seeds: list[int], work: float | None = None) -> dict[str, int]:
    """Kill runs at random moments of their work (``work`` seconds long; measured when None)."""
    source = make_video(tmp_path / "clip.mkv", frames=90, size=(160, 120))
    out = tmp_path / "out"
    out.mkdir()
    target = out / "clip_x2.mp4"
    args = ["video", source, "-o", target, "--model", model, "--quiet"]
    if work is None:
        killed, work = run_and_kill(args, out, None)
        assert not killed and count_frames(target) == 90
        target.unlink()
    tally = {"kills": 0, "partial_targets": 0}
    for seed in seeds:
        killed, _ = run_and_kill(args, out, random.Random(seed).uniform(0, work))
        tally["kills"] += killed
        complete, _ = _check_video_folder(out, target, 90)
        if complete:
            target.unlink()  # start again, to kill the next run as well
    proc = cli_process(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _check_video_folder(out, target, 90) == (1, 0)  # the re-run cleared the killed runs' temporaries
    return tally


def test_kill_9_never_leaves_a_partial_video(tmp_path, model):
    tally = kill_video_runs(tmp_path, model, [1], work=0.1)  # 90 frames take far longer than 0.1 s
    assert tally["kills"] == 1


@pytest.mark.slow
def test_kill_9_many_times(tmp_path, model):
    tally = kill_video_runs(tmp_path, model, list(range(10, 25)))
    print(f"\nvideo kills: {tally['kills']}")
    assert tally["kills"] >= 10


def check_full_disk_video(proc, listing: list[str], target_name: str) -> str:
    """A video run that filled its disk: exit 1, one plain line, no target and no temporary; the
    work folder kept only with finished segments in it, and the line says which. Returns the line."""
    err = proc.stderr.decode(errors="replace")
    assert_clean_failure(err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, err
    assert "No space left on device" in lines[0] and "internal error" not in lines[0], lines
    assert target_name not in listing and not [n for n in listing if n.endswith(".partial")], listing
    segments = [n for n in listing if "/segment_" in n]
    assert ("resumes from" in lines[0]) == bool(segments) and ("nothing was kept" in lines[0]) == (not listing), lines
    return lines[0]


@pytest.mark.slow  # a tmpfs in a private mount namespace (skipped where that is not allowed)
@pytest.mark.parametrize("size", ["200k", "2m"])
def test_a_full_disk_for_real(tmp_path, model, size):
    clip = noisy_video(tmp_path / "noise.mp4")
    runs = on_small_disk(tmp_path / "disk", size, "video", clip, "-x", "2", "--model", model, "-o",
                         tmp_path / "disk" / "out.mp4", "--json", grow_to="64m")
    if runs is None:
        pytest.skip("cannot mount a tmpfs here")
    line = check_full_disk_video(*runs[0], "out.mp4")
    again, listing = runs[1]
    assert again.returncode == 0 and listing == ["out.mp4"], again.stderr
    record = json.loads(again.stdout)
    assert record["frames"] == 150 and (record["segments_resumed"] > 0) == ("resumes from" in line)


def test_a_folder_as_the_video_output_is_a_clear_usage_error(tmp_path, model):
    """`video -o existing_dir --force` upscaled the whole video, then failed to rename it."""
    clip = make_video(tmp_path / "a.mp4", frames=10)
    (tmp_path / "out").mkdir()
    for force in ([], ["--force"]):
        result = cli("video", clip, "-o", tmp_path / "out", "--model", model, *force)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and "is a folder" in errors[0] and "--frames-dir" in errors[0]
        assert list((tmp_path / "out").iterdir()) == [] and not list(tmp_path.glob(".*"))
