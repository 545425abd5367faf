"""The C kernels (subpixel_cli/kernels): what they compute, how they are built, cached and
remembered when a build fails, and that everything falls back to torch where they cannot be built."""

from __future__ import annotations

import json
import platform
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE

from subpixel_cli import runtime
from subpixel_cli.data import mod_crop
from subpixel_cli.degradations import downscale
from subpixel_cli.fused import bicubic_phases, colour_matrices
from subpixel_cli.images import read_rgb8
from subpixel_cli.kernels import Kernels, default_kernels, find_compiler
from subpixel_cli.registry import load_model
from subpixel_cli.runtime import int8_kernels
from subpixel_cli.upscale import Upscaler

KERNELS = default_kernels()  # as this machine (and SUBPIXEL_KERNELS_MARCH) builds them
needs_kernel = pytest.mark.skipif(KERNELS.conv1_u8 is None, reason=f"not built here: {KERNELS.why_not()}")


def reference_levels(planes: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gain: torch.Tensor,
                     shift: torch.Tensor) -> torch.Tensor:
    """round(gain·tanh(conv) + shift) clamped to 0…255, in float64, as N×H×W×64."""
    z = torch.tanh(F.conv2d(planes.double()[:, None], w.double(), b.double()))
    levels = (z * gain.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)).clamp(0, 255)
    return torch.floor(levels + 0.5).permute(0, 2, 3, 1)


@needs_kernel
@pytest.mark.parametrize("size", [(13, 21), (40, 37)])  # widths that leave pixels after the 4-pixel blocks
def test_conv1_u8_is_conv_tanh_and_levels(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h, w = size
    planes = torch.randint(0, 256, (2, h, w)).float()  # 8-bit levels, as the Y plane of video
    weight, bias = torch.randn(64, 1, 5, 5) / 255, torch.randn(64) * 0.3
    gain, shift = torch.rand(64) * 300 + 100, torch.rand(64) * 60 + 100  # levels run off both ends
    run = KERNELS.conv1_u8
    got = run(planes, weight, bias, gain, shift)
    if run.bf16:  # AVX-512 BF16 dot products: the weights are rounded to bf16 (8-bit levels are exact)
        weight = weight.bfloat16().float()
    expected = reference_levels(planes, weight, bias, gain, shift)
    assert got.dtype == torch.uint8 and got.shape == (2, h - 4, w - 4, 64)
    diff = (got.double() - expected).abs()
    assert diff.max() <= 1 and diff.mean() < 0.001  # fp32 sums and a few-ulp tanh: ties may round either way
    assert got.min() == 0 and got.max() == 255  # clamped, not wrapped


@needs_kernel
def test_conv1_u8_checks_its_shapes() -> None:
    run = KERNELS.conv1_u8
    with pytest.raises(ValueError, match="64×1×5×5"):
        run(torch.zeros(1, 8, 8), torch.zeros(32, 1, 5, 5), torch.zeros(32), torch.ones(32), torch.zeros(32))
    with pytest.raises(ValueError, match="at least 5×5"):
        run(torch.zeros(1, 4, 8), torch.zeros(64, 1, 5, 5), torch.zeros(64), torch.ones(64), torch.zeros(64))


@needs_kernel
def test_tanh_f32_is_tanh_in_place() -> None:
    x = (torch.randn(2, 32, 7, 9) * 3).contiguous(memory_format=torch.channels_last)  # a rest after 16s
    x[0, :5, 0, 0] = torch.tensor([0.0, 4.9, 5.0, 20.0, -20.0])
    expected, inside = torch.tanh(x.double()), x.abs() < 4.97
    got = KERNELS.tanh_f32(x)
    assert got is x  # in place
    assert (got.double() - expected).abs().max() < 1e-4  # tanh(±4.97) beyond ±4.97
    assert (got.double() - expected)[inside].abs().max() < 3e-6  # 2.2e-6 inside
    with pytest.raises(ValueError, match="float32"):
        KERNELS.tanh_f32(torch.zeros(4, dtype=torch.bfloat16))


@needs_kernel
def test_tanh_bf16_is_tanh_in_place() -> None:
    x = (torch.randn(2, 32, 7, 9) * 3).bfloat16().contiguous(memory_format=torch.channels_last)
    x[0, :4, 0, 0] = torch.tensor([0.0, -0.0, 20.0, -20.0])
    expected = torch.tanh(x.float()).bfloat16()
    got = KERNELS.tanh_bf16(x)
    assert got is x  # in place
    ulps = (got.view(torch.int16).int() - expected.view(torch.int16).int()).abs()
    assert ulps.max() <= 1 and (ulps > 0).float().mean() < 0.01  # a tie now and then
    assert got[0, 2, 0, 0] == 1 and got[0, 3, 0, 0] == -1
    with pytest.raises(ValueError, match="bf16"):
        KERNELS.tanh_bf16(torch.zeros(4))


@needs_kernel
def test_a_build_is_cached_and_reused(tmp_path, monkeypatch) -> None:
    assert Kernels(march=KERNELS.march, cache=tmp_path).library("int8") is not None
    built = list(tmp_path.glob("int8-*.so"))
    assert len(built) == 1 and not [p for p in tmp_path.iterdir() if p.is_dir()]  # no build leftovers
    stamp, commands = built[0].stat().st_mtime_ns, _record_commands(monkeypatch)
    assert Kernels(march=KERNELS.march, cache=tmp_path).library("int8") is not None  # as a later process
    assert [c[1:] for c in commands] == [["--version"]] and built[0].stat().st_mtime_ns == stamp  # not compiled again


def _record_commands(monkeypatch) -> list:
    commands, real = [], subprocess.run

    def recorded(cmd, *args, **kwargs):
        commands.append(cmd)
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recorded)
    return commands


