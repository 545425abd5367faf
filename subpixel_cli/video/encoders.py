"""The output's format: the muxer for a suffix, the encoder, its pixel format and quality, and
the audio rate of a re-encoded track. Each choice that differs from what was asked adds a note."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from subpixel_cli.errors import UsageError
from subpixel_cli.video.colour import Hdr

# Friendly codec names -> FFmpeg encoders to try, in order.
CODECS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "libopenh264"),
    "hevc": ("libx265",),
    "h265": ("libx265",),
    "vp9": ("libvpx-vp9",),
    "av1": ("libsvtav1", "libaom-av1", "librav1e"),
    "mpeg4": ("mpeg4",),
    "ffv1": ("ffv1",),
}
# Encoders with a constant-quality knob, and the default quality when --crf is not given
# (a little better than each encoder's own default: upscaled detail is what the user is after).
CRF_DEFAULTS = {"libx264": 18, "libx265": 22, "libvpx-vp9": 30, "libsvtav1": 30, "libaom-av1": 30}
# x264/x265 speed presets, by output size. On a CPU the encoder and the network share the cores,
# so every core-millisecond the encoder takes is one the network does not get (and behind a GPU
# the encoder is the bottleneck); the larger the frame, the faster the preset: "ultrafast" (no
# CABAC, no deblocking: more bits for the same CRF, the encode still far closer to its input than
# what tells models apart) above 720p, "superfast" above 960×540, "veryfast" up to it. The
# measurements behind the tiers are in benchmarks/README.md. --preset chooses any other.
PRESETS = {"libx264": "veryfast", "libx265": "veryfast"}
LARGE_PRESETS = {"libx264": "superfast", "libx265": "superfast"}
HUGE_PRESETS = {"libx264": "ultrafast", "libx265": "ultrafast"}
LARGE_PIXELS = 960 * 540  # more pixels than this take LARGE_PRESETS
HUGE_PIXELS = 1280 * 720  # more than this, HUGE_PRESETS
# Codecs a muxer holds although FFmpeg's codec query does not say so (MPEG-TS answers for only a
# handful, so .ts output fell back to MPEG-2 video, which refuses 1/90000 time bases).
_ALSO_HOLDS = {"mpegts": {"h264", "hevc"}}
# --lossless: the encoders that have a lossless mode, and its options. FFV1 is the default where
# the container is one it belongs in; elsewhere H.264 with QP 0.
LOSSLESS = {"ffv1": {"level": "3"}, "libx264": {"qp": "0", "preset": "veryfast"},
            "libx265": {"preset": "veryfast", "x265-params": "lossless=1:log-level=error"}}
_FFV1_MUXERS = {"matroska", "nut", "avi"}
# Output suffix -> FFmpeg muxer.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
           ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".flv": "flv", ".ogv": "ogg", ".nut": "nut"}


def format_for(target: Path) -> str:
    """The FFmpeg muxer for ``target``'s suffix; an unknown suffix is a usage error."""
    fmt = _MUXERS.get(target.suffix.lower())
    if fmt is None:
        raise UsageError(f"{target}: unknown video suffix {target.suffix!r}; use one of {', '.join(sorted(_MUXERS))} "
                         "(or --frames-dir for PNG frames)")
    return fmt


def pick_encoder(codec: str, container: Any, notes: list[str], depth: int = 8) -> str:
    """An encoder that exists in this FFmpeg build and that the container can hold. For ``auto``
    and a source deeper than 8 bits, one that can write more than 8 bits comes first."""
    fmt = container.format.name.split(",")[0]
    supported = container.supported_codecs | _ALSO_HOLDS.get(fmt, set())
    if codec == "auto":
        usable = [n for n in (*CODECS["h264"], container.default_video_codec, "mpeg4")
                  if _encoder_exists(n) and _stream_codec(n) in supported]
        if depth > 8:  # e.g. WebM: AV1 at 10 bits rather than this build's 8-bit-only VP9
            deep = [n for n in (*usable, *CODECS["hevc"], *CODECS["av1"], *CODECS["vp9"])
                    if _encoder_exists(n) and _stream_codec(n) in supported and max_depth(n) > 8]
            usable = deep[:1] + usable
        if not usable:
            raise UsageError(f"no video encoder available for {fmt} output; try an .mp4 or .mkv output")
        name = av.codec.Codec(usable[0], "w").name  # "vp9" -> "libvpx-vp9"
        if _stream_codec(name) != "h264":
            why = "this FFmpeg build has no H.264 encoder" if "h264" in supported else f"{fmt} cannot hold H.264"
            notes.append(f"wrote {_stream_codec(name)} ({name}), not H.264: {why}; choose with --codec")
        return name
    candidates = CODECS.get(codec.lower(), (codec,))
    found = [name for name in candidates if _encoder_exists(name)]
    if not found:
        known = ", ".join(n for n, encs in CODECS.items() if any(_encoder_exists(e) for e in encs))
        raise UsageError(f"--codec {codec}: no such encoder in this FFmpeg build (available: {known}, or an FFmpeg encoder name)")
    for name in found:
        if _stream_codec(name) in supported or not supported:
            return av.codec.Codec(name, "w").name
    raise UsageError(f"--codec {codec}: {fmt} cannot hold {_stream_codec(found[0])}; use an .mkv output or another codec")


