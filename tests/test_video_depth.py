"""``subpixel video`` keeps everything: bit depth, HDR metadata, chapters, attachments, metadata,
dispositions, and ``--lossless`` is exact.

The clips are made here with PyAV: a 10-bit HDR10-tagged H.264 (High 10, BT.2020, PQ, mastering
display and content light level SEI) in Matroska with two chapters, a font attachment, two audio
tracks with languages and a forced subtitle; 64×48, a dozen frames.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from test_video import NearestUpscaler, make_video, probe

from subpixel_cli.cli import main
from subpixel_cli.errors import UsageError
from subpixel_cli.video import VideoOptions, upscale_video

W, H, N = 64, 48, 12
# SMPTE ST 2086 in x264's units: chromaticities in 0.00002, luminance in 0.0001 cd/m².
MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
CLL = (1000, 400)
BT2020, PQ, LIMITED = 9, 16, 1


def make_hdr_clip(path: Path, depth: int = 10, n_frames: int = N, extras: bool = True, lossless: bool = True) -> Path:
    """A ``depth``-bit HDR10 clip whose luma is a gradient over all its ``2**depth`` levels
    (coded losslessly, so that they all survive; ``lossless=False``: CRF 16, High 10)."""
    pix_fmt = f"yuv420p{depth}le"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264" if depth <= 10 else "libx265", rate=24)
        v.width, v.height, v.pix_fmt = W, H, pix_fmt
        ctx = v.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = BT2020, BT2020, PQ, LIMITED
        if depth <= 10:
            v.options = {"x264-params": f"mastering-display={MASTER}:cll={CLL[0]},{CLL[1]}",
                         **({"qp": "0"} if lossless else {"crf": "16"})}
        else:
            v.options = {"x265-params": f"lossless=1:log-level=error:master-display={MASTER}:max-cll={CLL[0]},{CLL[1]}"}
        audio = []
        if extras:
            out.metadata["title"] = "HDR test"
            for lang in ("eng", "fra"):
                a = out.add_stream("aac", rate=8000)
                a.layout, a.metadata["language"], a.metadata["title"] = "mono", lang, f"voice {lang}"
                if lang == "fra":
                    a.disposition = av.stream.Disposition.default
                audio.append(a)
            s = out.add_mux_stream("subrip")
            s.metadata["language"], s.disposition = "ger", av.stream.Disposition.forced
            out.add_attachment("font.ttf", "application/x-truetype-font", b"FONT" * 64)
            out.set_chapters([
                {"id": 1, "start": 0, "end": 250, "time_base": Fraction(1, 1000), "metadata": {"title": "Opening"}},
                {"id": 2, "start": 250, "end": 500, "time_base": Fraction(1, 1000), "metadata": {"title": "Close"}},
            ])
        peak = (1 << 16) - 1
        ramp = (np.arange(W * H).reshape(H, W) * peak // (W * H - 1)).astype(np.uint16)
        for i in range(n_frames):
            rgb = np.stack([ramp, np.roll(ramp, i, axis=1), ramp[::-1]], -1)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le")
            frame = frame.reformat(format=pix_fmt, dst_colorspace="BT2020", dst_color_range="MPEG")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        for a in audio:
            for start in range(0, 4096, 1024):
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 8000, start
                out.mux(a.encode(af))
            out.mux(a.encode(None))
        if extras:
            packet = av.Packet(b"forced line")
            packet.pts = packet.dts = 0
            packet.duration, packet.time_base, packet.stream = 400, Fraction(1, 1000), s
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def hdr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hdr_clip(tmp_path_factory.mktemp("hdr") / "hdr.mkv")


def run_cli(*args: str) -> "CliRunner.Result":
    return CliRunner().invoke(main, ["video", *args], catch_exceptions=False)


def luma_levels(path: Path) -> int:
    """Distinct values in the first frame's Y plane."""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    plane = frame.planes[0]
    dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
    rows = np.frombuffer(bytes(plane), dtype).reshape(plane.height, -1)[:, : plane.width]
    return len(np.unique(rows))


# --- 1. bit depth ----------------------------------------------------------------------------


def test_10bit_source_is_written_at_10_bits_with_more_than_256_levels(tmp_path: Path, hdr_clip: Path) -> None:
    assert luma_levels(hdr_clip) > 256
    out = tmp_path / "out.mkv"
    result = upscale_video(NearestUpscaler(), hdr_clip, out)
    assert result.pix_fmt == "yuv420p10le" and result.codec == "libx264"
    got = probe(out)
    assert got["pix_fmt"] == "yuv420p10le" and got["frames"] == N and got["size"] == (2 * W, 2 * H)
    assert luma_levels(out) > 256


