"""The degradation module: the spec, each kind of damage, determinism, and its use by the
training patches and by ``subpixel eval --degrade``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import random_image
from subpixel_cli import data
from subpixel_cli.cli import main
from subpixel_cli.degradations import Degradation, Step, h264_intra, jpeg, seeded
from subpixel_cli.errors import UsageError
from subpixel_cli.metrics import psnr


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A picture with edges and gradients (compression leaves pure noise almost untouched or
    ruins it; real damage is measured on pictures)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(x / 7.0 + c) * np.cos(y / 11.0) for c in range(3)], axis=-1)
    base[(x // 9 + y // 13) % 3 == 0] += 40
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


# --- the spec -------------------------------------------------------------------------------


def test_a_spec_reads_in_any_order_and_prints_in_canonical_order() -> None:
    d = Degradation.parse(" h264:18-38@0.2, JPEG:30-95 ,noise:0-10@0.5,blur:0.5")
    assert [s.kind for s in d.steps] == ["blur", "noise", "jpeg", "h264"]
    assert d.steps[2] == Step("jpeg", 30, 95, 1.0)
    assert str(d) == "blur:0.5,noise:0-10@0.5,jpeg:30-95,h264:18-38@0.2"
    assert Degradation.parse(str(d)) == d
    assert not d.fixed
    assert Degradation.parse("jpeg:75,noise:5").fixed
    assert not Degradation.parse("none") and str(Degradation.parse("")) == "none"


@pytest.mark.parametrize("spec, says", [
    ("jpg:75", "unknown kind 'jpg'"),
    ("jpeg", "malformed"),  # a kind needs a value
    ("jpeg:", "malformed"),
    ("jpeg:75-", "malformed"),
    ("jpeg:abc", "malformed"),
    ("jpeg:95-30", "LOW ≤ HIGH"),
    ("jpeg:0", "1-100"),
    ("h264:60", "0-51"),
    ("noise:5@0", "probability"),
    ("noise:5@1.5", "probability"),
    ("noise:5,noise:6", "given twice"),
    ("noise:1.2.3", "not a number"),
])
def test_a_malformed_spec_is_one_line_that_says_how_to_write_it(spec: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        Degradation.parse(spec)
    message = str(err.value)
    assert says in message and "\n" not in message


def test_whole_number_kinds_draw_whole_numbers_over_the_whole_range() -> None:
    step, rng = Step("jpeg", 30, 32), np.random.default_rng(0)
    values = {step.draw(rng) for _ in range(300)}
    assert values == {30.0, 31.0, 32.0}
    blur = Step("blur", 0.2, 1.0, 0.25)
    drawn = [blur.draw(rng) for _ in range(2000)]
    happened = [v for v in drawn if v is not None]
    assert 0.2 < len(happened) / len(drawn) < 0.3
    assert all(0.2 <= v <= 1.0 for v in happened)


# --- the damage -----------------------------------------------------------------------------


def test_the_same_generator_state_gives_the_same_picture() -> None:
    picture = smooth_image(40, 56)
    chain = Degradation.parse("blur:0.3-1,noise:1-8,poisson:1-5,jpeg:30-95,h264:20-36")
    a = chain.apply(picture, np.random.default_rng(7))
    b = chain.apply(picture, np.random.default_rng(7))
    c = chain.apply(picture, np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == picture.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(seeded("x.png").random(3), seeded("x.png").random(3))
    assert not np.array_equal(seeded("x.png").random(3), seeded("y.png").random(3))


def test_jpeg_loses_more_at_lower_quality_and_subsamples_the_chroma() -> None:
    picture = smooth_image(64, 64)
    scores = [psnr(jpeg(picture, q).astype(float), picture.astype(float), peak=255.0) for q in (30, 50, 75, 95)]
    assert scores == sorted(scores) and scores[0] < 40
    # 4:2:0: a 1-pixel chroma checkerboard on flat grey does not survive; at 4:4:4 it would
    grey = np.full((32, 32, 3), 128, np.uint8)
    grey[::2, ::2, 0], grey[1::2, 1::2, 0] = 200, 200
    out = jpeg(grey, 95).astype(int)
    assert np.abs(out[..., 0] - grey[..., 0]).mean() > 20


def test_h264_keeps_each_picture_in_place_and_loses_more_at_higher_crf() -> None:
    pictures = [smooth_image(37, 50, seed=s) for s in range(5)]  # odd sides: padded to macroblocks
    for crf_low, crf_high in [(18, 40)]:
        good, bad = h264_intra(pictures, crf_low), h264_intra(pictures, crf_high)
        for p, g, b in zip(pictures, good, bad):
            assert g.shape == p.shape and g.dtype == np.uint8
            pg = psnr(g.astype(float), p.astype(float), peak=255.0)
            pb = psnr(b.astype(float), p.astype(float), peak=255.0)
            assert pg > 30 and pb < pg


def test_noise_has_the_asked_for_spread_and_poisson_grows_with_the_level() -> None:
    flat = np.full((128, 128, 3), 100, np.uint8)
    noisy = Degradation.parse("noise:5").apply(flat, np.random.default_rng(0)).astype(float)
    assert 4.5 < noisy.std() < 5.5
    dark, bright = np.full((128, 128, 3), 20, np.uint8), np.full((128, 128, 3), 200, np.uint8)
    shot = Degradation.parse("poisson:8")
    spread = [shot.apply(p, np.random.default_rng(1)).astype(float).std() for p in (dark, bright)]
    assert spread[0] < spread[1]
    assert 8 * np.sqrt(200 / 128) * 0.9 < spread[1] < 8 * np.sqrt(200 / 128) * 1.1


def test_a_batch_shares_one_h264_encode_and_one_crf() -> None:
    pictures = [smooth_image(48, 48, seed=s) for s in range(6)]
    chain = Degradation.parse("h264:20-40@0.5")
    rngs = [np.random.default_rng(s) for s in range(6)]
    out = chain.apply_many(pictures, rngs, np.random.default_rng(99))
    changed = [not np.array_equal(o, p) for o, p in zip(out, pictures)]
    # whose draws said H.264 was done: the others are untouched
    expected = [Step("h264", 20, 40, 0.5).draw(np.random.default_rng(s)) is not None for s in range(6)]
    assert changed == expected and any(expected) and not all(expected)


# --- use ------------------------------------------------------------------------------------


def _dataset(tmp_path, damage: Degradation | None):
    for i in range(3):
        Image.fromarray(smooth_image(96, 120, seed=i)).save(tmp_path / f"im{i}.png")
    return data.PatchDataset.from_folder(tmp_path, 2, 1, 16, patches_per_image=4, seed=3, damage=damage)


def test_training_patches_are_damaged_anew_every_epoch_and_the_same_on_every_call(tmp_path) -> None:
    clean = _dataset(tmp_path, None)
    damaged = _dataset(tmp_path, Degradation.parse("jpeg:30-50,noise:3"))
    n = len(clean)
    lr_clean, hr_clean = clean.__getitems__([0, 1])
    lr_a, hr_a = damaged.__getitems__([0, 1])
    lr_b, _ = damaged.__getitems__([0, 1])
    assert lr_a.shape == lr_clean.shape == (2, 1, 16, 16) and lr_a.dtype == lr_clean.dtype
    assert np.array_equal(hr_a.numpy(), hr_clean.numpy())  # the targets stay clean
    assert np.array_equal(lr_a.numpy(), lr_b.numpy())  # the same keys, the same damage
    assert 0.005 < np.abs(lr_a.numpy() - lr_clean.numpy()).mean() < 0.1
    # the same patch in the next epoch: same place (same position is not guaranteed, so compare
    # the damage itself) — new noise
    lr_next, _ = damaged.__getitems__([n, n + 1])
    clean_next, _ = clean.__getitems__([n, n + 1])
    assert not np.array_equal(lr_next.numpy() - clean_next.numpy(), lr_a.numpy() - lr_clean.numpy())
    single_lr, single_hr = damaged[1]
    assert np.array_equal(single_hr.numpy(), hr_a[1].numpy())


def test_eval_degrade_records_the_spec_and_takes_fixed_values_only(tmp_path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(64, 72, seed=i)).save(folder / f"p{i}.png")
    runner = CliRunner()
    clean = runner.invoke(main, ["eval", str(folder), "--bicubic", "-x", "2", "--json"], catch_exceptions=False)
    damaged = runner.invoke(main, ["eval", str(folder), "--bicubic", "-x", "2", "--degrade", "jpeg:40", "--json"],
                            catch_exceptions=False)
    again = runner.invoke(main, ["eval", str(folder), "--bicubic", "-x", "2", "--degrade", "jpeg:40", "--json"],
                          catch_exceptions=False)
    assert clean.exit_code == damaged.exit_code == 0
    a, b = json.loads(clean.stdout), json.loads(damaged.stdout)
    assert a["degrade"] is None and b["degrade"] == "jpeg:40"
    assert b["datasets"][0]["mean"]["psnr"] < a["datasets"][0]["mean"]["psnr"] - 0.3
    assert json.loads(again.stdout) == b
    for bad in ("jpeg:30-60", "noise:5@0.5", "jpeg:200", "gif:3"):
        result = runner.invoke(main, ["eval", str(folder), "--bicubic", "-x", "2", "--degrade", bad])
        assert result.exit_code == 2, bad
        assert "--degrade" in result.output


def test_train_refuses_a_malformed_degrade_spec_before_any_work(tmp_path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    Image.fromarray(random_image(64, 64)).save(folder / "a.png")
    result = CliRunner().invoke(main, ["train", "--dataset", str(folder), "-x", "2", "--steps", "1",
                                       "--out", str(tmp_path / "run"), "--degrade", "jpeg:30-95,blur:9"])
    assert result.exit_code == 2 and "blur takes values in 0.1-3" in result.output
    assert not (tmp_path / "run").exists()
