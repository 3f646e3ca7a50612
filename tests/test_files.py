"""Atomic and durable writes: fsync before the rename and of the folder after; the umask."""

import os
import threading
from pathlib import Path

import pytest

from pspnet import files
from pspnet.files import atomic_write


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(source, target):
        calls.append(("replace", os.path.basename(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "state.pt", lambda tmp: Path(tmp).write_text("weights"))
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"]
    assert calls[0][1].startswith(".state.pt.") and calls[2][1] == tmp_path.name
    assert (tmp_path / "state.pt").read_text() == "weights"


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("good"))

    def broken(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", broken)
    assert (tmp_path / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_writes_never_set_the_umask(tmp_path, monkeypatch):
    # Reading the umask by setting it races between writer threads: it is read once, instead.
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o022)
    atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    assert calls == []


def test_concurrent_writes_never_change_the_umask(tmp_path):
    before = os.umask(0o022)
    os.umask(before)
    seen = set()

    def writer(index):
        for round_ in range(50):
            atomic_write(tmp_path / f"{index}_{round_}.txt", lambda tmp: Path(tmp).write_text("x"))
            current = os.umask(before)  # reads it (and puts it back) between writes
            os.umask(current)
            seen.add(current)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {before}
    modes = {(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == {0o666 & ~files.UMASK}