def test_10bit_through_the_model_stays_16bit(tmp_path: Path, hdr_clip: Path, video_model_dir: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from subpixel_cli.upscale import Upscaler

    seen: list[np.dtype] = []
    real = Upscaler.upscale_batch

    def spy(self: Upscaler, frames: np.ndarray) -> np.ndarray:
        seen.append(frames.dtype)
        out = real(self, frames)
        assert out.dtype == np.uint16 and len(np.unique(out)) > 256  # not rounded to 8 bits on the way
        return out

    monkeypatch.setattr(Upscaler, "upscale_batch", spy)
    out = tmp_path / "out.mkv"
    result = run_cli(str(hdr_clip), "-o", str(out), "--model", video_model_dir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pix_fmt"] == "yuv420p10le" and "libx264 yuv420p10le" in result.stderr
    assert seen and set(seen) == {np.dtype(np.uint16)}
    assert probe(out)["pix_fmt"] == "yuv420p10le"


def test_8bit_source_stays_8bit(tmp_path: Path) -> None:
    src = make_video(tmp_path / "sdr.mp4", n_frames=N, audio_seconds=None)
    result = upscale_video(NearestUpscaler(), src, tmp_path / "out.mp4")
    assert result.pix_fmt == "yuv420p" and probe(tmp_path / "out.mp4")["pix_fmt"] == "yuv420p"


def test_frames_dir_from_a_10bit_source_writes_16bit_pngs(tmp_path: Path, hdr_clip: Path) -> None:
    import cv2

    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "frames", frames_dir=True)
    assert result.frames == N and result.pix_fmt == "rgb48le"
    png = cv2.imread(str(tmp_path / "frames" / "frame_000001.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (2 * H, 2 * W, 3) and len(np.unique(png[..., 1])) > 256


def test_webm_from_a_10bit_source_gets_a_10bit_encoder(tmp_path: Path, hdr_clip: Path) -> None:
    from subpixel_cli.video.encoders import max_depth

    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "out.webm")
    assert bit_depth_of(result.pix_fmt) == (10 if max_depth(result.codec) > 8 else 8)
    assert result.pix_fmt == probe(tmp_path / "out.webm")["pix_fmt"] and any("not H.264" in n for n in result.notes)


def bit_depth_of(pix_fmt: str) -> int:
    from subpixel_cli.video.encoders import bit_depth

    return bit_depth(pix_fmt)


def test_pix_fmt_overrides_and_is_checked(tmp_path: Path, hdr_clip: Path) -> None:
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "o.mkv", VideoOptions(pix_fmt="yuv444p10le"))
    assert result.pix_fmt == "yuv444p10le" and probe(tmp_path / "o.mkv")["pix_fmt"] == "yuv444p10le"
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "8.mkv", VideoOptions(pix_fmt="yuv420p"))
    assert probe(tmp_path / "8.mkv")["pix_fmt"] == "yuv420p"
    assert any("8-bit but the video is PQ HDR" in n for n in result.notes)  # an HDR claim with 8 bits is named
    with pytest.raises(UsageError, match="--pix-fmt rgb48le"):
        upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "bad.mkv", VideoOptions(pix_fmt="rgb48le"))


def test_12bit_source_gets_12bit_hevc_or_a_note_with_h264(tmp_path: Path) -> None:
    src = make_hdr_clip(tmp_path / "deep.mkv", depth=12, n_frames=4, extras=False)
    result = upscale_video(NearestUpscaler(), src, tmp_path / "h264.mkv")
    assert result.pix_fmt == "yuv420p10le" and any("12 bits" in n and "hevc" in n for n in result.notes)
    result = upscale_video(NearestUpscaler(), src, tmp_path / "hevc.mkv", VideoOptions(codec="hevc"))
    assert result.pix_fmt == "yuv420p12le" and probe(tmp_path / "hevc.mkv")["pix_fmt"] == "yuv420p12le"


# --- 2. everything else in the container -----------------------------------------------------


def streams_of(path: Path) -> list[tuple[str, dict[str, str], int]]:
    """Each stream's type, tags (without muxer statistics) and disposition."""
    from subpixel_cli.video.extras import kept_tags

    with av.open(str(path)) as c:
        return [(s.type, kept_tags(dict(s.metadata)), int(s.disposition)) for s in c.streams]


