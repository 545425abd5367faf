"""Sharded upscale: the pixel-balanced split and the cores each process gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from subpixel_cli import runtime
from subpixel_cli.errors import UsageError
from subpixel_cli.jobs import Job, Report, Result
from subpixel_cli.shard import Shard, job_pixels, parse_shard, run_part, split

from conftest import random_image

def _jobs(*names: str) -> list[Job]:
    return [Job(Path(f"in/{n}.png"), Path(f"out/{n}_x2.png")) for n in names]


# --- the split --------------------------------------------------------------------------------


def test_parse_shard_is_one_based_and_checked():
    assert parse_shard("2/4") == Shard(1, 4) and str(parse_shard("2/4")) == "2/4"
    for bad in ("0/4", "5/4", "2", "a/b", "-1/2", "1/0"):
        with pytest.raises(UsageError, match="K/N"):
            parse_shard(bad)


def test_split_balances_pixels_not_counts():
    jobs = _jobs("huge", "a", "b", "c", "d", "e")
    pixels = [4000 * 4000] + [100 * 100] * 5
    parts = split(jobs, pixels, 2)
    assert parts == [[0], [1, 2, 3, 4, 5]]  # the huge one alone; the small ones share the other part


def test_split_is_greedy_on_the_least_loaded_part_with_ties_to_the_lower_part():
    jobs = _jobs("a", "b", "c", "d", "e")
    parts = split(jobs, [5, 4, 3, 3, 3], 2)
    assert parts == [[0, 3], [1, 2, 4]]  # 5 → 0; 4 → 1; 3 (c) → 1 (4 < 5); 3 (d) → 0 (5 < 7); 3 (e) → 1 (7 < 8)
    assert split(jobs, [1] * 5, 3) == [[0, 3], [1, 4], [2]]  # equal sizes: by name, round the parts


def test_split_covers_every_job_once_and_does_not_depend_on_order():
    jobs = _jobs(*(f"f{i}" for i in range(23)))
    pixels = [(i * 7919) % 101 + 1 for i in range(23)]
    parts = split(jobs, pixels, 4)
    assert sorted(i for part in parts for i in part) == list(range(23))
    assert all(part == sorted(part) for part in parts)
    reordered = list(reversed(jobs))
    back = split(reordered, list(reversed(pixels)), 4)
    assert [{jobs[i].source for i in part} for part in parts] == [{reordered[i].source for i in part} for part in back]
    assert split(jobs, pixels, 1) == [list(range(23))]
    assert split(jobs[:2], pixels[:2], 4)[2:] == [[], []]  # more parts than jobs: some are empty


def test_jobs_that_write_one_output_stay_in_one_part():
    jobs = [Job(Path("a/x.png"), Path("out/x_x2.png")), Job(Path("b/y.png"), Path("out/y_x2.png")),
            Job(Path("b/x.png"), Path("out/x_x2.png"))]
    parts = split(jobs, [10, 10, 10], 2)
    assert [0, 2] in parts and [1] in parts


def test_unreadable_inputs_count_as_small(tmp_path):
    Image.fromarray(random_image(30, 40)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    jobs = [Job(tmp_path / "ok.png", tmp_path / "o1.png"), Job(tmp_path / "bad.png", tmp_path / "o2.png"),
            Job(tmp_path / "missing.png", tmp_path / "o3.png")]
    assert job_pixels(jobs) == [1200, 1, 1]


def test_an_error_that_stops_a_process_fails_the_files_it_did_not_reach():
    jobs = _jobs("a", "b", "c")

    class Stops:
        report = Report()

        def run(self, todo):
            self.report.results.append(Result(todo[0].source, todo[0].target, "ok"))
            raise RuntimeError("lost the device\nmore")

    report = run_part(Stops(), jobs, rank=3)
    assert [r.status for r in report.results] == ["ok", "failed", "failed"]
    assert report.results[1].message == "in/b.png: not done: process 3 stopped (RuntimeError: lost the device)"
    assert report.return_code == 1


def test_processes_on_one_machine_share_its_cores(monkeypatch):
    calls = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "cpu_quota", lambda: 8)
    monkeypatch.setattr(runtime.torch, "get_num_threads", lambda: 16)
    monkeypatch.setattr(runtime.torch, "set_num_threads", calls.append)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    runtime.limit_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    runtime.limit_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    runtime.limit_threads()
    assert calls == [2, 1]
