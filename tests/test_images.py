"""Reading and writing every picture mode, with metadata carried and nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from subpixel_cli.errors import InputError, OutputError
from subpixel_cli.images import Picture, read_image, write_image

from conftest import random_image

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int | None = None, description: str = "subpixel test") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010E] = description  # ImageDescription
    if orientation:
        exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "1"])
def test_8bit_modes_round_trip_through_png(tmp_path, mode):
    arr = random_image(9, 13, 4)
    img = Image.fromarray(arr, "RGBA").convert(mode)
    img.save(tmp_path / "in.png")
    picture = read_image(tmp_path / "in.png")
    expect = img.convert({"1": "L"}.get(mode, mode))
    assert picture.mode == {"1": "L"}.get(mode, mode)
    write_image(tmp_path / "out.png", picture)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(expect))


def test_palette_with_transparency_becomes_rgba(tmp_path):
    img = Image.fromarray(random_image(8, 8, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    picture = read_image(tmp_path / "p.png")
    assert picture.mode == "RGBA"
    assert np.array_equal(np.dstack([picture.pixels, picture.alpha]), np.asarray(Image.open(tmp_path / "p.png").convert("RGBA")))


def test_palette_without_transparency_becomes_rgb(tmp_path):
    Image.fromarray(random_image(8, 8, 3)).convert("P").save(tmp_path / "p.gif")
    assert read_image(tmp_path / "p.gif").mode == "RGB"


@pytest.mark.parametrize("channels,alpha", [(1, False), (3, False), (3, True), (1, True)])
def test_16bit_png_stays_16bit(tmp_path, channels, alpha):
    px = random_image(7, 11, channels, np.uint16)
    a = random_image(7, 11, 1, np.uint16, seed=3)[..., 0] if alpha else None
    write_image(tmp_path / "in.png", Picture(px, a))
    picture = read_image(tmp_path / "in.png")
    assert picture.bit_depth == 16 and np.array_equal(picture.pixels, px)
    assert (picture.alpha is None) == (not alpha) and (a is None or np.array_equal(picture.alpha, a))


def test_16bit_tiff_stays_16bit(tmp_path):
    px = random_image(7, 11, 3, np.uint16)
    write_image(tmp_path / "in.tiff", Picture(px))
    picture = read_image(tmp_path / "in.tiff")
    assert picture.bit_depth == 16 and np.array_equal(picture.pixels, px)


def test_16bit_grey_png_written_by_pillow_reads_as_16bit(tmp_path):
    px = random_image(5, 6, 1, np.uint16)[..., 0]
    Image.fromarray(px).save(tmp_path / "g.png")  # Pillow writes mode I;16
    picture = read_image(tmp_path / "g.png")
    assert picture.mode == "L;16" and np.array_equal(picture.pixels[..., 0], px)


def test_16bit_to_jpeg_is_rounded_to_8bit(tmp_path):
    px = np.full((4, 4, 3), 65535, np.uint16)
    write_image(tmp_path / "o.jpg", Picture(px))
    assert np.asarray(Image.open(tmp_path / "o.jpg")).min() >= 250


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.fromarray(random_image(8, 8, 3)).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").mode == "RGB"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    arr = random_image(6, 10, 3)
    Image.fromarray(arr).save(tmp_path / "o.png", exif=_exif(orientation))
    picture = read_image(tmp_path / "o.png")
    expected = np.asarray(Image.fromarray(arr).transpose(_PIL_OP[orientation])) if orientation > 1 else arr
    assert np.array_equal(picture.pixels, expected)
    kept = Image.Exif()
    kept.load(picture.exif)
    assert kept.get(0x0112, 1) == 1 and kept.get(0x010E) == "subpixel test"


_PIL_OP = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def test_16bit_png_orientation_is_applied(tmp_path):
    px = random_image(6, 10, 3, np.uint16)
    write_image(tmp_path / "o.png", Picture(px, exif=_exif(6).tobytes()))
    assert np.array_equal(read_image(tmp_path / "o.png").pixels, np.rot90(px, -1))


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tiff"])
def test_icc_and_exif_are_carried(tmp_path, fmt):
    Image.fromarray(random_image(8, 8, 3)).save(tmp_path / "in.jpg", icc_profile=SRGB, exif=_exif())
    picture = read_image(tmp_path / "in.jpg")
    assert picture.icc_profile == SRGB
    write_image(tmp_path / f"out.{fmt}", picture)
    with Image.open(tmp_path / f"out.{fmt}") as out:
        assert out.info.get("icc_profile") == SRGB
        assert out.getexif().get(0x010E) == "subpixel test"


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"])
def test_unreadable_files_are_input_errors(tmp_path, content):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(tmp_path / "bad.png")
    assert "bad.png" in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_an_input_error(tmp_path):
    Image.fromarray(random_image(64, 64, 3)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(tmp_path / "t.jpg")


def test_a_directory_is_not_an_image(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path / "dir.png")


def test_existing_output_is_not_overwritten_without_force(tmp_path):
    target = tmp_path / "o.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        write_image(target, Picture(random_image(4, 4)))
    assert target.read_bytes() == b"precious"
    write_image(target, Picture(random_image(4, 4)), force=True)
    assert target.read_bytes() != b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_a_failed_encode_leaves_no_file(tmp_path):
    with pytest.raises(OutputError, match="alpha"):
        write_image(tmp_path / "o.jpg", Picture(random_image(4, 4), alpha=random_image(4, 4, 1)[..., 0]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_permissions_of_the_umask_in_force(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)  # the umask when the file is written counts, not the one at import
    try:
        write_image(tmp_path / "o.png", Picture(random_image(4, 4)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.png").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("fast", [True, False])
def test_big_png_outputs_compress_fast_and_decode_exactly(tmp_path, monkeypatch, fast):
    """Outputs over 4 M samples use level 1, through ISA-L when it is installed, else zlib."""
    import subpixel_cli.images as images

    if fast and images.fast_zlib is None:
        pytest.skip("isal is not installed here")
    if not fast:
        monkeypatch.setattr(images, "fast_zlib", None)
    yy, xx = np.mgrid[0:1200, 0:1300]
    smooth = np.dstack([(xx + yy) % 256, (xx * 2) % 256, (yy * 3) % 256]).astype(np.uint8)
    noisy = np.clip(smooth.astype(int) + random_image(1200, 1300, 3) // 16, 0, 255).astype(np.uint8)
    write_image(tmp_path / "big.png", Picture(noisy, None, SRGB, None))
    with Image.open(tmp_path / "big.png") as img:
        assert np.array_equal(np.asarray(img), noisy) and img.info.get("icc_profile") == SRGB
    assert (tmp_path / "big.png").stat().st_size < noisy.nbytes  # compressed, not stored