def test_chapters_attachments_tags_and_dispositions_are_kept(tmp_path: Path, hdr_clip: Path) -> None:
    out = tmp_path / "out.mkv"
    result = upscale_video(NearestUpscaler(), hdr_clip, out)
    assert result.audio_streams_copied == 2 and result.subtitle_streams_copied == 1 and result.notes == []
    with av.open(str(hdr_clip)) as a, av.open(str(out)) as b:
        assert b.metadata["title"] == "HDR test"
        assert [(c["metadata"]["title"], float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]))
                for c in b.chapters()] == [("Opening", 0.0, 0.25), ("Close", 0.25, 0.5)]
        fonts = [(s.name, s.mimetype, bytes(s.data)) for s in b.streams if s.type == "attachment"]
        assert fonts == [("font.ttf", "application/x-truetype-font", b"FONT" * 64)]
        assert len(a.chapters()) == 2
    src, got = streams_of(hdr_clip), streams_of(out)
    assert [t for t, _, _ in got] == [t for t, _, _ in src] == ["video", "audio", "audio", "subtitle", "attachment"]
    for (_, tags_in, disp_in), (_, tags_out, disp_out) in zip(src, got):
        assert tags_out == tags_in and disp_out == disp_in
    assert got[1][1]["language"] == "eng" and got[2][1] == {"language": "fra", "title": "voice fra"}
    assert got[3][1]["language"] == "ger" and got[3][2] & int(av.stream.Disposition.forced)
    assert got[2][2] & int(av.stream.Disposition.default) and not got[1][2] & int(av.stream.Disposition.default)


def test_chapters_are_cut_with_start_and_end(tmp_path: Path, hdr_clip: Path) -> None:
    out = tmp_path / "cut.mkv"
    upscale_video(NearestUpscaler(), hdr_clip, out, VideoOptions(start=0.125, end=0.375))
    with av.open(str(out)) as c:
        got = [(ch["metadata"]["title"], float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]))
               for ch in c.chapters()]
    assert got == [("Opening", 0.0, 0.125), ("Close", 0.125, 0.25)]


def test_what_mp4_cannot_hold_is_named_in_one_note_each(tmp_path: Path, hdr_clip: Path) -> None:
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "out.mp4")
    assert any("attachment" in n and "font.ttf" in n and ".mkv" in n for n in result.notes)
    assert any("subtitle" in n and "dropped" in n for n in result.notes)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert [ch["metadata"].get("title") for ch in c.chapters()] == ["Opening", "Close"]
        assert [s.metadata.get("language") for s in c.streams.audio] == ["eng", "fra"]
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "out.avi")
    assert any(n.startswith("2 chapter(s) not kept: avi") for n in result.notes)


def test_data_streams_copied_within_mpegts_and_named_otherwise(tmp_path: Path) -> None:
    src = tmp_path / "klv.ts"
    with av.open(str(src), "w") as out:
        v = out.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        d = out.add_data_stream("klv")
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
            packet = av.Packet(b"klv%d" % i)
            packet.pts = packet.dts = i * 3750
            packet.time_base, packet.stream = Fraction(1, 90000), d
            out.mux(packet)
        out.mux(v.encode(None))
    result = upscale_video(NearestUpscaler(), src, tmp_path / "out.ts")
    assert result.data_streams_copied == 1 and result.notes == []
    with av.open(str(tmp_path / "out.ts")) as c:
        assert [bytes(p) for p in c.demux(c.streams.data[0]) if p.size] == [b"klv%d" % i for i in range(6)]
    result = upscale_video(NearestUpscaler(), src, tmp_path / "out.mkv")
    assert result.data_streams_copied == 0 and result.streams_dropped == 1
    assert any(n.startswith("data stream 1 not copied") for n in result.notes)


# --- 3. HDR metadata -------------------------------------------------------------------------


def hdr_of(path: Path) -> tuple[tuple[int, int, int, int], dict[str, bytes]]:
    """Colour tags (primaries, transfer, matrix, range) and the first frame's HDR side data."""
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        tags = (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range)
        frame = next(c.decode(video=0))
    wanted = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
    return tags, {sd.type.name: bytes(sd) for sd in frame.side_data if sd.type.name in wanted}


@pytest.mark.parametrize("codec, suffix", [("h264", ".mkv"), ("hevc", ".mkv"), ("h264", ".mp4"), ("auto", ".webm")])
def test_hdr10_tags_and_side_data_are_kept(tmp_path: Path, hdr_clip: Path, codec: str, suffix: str) -> None:
    from subpixel_cli.video.colour import hdr_from_side_data

    out = tmp_path / f"out{suffix}"
    upscale_video(NearestUpscaler(), hdr_clip, out, VideoOptions(codec=codec))
    tags_in, side_in = hdr_of(hdr_clip)
    tags_out, side_out = hdr_of(out)
    assert tags_in == tags_out == (BT2020, PQ, BT2020, LIMITED)
    assert set(side_in) == set(side_out) == {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}
    if codec != "auto":  # H.264 and HEVC SEI keep the same rationals; AV1 has other denominators
        assert side_out == side_in  # the same structs, byte for byte
    with av.open(str(out)) as c:
        hdr = hdr_from_side_data(next(c.decode(video=0)).side_data)
    assert hdr.master_display == MASTER and hdr.max_cll == CLL
    assert probe(out)["pix_fmt"] == "yuv420p10le"


