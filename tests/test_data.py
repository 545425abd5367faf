"""Training data: LR/HR pairing, degradations, samplers and finding CelebA."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, random_image
from subpixel_cli import data, degradations
from subpixel_cli.errors import DataError
from subpixel_cli.resize import imresize


def _write(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(image).save(path)
    return path


def test_degrade_is_uint8_matlab_bicubic_of_the_mod_cropped_image():
    hr = data.mod_crop(random_image(50, 61), 3)
    assert hr.shape == (48, 60, 3)
    lr = degradations.downscale(hr, 3)
    assert lr.dtype == np.uint8 and lr.shape == (16, 20, 3)
    np.testing.assert_array_equal(lr, imresize(hr, 1 / 3))


def test_gaussian_degradation_subsamples_by_the_scale():
    hr = random_image(48, 64)
    lr = degradations.downscale(hr, 4, "gaussian")
    assert lr.shape == (12, 16, 3) and lr.dtype == np.uint8
    flat = np.full((48, 64, 3), 77, np.uint8)  # a flat image stays flat under blur + subsample
    assert np.all(degradations.downscale(flat, 4, "gaussian") == 77)


def test_degrade_rejects_sizes_that_are_not_multiples():
    with pytest.raises(ValueError, match="mod-crop"):
        degradations.downscale(random_image(10, 10), 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_patches_are_aligned_lr_hr_pairs(tmp_path, scale):
    """The LR patch is the degraded HR patch (away from the patch borders), flips and rotations
    included: HR patch = LR patch × scale at the same place."""
    path = _write(tmp_path, "a.png", random_image(96, 120, seed=scale))
    pair = data.make_pair(path, scale, channels=1)
    ds = data.PatchDataset([pair], scale, patch_size=12, patches_per_image=6, seed=1)
    for key in range(len(ds)):
        lr, hr = ds[key]
        assert lr.shape == (1, 12, 12) and hr.shape == (1, 12 * scale, 12 * scale)
        # Re-degrade the HR patch (as Y in [0, 1]) and compare the interior with the LR patch.
        redone = imresize(hr[0].double().numpy(), 1 / scale)
        inner = slice(3, -3)
        np.testing.assert_allclose(redone[inner, inner], lr[0, inner, inner].double().numpy(), atol=0.02)


def test_items_depend_only_on_seed_epoch_and_index(tmp_path):
    path = _write(tmp_path, "a.png", random_image(64, 64))
    pair = data.make_pair(path, 2, channels=3)
    a = data.PatchDataset([pair], 2, patch_size=8, patches_per_image=4, seed=5)
    b = data.PatchDataset([pair], 2, patch_size=8, patches_per_image=4, seed=5)
    assert all((a[k][0] == b[k][0]).all() and (a[k][1] == b[k][1]).all() for k in range(12))
    # Key k + len is the same item in the next epoch: another patch.
    assert not (a[1][1].shape == a[1 + len(a)][1].shape and (a[1][1] == a[1 + len(a)][1]).all())


def test_patch_size_too_large_says_what_to_do(tmp_path):
    path = _write(tmp_path, "small.png", random_image(20, 20))
    with pytest.raises(DataError, match="--patch-size"):
        data.PatchDataset([data.make_pair(path, 4, 1)], 4, patch_size=24)


def test_y_and_rgb_channels(tmp_path):
    path = _write(tmp_path, "grey.png", np.full((24, 24), 128, np.uint8))  # grey files become RGB
    y = data.make_pair(path, 2, channels=1)
    rgb = data.make_pair(path, 2, channels=3)
    assert y.lr.shape == (1, 12, 12) and rgb.hr.shape == (3, 24, 24)
    assert y.hr.dtype == np.float32 and 0 <= y.hr.min() and y.hr.max() <= 1


def test_find_images_descends_one_level_and_complains_when_empty(tmp_path):
    _write(tmp_path / "T91", "t1.png", random_image(16, 16))
    _write(tmp_path / "BSD", "b1.jpg", random_image(16, 16))
    assert [p.name for p in data.find_images(tmp_path)] == ["b1.jpg", "t1.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        data.find_images(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        data.find_images(tmp_path / "missing")


def test_epoch_sampler_splits_ranks_and_skips_what_was_used():
    full = list(data.EpochSampler(10, seed=3))
    assert sorted(full) == list(range(10))
    ranks = [data.EpochSampler(10, seed=3, rank=r, world=2) for r in range(2)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == 5 and not set(shares[0]) & set(shares[1])
    s = data.EpochSampler(10, seed=3)
    s.set_epoch(1, skip=4)
    second = data.EpochSampler(10, seed=3)
    second.set_epoch(1)
    assert list(s) == list(second)[4:] and len(s) == 6
    assert all(10 <= k < 20 for k in s)  # keys of epoch 1


def _faces(folder: Path, n: int) -> list[Path]:
    return [_write(folder, f"{i:06d}.jpg", random_image(218, 178, seed=i)) for i in range(1, n + 1)]


def test_celeba_recipe_shapes_and_flip(tmp_path):
    files = _faces(tmp_path / "img_align_celeba", 2)
    ds = data.FaceDataset(files, seed=0)
    lr, hr = ds[0]
    assert lr.shape == (3, 32, 32) and hr.shape == (3, 128, 128)
    plain = ds.pair(0)
    flipped = [k for k in range(0, 40, 2) if not np.array_equal(ds[k][1].numpy(), plain.hr)]
    assert flipped, "some epochs flip the face"
    for k in flipped:
        np.testing.assert_array_equal(ds[k][1].numpy(), plain.hr[:, :, ::-1])


def test_find_celeba_layouts(tmp_path):
    _faces(tmp_path / "tv" / "celeba" / "img_align_celeba", 1)  # torchvision's layout
    assert data.find_celeba(tmp_path / "tv") == tmp_path / "tv" / "celeba" / "img_align_celeba"
    _faces(tmp_path / "plain", 1)  # the faces themselves
    assert data.find_celeba(tmp_path / "plain") == tmp_path / "plain"


def test_missing_celeba_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        data.find_celeba(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "img_align_celeba") in message
    assert "--data-dir" in message and "non-commercial" in message


def test_holdout_takes_the_last_files_by_name():
    files = [Path(f"{i:06d}.jpg") for i in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    train, held = data.split_holdout(files, 0.2)
    assert [p.name for p in held] == ["000009.jpg", "000010.jpg"] and len(train) == 8


@pytest.mark.skipif(not (SHARED_DATA / "celeba_sample").is_dir(), reason="needs ../shared/data")
def test_real_celeba_sample_is_found_and_decoded():
    folder = data.find_celeba(SHARED_DATA / "celeba_sample")
    files = sorted(folder.glob("*.jpg"))[:2]
    lr, hr = data.FaceDataset(files)[0]
    assert lr.shape == (3, 32, 32) and hr.shape == (3, 128, 128)


def _hf_dataset_cache(hf_home: Path, repo_id: str, faces: list[Path]) -> None:
    """Lay faces out as huggingface_hub's cache of a dataset repo: blobs, snapshot links, refs/main."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hf_home / "hub" / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit / "img_align_celeba"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    for face in faces:
        blob = hashlib.sha256(face.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(face.read_bytes())
        (snapshot / face.name).symlink_to(Path("..", "..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(commit)


def _fetch(spec: str, hf_home: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from subpixel_cli.data import fetch_hf_dataset, find_celeba; from subpixel_cli.errors import DataError\n"
            "try: print(find_celeba(fetch_hf_dataset(sys.argv[1])))\n"
            "except DataError as e: print('DataError:', e); sys.exit(2)")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code, spec], env=env, capture_output=True, text=True, timeout=60)


def test_celeba_from_a_hub_dataset_repo_through_the_real_cache(tmp_path):
    faces = _faces(tmp_path / "src", 2)
    _hf_dataset_cache(tmp_path / "hf", "someone/celeba-faces", faces)
    found = _fetch("hf://datasets/someone/celeba-faces", tmp_path / "hf")
    assert found.returncode == 0, found.stdout + found.stderr
    folder = Path(found.stdout.strip())
    assert folder.name == "img_align_celeba" and sorted(p.name for p in folder.iterdir()) == ["000001.jpg", "000002.jpg"]
    missing = _fetch("hf://datasets/someone/other", tmp_path / "hf")
    assert missing.returncode == 2 and "offline" in missing.stdout and "--data-dir" in missing.stdout


def test_scale_augmentation_shrinks_jpegs_always_and_keeps_lossless_originals(tmp_path):
    rng = np.random.default_rng(0)
    png = data.shrink_factors(Path("a.png"), 4, 0.6, rng)
    jpg = data.shrink_factors(Path("b.JPEG"), 4, 0.6, rng)
    assert png[0] == 1.0 and len(png) == 4 and all(0.6 <= f <= 1.0 for f in png)
    assert len(jpg) == 4 and all(0.6 <= f <= 0.9 for f in jpg)


def test_pools_hold_shrunk_versions_and_batches_equal_single_items(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(random_image(90, 96, seed=i)).save(paths[-1])
    ds = data.PatchDataset.from_files(paths, 3, 1, patch_size=12, versions=3, smallest=0.5, patches_per_image=4, seed=2)
    sizes = {v.hr.shape for pool in ds.images for v in pool}
    assert len(ds.images) == 3 and all(len(pool) == 3 for pool in ds.images)
    assert len(sizes) > 3  # the shrunk copies differ in size
    for pool in ds.images:
        for v in pool:  # every version is an LR/HR pair of the protocol: HR mod-cropped, LR = HR / 3
            assert v.hr.shape[1] == 3 * v.lr.shape[1] and v.hr.shape[2] == 3 * v.lr.shape[2]
    keys = [5, 0, 11, 30]
    lr, hr = ds.__getitems__(keys)
    assert lr.shape == (4, 1, 12, 12) and hr.shape == (4, 1, 36, 36)
    for i, key in enumerate(keys):
        one_lr, one_hr = ds[key]
        assert torch.equal(lr[i], one_lr) and torch.equal(hr[i], one_hr)


def test_val_holdout_picks_the_same_pictures_whatever_their_format_or_company():
    files = [Path(f"{d}/{i:03d}.png") for d in "abc" for i in range(10)]
    train, held = data.split_by_name(files, 6)
    assert len(held) == 6 and set(train) | set(held) == set(files) and not set(train) & set(held)
    assert train == [f for f in files if f not in held]  # the rest keep their order
    # The same pictures as lossless WebP, read from another folder: the same ones held out.
    webp = [Path("elsewhere", f.parent.name, f.stem + ".webp") for f in files]
    assert [f.stem for f in data.split_by_name(webp, 6)[1]] == [f.stem for f in held]
    # A subset that keeps the held-out pictures (what gpu_prepare.py packs) holds out the same.
    subset = [f for f in webp if f.stem in {h.stem for h in held} or f.parent.name != "c"]
    assert [f.stem for f in data.split_by_name(subset, 6)[1]] == [f.stem for f in held]
    assert data.split_by_name(files, 0) == (files, [])
    with pytest.raises(DataError):
        data.split_by_name(files, 30)


def test_lossless_webp_counts_as_lossless(tmp_path):
    picture = Image.fromarray(random_image(24, 32))
    picture.save(tmp_path / "lossless.webp", lossless=True)
    picture.save(tmp_path / "lossy.webp", quality=80)
    picture.convert("RGBA").save(tmp_path / "alpha.webp", quality=80)  # VP8X, ALPH, then VP8
    picture.convert("RGBA").save(tmp_path / "alpha_lossless.webp", lossless=True)
    (tmp_path / "broken.webp").write_bytes(b"RIFF\0\0\0\0WEBP")
    assert not data.is_lossy(tmp_path / "lossless.webp") and not data.is_lossy(tmp_path / "alpha_lossless.webp")
    assert data.is_lossy(tmp_path / "lossy.webp") and data.is_lossy(tmp_path / "alpha.webp")
    assert data.is_lossy(tmp_path / "broken.webp") and data.is_lossy(Path("x.JPG")) and not data.is_lossy(Path("x.png"))
    rng = np.random.default_rng(0)
    assert data.shrink_factors(tmp_path / "lossless.webp", 3, 0.6, rng)[0] == 1.0  # keeps its full size
    assert max(data.shrink_factors(tmp_path / "lossy.webp", 3, 0.6, rng)) <= 0.9


def test_a_batch_is_drawn_in_one_pass_and_each_item_stays_its_own(tmp_path):
    """The batch's draws are each item's own: the same one by one, in any batch and order, and
    spread over every place, version and turn."""
    paths = [_write(tmp_path, f"d{i}.png", random_image(60 + 9 * i, 64, seed=i)) for i in range(2)]
    ds = data.PatchDataset.from_files(paths, 2, 1, patch_size=10, versions=2, smallest=0.6, patches_per_image=50,
                                      seed=9)
    keys = list(range(0, 3 * len(ds)))
    batch = ds.draws(keys)
    assert batch.shape == (len(keys), 5) and batch.dtype == np.int64
    assert [tuple(row) for row in ds.draws(keys[::-1])] == [tuple(row) for row in batch[::-1]]
    assert all(ds.draw(k) == (*map(int, batch[k][:4]), bool(batch[k][4])) for k in keys[::37])
    for version, pair in enumerate(ds.versions):
        mine = batch[batch[:, 0] == version]
        assert len(mine) > 0 and mine[:, 1].max() <= pair.lr.shape[1] - 10 and mine[:, 2].max() <= pair.lr.shape[2] - 10
    assert {tuple(row) for row in batch[:, 3:]} == {(k, f) for k in range(4) for f in (0, 1)}
    assert not np.array_equal(ds.draws(keys[:50]), ds.draws([k + len(ds) for k in keys[:50]]))  # next epoch


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_device_patches_cut_the_same_batches_as_the_dataset(tmp_path, device):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(random_image(70 + 6 * i, 64, seed=i)).save(paths[-1])
    for channels in (1, 3):
        ds = data.PatchDataset.from_files(paths, 2, channels, patch_size=10, versions=2, smallest=0.6,
                                          patches_per_image=8, seed=3)
        on_device = data.DevicePatches(ds, torch.device(device))
        keys = list(range(0, 150, 2))
        assert {ds.draw(k)[3:] for k in keys} == {(k, f) for k in range(4) for f in (False, True)}  # all 8 turns
        lr, hr = on_device.batch(keys)
        want_lr, want_hr = ds.__getitems__(keys)
        assert torch.equal(lr.cpu(), want_lr) and torch.equal(hr.cpu(), want_hr)


def test_loading_in_worker_processes_gives_the_same_pools(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"w{i}.png")
        Image.fromarray(random_image(40, 44, seed=i)).save(paths[-1])
    one = data.PatchDataset.from_files(paths, 2, 1, patch_size=8, versions=2, smallest=0.7, seed=4)
    two = data.PatchDataset.from_files(paths, 2, 1, patch_size=8, versions=2, smallest=0.7, seed=4, workers=2)
    assert all(np.array_equal(a.hr, b.hr) and np.array_equal(a.lr, b.lr) for a, b in zip(one.versions, two.versions))
