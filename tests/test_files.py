"""File safety: temporary names beside the target, atomic renames, stale temporaries, folders."""

from __future__ import annotations

import os
import time

import pytest

from subpixel_cli import files
from subpixel_cli.errors import OutputError, OutputExists


def test_a_write_that_fails_leaves_the_old_target_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("encoder broke")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_finished_write_replaces_the_target_only_with_force(tmp_path):
    target = tmp_path / "out.bin"
    files.write_bytes(target, b"one")
    with pytest.raises(OutputError, match="exists"):
        files.write_bytes(target, b"two", force=False)
    files.write_bytes(target, b"three", force=True)
    assert target.read_bytes() == b"three" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_serves_writers_that_take_a_name_files_and_folders(tmp_path):
    with files.atomic_path(tmp_path / "model.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.bin.") and tmp.name.endswith(".partial")
        tmp.write_bytes(b"weights")
        assert not (tmp_path / "model.bin").exists()  # not before the block ends
    assert (tmp_path / "model.bin").read_bytes() == b"weights"
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(tmp_path / "frames") as tmp:
            tmp.mkdir()
            (tmp / "1.png").write_bytes(b"x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_stale_temporaries_of_a_killed_run_go_and_nothing_else(tmp_path):
    target = tmp_path / "a.png"
    old = [files.temporary_path(target), tmp_path / ".a.png.abcd_123.partial"]  # this scheme's, and mkstemp's
    for path in old:
        path.write_bytes(b"half")
        os.utime(path, (time.time() - 60, time.time() - 60))
    folder = files.temporary_path(target)
    folder.mkdir()
    os.utime(folder, (time.time() - 60, time.time() - 60))
    keep = [tmp_path / ".b.png.abcd1234.partial", tmp_path / ".a.png.notes", files.temporary_path(target)]
    for path in keep:
        path.write_bytes(b"another run's, or the user's")
    keep[-1].touch()  # a run still writing: newer than the cut-off
    assert files.remove_stale_temporaries(target, time.time() - 30) == 3
    assert all(p.exists() for p in keep) and not any(p.exists() for p in [*old, folder])


def test_folders_that_cannot_be_made_say_why(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        files.make_folder(tmp_path / "file" / "sub")
    assert files.make_folder(tmp_path / "a" / "b").is_dir()


def test_an_unwritable_folder_is_an_output_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write"):
        files.write_bytes(tmp_path / "ro" / "x", b"1")


@pytest.mark.parametrize("how", ["renameat2", "link", "check"])
def test_publishing_never_replaces_a_file_that_appeared_meanwhile(tmp_path, monkeypatch, how):
    """Another run's output that appears while this one writes stays as it is (issue 22.4), on
    every way of renaming without replacing: renameat2, a hard link, or a check on file systems
    that have neither."""
    if how != "renameat2":
        monkeypatch.setattr(files, "rename_noreplace", lambda tmp, target: False)
    if how == "check":
        monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
    target = tmp_path / "out.png"
    with pytest.raises(OutputExists, match="appeared"):
        with files.atomic_write(target, force=False) as f:
            f.write(b"this run's")
            target.write_bytes(b"the other run's")
    assert target.read_bytes() == b"the other run's" and [p.name for p in tmp_path.iterdir()] == ["out.png"]
    files.write_bytes(tmp_path / "new.png", b"new", force=False)  # nothing there: published
    assert (tmp_path / "new.png").read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 2


def test_a_temporary_that_a_live_run_is_writing_is_not_stale(tmp_path):
    """Two runs on one folder: the later one removed the earlier one's temporaries as stale, and
    that run's outputs then failed (issue 22.4). A temporary being written is locked."""
    target = tmp_path / "a.png"
    with files.atomic_write(target, force=False) as f:
        f.write(b"being written")
        live = [p for p in tmp_path.iterdir()]
        os.utime(live[0], (time.time() - 60, time.time() - 60))
        assert files.remove_stale_temporaries(target, time.time()) == 0 and live[0].exists()
    assert target.read_bytes() == b"being written"
    with files.atomic_path(tmp_path / "model.bin", file=True) as tmp:
        tmp.write_bytes(b"weights")  # a writer that opens the name itself
        os.utime(tmp, (time.time() - 60, time.time() - 60))
        assert files.remove_stale_temporaries(tmp_path / "model.bin", time.time()) == 0 and tmp.exists()
    assert (tmp_path / "model.bin").read_bytes() == b"weights"
