"""Sharded upscale: the pixel-balanced split, `--shard K/N`, and torchrun processes with one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from subpixel_cli import runtime
from subpixel_cli.cli import main
from subpixel_cli.errors import UsageError
from subpixel_cli.jobs import Job, Report, Result
from subpixel_cli.shard import Group, Shard, gather, group_jobs, job_pixels, joined, parse_shard, run_part, shard_jobs, split

from conftest import random_image

ROOT = Path(__file__).resolve().parents[1]


def _jobs(*names: str) -> list[Job]:
    return [Job(Path(f"in/{n}.png"), Path(f"out/{n}_x2.png")) for n in names]


def _folder(path: Path, sizes: list[tuple[int, int]], corrupt: str | None = None) -> Path:
    path.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(random_image(h, w, seed=i)).save(path / f"p{i:02d}.png")
    if corrupt:
        (path / corrupt).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return path


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


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
        def run(self, todo, report):
            report.results.append(Result(todo[0].source, todo[0].target, "ok"))
            raise RuntimeError("lost the device\nmore")

    report = run_part(Stops(), jobs, Group(rank=3, world=4))
    assert [r.status for r in report.results] == ["ok", "failed", "failed"]
    assert report.results[1].message == "in/b.png: not done: process 3 stopped (RuntimeError: lost the device)"
    assert report.return_code == 1


def test_a_group_scatters_parts_and_gathers_results_in_input_order(tmp_path, monkeypatch):
    """The torchrun path in one process (a group of one): a group's part of ``--shard K/N`` is
    that shard's, and the gathered report follows the input order."""
    for i, (w, h) in enumerate([(8, 8), (40, 40), (16, 16), (30, 30)]):  # p1 alone, the rest together
        Image.fromarray(random_image(h, w, seed=i)).save(tmp_path / f"p{i}.png")
    jobs = [Job(tmp_path / f"p{i}.png", tmp_path / f"o{i}.png") for i in range(4)]
    monkeypatch.setenv("WORLD_SIZE", "1")
    with joined() as group:
        assert group is None  # one process: no group, nothing to join
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")  # joined() sees a world; the caller's group is kept
        with joined() as group:
            assert group == Group(0, 1, group.handle) and group.handle is not None
            assert group_jobs(group, jobs, Shard(1, 2)) == shard_jobs(jobs, Shard(1, 2)) == [jobs[0], jobs[2], jobs[3]]
            assert group_jobs(group, jobs) == jobs
            shuffled = Report([Result(j.source, j.target, "ok") for j in (jobs[2], jobs[0], jobs[3], jobs[1])])
            assert [r.source for r in gather(group, jobs, shuffled).results] == [j.source for j in jobs]
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


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


# --- --shard K/N ------------------------------------------------------------------------------


def test_shards_cover_every_file_once_and_equal_a_single_run(tmp_path, model_folder):
    sizes = [(40, 32), (8, 8), (8, 8), (24, 16), (16, 16), (8, 12), (20, 20)]
    source = _folder(tmp_path / "in", sizes, corrupt="zz.jpg")
    model = model_folder(2, 1)
    single = _run("upscale", source, "-o", tmp_path / "single", "--model", model)
    assert single.exit_code == 1
    seen = []
    for k in (1, 2, 3):
        result = _run("upscale", source, "-o", tmp_path / "sharded", "--model", model, "--shard", f"{k}/3", "--json")
        records = _records(result.stdout)
        assert result.exit_code == (1 if any(r["status"] == "failed" for r in records) else 0)
        assert records and f"of 8 file(s) (shard {k}/3)" in result.stderr
        seen += [r["input"] for r in records]
    assert sorted(seen) == sorted(str(p) for p in source.iterdir())  # each input once
    assert _files(tmp_path / "sharded") == _files(tmp_path / "single")


def test_a_rerun_of_a_shard_writes_only_what_is_missing(tmp_path, model_folder):
    source = _folder(tmp_path / "in", [(16, 16)] * 6)
    model = model_folder(2, 1)
    out = tmp_path / "out"
    for k in (1, 2):
        assert _run("upscale", source, "-o", out, "--model", model, "--shard", f"{k}/2", "-q").exit_code == 0
    (out / "p01_x2.png").unlink()
    (out / "p04_x2.png").unlink()
    statuses = {}
    for k in (1, 2):
        result = _run("upscale", source, "-o", out, "--model", model, "--shard", f"{k}/2", "--json")
        assert result.exit_code == 0
        statuses.update({Path(r["input"]).name: r["status"] for r in _records(result.stdout)})
    assert {name for name, status in statuses.items() if status == "ok"} == {"p01.png", "p04.png"}
    assert sorted(statuses.values()).count("skipped") == 4


def test_a_bad_shard_is_a_usage_error(tmp_path, model_folder):
    source = _folder(tmp_path / "in", [(8, 8)])
    result = _run("upscale", source, "--model", model_folder(2, 1), "--shard", "3/2")
    assert result.exit_code == 2 and "--shard 3/2" in result.stderr


# --- torchrun ---------------------------------------------------------------------------------


def _torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           "-m", "subpixel_cli", "upscale", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def _summaries(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " upscaled" in line]


def test_torchrun_processes_write_what_one_process_writes_and_report_once(tmp_path, model_folder):
    source = _folder(tmp_path / "in", [(40, 32), (8, 8), (24, 16), (16, 16), (8, 12)])
    model = model_folder(2, 1)
    assert _run("upscale", source, "-o", tmp_path / "single", "--model", model, "-q").exit_code == 0
    run = _torchrun(source, "-o", tmp_path / "two", "--model", model, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _summaries(run.stderr) == ["5 upscaled in " + _summaries(run.stderr)[0].split(" in ")[1]]
    assert "in 2 processes" in run.stderr
    records = _records(run.stdout)
    assert [Path(r["input"]).name for r in records] == sorted(p.name for p in source.iterdir())  # once, in order
    assert _files(tmp_path / "two") == _files(tmp_path / "single")


def test_torchrun_with_a_corrupt_input_fails_it_once_and_keeps_the_rest(tmp_path, model_folder):
    source = _folder(tmp_path / "in", [(16, 16)] * 5, corrupt="bad.jpg")
    model = model_folder(2, 1)
    out = tmp_path / "out"
    run = _torchrun(source, "-o", out, "--model", model)
    assert run.returncode == 1, run.stderr[-3000:]
    assert sum("failed:" in line and "bad.jpg" in line for line in run.stderr.splitlines()) == 1
    assert _summaries(run.stderr) == [line for line in run.stderr.splitlines() if "5 upscaled, 1 failed" in line]
    assert sorted(p.name for p in out.iterdir()) == [f"p{i:02d}_x2.png" for i in range(5)]
    (out / "p03_x2.png").unlink()
    rerun = _torchrun(source, "-o", out, "--model", model, "--json")
    statuses = {Path(r["input"]).name: r["status"] for r in _records(rerun.stdout)}
    assert statuses == {"bad.jpg": "failed", "p03.png": "ok", **{f"p{i:02d}.png": "skipped" for i in (0, 1, 2, 4)}}
    assert len(_summaries(rerun.stderr)) == 1 and "1 upscaled, 4 skipped" in rerun.stderr
