"""Helpers shared by the robustness tests: running the CLI in-process or as a real process,
making damaged inputs, and checking that an output folder holds only complete files."""

from __future__ import annotations

import ctypes
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from subpixel_cli.cli import main

# What subpixel_cli.files names its temporary files: .TARGET.<8 random chars>.partial
PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.partial$")


def cli(*args: object):
    """``subpixel ARGS`` in-process; the exit code and streams are on the result."""
    return CliRunner().invoke(main, [a if isinstance(a, bytes) else str(a) for a in args], catch_exceptions=False)


def cli_process(*args: object, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m subpixel_cli ARGS`` as a separate process (for kills, limits and pipes)."""
    return subprocess.run(command(*args), capture_output=True, timeout=timeout, env=process_env(), **kwargs)


def command(*args: object) -> list:
    return [sys.executable, "-m", "subpixel_cli", *(a if isinstance(a, bytes) else str(a) for a in args)]


def process_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    env.pop("COLUMNS", None)
    return env


def records(stdout: str | bytes) -> list[dict]:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_clean_failure(stderr: str | bytes) -> None:
    """No traceback, and every error or failure is one line of its own."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text and "Fatal Python error" not in text, text
    for line in text.splitlines():
        if "error:" in line or "failed:" in line:
            assert line.startswith(("error:", "failed:")), text


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*") if PARTIAL.match(p.name))


def save(path: Path, height: int = 16, width: int = 20, mode: str = "RGB", seed: int = 0, **kwargs) -> Path:
    """A picture of ``mode`` with some structure in it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 3.0 + seed)[..., None] + np.cos(yy / 4.0)[..., None] + 2) / 4
    arr = np.clip((base + rng.random((height, width, 4)) * 0.2) / 1.2 * 255, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGBA")
    img = img.convert(mode) if mode in ("RGBA", "LA") else img.convert("RGB").convert(mode)
    img.save(path, **kwargs)
    return path


def noise(path: Path, height: int, width: int, seed: int = 0, **kwargs) -> Path:
    """Random pixels: incompressible, so outputs are big (for file-size limits)."""
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, **kwargs)
    return Path(path)


def encoded(fmt: str, height: int, width: int, mode: str, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    save(buf, height, width, mode, seed, format=fmt)  # type: ignore[arg-type]
    return buf.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random kind of damage: truncation, flipped bytes, inserted junk, a torn header."""
    kind = rng.randrange(5)
    if kind == 0 or len(data) < 2:
        return data[: rng.randrange(len(data) + 1)]
    buf = bytearray(data)
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 2:
        at = rng.randrange(len(buf))
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:
        keep = min(len(buf), rng.randint(8, 40))
        buf[keep:] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    else:
        at = rng.randrange(len(buf))
        del buf[at : at + rng.randint(1, 64)]
    return bytes(buf)


def short_png(path: Path, side: int = 300, rows: int = 10) -> Path:
    """A PNG whose header claims side×side pixels, with ``rows`` rows of data and a valid IEND:
    libpng says "Not enough image data"; Pillow decoded it without a word (issue 22.3)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + bytes([k % 256]) * (3 * side) for k in range(rows)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def check_picture_file(path: Path, size: tuple[int, int]) -> None:
    """``path`` decodes completely, at ``size`` (width, height)."""
    with Image.open(path) as img:
        img.load()
        assert img.size == size, (path, img.size, size)


def without_dac_override() -> None:
    """preexec_fn: drop root's power to read any file, so chmod 000 means something."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def on_small_disk(disk: Path, size: str, *args: object, grow_to: str | None = None,
                  timeout: float = 300) -> list[tuple[subprocess.CompletedProcess, list[str]]] | None:
    """``subpixel ARGS`` with a ``size`` tmpfs (``64k``, ``1m``) mounted at ``disk`` in a private
    mount namespace, so that writes there fail with ENOSPC; with ``grow_to`` the disk is then
    grown (space freed) and the same command run again. Each run's process and what the disk held
    when it ended (``find``, relative names). ``None`` where a tmpfs cannot be mounted here."""
    import shlex
    import shutil

    if not shutil.which("unshare"):
        return None
    disk.mkdir(parents=True, exist_ok=True)
    root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    where = shlex.quote(str(disk))
    run = (f"{shlex.join(command(*args))}; echo \"rc=$?\" >&2; (cd {where} && find . -mindepth 1 >&2); "
           "echo ==run== >&2; echo ==run==")
    script = f"mount -t tmpfs -o size={size} tmpfs {where} || exit 99; {run}"
    if grow_to:
        script += f"; mount -o remount,size={grow_to} {where} && {run}"
    proc = subprocess.run(["unshare", *root, "--mount", "sh", "-c", script], capture_output=True, timeout=timeout,
                          env=process_env())
    if proc.returncode == 99 or b"rc=" not in proc.stderr:
        return None
    runs = []
    for err, out in zip(proc.stderr.split(b"==run==\n")[:-1], proc.stdout.split(b"==run==\n")[:-1]):
        before, after = err.decode(errors="replace").rsplit("rc=", 1)
        code, *listing = after.split("\n")
        done = subprocess.CompletedProcess(proc.args, int(code), out, before.encode())
        runs.append((done, sorted(line[2:] for line in listing if line.startswith("./"))))
    return runs


