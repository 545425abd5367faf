"""Reading and writing pictures: 8/16-bit, grey, alpha, palette, EXIF orientation, ICC, EXIF.

A :class:`Picture` holds colour pixels (``H×W×1`` grey or ``H×W×3`` RGB), an optional alpha
plane, and the metadata to carry to the output. 8-bit pictures are ``uint8``; 16-bit PNG and TIFF
stay ``uint16`` end to end.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from subpixel_cli.errors import InputError, OutputError, one_line
from subpixel_cli.files import atomic_write

try:  # Intel's ISA-L deflate: a standard zlib stream, ~4× faster than zlib at level 1, and smaller
    from isal import isal_zlib as fast_zlib
except ImportError:  # not installed (platforms without its wheels): plain zlib
    fast_zlib = None

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF", "bmp": "BMP"}
NO_ALPHA_FORMATS = {"JPEG", "BMP"}  # BMP: Pillow writes a 32-bit one but reads its alpha back as nothing
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
# The one list of picture suffixes: inputs of upscale, evaluation datasets, training folders and
# folders of video frames.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm",
                            ".pbm", ".tga"})


@dataclass
class Picture:
    """Pixels plus what the output must carry over from the input."""

    pixels: np.ndarray  # H×W×C, C = 1 (grey) or 3 (RGB); uint8 or uint16
    alpha: np.ndarray | None = None  # H×W, same dtype as pixels
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str = ""
    frames: int = 1  # frames in the file; only the first is used

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def mode(self) -> str:
        """A short description: ``L``, ``RGB``, ``LA``, ``RGBA``, with ``;16`` for 16-bit."""
        base = ("L" if self.pixels.shape[2] == 1 else "RGB") + ("A" if self.alpha is not None else "")
        return base + (";16" if self.bit_depth == 16 else "")


def is_image_name(path: Path) -> bool:
    """Whether ``path``'s suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The picture files directly inside ``folder``, sorted by name (hidden files left out)."""
    return sorted(p for p in folder.iterdir() if is_image_name(p) and not p.name.startswith(".") and p.is_file())


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, without decoding its pixels (for planning
    work); ``None`` when it cannot be read (:func:`read_image` says why when the file's turn comes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.size
    except Exception:  # any unreadable file: planning must not fail for it
        return None


def read_rgb8(path: str | Path, keep_grey: bool = False) -> np.ndarray:
    """:func:`read_image` as 8-bit pixels for training and evaluation: ``H×W×3`` RGB, alpha
    dropped, 16-bit rounded to 8; with ``keep_grey`` a grey picture is ``H×W``."""
    picture = to_8bit(read_image(path))
    pixels = picture.pixels
    if pixels.shape[2] == 1:
        return pixels[..., 0] if keep_grey else np.repeat(pixels, 3, axis=2)
    return pixels


def read_image(path: str | Path) -> Picture:
    """Decode ``path`` fully (so truncation is caught here), with EXIF orientation applied."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on damaged metadata: not for users' stderr
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "PNG":
                    _check_png_data(path)
                frames = getattr(img, "n_frames", 1)
                img.seek(0)
                img.load()
                picture = _from_pil(img)
                picture.frames = frames
                picture.source_format = img.format or ""
                if picture.bit_depth == 8 and _stored_as_16bit(path, img):
                    picture = _maybe_16bit(path, img, picture)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        raise InputError(f"{path}: refused as a possible decompression bomb ({size}over the limit of "
                         f"{Image.MAX_IMAGE_PIXELS:,}); raise the limit with --max-pixels") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image, or a format that cannot be read") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError) as exc:
        # IndexError and TypeError too: Pillow's decoders raise them for damaged files (e.g. a TIFF
        # without its dimensions), and Pillow's own open() treats them as "not this format"
        raise InputError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None
    return picture


# PNG: channels of each colour type, and Adam7's passes (first row, first column, row step, column step).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


def _check_png_data(path: Path) -> None:
    """Raise ``ValueError`` when a PNG's image data holds fewer bytes than its header needs.
    Pillow decodes such a file without a word (the rows that are missing come out black), where
    libpng says "Not enough image data"; the data is inflated here, in pieces, before Pillow
    allocates the picture."""
    with open(path, "rb") as f:
        head = f.read(33)
        if len(head) < 33 or head[12:16] != b"IHDR":
            return  # Pillow's own checks speak for such a file
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
        bits = depth * _PNG_CHANNELS.get(colour, 1)
        passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
        needed = 0
        for row, column, row_step, column_step in passes:
            rows, columns = -(-max(height - row, 0) // row_step), -(-max(width - column, 0) // column_step)
            needed += rows * (1 + (columns * bits + 7) // 8) if rows and columns else 0
        inflate, got = zlib.decompressobj(), 0
        while got < needed and not inflate.eof:
            size_and_kind = f.read(8)
            if len(size_and_kind) < 8:
                break
            size, kind = struct.unpack(">I4s", size_and_kind)
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                f.seek(size + 4, 1)
                continue
            data = f.read(size)
            f.seek(4, 1)
            while got < needed:  # output in pieces: a little data may inflate to a lot
                piece = inflate.decompress(data, 1 << 20)
                got, data = got + len(piece), inflate.unconsumed_tail
                if not piece and not data:
                    break
    if got < needed:
        raise ValueError(f"not enough image data: {got:,} of the {needed:,} bytes its {width}×{height} header needs")


def _from_pil(img: Image.Image) -> Picture:
    icc = img.info.get("icc_profile") or None
    img = ImageOps.exif_transpose(img)  # also drops the orientation tag from the EXIF it keeps
    exif = img.getexif()
    exif_bytes = exif.tobytes() if len(exif) else None
    mode = img.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info or img.palette.mode == "RGBA" else "RGB"
        if mode == "RGB" and _grey_palette(img):
            mode = "L"  # grey stays grey: a GIF or PNG of a grey picture is often a palette
        img = img.convert(mode)
    elif mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        pixels = np.clip(arr, 0, 65535).astype(np.uint16)[..., None]
        return Picture(pixels, icc_profile=icc, exif=exif_bytes)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        pixels = np.clip(np.round(arr / max(arr.max(), 1.0) * 65535), 0, 65535).astype(np.uint16)[..., None]
        return Picture(pixels, icc_profile=icc, exif=exif_bytes)
    if mode == "CMYK" and icc:
        icc = None  # a CMYK profile does not describe the RGB we write
    alpha = None
    if mode in ("LA", "RGBA"):
        alpha = np.asarray(img.getchannel("A")).copy()
        img = img.convert("L" if mode == "LA" else "RGB")
    elif mode in ("1", "L"):
        img = img.convert("L")
    elif mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img)
    pixels = arr[..., None].copy() if arr.ndim == 2 else arr.copy()
    return Picture(pixels, alpha, icc, exif_bytes)


def _grey_palette(img: Image.Image) -> bool:
    colours = np.asarray(img.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    used = colours[np.unique(np.asarray(img)).clip(0, len(colours) - 1)] if len(colours) else colours
    return bool(len(used)) and bool((used[:, 0] == used[:, 1]).all() and (used[:, 1] == used[:, 2]).all())


def _stored_as_16bit(path: Path, img: Image.Image) -> bool:
    """Whether a PNG/TIFF holds 16-bit samples (so that OpenCV decodes only those, not every
    8-bit file a second time, nor damaged ones Pillow could read but libpng complains about)."""
    if img.format not in SIXTEEN_BIT_FORMATS:
        return False
    if img.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258, ())
        return 16 in (bits if isinstance(bits, tuple) else (bits,))
    return False


def _maybe_16bit(path: Path, img: Image.Image, picture: Picture) -> Picture:
    """Pillow reads 16-bit RGB(A) PNG/TIFF as 8-bit; OpenCV keeps the 16 bits."""
    # Decode from bytes: cv2.imread crashes the process on names that are not valid UTF-8.
    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return picture
    arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    orientation = img.getexif().get(0x0112, 1)
    arr = _orient(arr, orientation)
    alpha = arr[..., 3].copy() if arr.shape[2] == 4 else None
    colour = arr[..., :1] if _is_grey_png(path) else arr[..., :3]  # 16-bit grey+alpha reads as RGBA

    return replace(picture, pixels=np.ascontiguousarray(colour), alpha=alpha)


def _is_grey_png(path: Path) -> bool:
    """Whether a PNG's header says grey (colour type 0 or 4)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] in (0, 4)


_ORIENTATIONS = {  # EXIF orientation -> the transform ImageOps.exif_transpose applies
    2: lambda a: a[:, ::-1],  # flip left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # flip top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1–8) to an ``H×W×C`` array, as ``ImageOps.exif_transpose``."""
    op = _ORIENTATIONS.get(orientation)
    return np.ascontiguousarray(op(arr)) if op else arr


def output_format(path: Path, requested: str | None) -> str:
    """The Pillow format name for ``path`` (from ``--format`` or the suffix)."""
    key = (requested or path.suffix.lstrip(".") or "png").lower()
    if key not in FORMATS:
        raise OutputError(f"{path}: cannot write {key!r} images (use one of png, jpg, webp, tiff, bmp)")
    return FORMATS[key]


# The largest side each format's encoder takes (PNG's is 2³¹ − 1), and classic TIFF's 4 GiB.
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "PNG": 2**31 - 1, "TIFF": 2**32 - 1, "BMP": 2**31 - 1}
_MAX_32BIT_FILE_BYTES = 2**32 - 2**20  # classic TIFF and BMP record sizes in 32 bits; headroom for headers and tags


def check_output_size(path: Path, fmt: str, width: int, height: int, channels: int, bytes_per_sample: int) -> None:
    """Raise :class:`OutputError` before any work when ``fmt`` cannot hold a ``width×height``
    picture: better a one-line hint up front than an encoder error after the upscaling."""
    side = _MAX_SIDE[fmt]
    if width > side or height > side:
        raise OutputError(f"{path}: a {width}×{height} output is too large for {fmt} "
                          f"(at most {side:,} pixels a side); write png or tiff instead")
    if fmt == "TIFF" and width * height * channels * bytes_per_sample > _MAX_32BIT_FILE_BYTES:
        raise OutputError(f"{path}: a {width}×{height} output is over TIFF's 4 GiB limit; write png instead")
    if fmt == "BMP" and width * height * channels > _MAX_32BIT_FILE_BYTES:
        raise OutputError(f"{path}: a {width}×{height} output is over BMP's 4 GiB limit; write png instead")


def write_image(path: str | Path, picture: Picture, fmt: str | None = None, quality: int = 95, force: bool = False) -> None:
    """Encode ``picture`` to ``path`` atomically; an existing file is replaced only with ``force``."""
    path = Path(path)
    fmt = output_format(path, fmt)
    with atomic_write(path, force) as f:
        _encode(f, picture, fmt, quality)


def _encode(f: BinaryIO, picture: Picture, fmt: str, quality: int) -> None:
    if fmt in NO_ALPHA_FORMATS and picture.alpha is not None:
        raise OutputError(f"{fmt} keeps no alpha channel; write png, webp or tiff to keep transparency")
    if fmt == "PNG":
        writer = PngWriter(f, picture.width, picture.height, picture, compress_level=png_level(picture))
        writer.write_rows(picture.pixels, picture.alpha)
        writer.close()
        return
    if picture.bit_depth == 16 and fmt == "TIFF" and (picture.pixels.shape[2] == 3 or picture.alpha is not None):
        f.write(_encode_tiff16(picture))
        return
    img = to_pil(picture if picture.bit_depth == 8 or fmt == "TIFF" else to_8bit(picture))
    options: dict = {}
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    if picture.exif:
        options["exif"] = picture.exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    img.save(f, format=fmt, **options)


def _encode_tiff16(picture: Picture) -> bytes:
    """Pillow cannot write 16-bit RGB; OpenCV can (without ICC/EXIF)."""
    px = picture.pixels
    if px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    arr = px if picture.alpha is None else np.dstack([px, picture.alpha])
    code = cv2.COLOR_RGBA2BGRA if arr.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(".tiff", cv2.cvtColor(arr, code))
    if not ok:
        raise OutputError("OpenCV could not encode the 16-bit TIFF")
    return buf.tobytes()


def to_8bit(picture: Picture) -> Picture:
    """Round a 16-bit picture down to 8 bits (for formats that have no 16-bit mode)."""
    if picture.bit_depth == 8:
        return picture

    def conv(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)

    return replace(picture, pixels=conv(picture.pixels), alpha=conv(picture.alpha))


def to_pil(picture: Picture) -> Image.Image:
    """A Pillow image of ``picture`` (16-bit grey as ``I;16``; 16-bit RGB is not representable)."""
    px = picture.pixels
    if picture.bit_depth == 16:
        return Image.fromarray(np.ascontiguousarray(px[..., 0], dtype=np.uint16))  # mode I;16
    img = Image.fromarray(px[..., 0] if px.shape[2] == 1 else px)
    if picture.alpha is not None:
        img.putalpha(Image.fromarray(picture.alpha))
    return img


def png_level(picture: Picture) -> int:
    """zlib level for PNG output: fast for big outputs, where compression time dominates."""
    return 1 if picture.pixels.size > 4_000_000 else 6


def _compressor(level: int) -> "zlib._Compress":
    """A zlib stream compressor; ISA-L's for level 1 (the fast level) when it is installed.

    ISA-L's is several times faster than zlib at that level, and its files are no larger: after
    the upscaling itself, PNG compression is the slowest part of a folder run (benchmarks/README.md).
    """
    if level == 1 and fast_zlib is not None:
        return fast_zlib.compressobj(level)
    return zlib.compressobj(level)


class PngWriter:
    """Writes a PNG row strip by row strip, so an output never has to be whole in memory.

    Handles 8/16-bit grey, grey+alpha, RGB and RGBA, and carries iCCP and eXIf chunks (Pillow
    cannot write 16-bit RGB PNGs). Rows use PNG's "Up" filter, which is cheap and compresses
    photographs well.
    """

    def __init__(self, f: BinaryIO, width: int, height: int, like: Picture, compress_level: int = 6) -> None:
        self._f, self._width, self._height = f, width, height
        self._depth = like.bit_depth
        self._channels = like.pixels.shape[2] + (like.alpha is not None)
        self._rows_written = 0
        self._previous: np.ndarray | None = None
        self._zlib = _compressor(compress_level)
        color_type = {1: 0, 2: 4, 3: 2, 4: 6}[self._channels]
        f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, self._depth, color_type, 0, 0, 0))
        if like.icc_profile:
            self._chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(like.icc_profile))
        if like.exif:
            self._chunk(b"eXIf", like.exif[6:] if like.exif.startswith(b"Exif\0\0") else like.exif)

    def write_rows(self, pixels: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Append ``n×W×C`` rows (and their ``n×W`` alpha)."""
        px = pixels if alpha is None else np.dstack([pixels, alpha])
        n = px.shape[0]
        if px.shape[1] != self._width or px.shape[2] != self._channels:
            raise ValueError(f"rows of shape {px.shape} do not fit a {self._width}-wide, {self._channels}-channel PNG")
        rows = px.astype(">u2" if self._depth == 16 else np.uint8, copy=False).reshape(n, -1).view(np.uint8)
        previous = self._previous if self._previous is not None else np.zeros_like(rows[0])
        filtered = np.empty((n, rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # filter type Up
        filtered[0, 1:] = rows[0] - previous
        filtered[1:, 1:] = rows[1:] - rows[:-1]
        self._previous = rows[-1].copy()
        self._rows_written += n
        data = self._zlib.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)

    def close(self) -> None:
        if self._rows_written != self._height:
            raise ValueError(f"PNG got {self._rows_written} rows, expected {self._height}")
        self._chunk(b"IDAT", self._zlib.flush())
        self._chunk(b"IEND", b"")

    def _chunk(self, kind: bytes, data: bytes) -> None:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        self._f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))