def pick_lossless_encoder(codec: str, container: Any, notes: list[str], depth: int = 8) -> str:
    """The encoder for ``--lossless``: FFV1 for ``auto`` in .mkv/.nut/.avi, else ``codec`` as
    :func:`pick_encoder` chooses it if it has a lossless mode (FFV1, x264, x265)."""
    fmt = container.format.name.split(",")[0]
    if codec == "auto" and fmt in _FFV1_MUXERS and _encoder_exists("ffv1"):
        return "ffv1"
    encoder = pick_encoder(codec, container, notes, depth)
    if encoder not in LOSSLESS:
        raise UsageError(f"--lossless works with ffv1, h264 (libx264) and hevc (libx265), not {encoder}")
    return encoder


def lossless_pix_fmt(encoder: str, size: tuple[int, int], notes: list[str], depth: int, chroma: str,
                     requested: str | None = None) -> str:
    """FFV1 keeps the model's RGB frames exactly (``bgr0``, or ``gbrp16le`` above 8 bits); x264 and
    x265 code YUV losslessly at the source's chroma subsampling and depth, after a conversion that
    rounds (said in a note)."""
    if requested is None and encoder == "ffv1":
        return "bgr0" if depth <= 8 else "gbrp16le"
    pix_fmt = pick_pix_fmt(encoder, size, notes, depth, requested, chroma)
    if not av.VideoFormat(pix_fmt).is_rgb:
        notes.append(f"--lossless with {encoder} codes {pix_fmt} without loss, but the model's RGB frames are "
                     "rounded on the way to YUV; FFV1 (--codec ffv1, .mkv) keeps them exactly")
    return pix_fmt


def _encoder_exists(name: str) -> bool:
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        return False
    return codec.type == "video" and not name.endswith(("_nvenc", "_qsv", "_amf", "_vaapi", "_v4l2m2m", "_videotoolbox"))


def max_depth(encoder: str) -> int:
    """The most bits per component ``encoder`` writes."""
    return max((bit_depth(f.name) for f in av.codec.Codec(encoder, "w").video_formats or []), default=8)


def _stream_codec(encoder: str) -> str:
    """The codec an encoder produces (``libx264`` -> ``h264``), as containers name it."""
    return av.codec.Codec(encoder, "w").canonical_name if _encoder_exists(encoder) else encoder


