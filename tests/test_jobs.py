"""Planning jobs (inputs to outputs, folders), and the report a batch ends with."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import random_image
from subpixel_cli.errors import EXIT_FAILED, EXIT_OK, UsageError
from subpixel_cli.jobs import OutputPlan, Report, Result, describe_failure, plan_jobs


def _images(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(4, 4)).save(folder / name)


def test_outputs_go_beside_inputs_or_into_a_mirrored_folder_that_the_planner_creates(tmp_path):
    src = tmp_path / "in"
    _images(src, "a.png", "sub/b.jpg")
    (src / "notes.txt").write_text("not a picture")
    beside = plan_jobs([str(src)], OutputPlan(suffix="_x2"))
    assert [(j.source.name, j.target) for j in beside] == [("a.png", src / "a_x2.png")]
    out = tmp_path / "out"
    mirrored = plan_jobs([str(src)], OutputPlan(output=out, suffix="_x2", fmt="webp"), recursive=True)
    assert sorted(j.target for j in mirrored) == [out / "a_x2.webp", out / "sub" / "b_x2.webp"]
    assert (out / "sub").is_dir()  # made by the planner


def test_our_own_outputs_are_not_upscaled_again(tmp_path):
    _images(tmp_path, "a.png", "a_x2.png")
    assert [j.source.name for j in plan_jobs([str(tmp_path)], OutputPlan(suffix="_x2"))] == ["a.png"]


def test_one_output_file_takes_one_input_only(tmp_path):
    _images(tmp_path, "a.png", "b.png")
    [job] = plan_jobs([str(tmp_path / "a.png")], OutputPlan(output=tmp_path / "big.jpg"))
    assert job.target == tmp_path / "big.jpg"
    with pytest.raises(UsageError, match="one output file for several inputs"):
        plan_jobs([str(tmp_path / "*.png")], OutputPlan(output=tmp_path / "big.jpg"))
    with pytest.raises(UsageError, match="no images found"):
        plan_jobs([str(tmp_path / "*.tif")], OutputPlan())


def test_the_report_fails_when_any_file_failed():
    ok = Result(Path("a"), Path("b"), "ok")
    assert Report([ok, Result(Path("c"), None, "skipped")]).return_code == EXIT_OK
    report = Report([ok, Result(Path("d"), None, "failed", "bad")])
    assert report.return_code == EXIT_FAILED and report.count("failed") == 1
    assert ok.as_dict()["status"] == "ok"


def test_failures_are_one_line_with_the_out_of_memory_hint():
    oom = describe_failure(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), Path("x.png"), 256)
    assert oom.startswith("x.png: out of memory") and "--tile 128" in oom
    bug = describe_failure(KeyError("k"), Path("x.png"), 256)
    assert bug.startswith("x.png: internal error: KeyError") and "\n" not in bug


def test_each_run_reports_its_own_jobs(tmp_path):
    """A runner used twice reports each run's files once, not the first run's again."""
    from conftest import make_model

    from subpixel_cli.hub import LoadedModel, ModelInfo
    from subpixel_cli.jobs import Job, Runner
    from subpixel_cli.upscale import Upscaler

    model = make_model(2, 1)
    runner = Runner(Upscaler(LoadedModel(model, ModelInfo("t", model.config)), device="cpu"))
    for name in ("a", "b"):
        Image.fromarray(random_image(12, 10, seed=len(name))).save(tmp_path / f"{name}.png")
    first = runner.run([Job(tmp_path / "a.png", tmp_path / "a_x2.png")])
    second = runner.run([Job(tmp_path / "b.png", tmp_path / "b_x2.png")])
    assert [r.source.name for r in first.results] == ["a.png"] and [r.source.name for r in second.results] == ["b.png"]
    assert first.return_code == second.return_code == 0
