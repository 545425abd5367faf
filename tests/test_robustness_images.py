"""Bad images never cost the user anything: each one ends in a one-line failure for that file (or
a correct output), the rest of the batch goes on, and nothing partial is left at a target path.

Run the long fuzz with ``pytest -m slow tests/test_robustness_images.py``.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import subpixel_cli.jobs as jobs_module
from subpixel_cli.errors import InputError
from subpixel_cli.images import Picture, read_image, write_image
from subpixel_cli.jobs import Job, Runner
from subpixel_cli.registry import load_model
from subpixel_cli.upscale import Upscaler

from conftest import random_image
from robustness_util import (
    assert_clean_failure,
    check_picture_file,
    cli,
    cli_process,
    encoded,
    mutate,
    noise,
    partials,
    records,
    save,
    short_png,
    without_dac_override,
)


@pytest.fixture(autouse=True)
def _keep_pillow_limit(monkeypatch):
    """``--max-pixels`` sets Pillow's global limit; put it back after each test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A 1 kB PNG whose header claims side×side pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (side + 1) * 4)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _truncated(path: Path, fmt: str) -> Path:
    data = encoded(fmt, 40, 48, "RGB")
    path.write_bytes(data[: len(data) // 2])
    return path


# Found by the fuzzer: a TIFF directory without width and height (Pillow raised TypeError).
TIFF_WITHOUT_DIMENSIONS = bytes.fromhex(
    "49492a0008000000090000010400010000002100000001010400010000000600000002010300010000001000"
    "000003010300010000000100000006010300010000000100000011010400010000007a000000160104000100"
    "00000600000017010400010000008c0100001c0103000100000001000000000082") + bytes(300)

BAD_FILES = {
    "nodims.tiff": lambda p: p.write_bytes(TIFF_WITHOUT_DIMENSIONS),
    "zero.png": lambda p: p.write_bytes(b""),
    "truncated.png": lambda p: _truncated(p, "PNG"),
    "truncated.jpg": lambda p: _truncated(p, "JPEG"),
    "truncated.webp": lambda p: _truncated(p, "WEBP"),
    "text.png": lambda p: p.write_text("not a picture\n"),
    "text.jpg": lambda p: p.write_text("Lorem ipsum " * 100),
    "junk.tiff": lambda p: p.write_bytes(os.urandom(3000)),
    "bomb.png": bomb_png,
    "short.png": short_png,
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_fails_alone_in_one_line(tmp_path, model_folder, name):
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a_good.png")
    BAD_FILES[name](folder / name)
    save(folder / "z_good.jpg")
    result = cli("upscale", folder, "-o", tmp_path / "out", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    status = {Path(r["input"]).name: (r["status"], r["message"]) for r in records(result.stdout)}
    assert status["a_good.png"][0] == status["z_good.jpg"][0] == "ok"
    state, message = status[name]
    assert state == "failed" and name in message and "\n" not in message
    assert_clean_failure(result.stderr)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good_x2.png", "z_good_x2.png"]


def test_messages_say_what_is_wrong(tmp_path, model_folder):
    for name, make in BAD_FILES.items():
        make(tmp_path / name)
    result = cli("upscale", *(tmp_path / n for n in BAD_FILES), "-o", tmp_path / "out", "--model", model_folder(2, 1), "--json")
    messages = {Path(r["input"]).name: r["message"] for r in records(result.stdout)}
    assert "not an image" in messages["zero.png"] and "not an image" in messages["text.png"]
    assert "truncated" in messages["truncated.png"] and "truncated" in messages["truncated.jpg"]
    assert "decompression bomb" in messages["bomb.png"] and "--max-pixels" in messages["bomb.png"]
    assert "corrupt or truncated" in messages["nodims.tiff"]
    assert "corrupt or truncated" in messages["short.png"] and "image data" in messages["short.png"]
    assert not any("internal error" in m for m in messages.values())
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_huge_png_with_little_data_fails_before_it_is_decoded(tmp_path):
    """9000×9000 in the header, 10 rows of data: refused from its data's size, not decoded."""
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(short_png(tmp_path / "short.png", side=9000))


def _interlaced_png(path: Path, pixels: np.ndarray) -> Path:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow writes none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b""
    for row, column, row_step, column_step in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                                               (0, 1, 2, 2), (1, 0, 2, 1)):
        part = pixels[row::row_step, column::column_step]
        if part.size:
            raw += b"".join(b"\0" + line.tobytes() for line in part)
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 2, 0, 0, 1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("height,width", [(23, 37), (3, 5), (1, 1), (9, 2)])
def test_an_interlaced_png_is_read_whole(tmp_path, height, width):
    """Adam7 PNGs hold their rows in seven passes: the check of the data's size counts them all."""
    pixels = random_image(height, width)
    assert (read_image(_interlaced_png(tmp_path / "i.png", pixels)).pixels == pixels).all()


def test_wrong_extension_is_read_by_content(tmp_path, model_folder):
    png_named_jpg = tmp_path / "really_a_png.jpg"
    save(png_named_jpg, format="PNG")
    result = cli("upscale", png_named_jpg, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0 and records(result.stdout)[0]["status"] == "ok"
    check_picture_file(tmp_path / "really_a_png_x2.png", (40, 32))


def test_a_directory_named_like_an_image(tmp_path, model_folder):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "looks.png").mkdir()
    save(tmp_path / "in" / "real.png")
    result = cli("upscale", tmp_path / "in", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0
    assert [Path(r["input"]).name for r in records(result.stdout)] == ["real.png"]
    alone = cli("upscale", tmp_path / "in" / "looks.png", "--model", model_folder(2, 1))
    assert alone.exit_code == 2 and "no images found" in alone.stderr
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path / "in" / "looks.png")


@pytest.mark.parametrize("height,width", [(1, 1), (1, 9), (9, 1), (2, 2), (1, 70), (70, 1)])
@pytest.mark.parametrize("scale,channels", [(2, 1), (3, 3)])
def test_tiny_and_thin_images(tmp_path, model_folder, height, width, scale, channels):
    Image.fromarray(random_image(height, width)).save(tmp_path / "thin.png")
    for tile in ([], ["--tile", "8"]):
        result = cli("upscale", tmp_path / "thin.png", "--model", model_folder(scale, channels), "--force", *tile)
        assert result.exit_code == 0, result.stderr
        check_picture_file(tmp_path / f"thin_x{scale}.png", (width * scale, height * scale))


@pytest.mark.parametrize("fmt,side", [("webp", 16_383), ("jpg", 65_500)])
def test_an_output_too_wide_for_its_format_fails_before_the_work(tmp_path, model_folder, fmt, side):
    """Found by the long fuzz: WebP and JPEG encoders refuse sides over their limits."""
    width = side // 2 + 1  # ×2 is one pixel past the limit
    Image.fromarray(random_image(1, width)).save(tmp_path / "strip.png")
    result = cli("upscale", tmp_path / "strip.png", "--model", model_folder(2, 1), "--format", fmt, "--json")
    assert result.exit_code == 1
    (record,) = records(result.stdout)
    assert record["status"] == "failed" and f"{side:,} pixels a side" in record["message"] and "png" in record["message"]
    assert_clean_failure(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["strip.png"]  # nothing written, nothing partial
    result = cli("upscale", tmp_path / "strip.png", "--model", model_folder(2, 1), "--format", "png")
    assert result.exit_code == 0
    check_picture_file(tmp_path / "strip_x2.png", (2 * width, 2))


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(tmp_path, model_folder, fmt):
    source = save(tmp_path / f"print.{fmt.lower()}", 12, 10, mode="CMYK", format=fmt)
    result = cli("upscale", source, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0 and records(result.stdout)[0]["mode"] == "RGB"
    with Image.open(tmp_path / "print_x2.png") as out:
        assert out.mode == "RGB" and out.size == (20, 24)


def test_16bit_grey_stays_16bit_grey(tmp_path, model_folder):
    grey = (random_image(10, 14, 1, np.uint16)[..., 0]).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    result = cli("upscale", tmp_path / "deep.png", "--model", model_folder(2, 3), "--json")
    assert result.exit_code == 0 and records(result.stdout)[0]["mode"] == "L;16"
    out = read_image(tmp_path / "deep_x2.png")
    assert out.bit_depth == 16 and out.pixels.shape == (20, 28, 1)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animations_use_their_first_frame_and_say_so(tmp_path, model_folder, fmt):
    frames = [Image.fromarray(random_image(12, 16, seed=s)) for s in range(3)]
    frames[0].save(tmp_path / f"anim.{fmt}", save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(tmp_path / f"anim.{fmt}") as img:
        img.seek(0)
        img.convert("RGB").save(tmp_path / "first.png")
    result = cli("upscale", tmp_path / f"anim.{fmt}", tmp_path / "first.png", "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 0
    by_name = {Path(r["input"]).name: r for r in records(result.stdout)}
    assert by_name[f"anim.{fmt}"]["frames"] == 3 and "first of its 3 frames" in by_name[f"anim.{fmt}"]["message"]
    assert by_name["first.png"]["frames"] == 1 and by_name["first.png"]["message"] is None
    assert "first of its 3 frames" in result.stderr
    a, b = read_image(tmp_path / "anim_x2.png").pixels, read_image(tmp_path / "first_x2.png").pixels
    assert np.array_equal(a, b)


def test_decompression_bomb_guard_and_the_option_to_raise_it(tmp_path, model_folder):
    bomb = bomb_png(tmp_path / "bomb.png")
    result = cli("upscale", bomb, "--model", model_folder(2, 1))
    assert result.exit_code == 1 and "decompression bomb" in result.stderr and "--max-pixels" in result.stderr
    assert_clean_failure(result.stderr)
    assert not (tmp_path / "bomb_x2.png").exists()

    big = save(tmp_path / "big.png", 30, 40)  # 1200 pixels
    lowered = cli("upscale", big, "--model", model_folder(2, 1), "--max-pixels", "1000")
    assert lowered.exit_code == 1 and "1,200 pixels, over the limit of 1,000" in lowered.stderr
    Image.MAX_IMAGE_PIXELS = 500  # as if Pillow's default were this small
    refused = cli("upscale", big, "--model", model_folder(2, 1))
    assert refused.exit_code == 1 and "decompression bomb" in refused.stderr
    raised = cli("upscale", big, "--model", model_folder(2, 1), "--max-pixels", "2000")
    assert raised.exit_code == 0
    Image.MAX_IMAGE_PIXELS = None
    check_picture_file(tmp_path / "big_x2.png", (80, 60))


def run_without_file_permission_override(*args: object) -> tuple[int, str, str]:
    """``subpixel ARGS`` as a process that file permissions bind: in-process for other users,
    and for root as a child without CAP_DAC_OVERRIDE (skipped where that cannot be dropped).
    Returns the exit code, stdout and stderr."""
    if os.geteuid() != 0:
        result = cli(*args)
        return result.exit_code, result.stdout, result.stderr
    try:
        proc = cli_process(*args, preexec_fn=without_dac_override)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {exc}")
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_unreadable_file(tmp_path, model_folder):
    """chmod 000. Root reads anything, so as root the command runs without CAP_DAC_OVERRIDE."""
    save(tmp_path / "ok.png")
    locked = save(tmp_path / "locked.png")
    locked.chmod(0)
    try:
        code, out, err = run_without_file_permission_override("upscale", tmp_path, "--model", model_folder(2, 1), "--json")
    finally:
        locked.chmod(0o644)
    assert code == 1
    status = {Path(r["input"]).name: (r["status"], r["message"]) for r in records(out)}
    assert status["ok.png"][0] == "ok"
    assert status["locked.png"] == ("failed", f"{locked}: permission denied")
    assert_clean_failure(err)
    assert not (tmp_path / "locked_x2.png").exists()


def test_names_that_are_not_utf8(tmp_path, model_folder):
    folder = os.fsencode(tmp_path)
    good, bad = folder + b"/caf\xe9 \xff.png", folder + b"/\xfe[bold]junk[red].png"
    try:
        save(Path(os.fsdecode(good)))
        Path(os.fsdecode(bad)).write_bytes(b"junk")
    except OSError as exc:  # filesystems that insist on UTF-8 names (macOS)
        pytest.skip(f"cannot make a non-UTF-8 file name here: {exc}")
    result = cli("upscale", tmp_path, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    found = {r["input"]: r for r in records(result.stdout)}
    assert found[os.fsdecode(good)]["status"] == "ok"
    assert os.path.exists(os.fsencode(found[os.fsdecode(good)]["output"]))  # the JSON names the real file
    assert found[os.fsdecode(bad)]["status"] == "failed"
    assert "[bold]junk[red].png: not an image" in result.stderr  # printed as is, not as markup
    assert_clean_failure(result.stderr)


def test_an_unexpected_error_fails_one_file_and_the_batch_goes_on(tmp_path, model_folder, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        save(tmp_path / name)
    real = jobs_module.read_image

    def flaky(path):
        if Path(path).name == "b.png":
            raise ZeroDivisionError("a bug in a decoder")
        return real(path)

    monkeypatch.setattr(jobs_module, "read_image", flaky)
    result = cli("upscale", tmp_path, "--model", model_folder(2, 1), "--json")
    assert result.exit_code == 1
    status = {Path(r["input"]).name: (r["status"], r["message"]) for r in records(result.stdout)}
    assert status["a.png"][0] == status["c.png"][0] == "ok"
    assert status["b.png"] == ("failed", f"{tmp_path / 'b.png'}: internal error: ZeroDivisionError: a bug in a decoder")
    assert_clean_failure(result.stderr)
    debug = cli("--debug", "upscale", tmp_path, "--model", model_folder(2, 1), "--force")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "ZeroDivisionError" in debug.stderr


# --- the one place that turns errors into messages and exit codes ------------------------------


def test_an_unexpected_error_at_top_level_is_one_line_exit_1(tmp_path, model_folder, monkeypatch):
    save(tmp_path / "a.png")

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected\nwith a second line")

    monkeypatch.setattr(jobs_module, "plan_jobs", broken)
    result = cli("upscale", tmp_path / "a.png", "--model", model_folder(2, 1))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: internal error: RuntimeError: something nobody expected (run with --debug for the traceback)")
    assert "Traceback" not in result.stderr
    debug = cli("--debug", "upscale", tmp_path / "a.png", "--model", model_folder(2, 1))
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "plan_jobs" not in debug.stdout


def test_ctrl_c_exits_130(tmp_path, model_folder, monkeypatch):
    save(tmp_path / "a.png")

    def interrupted(self, jobs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", interrupted)
    result = cli("upscale", tmp_path / "a.png", "--model", model_folder(2, 1))
    assert result.exit_code == 130 and "interrupted" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_says_how_many_were_done_and_that_a_rerun_continues(tmp_path, model_folder, monkeypatch):
    for k in range(4):
        save(tmp_path / f"{k}.png", seed=k)
    real = jobs_module.read_image

    def stop_at_the_third(path):
        if Path(path).name == "2.png":
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(jobs_module, "read_image", stop_at_the_third)
    result = cli("upscale", tmp_path, "-o", tmp_path / "out", "--model", model_folder(2, 1), "--batch-size", 1)
    assert result.exit_code == 130 and "Traceback" not in result.stderr
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("interrupted")]
    assert line == ["interrupted: 2 of 4 file(s) done; run the same command again to continue (done ones are skipped)"]
    monkeypatch.setattr(jobs_module, "read_image", real)
    again = cli("upscale", tmp_path, "-o", tmp_path / "out", "--model", model_folder(2, 1), "--json")
    assert again.exit_code == 0 and [r["status"] for r in records(again.stdout)] == ["skipped"] * 2 + ["ok"] * 2


def test_a_closed_stdout_ends_quietly(tmp_path, model_folder):
    for i in range(3):
        save(tmp_path / f"{i}.png", seed=i)
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `subpixel upscale ... --json | head -0`
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "subpixel_cli", "upscale", str(tmp_path), "--model", str(model_folder(2, 1)), "--json"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr and b"Exception ignored" not in proc.stderr, proc.stderr.decode()
    assert not partials(tmp_path)


def test_a_read_only_output_folder_fails_before_the_work(tmp_path, model_folder):
    """It failed each file after upscaling it (issue 22, rough edges). Root writes anywhere, so as
    root the command runs without CAP_DAC_OVERRIDE."""
    for k in range(3):
        save(tmp_path / f"{k}.png", seed=k)
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    try:
        code, stdout, err = run_without_file_permission_override("upscale", tmp_path, "-o", out, "--model",
                                                                  model_folder(2, 1), "--json")
    finally:
        out.chmod(0o755)
    assert code == 1 and records(stdout) == [], err  # no file was tried
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{out}: cannot write there (Permission denied)" in errors[0], err
    assert_clean_failure(err)
    assert list(out.iterdir()) == []


def test_an_output_folder_that_cannot_be_made(tmp_path, model_folder):
    save(tmp_path / "a.png")
    (tmp_path / "file").write_text("a file, not a folder")
    result = cli("upscale", tmp_path / "a.png", "-o", tmp_path / "file" / "out", "--model", model_folder(2, 1))
    assert result.exit_code == 1 and "cannot create the folder" in result.stderr
    assert_clean_failure(result.stderr)


# --- a full disk -------------------------------------------------------------------------------


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so writes fail with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_gives_a_clear_error_and_no_partial_output(tmp_path, model_folder):
    """Batched (written on the writer thread), whole and tiled-streamed outputs all hit the limit."""
    noise(tmp_path / "a.png", 64, 64, seed=1)
    noise(tmp_path / "b.png", 64, 64, seed=2)
    noise(tmp_path / "wide.png", 300, 300, seed=3)
    noise(tmp_path / "alpha.webp", 40, 40, seed=4, lossless=True)
    out = tmp_path / "out"
    proc = cli_process("upscale", tmp_path, "-o", out, "--model", model_folder(2, 1), "--max-memory", "64", "--json",
                       preexec_fn=_file_size_limit(4000))
    assert proc.returncode == 1
    results = records(proc.stdout)
    assert len(results) == 4 and {r["status"] for r in results} == {"failed"}
    for r in results:
        assert "cannot write (File too large)" in r["message"], r
    assert_clean_failure(proc.stderr)
    assert sorted(os.listdir(out)) == []  # no targets, no temporary files


@pytest.mark.slow
def test_a_full_filesystem(tmp_path, model_folder):
    """ENOSPC on a 64 kB tmpfs, mounted in a private mount namespace (skipped where not allowed)."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    noise(tmp_path / "a.png", 100, 100, seed=1)
    save(tmp_path / "b.png", 8, 8)
    disk = tmp_path / "disk"
    disk.mkdir()
    root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    script = (f'mount -t tmpfs -o size=64k tmpfs "{disk}" || exit 99; '
              f'"$0" -m subpixel_cli upscale "{tmp_path / "a.png"}" "{tmp_path / "b.png"}" -o "{disk}" '
              f'--model "{model_folder(2, 1)}" --json; echo "rc=$?" >&2; ls -A "{disk}" >&2')
    proc = subprocess.run(["unshare", *root, "--mount", "sh", "-c", script, sys.executable], capture_output=True,
                          timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode == 99 or b"rc=" not in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace')[-200:]}")
    err = proc.stderr.decode()
    status = {Path(r["input"]).name: (r["status"], r["message"]) for r in records(proc.stdout)}
    assert status["b.png"][0] == "ok"
    assert status["a.png"][0] == "failed" and "No space left on device" in status["a.png"][1]
    assert "rc=1" in err
    assert err.split("rc=1", 1)[1].split() == ["b_x2.png"]  # the one that fit, nothing else
    assert_clean_failure(err.split("rc=1", 1)[0])


# --- fuzzing -----------------------------------------------------------------------------------

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tiff", "BMP": ".bmp"}
MODES = {"PNG": ["L", "RGB", "RGBA", "LA", "P", "I;16", "1"], "JPEG": ["L", "RGB", "CMYK"], "WEBP": ["RGB", "RGBA"],
         "GIF": ["P", "L"], "TIFF": ["L", "RGB", "RGBA", "CMYK", "I;16"], "BMP": ["L", "RGB", "P", "1"]}


@st.composite
def damaged_images(draw) -> tuple[bytes, str]:
    """A real image of a random format, mode and size, then (usually) damaged; or plain noise."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2000)), FORMATS[fmt]
    mode = draw(st.sampled_from(MODES[fmt]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    data = _encode(fmt, mode, height, width, seed)
    if draw(st.integers(0, 4)) > 0:
        data = mutate(data, random.Random(draw(st.integers(0, 2**32))))
    return data, FORMATS[fmt]


def _encode(fmt: str, mode: str, height: int, width: int, seed: int) -> bytes:
    import io

    if mode == "I;16":
        img = Image.fromarray(random_image(height, width, 1, np.uint16, seed)[..., 0])
    else:
        img = Image.fromarray(random_image(height, width, 3, seed=seed)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
FUZZ_COUNTS = {"read": 0, "pipeline": 0}


def _read_one(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            picture = read_image(path)
        except InputError as exc:
            assert str(exc) and "\n" not in str(exc) and str(path) in str(exc)
            return
        h, w, c = picture.pixels.shape
        assert h >= 1 and w >= 1 and c in (1, 3) and picture.pixels.dtype in (np.uint8, np.uint16)
        assert picture.alpha is None or picture.alpha.shape == (h, w)


@pytest.fixture(scope="module")
def fuzz_upscaler(model_folder) -> Upscaler:
    return Upscaler(load_model(str(model_folder(2, 1))), device="cpu", tile=16, batch_size=2)


def _pipeline_one(upscaler: Upscaler, data: bytes, suffix: str, out_format: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / f"in{suffix}", Path(folder) / "out" / f"in_x2.{out_format}"
        source.write_bytes(data)
        target.parent.mkdir()
        report = Runner(upscaler, fmt=out_format).run([Job(source, target)])
        (result,) = report.results
        if result.status == "failed":
            assert result.message and "\n" not in result.message and result.traceback is None, result
            assert not target.exists()
        else:
            assert result.status == "ok", result
            w, h = result.size
            check_picture_file(target, (2 * w, 2 * h))
        assert sorted(os.listdir(target.parent)) == ([target.name] if result.status == "ok" else [])


def test_fuzzed_bytes_read_or_fail_in_one_line():
    """Hypothesis-generated damaged and random files: a picture or an InputError, nothing else."""
    FUZZ_COUNTS["read"] = 0
    given(damaged_images())(settings(FUZZ, max_examples=150)(_count_read))()
    assert FUZZ_COUNTS["read"] >= 100


def _count_read(case: tuple[bytes, str]) -> None:
    FUZZ_COUNTS["read"] += 1
    _read_one(*case)


def _count_pipeline(upscaler: Upscaler, case: tuple[bytes, str], out_format: str) -> None:
    FUZZ_COUNTS["pipeline"] += 1
    _pipeline_one(upscaler, *case, out_format)


def test_fuzzed_files_through_the_runner(fuzz_upscaler):
    """The same inputs through reading, upscaling (tiled) and writing: a complete output of the
    right size, or a one-line failure with no file left behind."""
    FUZZ_COUNTS["pipeline"] = 0
    run = given(case=damaged_images(), out_format=st.sampled_from(["png", "jpg", "webp", "tiff"]))(
        settings(FUZZ, max_examples=30)(lambda case, out_format: _count_pipeline(fuzz_upscaler, case, out_format)))
    run()
    assert FUZZ_COUNTS["pipeline"] >= 20


@pytest.mark.slow
def test_fuzz_long(fuzz_upscaler):
    """The long run: ``pytest -m slow -k fuzz_long -s`` prints how many inputs were tried."""
    FUZZ_COUNTS.update(read=0, pipeline=0)
    given(damaged_images())(settings(FUZZ, max_examples=3000)(_count_read))()
    given(case=damaged_images(), out_format=st.sampled_from(["png", "jpg", "webp", "tiff"]))(
        settings(FUZZ, max_examples=600)(lambda case, out_format: _count_pipeline(fuzz_upscaler, case, out_format)))()
    print(f"\nfuzzed: {FUZZ_COUNTS['read']} files read, {FUZZ_COUNTS['pipeline']} files through the runner")


_UPSCALERS: dict = {}


@given(height=st.integers(1, 48), width=st.integers(1, 48), tile=st.sampled_from([None, 8, 13, 32]),
       channels=st.sampled_from([1, 3]), alpha=st.booleans(), deep=st.booleans())
@settings(FUZZ, max_examples=15)
def test_any_size_comes_out_exactly_r_times_larger(model_folder, height, width, tile, channels, alpha, deep):
    key = (str(model_folder(3, 1)), tile)
    if key not in _UPSCALERS:
        _UPSCALERS[key] = Upscaler(load_model(key[0]), device="cpu", tile=tile)
    upscaler = _UPSCALERS[key]
    dtype = np.uint16 if deep else np.uint8
    pixels = random_image(height, width, channels, dtype)
    a = random_image(height, width, 1, dtype, seed=1)[..., 0] if alpha else None
    out, out_alpha = upscaler.upscale(pixels, a)
    assert out.shape == (3 * height, 3 * width, channels) and out.dtype == dtype
    assert out_alpha is None or out_alpha.shape == (3 * height, 3 * width)
    with tempfile.TemporaryDirectory() as folder:
        write_image(Path(folder) / "o.png", Picture(out, out_alpha))
        back = read_image(Path(folder) / "o.png")
        assert np.array_equal(back.pixels, out)


# --- memory ------------------------------------------------------------------------------------

RSS_BOUND_MIB = 1024  # measured 798 MiB (torch itself is ~250 MiB); the ×4 output alone is 768 MiB


@pytest.mark.slow
def test_a_memory_budget_bounds_peak_rss(tmp_path, model_folder):
    """4000×4000 ×4 with --max-memory 256: the 16000×16000 output (768 MiB of pixels) is streamed
    to disk strip by strip, so the process stays under RSS_BOUND_MIB."""
    Image.fromarray(random_image(4000, 4000)).save(tmp_path / "big.png", compress_level=1)
    measure = ("import resource, subprocess, sys; "
               "code = subprocess.run(sys.argv[1:]).returncode; "
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)")
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "subpixel_cli", "upscale",
                           str(tmp_path / "big.png"), "-o", str(tmp_path / "big_x4.png"), "--model",
                           str(model_folder(4, 1)), "--max-memory", "256", "--quiet"],
                          capture_output=True, text=True, timeout=1800, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    code, peak_mib = map(int, proc.stdout.split())
    print(f"\npeak RSS: {peak_mib} MiB (bound {RSS_BOUND_MIB} MiB)")
    assert code == 0, proc.stderr
    assert peak_mib < RSS_BOUND_MIB
    Image.MAX_IMAGE_PIXELS = None  # 256 M pixels: over Pillow's guard in this process
    with Image.open(tmp_path / "big_x4.png") as out:
        assert out.size == (16000, 16000)