def _script(path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_no_compiler_or_turned_off_means_no_kernel(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert Kernels(cache=tmp_path).library("int8") is None
    assert "no C compiler" in Kernels(cache=tmp_path).why_not("int8")
    monkeypatch.setenv("SUBPIXEL_KERNELS", "0")
    assert "SUBPIXEL_KERNELS=0" in default_kernels().why_not("int8") and default_kernels().conv1_u8 is None
    assert not list(tmp_path.iterdir())


def test_a_failed_build_is_remembered_with_its_reason(tmp_path, monkeypatch) -> None:
    failing = _script(tmp_path / "cc", "[ \"$1\" = --version ] && echo broken-cc 1.0 && exit 0\n"
                                       "echo 'cc: internal error' >&2\nexit 1\n")
    cache = tmp_path / "kernels"
    first = Kernels(cache=cache, compiler=failing)
    assert first.library("int8") is None and "internal error" in first.why_not("int8")
    assert not list(cache.glob("*.so")) and len(list(cache.glob("int8-*.failed"))) == 1
    commands = _record_commands(monkeypatch)
    later = Kernels(cache=cache, compiler=failing)  # as another process: the reason, without a compile
    assert "internal error" in later.why_not("int8") and "earlier build" in later.why_not("int8")
    assert [c[1:] for c in commands] == [["--version"]]
    next(cache.glob("int8-*.failed")).unlink()  # removed: tried again
    assert Kernels(cache=cache, compiler=failing).library("int8") is None and len(commands) > 2


def test_head_kernels_are_not_compiled_off_x86(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    kernels = Kernels(cache=tmp_path)
    assert kernels.write_rgb is None and kernels.vector_lanes == 0 and "x86" in kernels.why_not("head")
    assert not list(tmp_path.glob("head-*"))


@needs_kernel
@pytest.mark.skipif(not int8_kernels(), reason="this torch build has no oneDNN quantized convolution")
def test_a_build_without_openmp_runs_but_is_not_the_fast_int8_path(tmp_path) -> None:
    cc = KERNELS.compiler or find_compiler()
    no_openmp = _script(tmp_path / "cc", 'for a in "$@"; do [ "$a" = -fopenmp ] && echo "no OpenMP" >&2 && exit 1; done\n'
                                         f'exec {cc} "$@"\n')
    kernels = Kernels(march=KERNELS.march, cache=tmp_path / "kernels", compiler=no_openmp)
    assert kernels.conv1_u8 is not None and "without OpenMP" in kernels.why_not("int8")
    assert not runtime.fast_int8(kernels) and kernels.status()["int8"].startswith("int8.c was built without OpenMP")


@pytest.mark.skipif(not int8_kernels(), reason="this torch build has no oneDNN quantized convolution")
def test_int8_without_the_kernel_is_the_torch_path_and_not_fast() -> None:
    # The kernel only fuses what torch does in three passes: both give the same pixels within a
    # level or two (the kernel's conv1 is the more exact); without it int8 is not `auto`'s choice.
    loaded = load_model("espcn-x3")
    lr = downscale(mod_crop(read_rgb8(SAMPLE), 3), 3)[:80, :96]
    with_kernel = Upscaler(loaded, device="cpu", precision="int8")
    without = Upscaler(loaded, device="cpu", precision="int8", kernels=KERNELS.only("head"))
    assert without.fused_paths[3].conv1_u8 is None and not runtime.fast_int8(without.kernels)
    a, b = with_kernel.upscale(lr)[0].astype(int), without.upscale(lr)[0].astype(int)
    assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.5


def test_upscale_and_video_say_once_when_the_kernels_are_missing(model_folder, tmp_path, monkeypatch) -> None:
    """Without a C compiler `upscale` ran ~1.8× slower without a word (issue 22, rough edges)."""
    from robustness_util import cli, save

    monkeypatch.setenv("SUBPIXEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no compiler: default_kernels() has none
    save(tmp_path / "a.png")
    save(tmp_path / "b.png", seed=1)
    result = cli("upscale", tmp_path / "a.png", tmp_path / "b.png", "--model", model_folder(2, 1))
    notes = [line for line in result.stderr.splitlines() if "C kernels" in line]
    assert result.exit_code == 0 and len(notes) == 1 and notes[0].startswith("note:"), result.stderr
    assert "no C compiler" in notes[0] and "install" in notes[0]
    monkeypatch.setenv("SUBPIXEL_KERNELS", "0")  # the user's choice: no note
    result = cli("upscale", tmp_path / "a.png", "--model", model_folder(2, 1), "--force")
    assert result.exit_code == 0 and "C kernels" not in result.stderr


def test_bench_and_models_say_when_the_kernels_are_missing(model_folder, tmp_path, monkeypatch) -> None:
    from robustness_util import cli

    monkeypatch.setenv("SUBPIXEL_CACHE", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no compiler: default_kernels() has none
    result = cli("bench", "--model", model_folder(2, 1), "--size", "24x16", "--seconds", "0")
    assert result.exit_code == 0 and "note: subpixel's C kernels are not all in use here (no C compiler" in result.stderr
    record = json.loads(cli("bench", "--model", model_folder(2, 1), "--size", "24x16", "--seconds", "0", "--json").stdout)
    assert "no C compiler" in record["kernels_missing"] and "no C compiler" in record["cpu"]["kernels"]["head"]
    listed = [json.loads(line) for line in cli("models", "--json").stdout.splitlines()]
    assert listed and all("no C compiler" in m["cpu"]["kernels"]["int8"] for m in listed)
    assert all(m["cpu"]["auto"] != "int8" for m in listed)


# --- head.c: the last layer (conv3_bf16) and the pixels of a Y model on RGB (write_rgb) ------

needs_head = pytest.mark.skipif(KERNELS.write_rgb is None, reason=f"not built here: {KERNELS.why_not('head')}")
needs_write_y = pytest.mark.skipif(KERNELS.write_y is None, reason="write_y is used with AVX-512 only")
needs_conv3 = pytest.mark.skipif(KERNELS.conv3_bf16(torch.zeros(4, 32, 3, 3), torch.zeros(4)) is None,
                                 reason="conv3_bf16 needs AVX-512 BF16")


@pytest.fixture(params=["native", "avx2"])
def head(request) -> Kernels:
    """The head kernels as built for this CPU, and (on x86 CPUs with AVX-512) as built for AVX2
    CPUs (``-march=x86-64-v3``), so that the 8-pixel path runs here too."""
    if request.param == "native":
        return KERNELS
    if KERNELS.vector_lanes != 16 or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the AVX2 build is tried on x86 CPUs whose own build is the AVX-512 one")
    avx2 = Kernels(march="x86-64-v3", cache=KERNELS.cache, compiler=KERNELS.compiler)
    if avx2.vector_lanes != 8:
        pytest.skip(f"no AVX2 build here: {avx2.why_not('head')}")
    return avx2


def reference_rgb(phases: torch.Tensor, crop: int, planes: torch.Tensor, crop_planes: int, centre: float,
                  h: int, w: int) -> torch.Tensor:
    """In float64: Y by the phase shift, plus the planes bicubically ×r (F.interpolate's filter
    on the planes with their 2-pixel margin, then cut), as N×hr×wr×3 before rounding."""
    r = round(phases.shape[1] ** 0.5)
    y = F.pixel_shuffle(phases.double()[:, :, crop : crop + h, crop : crop + w], r) + centre
    lr = planes.double()[:, :, crop_planes : crop_planes + h + 4, crop_planes : crop_planes + w + 4]
    up = F.interpolate(lr, scale_factor=r, mode="bicubic", align_corners=False)[..., 2 * r : 2 * r + h * r, 2 * r : 2 * r + w * r]
    return (y + up).permute(0, 2, 3, 1)


@needs_head
@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("generic", [False, True])
def test_write_rgb_is_phase_shift_plus_bicubic_chroma(r: int, dtype: torch.dtype, generic: bool, head: Kernels) -> None:
    if generic and head is not KERNELS:
        pytest.skip("the plain loop is the same in every build")
    torch.manual_seed(r)
    n, h, w, crop, crop_planes = 2, 9, 13, 3, 1  # 13·r columns: whole 16- or 8-pixel blocks and a rest
    phases = (torch.rand(n, r * r, h + 2 * crop + 1, w + 2 * crop) * 300 - 150).to(dtype)
    phases = phases.contiguous(memory_format=torch.channels_last)  # as oneDNN hands them over
    planes = torch.randn(n, 3, h + 4 + 2 * crop_planes, w + 4 + 2 * crop_planes) * 40
    out = torch.empty(n, h * r, w * r, 3, dtype=torch.uint8)
    head.write_rgb(phases, crop, planes, crop_planes, bicubic_phases(r).float(), 128.0, out, generic=generic)
    expected = reference_rgb(phases, crop, planes, crop_planes, 128.0, h, w)
    rounded = torch.round(expected).clamp(0, 255)  # torch.round: half to even, as OpenCV
    diff = (out.double() - rounded).abs()
    near_tie = ((expected - expected.floor() - 0.5).abs() < 1e-3) & (expected > 0) & (expected < 255)
    assert diff.max() <= 1 and bool((diff[~near_tie] == 0).all())  # fp32 sums: only ties may go the other way
    assert out.min() == 0 and out.max() == 255  # clamped, not wrapped


@needs_head
@pytest.mark.parametrize("value, level", [(1e10, 255), (float("inf"), 255), (-1e10, 0), (float("-inf"), 0),
                                          (float("nan"), 0)])
def test_pixel_passes_saturate_what_no_level_holds(value: float, level: int, head: Kernels) -> None:
    # Beyond ±2³¹ a float → int32 conversion gives INT_MIN: clamped first, huge values are 255, not 0.
    phases = torch.full((2, 9, 4, 30), value).contiguous(memory_format=torch.channels_last)
    rgb, y = torch.empty(2, 12, 90, 3, dtype=torch.uint8), torch.empty(2, 12, 90, dtype=torch.uint8)
    head.write_rgb(phases, 0, torch.zeros(2, 3, 8, 34), 0, bicubic_phases(3).float(), 0.0, rgb)
    assert bool((rgb == level).all())
    if head.write_y is not None:  # used with AVX-512 only
        head.write_y(phases, 0, 0.0, y)
        assert bool((y == level).all())


@needs_head
def test_write_rgb_checks_its_shapes() -> None:
    run, taps = KERNELS.write_rgb, bicubic_phases(2).float()
    phases, planes = torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 12, 12)
    run(phases, 0, planes, 0, taps, 0.0, torch.empty(1, 16, 16, 3, dtype=torch.uint8))
    for bad in (torch.empty(1, 18, 16, 3, dtype=torch.uint8),  # 9 rows of phases, 8 there
                torch.empty(1, 16, 16, 1, dtype=torch.uint8),  # not RGB
                torch.empty(1, 16, 16, 3)):  # not bytes
        with pytest.raises(ValueError, match="write_rgb cannot write"):
            run(phases, 0, planes, 0, taps, 0.0, bad)
    with pytest.raises(ValueError, match="write_rgb cannot write"):  # planes without their margin
        run(phases, 0, planes[..., 2:, :], 0, taps, 0.0, torch.empty(1, 16, 16, 3, dtype=torch.uint8))


@needs_conv3
@pytest.mark.parametrize("outputs", [1, 2, 4, 8, 16])
def test_conv3_bf16_is_the_convolution_in_fp32_sums(outputs: int) -> None:
    torch.manual_seed(outputs)
    weight, bias = torch.randn(outputs, 64, 3, 3, dtype=torch.float64) / 20, torch.randn(outputs, dtype=torch.float64)
    run = KERNELS.conv3_bf16(weight, bias, outputs=(outputs,))
    x = torch.randn(2, 64, 7, 23).tanh().bfloat16().contiguous(memory_format=torch.channels_last)  # 21 columns: a rest
    got = run(x)
    expected = F.conv2d(x.double(), weight.bfloat16().double(), bias)  # bf16 products are exact in fp32
    assert got.dtype == torch.float32 and got.shape == (2, outputs, 5, 21)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got.double() - expected).abs().max() < 1e-4


needs_conv3_f32 = pytest.mark.skipif(KERNELS.conv3_f32(torch.zeros(4, 32, 3, 3), torch.zeros(4)) is None,
                                     reason="conv3_f32 needs AVX-512 or AVX2")


@needs_conv3_f32
@pytest.mark.parametrize("outputs", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("channels", [32, 48])
def test_conv3_f32_is_the_convolution(outputs: int, channels: int, head: Kernels) -> None:
    torch.manual_seed(outputs)
    weight, bias = torch.randn(outputs, channels, 3, 3, dtype=torch.float64) / 20, torch.randn(outputs, dtype=torch.float64)
    run = head.conv3_f32(weight, bias, outputs=(outputs,))
    if outputs > head.vector_lanes:  # 16 outputs with AVX-512 only
        assert run is None
        return
    x = torch.randn(2, channels, 7, 23).tanh().contiguous(memory_format=torch.channels_last)  # 21 columns: a rest
    got = run(x)
    expected = F.conv2d(x.double(), weight.float().double(), bias)
    assert got.dtype == torch.float32 and got.shape == (2, outputs, 5, 21)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got.double() - expected).abs().max() < 1e-5


@needs_conv3_f32
def test_conv3_f32_takes_only_what_it_is_for() -> None:
    assert KERNELS.conv3_f32(torch.zeros(9, 32, 3, 3), torch.zeros(9)) is None  # ×3: oneDNN's is faster
    assert KERNELS.conv3_f32(torch.zeros(4, 40, 3, 3), torch.zeros(4)) is None  # channels not in 16s
    run = KERNELS.conv3_f32(torch.zeros(4, 32, 3, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="float32"):
        run(torch.zeros(1, 32, 8, 8, dtype=torch.bfloat16))


@needs_conv3
def test_conv3_bf16_takes_only_what_it_is_for() -> None:
    assert KERNELS.conv3_bf16(torch.zeros(9, 32, 3, 3), torch.zeros(9)) is None  # ×3: oneDNN's is faster
    assert KERNELS.conv3_bf16(torch.zeros(16, 32, 3, 3), torch.zeros(16)) is None  # ×4 likewise
    assert KERNELS.conv3_bf16(torch.zeros(4, 48, 3, 3), torch.zeros(4)) is None  # channels not in 32s
    assert KERNELS.conv3_bf16(torch.zeros(4, 32, 5, 5), torch.zeros(4)) is None
    run = KERNELS.conv3_bf16(torch.zeros(4, 32, 3, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="bf16"):
        run(torch.zeros(1, 32, 8, 8))


@needs_head
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_upscale_with_and_without_the_head_kernels(precision: str) -> None:
    # The kernels replace OpenCV's write and (×2) oneDNN's last layer: the same pixels within a
    # level, nearer the float path's (the last layer's sums stay fp32, where oneDNN's bf16 layer
    # rounds them to bf16), and they are what the CPU path takes where they build.
    if precision == "bf16" and not runtime.native_bf16():
        pytest.skip("oneDNN has no bf16 convolution on this CPU: the bf16 path is the fp32 one")
    if precision == "int8" and not int8_kernels():
        pytest.skip("this torch build has no oneDNN quantized convolution")
    loaded = load_model("espcn-x2")
    lr = downscale(mod_crop(read_rgb8(SAMPLE), 2), 2)[:70, :90]
    with_kernels = Upscaler(loaded, device="cpu", precision=precision)
    paths = with_kernels.fused_paths
    assert paths[3].write_rgb is not None
    assert (paths["y"].write_y is not None) == (KERNELS.write_y is not None)  # AVX-512 only
    # ×2's four outputs take conv3_bf16 or conv3_f32 where this CPU's build has that kernel: bf16's
    # needs AVX-512 BF16 (VNNI-only CPUs such as Ice Lake run bf16 through oneDNN's emulation)
    # and fp32's AVX-512 or AVX2. The head's dtype decides which one it asks for.
    head = torch.bfloat16 if paths[3].centre else torch.float32
    probe = KERNELS.conv3_bf16 if head == torch.bfloat16 else KERNELS.conv3_f32
    expect_conv3 = probe(torch.zeros(4, 64, 3, 3), torch.zeros(4)) is not None
    assert (paths[3].conv3 is not None) == expect_conv3
    without = Upscaler(loaded, device="cpu", precision=precision, kernels=KERNELS.only("int8"))
    assert without.fused_paths[3].write_rgb is None and without.fused_paths[3].conv3 is None
    assert without.fused_paths["y"].write_y is None
    i420 = np.concatenate([lr[:64, :90, 0], lr[:32, :90, 1]])  # a 90×64 frame: 64 rows of Y, 32 of U and V
    ya, yb = with_kernels.upscale_i420(i420[None]).astype(int), without.upscale_i420(i420[None]).astype(int)
    assert np.abs(ya - yb).max() <= 1 and (ya != yb).mean() < (0.001 if precision == "fp32" else 0.15)
    a, b = with_kernels.upscale(lr)[0].astype(int), without.upscale(lr)[0].astype(int)
    exact = Upscaler(loaded, device="cpu", precision="fp32", fused=False).upscale(lr)[0].astype(int)
    assert a.shape == b.shape == (140, 180, 3)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < (0.01 if precision == "fp32" else 0.15)
    error_with, error_without = np.abs(a - exact).mean(), np.abs(b - exact).mean()
    if head == torch.bfloat16:  # the kernel keeps the sums in fp32 where oneDNN rounds them to bf16
        assert error_with <= error_without
    else:  # both heads are fp32: only the order of the sums differs
        assert abs(error_with - error_without) < 0.005


@needs_write_y
@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("generic", [False, True])
def test_write_y_is_the_phase_shift_clamped_and_truncated(r: int, dtype: torch.dtype, generic: bool) -> None:
    torch.manual_seed(r)
    n, h, w, crop = 3, 7, 11, 2  # 11·r columns: whole 16-pixel blocks and a rest
    phases = (torch.rand(n, r * r, h + 2 * crop, w + 2 * crop) * 300 - 150).to(dtype)
    phases = phases.contiguous(memory_format=torch.channels_last)
    frames = torch.full((n, h * r * 3 // 2 + 1, w * r), 7, dtype=torch.uint8)  # Y planes with rows after each
    planes = frames[:, : h * r]
    KERNELS.write_y(phases, crop, 128.0, planes, generic=generic)
    v = F.pixel_shuffle(phases.float()[:, :, crop : crop + h, crop : crop + w], r)[:, 0] + 128.0
    assert torch.equal(planes, v.clamp(0, 255).to(torch.uint8))  # what torch's copy to uint8 gives
    assert bool((frames[:, h * r :] == 7).all())  # nothing written past each plane
    assert planes.min() == 0 and planes.max() == 255


@needs_write_y
def test_write_y_checks_its_shapes() -> None:
    run, phases = KERNELS.write_y, torch.zeros(2, 4, 8, 8)
    for bad in (torch.empty(2, 18, 16, dtype=torch.uint8),  # 9 rows of phases, 8 there
                torch.empty(2, 16, 16, 3, dtype=torch.uint8),  # not one plane
                torch.empty(2, 16, 32, dtype=torch.uint8)[:, :, ::2],  # rows not contiguous
                torch.empty(2, 16, 16)):  # not bytes
        with pytest.raises(ValueError, match="write_y cannot write"):
            run(phases, 0, 0.0, bad)


@needs_head
def test_chroma_planes_is_the_matrix_on_every_pixel() -> None:
    a, a_inv = colour_matrices()
    m = (a_inv[:, 1:] @ a[1:]).float()  # what FusedPath hands over
    x = (torch.rand(2, 9, 13, 3) * 255).permute(0, 3, 1, 2)  # channels last, as the network's input
    got = KERNELS.chroma_planes(x, m)
    assert got.shape == (2, 3, 9, 13) and got.is_contiguous()
    assert torch.allclose(got, torch.einsum("cd,ndhw->nchw", m, x), atol=1e-4)
    with pytest.raises(ValueError, match="chroma_planes takes"):
        KERNELS.chroma_planes(x[:, :1], m)