def bit_depth(pix_fmt: str | None) -> int:
    """Bits per component of an FFmpeg pixel format (8 if unknown)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components) if pix_fmt else 8
    except (ValueError, TypeError):
        return 8


def pick_pix_fmt(encoder: str, size: tuple[int, int], notes: list[str], depth: int = 8,
                 requested: str | None = None, chroma: str = "420") -> str:
    """``requested`` if the encoder takes it; else ``chroma`` subsampling (4:2:0 by default) at the
    source's ``depth`` where the encoder and the size allow (4:4:4 for odd sizes), the nearest
    depth it has otherwise."""
    formats = [f.name for f in av.codec.Codec(encoder, "w").video_formats or []]
    if requested is not None:
        if formats and requested not in formats:
            raise UsageError(f"--pix-fmt {requested}: {encoder} does not take it (it takes {', '.join(formats)})")
        return requested
    odd = bool(size[0] % 2 or size[1] % 2)
    depths = [depth] + sorted(d for d in (10, 12, 16) if d > depth) + sorted((d for d in (8, 10, 12) if d < depth), reverse=True)
    subsamplings = ("444",) if odd else tuple(dict.fromkeys((chroma, "420", "444")))
    for sub in subsamplings:
        for bits in depths:
            name = f"yuv{sub}p" + ("" if bits == 8 else f"{bits}le")
            if name in formats:
                if bits < depth:
                    notes.append(f"the source has {depth} bits per component but {encoder} writes at most {bits}: "
                                 f"wrote {name} (--codec hevc or --codec ffv1 keep more)")
                if odd:
                    notes.append(f"{size[0]}×{size[1]} is odd, so 4:2:0 chroma cannot be used: wrote {name} "
                                 "(some players cannot play it; an even scale avoids this)")
                return name
    for choice in ("rgb24", "bgr0", "gbrp"):
        if choice in formats:
            return choice
    return formats[0] if formats else "yuv420p"


def check_preset(encoder: str, preset: str | None) -> None:
    """``--preset`` is for the encoders with speed presets (x264, x265), lossless or not."""
    if preset is not None and encoder not in PRESETS:
        raise UsageError(f"--preset applies to {' and '.join(PRESETS)}, not {encoder}")


def quality_options(encoder: str, crf: int | None, stream: Any, rate: Fraction, preset: str | None = None) -> dict[str, str]:
    """Encoder options: constant quality where the encoder has it, else a generous bit rate;
    x264/x265's speed ``preset`` (default by frame size; :func:`check_preset` first)."""
    if encoder in CRF_DEFAULTS:
        options = {"crf": str(crf if crf is not None else CRF_DEFAULTS[encoder])}
        if encoder == "libvpx-vp9":
            options["b"] = "0"  # constant-quality mode
        if encoder in PRESETS:
            pixels = stream.width * stream.height
            tier = HUGE_PRESETS if pixels > HUGE_PIXELS else LARGE_PRESETS if pixels > LARGE_PIXELS else PRESETS
            options["preset"] = preset or tier[encoder]
        if encoder == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints its statistics to stderr otherwise
        return options
    if crf is not None:
        raise UsageError(f"--crf does not apply to {encoder}; it works with {', '.join(CRF_DEFAULTS)}")
    if not av.codec.Codec(encoder, "w").lossless:
        stream.codec_context.bit_rate = int(0.25 * stream.width * stream.height * float(rate))  # ≈ 0.25 bit/pixel
    return {}


# Encoders that carry HDR10 metadata: their option, what comes first, and the names of the
# mastering display's and the content light level's parameters.
_HDR_PARAMS = {"libx264": ("x264-params", (), "mastering-display", "cll"),
               "libx265": ("x265-params", ("hdr10=1",), "master-display", "max-cll"),
               "libsvtav1": ("svtav1-params", (), "mastering-display", "content-light")}


def hdr_options(encoder: str, hdr: Hdr | None, notes: list[str]) -> dict[str, str]:
    """x264/x265/SVT-AV1 parameters that write the input's mastering display and content light level into
    the bitstream (SEI), where decoders and players find them; a note for other encoders."""
    if not hdr:
        return {}
    if encoder in _HDR_PARAMS:
        option, first, display_key, cll_key = _HDR_PARAMS[encoder]
        display = hdr.master_display_float if encoder == "libsvtav1" else hdr.master_display
        params = [*first, *([f"{display_key}={display}"] if display else [])]
        params += [f"{cll_key}={hdr.max_cll[0]},{hdr.max_cll[1]}"] if hdr.max_cll else []
        return {option: ":".join(params)}
    notes.append(f"HDR mastering display and content light level not kept: {encoder} cannot carry them "
                 "(use --codec h264, hevc or av1)")
    return {}


def merge_params(options: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``options`` with ``extra`` added; ``x264-params``/``x265-params`` lists are joined."""
    merged = dict(options)
    for key, value in extra.items():
        merged[key] = f"{merged[key]}:{value}" if key.endswith("-params") and merged.get(key) else value
    return merged


def audio_rate(encoder: str, rate: int) -> int:
    """``rate`` if the encoder takes it, else the nearest rate above it that it does (Opus: 48 kHz)."""
    rates = av.codec.Codec(encoder, "w").audio_rates
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)
