"""`subpixel upscale` and `subpixel models` as a user runs them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

from subpixel_cli.cli import main
from subpixel_cli.registry import packaged_models

from conftest import SAMPLE, random_image


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def save(path, height=16, width=20, mode="RGB", seed=0, **kwargs):
    arr = random_image(height, width, 4, seed=seed)
    img = Image.fromarray(arr, "RGBA")
    img = img.convert(mode) if "A" in mode else img.convert("RGB").convert(mode)
    img.save(path, **kwargs)
    return path


def records(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_upscale_one_file_beside_the_input(tmp_path, model_folder):
    source = save(tmp_path / "pic.jpg")
    result = run("upscale", source, "--model", model_folder(3, 1))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "pic_x3.png") as out:
        assert out.size == (60, 48) and out.mode == "RGB"
    assert "1 upscaled" in result.stderr


def test_piped_output_has_no_blank_lines(tmp_path, model_folder):
    save(tmp_path / "a.png")
    result = run("upscale", tmp_path / "a.png", "--model", model_folder(2, 1))
    lines = result.stderr.splitlines()
    assert result.exit_code == 0 and len(lines) == 2 and all(line.strip() for line in lines), result.stderr


def test_existing_outputs_are_skipped_not_overwritten(tmp_path, model_folder):
    source = save(tmp_path / "pic.png")
    (tmp_path / "pic_x2.png").write_bytes(b"keep me")
    result = run("upscale", source, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0
    assert records(result)[0]["status"] == "skipped"
    assert (tmp_path / "pic_x2.png").read_bytes() == b"keep me"
    result = run("upscale", source, "--model", model_folder(2, 1), "--force", "--json")
    assert records(result)[0]["status"] == "ok"
    assert Image.open(tmp_path / "pic_x2.png").size == (40, 32)


def test_corrupt_files_are_reported_and_the_rest_go_on(tmp_path, model_folder):
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    save(folder / "c.webp")
    result = run("upscale", folder, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    status = {r["input"].rsplit("/", 1)[-1]: r["status"] for r in records(result)}
    assert status == {"a.png": "ok", "b.jpg": "failed", "c.webp": "ok"}
    assert not (folder / "b_x2.png").exists()
    assert not list(folder.glob(".*partial"))
    assert "b.jpg" in result.stderr and "Traceback" not in result.stderr


def test_rerunning_a_folder_does_not_upscale_its_own_outputs(tmp_path, model_folder):
    save(tmp_path / "a.png")
    run("upscale", tmp_path, "--model", model_folder(2, 1))
    result = run("upscale", tmp_path, "--model", model_folder(2, 1), "--json")
    assert [r["status"] for r in records(result)] == ["skipped"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2.png"]


def test_output_folder_mirrors_subfolders_with_recursive(tmp_path, model_folder):
    source = tmp_path / "shots"
    (source / "day" / "one").mkdir(parents=True)
    save(source / "top.png")
    save(source / "day" / "one" / "deep.jpg")
    out = tmp_path / "big"
    result = run("upscale", source, "-o", out, "--recursive", "--model", model_folder(2, 1), "--format", "webp", "--suffix", "")
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["day/one/deep.webp", "top.webp"]
    flat = run("upscale", source, "-o", tmp_path / "flat", "--model", model_folder(2, 1), "--json")
    assert [r["input"].rsplit("/", 1)[-1] for r in records(flat)] == ["top.png"]


def test_one_file_to_a_named_output_and_globs(tmp_path, model_folder):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    result = run("upscale", tmp_path / "a.png", "-o", tmp_path / "named.jpg", "--model", model_folder(2, 1))
    assert result.exit_code == 0 and Image.open(tmp_path / "named.jpg").format == "JPEG"
    result = run("upscale", str(tmp_path / "*.png"), "-o", tmp_path / "out", "--model", model_folder(2, 1), "--json")
    assert sorted(r["output"].rsplit("/", 1)[-1] for r in records(result)) == ["a_x2.png", "b_x2.png"]
    result = run("upscale", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "x.png", "--model", model_folder(2, 1))
    assert result.exit_code == 2 and "one output file for several inputs" in result.stderr


def test_one_output_file_takes_its_format_from_its_suffix(tmp_path, model_folder):
    """-o x.bmp made a folder x.bmp/; -o y.jpg --format png wrote PNG bytes into y.jpg (issue 22.7)."""
    save(tmp_path / "a.png")
    save(tmp_path / "grey.png", mode="L")
    model = model_folder(2, 1)
    for source, name in (("a.png", "x.bmp"), ("grey.png", "g.BMP")):
        result = run("upscale", tmp_path / source, "-o", tmp_path / name, "--model", model)
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / name) as out:
            assert out.format == "BMP" and out.size == (40, 32) and out.mode == ("L" if source == "grey.png" else "RGB")
    result = run("upscale", tmp_path / "a.png", "-o", tmp_path / "y.jpg", "--format", "png", "--model", model)
    assert result.exit_code == 2 and "--format png" in result.stderr and "y.jpg" in result.stderr
    assert not (tmp_path / "y.jpg").exists()
    result = run("upscale", tmp_path / "a.png", "-o", tmp_path / "y.jpg", "--format", "jpg", "--model", model)
    assert result.exit_code == 0 and Image.open(tmp_path / "y.jpg").format == "JPEG"
    result = run("upscale", tmp_path / "a.png", "-o", tmp_path / "z.gif", "--model", model)
    assert result.exit_code == 2 and "z.gif" in result.stderr and not (tmp_path / "z.gif").exists()
    result = run("upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--format", "bmp", "--model", model)
    assert result.exit_code == 0 and Image.open(tmp_path / "out" / "a_x2.bmp").format == "BMP"


def test_a_bmp_output_of_a_picture_with_alpha_fails_that_file(tmp_path, model_folder):
    save(tmp_path / "alpha.png", mode="RGBA")
    result = run("upscale", tmp_path / "alpha.png", "-o", tmp_path / "x.bmp", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1 and "alpha" in records(result)[0]["message"] and not (tmp_path / "x.bmp").exists()


@pytest.mark.parametrize("tile", [None, 16])
def test_an_output_that_appears_meanwhile_is_skipped_not_replaced(tmp_path, model_folder, monkeypatch, tile):
    """Two runs on one output folder replaced each other's files and the second failed 29 of 40
    (issue 22.4). Here another run's file appears at each target while this run reads the
    input: kept as it is, counted as skipped, exit 0 (batched, whole and tiled-streamed writes)."""
    import subpixel_cli.jobs as jobs

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        save(folder / f"{k}.png", 24, 32, seed=k)
    out = tmp_path / "out"
    read = jobs.read_image

    def read_while_another_run_writes(path):
        picture = read(path)
        (out / f"{path.stem}_x2.png").write_bytes(b"the other run's")
        return picture

    monkeypatch.setattr(jobs, "read_image", read_while_another_run_writes)
    result = run("upscale", folder, "-o", out, "--model", model_folder(2, 1), "--json",
                 *(["--tile", tile] if tile else []))
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in records(result)] == ["skipped"] * 3
    assert all("appeared" in r["message"] for r in records(result))
    assert sorted(p.name for p in out.iterdir()) == ["0_x2.png", "1_x2.png", "2_x2.png"]
    assert all(p.read_bytes() == b"the other run's" for p in out.iterdir())


@pytest.mark.parametrize("mode,expected", [("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("P", "RGB"), ("RGB", "RGB")])
def test_every_image_mode_keeps_its_layout(tmp_path, model_folder, mode, expected):
    source = save(tmp_path / "in.png", mode=mode)
    result = run("upscale", source, "--model", model_folder(2, 3), "--json")
    assert result.exit_code == 0
    with Image.open(tmp_path / "in_x2.png") as out:
        assert out.mode == expected and out.size == (40, 32)


def test_16bit_png_stays_16bit(tmp_path, model_folder):
    from subpixel_cli.images import Picture, read_image, write_image

    write_image(tmp_path / "deep.png", Picture(random_image(10, 12, 3, np.uint16)))
    assert run("upscale", tmp_path / "deep.png", "--model", model_folder(2, 1)).exit_code == 0
    out = read_image(tmp_path / "deep_x2.png")
    assert out.bit_depth == 16 and out.pixels.shape == (20, 24, 3)


def test_icc_and_exif_reach_the_output_and_orientation_is_applied(tmp_path, model_folder):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "TestCam"  # Make
    save(tmp_path / "cam.jpg", height=16, width=20, icc_profile=icc, exif=exif)
    assert run("upscale", tmp_path / "cam.jpg", "--model", model_folder(2, 1)).exit_code == 0
    with Image.open(tmp_path / "cam_x2.png") as out:
        assert out.size == (32, 40)  # portrait now: the orientation was applied
        assert out.info["icc_profile"] == icc
        assert out.getexif().get(0x010F) == "TestCam" and out.getexif().get(0x0112, 1) == 1


def test_big_images_are_tiled_and_streamed_with_the_same_result(tmp_path, model_folder):
    source = save(tmp_path / "wide.png", height=90, width=120)
    out_a, out_b = tmp_path / "a.png", tmp_path / "b.png"
    assert run("upscale", source, "-o", out_a, "--model", model_folder(2, 1)).exit_code == 0
    assert run("upscale", source, "-o", out_b, "--model", model_folder(2, 1), "--tile", "32").exit_code == 0
    a, b = np.asarray(Image.open(out_a)).astype(int), np.asarray(Image.open(out_b)).astype(int)
    assert a.shape == (180, 240, 3) and np.abs(a - b).max() <= 1


def test_unknown_model_lists_the_valid_names(tmp_path):
    save(tmp_path / "a.png")
    result = run("upscale", tmp_path / "a.png", "--model", "espcn-x77")
    assert result.exit_code == 2
    assert "unknown model 'espcn-x77'" in result.stderr
    for name in packaged_models():
        assert name in result.stderr
    assert not (tmp_path / "a_x4.png").exists()


def test_usage_errors_exit_2(tmp_path, model_folder):
    assert run("upscale", tmp_path / "missing-folder" / "*.png", "--model", model_folder(2, 1)).exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("upscale", empty, "--model", model_folder(2, 1))
    assert result.exit_code == 2 and "no images found" in result.stderr
    assert run("upscale", tmp_path, "--tile", "2").exit_code == 2
    assert run("upscale", tmp_path, "--model", model_folder(2, 1), "-x", "3").exit_code == 2


def test_a_missing_input_file_fails_that_file(tmp_path, model_folder):
    save(tmp_path / "a.png")
    result = run("upscale", tmp_path / "a.png", tmp_path / "nope.png", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    assert sorted((r["input"].rsplit("/", 1)[-1], r["status"]) for r in records(result)) == [("a.png", "ok"), ("nope.png", "failed")]


def test_help_documents_exit_codes():
    result = run("upscale", "--help")
    assert result.exit_code == 0 and "Exit codes" in result.output
    assert "Exit codes" in run("--help").output


def test_models_lists_the_packaged_models():
    result = run("models", "--json")
    assert result.exit_code == 0
    listed = {r["name"]: r for r in records(result)}
    assert listed.keys() == packaged_models().keys()
    for name, info in packaged_models().items():
        assert listed[name]["scale"] == info.scale
        assert listed[name]["training"]["steps"] > 0 and listed[name]["license"]  # the card's record
    table = run("models")
    assert table.exit_code == 0 and "packaged models" in table.output


@pytest.mark.skipif(not packaged_models(), reason="no packaged weights in this checkout")
def test_the_readme_sample_with_the_packaged_default(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "astronaut.jpg")
    result = run("upscale", tmp_path / "astronaut.jpg", "-x", "4", "--quiet")
    assert result.exit_code == 0
    assert Image.open(tmp_path / "astronaut_x4.png").size == (1024, 1024)