def test_hdr_side_data_an_encoder_cannot_carry_is_named(tmp_path: Path, hdr_clip: Path) -> None:
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "out.mkv", VideoOptions(codec="ffv1"))
    assert any("mastering display" in n and "ffv1" in n for n in result.notes)


# --- 4. lossless -----------------------------------------------------------------------------


def model_frames(upscaler: object, source: Path) -> np.ndarray:
    """The Upscaler's output on the input's frames, decoded as the pipeline decodes them."""
    import threading

    from subpixel_cli.video import FileReader, Frame

    with FileReader(source, VideoOptions()) as reader:
        frames = np.stack([f.pixels for f in reader.items(threading.Event()) if isinstance(f, Frame)])
    return upscaler.upscale_batch(frames)


def decoded_rgb(path: Path, fmt: str) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)])


@pytest.mark.parametrize("depth", [8, 10])
def test_lossless_output_decodes_to_exactly_the_models_frames(tmp_path: Path, hdr_clip: Path, video_model_dir: str,
                                                              depth: int) -> None:
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler

    src = hdr_clip if depth == 10 else make_video(tmp_path / "sdr.mkv", n_frames=N, audio_seconds=None)
    upscaler = Upscaler(load_model(video_model_dir, None))  # as the CLI builds it: --device auto, --precision auto
    out = tmp_path / "lossless.mkv"
    result = run_cli(str(src), "-o", str(out), "--model", video_model_dir, "--lossless", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["codec"] == "ffv1" and record["pix_fmt"] == ("bgr0" if depth == 8 else "gbrp16le")
    expected = model_frames(upscaler, src)
    assert expected.dtype == (np.uint8 if depth == 8 else np.uint16)
    got = decoded_rgb(out, "rgb24" if depth == 8 else "rgb48le")
    assert got.shape == expected.shape and np.array_equal(got, expected)
    lossy = tmp_path / "lossy.mkv"
    assert run_cli(str(src), "-o", str(lossy), "--model", video_model_dir, "--quiet").exit_code == 0
    assert not np.array_equal(decoded_rgb(lossy, "rgb24" if depth == 8 else "rgb48le"), expected)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_lossless_x264_x265_code_the_yuv_exactly_at_the_source_depth(tmp_path: Path, hdr_clip: Path, codec: str) -> None:
    from subpixel_cli.video.colour import SWS_FLAGS

    out = tmp_path / "lossless.mkv"
    result = upscale_video(NearestUpscaler(), hdr_clip, out, VideoOptions(codec=codec, lossless=True))
    assert result.pix_fmt == "yuv420p10le" and any("rounded on the way to YUV" in n for n in result.notes)
    with av.open(str(out)) as c:
        got = [np.frombuffer(bytes(p), np.uint8) for f in c.decode(video=0) for p in f.planes]
    expected = []
    for rgb in NearestUpscaler().upscale_batch(model_frames(NearestUpscaler(scale=1), hdr_clip)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(
            format="yuv420p10le", src_color_range="JPEG", interpolation=SWS_FLAGS, dst_colorspace="BT2020",
            dst_color_range="MPEG")
        expected += [np.frombuffer(bytes(p), np.uint8) for p in frame.planes]
    assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_lossless_checks(tmp_path: Path, hdr_clip: Path, video_model_dir: str) -> None:
    for args in (["--lossless", "--crf", "10"], ["--pix-fmt", "rgb48le"], ["--lossless", "--codec", "vp9"]):
        result = run_cli(str(hdr_clip), "-o", str(tmp_path / "o.mkv"), "--model", video_model_dir, *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="--lossless works with"):
        upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "o.webm", VideoOptions(lossless=True, codec="vp9"))
    with pytest.raises(UsageError, match="--crf"):
        VideoOptions(lossless=True, crf=10)
    result = upscale_video(NearestUpscaler(), hdr_clip, tmp_path / "o.mp4", VideoOptions(lossless=True))
    assert result.codec == "libx264" and result.pix_fmt == "yuv420p10le"