# --- kill -9 ------------------------------------------------------------------------------------


def run_and_kill(args: list, watch: Path, delay: float | None, timeout: float = 300) -> tuple[bool, float]:
    """Start ``subpixel ARGS``; once a new entry appears in ``watch`` (the work has begun), wait
    ``delay`` seconds and SIGKILL it; ``delay=None`` lets it finish. Returns whether it was killed
    and how long it had been working (from the first new entry)."""
    initial = set(os.listdir(watch)) if watch.is_dir() else set()
    proc = subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=process_env())
    start = time.monotonic()
    began = None
    try:
        while proc.poll() is None and time.monotonic() - start < timeout:
            if began is None and watch.is_dir() and set(os.listdir(watch)) - initial:
                began = time.monotonic()
                if delay is not None:
                    time.sleep(delay)
                    break
            time.sleep(0.003)
        killed = proc.poll() is None and delay is not None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=timeout)
        return killed, time.monotonic() - (began or start)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def decoded(path: Path) -> np.ndarray:
    """All of a picture's samples (colour and alpha); raises on a truncated or damaged file."""
    with Image.open(path) as img:
        img.load()
        return np.asarray(img).copy()


@dataclass
class OutputCheck:
    """What a folder of outputs holds, compared with a reference run's outputs."""

    complete: list[str] = field(default_factory=list)  # target names, decoded, equal to the reference
    broken: list[str] = field(default_factory=list)  # target names that are partial or wrong
    temporary: list[str] = field(default_factory=list)  # .NAME.XXXXXXXX.partial files
    stray: list[str] = field(default_factory=list)  # anything else


def check_outputs(folder: Path, reference: dict[str, np.ndarray], tolerance: int = 1,
                  ignore: list[str] = ()) -> OutputCheck:
    check = OutputCheck()
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        name = path.name
        if name in ignore:
            continue
        if PARTIAL.match(name):
            check.temporary.append(name)
        elif name not in reference:
            check.stray.append(name)
        else:
            try:
                pixels = decoded(path)
            except Exception:  # noqa: BLE001 - any decoding failure is a broken output
                check.broken.append(name)
                continue
            same = pixels.shape == reference[name].shape and (
                np.abs(pixels.astype(np.int64) - reference[name].astype(np.int64)).max(initial=0) <= tolerance)
            (check.complete if same else check.broken).append(name)
    return check


# --- videos -------------------------------------------------------------------------------------


def make_video(path: Path, frames: int = 30, size: tuple[int, int] = (64, 48), fps: int = 30, audio: bool = True,
               video: bool = True, options: dict | None = None) -> Path:
    """A small test video (moving gradient, H.264) with optional sine-wave AAC audio."""
    import av

    with av.open(str(path), "w", options=options or {}) as out:
        v = out.add_stream("libx264", rate=fps) if video else None
        if v is not None:
            v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        a = out.add_stream("aac", rate=44100) if audio else None
        if a is not None:
            a.layout = "mono"
        yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
        for i in range(frames if v is not None else 0):
            rgb = np.stack([(xx * 4 + i * 3) % 256, (yy * 5) % 256, np.full_like(xx, i * 7 % 256)], -1).astype(np.uint8)
            out.mux(v.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        if v is not None:
            out.mux(v.encode(None))
        if a is not None:
            samples, t = 1024, 0
            while t < frames / fps * 44100:
                wave = (0.3 * np.sin(2 * np.pi * 440 * (t + np.arange(samples)) / 44100)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 44100, t
                out.mux(a.encode(frame))
                t += samples
            out.mux(a.encode(None))
    return path


def noisy_video(path: Path, frames: int = 150, size: tuple[int, int] = (160, 120), gop: int = 30) -> Path:
    """Random pixels (big outputs, for a disk to fill), H.264 with a keyframe every ``gop`` frames."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        v.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            out.mux(v.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(v.encode(None))
    return path


def count_frames(path: Path) -> int:
    """Decode every frame of a video; raises if it is damaged."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
